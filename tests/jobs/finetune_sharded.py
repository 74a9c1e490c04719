"""Fine-tune with sharded weights (ZeRO-3, FSDP) on every rank, then check what a user gets back.

    accelerate launch --config_file configs/accelerate/cpu_deepspeed_zero3_2ranks.yaml \
        tests/jobs/finetune_sharded.py CONFIG.yaml OUT.json

Writes OUT.json (main process): the world size, the distributed type, the trainable weights as every rank
gathered them at the end of training (`OUT.gathered.safetensors` next to OUT.json), and the run's summary. A
full fine-tune under DeepSpeed also leaves the engine's checkpoint of the final state in `OUT.final-state/`.
"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from motionguide.training.callbacks import TrainerCallback  # noqa: E402
from motionguide.training.config import TrainConfig  # noqa: E402
from motionguide.training.distributed import gathered  # noqa: E402
from motionguide.training.lora import lora_state_dict  # noqa: E402
from motionguide.training.loop import Trainer  # noqa: E402
from motionguide.cli_args import release_process_group


class GatherAtTheEnd(TrainerCallback):
    """The LoRA weights gathered on every rank after the last step; the ranks' copies must agree."""

    def __init__(self, out_path: Path):
        self.out_path = out_path

    def on_train_end(self, ctx):
        acc, transformer = ctx.accelerator, ctx.transformer
        if ctx.config.training_type != "lora":
            # the engine's own checkpoint of the final state, for comparing the saved weights with DeepSpeed's
            # consolidation of its fp32 master weights (every rank writes its partitions)
            if "DEEPSPEED" in str(acc.distributed_type):
                acc.save_state(str(self.out_path.with_name(f"{self.out_path.stem}.final-state")))
            if acc.is_main_process:
                self.result = {"world_size": acc.num_processes, "distributed_type": str(acc.distributed_type),
                               "trainable_dtypes": sorted({str(p.dtype) for p in transformer.parameters()
                                                           if p.requires_grad})}
            return
        trainable = [p for p in transformer.parameters() if p.requires_grad]
        with gathered(acc, trainable):
            state = {k: v.detach().clone().contiguous() for k, v in lora_state_dict(transformer).items()}
            local_shapes = sorted({tuple(p.shape) for p in trainable})
        flat = torch.cat([state[k].flatten().float() for k in sorted(state)])
        copies = acc.gather(flat[None])
        if acc.is_main_process:
            from safetensors.torch import save_file

            save_file(state, str(self.out_path.with_name(f"{self.out_path.stem}.gathered.safetensors")))
            self.result = {
                "world_size": acc.num_processes,
                "distributed_type": str(acc.distributed_type),
                "max_rank_difference": float((copies[0] - copies[-1]).abs().max()),
                "changed_from_init": float(flat.abs().max()),
                "gathered_shapes": [list(s) for s in local_shapes],
                "trainable_dtypes": sorted({str(p.dtype) for p in trainable}),  # the module's copy
            }


if __name__ == "__main__":
    config = TrainConfig.load(sys.argv[1])
    out = Path(sys.argv[2])
    probe = GatherAtTheEnd(out)
    summary = Trainer(config, callbacks=[probe]).run()
    if getattr(probe, "result", None) is not None:
        out.write_text(json.dumps({**probe.result, "summary": summary}))
    # a group left to interpreter exit can abort the finished rank; one a DeepSpeed engine keeps alive makes the
    # rank skip teardown once the atexit handlers ran (see release_process_group)
    release_process_group()
