"""Run the fine-tuning loop on every rank, then check that all ranks hold the same trainable weights.

    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 tests/jobs/finetune_sync.py CONFIG.yaml OUT.json
    accelerate launch --config_file configs/accelerate/cpu_deepspeed_zero2_2ranks.yaml tests/jobs/finetune_sync.py ...
"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from motionguide.training.callbacks import TrainerCallback  # noqa: E402
from motionguide.training.config import TrainConfig  # noqa: E402
from motionguide.training.loop import Trainer  # noqa: E402
from motionguide.cli_args import release_process_group


class CompareRanks(TrainerCallback):
    def __init__(self, out_path: str):
        self.out_path = out_path

    def on_train_end(self, ctx):
        acc = ctx.accelerator
        params = [p.detach().float().flatten() for p in ctx.transformer.parameters() if p.requires_grad]
        flat = torch.cat(params)
        gathered = acc.gather(flat[None].contiguous())
        if acc.is_main_process:
            Path(self.out_path).write_text(json.dumps({
                "world_size": acc.num_processes,
                "distributed_type": str(acc.distributed_type),
                "trainable": int(flat.numel()),
                "max_rank_difference": float((gathered[0] - gathered[1]).abs().max()),
                "changed_from_init": float(flat.abs().max()),
            }))


if __name__ == "__main__":
    config = TrainConfig.load(sys.argv[1])
    Trainer(config, callbacks=[CompareRanks(sys.argv[2])]).run()
    # a group left to interpreter exit can abort the finished rank; one a DeepSpeed engine keeps alive makes the
    # rank skip teardown once the atexit handlers ran (see release_process_group)
    release_process_group()
