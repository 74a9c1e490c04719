"""One-rank gloo job that plays a launched rank (WORLD_SIZE=2) whose group something keeps alive past
release_process_group(), as a DeepSpeed engine does: the process must end with the command's exit code once the
atexit handlers registered before the release have run, without reaching interpreter teardown.

Run with: python tests/jobs/lingering_group_exit.py STORE_FILE MARKER EXIT_CODE   (Linux: reads /proc/self/task)
"""

import atexit
import os
import sys
from pathlib import Path

import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from motionguide.cli_args import lingering_gloo_threads, release_process_group  # noqa: E402

if __name__ == "__main__":
    store, marker, code = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    os.environ["WORLD_SIZE"] = "2"  # what torchrun / accelerate launch set in every rank
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    atexit.register(lambda: marker.write_text("atexit handler ran"))  # e.g. a tracker's finaliser
    keeper = [dist.group.WORLD]  # holds the group as DeepSpeed's engine does
    dist.all_reduce(__import__("torch").ones(1))
    release_process_group(exit_code=code)
    print("lingering:", ",".join(lingering_gloo_threads()), flush=True)
    raise SystemExit(99)  # the registered finisher replaces this with the command's code
