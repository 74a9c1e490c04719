"""Build the latent cache on every rank (each encodes its share), then report what each rank encoded.

    ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 tests/jobs/sharded_cache.py MODEL DATA CACHE OUT_DIR
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from accelerate import Accelerator  # noqa: E402
from accelerate.utils import InitProcessGroupKwargs  # noqa: E402
from diffusers import DiffusionPipeline  # noqa: E402

from motionguide.backbones import backbone_for  # noqa: E402
from motionguide.data import LatentCache, VideoDataset  # noqa: E402
from motionguide.cli_args import release_process_group

if __name__ == "__main__":
    model, data, cache_root, out = sys.argv[1:5]
    accelerator = Accelerator(kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")])
    backbone = backbone_for(DiffusionPipeline.from_pretrained(model))
    dataset = VideoDataset(data, num_frames=9, height=32, width=32, validate=False)
    cache = LatentCache.for_dataset(cache_root, dataset, backbone, 16)
    report = cache.build(dataset, backbone, 16, progress=False, rank=accelerator.process_index,
                         world_size=accelerator.num_processes, barrier=accelerator.wait_for_everyone)
    Path(out, f"rank{accelerator.process_index}.json").write_text(json.dumps({
        "world_size": accelerator.num_processes, "encoded_here": report.encoded_here, "encoded": report.encoded,
        "failed": report.failed, "cache_dir": str(cache.dir)}))
    accelerator.wait_for_everyone()
    release_process_group()  # before exit: a group left to interpreter exit can abort the finished rank
