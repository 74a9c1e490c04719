"""Peak memory of one call, above what was allocated before it, for the benchmark scripts.

- CUDA: torch's allocator peak (`max_memory_allocated` after `reset_peak_memory_stats`), exact for tensors.
- CPU: the kernel's resident high-water mark (VmHWM) reset just before the call (`echo 5 >
  /proc/self/clear_refs`, Linux >= 4.0) after `malloc_trim`, so pages glibc kept from earlier calls do not
  hide new ones. It counts everything the process touches (allocator slack included), at page granularity.
  `tracemalloc` would see none of torch's buffers, and `ru_maxrss` cannot be reset, so it only shows a new
  peak when it beats every earlier one.
"""

from __future__ import annotations

import ctypes
import gc
import re
from pathlib import Path
from typing import Callable

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", _STATUS.read_text(), flags=re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{key} is missing from {_STATUS}")
    return int(match.group(1)) * 1024


def cpu_peak_supported() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        _status_bytes("VmHWM")
        return True
    except (OSError, RuntimeError):
        return False


def peak_total_bytes(fn: Callable[[], object], device: str) -> int | None:
    """Bytes in use at the peak of `fn()`, counting what was already resident (model weights included): the number
    a guided ÷ unguided peak-memory ratio is about. None if not measurable here."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())
    if not cpu_peak_supported():
        return None
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    _CLEAR_REFS.write_text("5")
    fn()
    return _status_bytes("VmHWM")


def peak_bytes(fn: Callable[[], object], device: str) -> int | None:
    """Bytes at the peak of `fn()` above the memory in use when it started; None if not measurable here."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - before)
    if not cpu_peak_supported():
        return None
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: the peak may then hide reused pages
        pass
    _CLEAR_REFS.write_text("5")  # VmHWM := current RSS
    before = _status_bytes("VmRSS")
    fn()
    return max(0, _status_bytes("VmHWM") - before)
