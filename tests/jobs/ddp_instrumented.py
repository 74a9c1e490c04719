"""Two-rank job: DDP training of a tiny Wan transformer with a capture active; ranks must stay in sync.

Run with: ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 tests/jobs/ddp_instrumented.py OUT.json
"""

import json
import sys

import torch
from accelerate import Accelerator

from motionguide.attention import AttentionController
from motionguide.testing import tiny_wan_transformer
from motionguide.cli_args import release_process_group


def main(out_path: str) -> None:
    accelerator = Accelerator(cpu=True)
    transformer = tiny_wan_transformer(seed=0).train()
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=1e-3)
    model, optimizer = accelerator.prepare(transformer, optimizer)
    controller = AttentionController(accelerator.unwrap_model(model))
    events = []
    g = torch.Generator().manual_seed(100 + accelerator.process_index)  # each rank its own data
    with controller.capture(lambda e: events.append(e.video_query().shape), blocks=[0]):
        for _ in range(3):
            x = torch.randn(1, 16, 3, 8, 8, generator=g)
            text = torch.randn(1, 6, 32, generator=g)
            pred = model(hidden_states=x, timestep=torch.tensor([500]), encoder_hidden_states=text,
                         return_dict=False)[0]
            loss = (pred - x).square().mean()
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
    flat = torch.cat([p.detach().flatten() for p in accelerator.unwrap_model(model).parameters()])
    gathered = accelerator.gather(flat[None])
    if accelerator.is_main_process:
        result = {
            "world_size": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type),
            "max_weight_difference": float((gathered[0] - gathered[1]).abs().max()),
            "captures_on_rank0": len(events),
            "capture_shape": list(events[0]) if events else None,
        }
        with open(out_path, "w") as fh:
            json.dump(result, fh)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
    release_process_group()  # before exit: a group left to interpreter exit can abort the finished rank
