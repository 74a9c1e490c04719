"""One-rank gloo job: once release_process_group() returns, no gloo worker thread may be left, also when a module
imported after init_process_group captured the group in a default argument (torch.distributed.nn.functional
does: DDP's constructor imports it through torch._dynamo). A thread left there meets interpreter teardown,
where it now and then aborts the finished process ("terminate called without an active exception").

Run with: python tests/jobs/released_group_threads.py STORE_FILE OUT.json   (Linux: reads /proc/self/task)
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from motionguide.cli_args import release_process_group  # noqa: E402


def gloo_threads() -> list[str]:
    """Names of this process's native threads that belong to gloo (gloo_tcp_loop, pt_gloo_runloop)."""
    names = ((task / "comm").read_text().strip() for task in Path("/proc/self/task").iterdir())
    return sorted(name for name in names if "gloo" in name)


if __name__ == "__main__":
    store, out = sys.argv[1:3]
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2))
    model(torch.ones(1, 3)).sum().backward()
    import torch.distributed.nn.functional as functional  # noqa: E402  (imported by DDP already; explicit here)

    captured = any(type(d) is dist.ProcessGroup for d in functional.all_reduce.__defaults__)
    before = gloo_threads()
    del model
    release_process_group()
    Path(out).write_text(json.dumps({"captured_by_a_default": captured, "gloo_threads_before": before,
                                     "gloo_threads_after": gloo_threads()}))
