"""Logging through accelerate's trackers, for the loop and for callbacks used in any accelerate loop.

`target` is an `accelerate.Accelerator` (every tracker it started), one accelerate tracker (`GeneralTracker`:
TensorBoard, W&B, ...), or anything with a `log(values, step=...)` method.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

__all__ = ["log_scalars", "log_image"]


def _trackers(target: Any) -> Iterable[Any]:
    return target.trackers if hasattr(target, "trackers") else [target]


def log_scalars(target: Any, values: dict[str, float], step: int) -> None:
    """`values` at `step`, through `target` (see the module docstring)."""
    target.log(values, step=step)


def log_image(target: Any, tag: str, image: np.ndarray, step: int) -> None:
    """One HWC uint8 image at `step` on every TensorBoard / W&B tracker of `target`; other trackers skip it."""
    for tracker in _trackers(target):
        name = getattr(tracker, "name", None)
        if name == "tensorboard":
            tracker.writer.add_image(tag, image, step, dataformats="HWC")
        elif name == "wandb":
            import wandb

            tracker.log({tag: wandb.Image(image)}, step=step)
