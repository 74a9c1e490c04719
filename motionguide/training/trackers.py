"""Logging through accelerate's trackers, for the loop and for callbacks used in any accelerate loop.

`target` is an `accelerate.Accelerator` (every tracker it started), one accelerate tracker (`GeneralTracker`:
TensorBoard, W&B, ...), or anything with a `log(values, step=...)` method.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

__all__ = ["log_scalars", "log_image", "log_video", "log_text", "log_curation_summary", "wandb_init_kwargs"]


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


def _gif_bytes(frames: np.ndarray, fps: float) -> bytes:
    """An endlessly looping GIF of uint8 frames [F, H, W, 3] at `fps` (what TensorBoard animates)."""
    from PIL import Image

    images = [Image.fromarray(np.ascontiguousarray(frame)) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=max(1, round(1000.0 / fps)))
    return buffer.getvalue()


def _tensorboard_video(writer: Any, tag: str, frames: np.ndarray, step: int, fps: float) -> None:
    """The frames as an animated image summary: what `SummaryWriter.add_video` writes, without its moviepy
    dependency (TensorBoard's image tab plays it)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    _, height, width, _ = frames.shape
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=_gif_bytes(frames, fps))
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def log_video(target: Any, tag: str, frames: np.ndarray, step: int, fps: float,
              mp4: str | os.PathLike | None = None, caption: str | None = None) -> None:
    """One clip (uint8 [F, H, W, 3]) at `step` on every TensorBoard / W&B tracker of `target`, playing at `fps`.

    TensorBoard gets an animated GIF; W&B gets the H.264 mp4 `mp4` (written with `motionguide.video.write_video`
    when not given), which its player and browsers play. Other trackers skip it."""
    frames = np.asarray(frames)
    for tracker in _trackers(target):
        name = getattr(tracker, "name", None)
        if name == "tensorboard":
            _tensorboard_video(tracker.writer, tag, frames, step, fps)
        elif name == "wandb":
            import wandb

            with tempfile.TemporaryDirectory() as scratch:
                path = mp4
                if path is None:
                    from ..video import write_video

                    path = write_video(Path(scratch) / "clip.mp4", frames, fps=fps)
                tracker.log({tag: wandb.Video(str(path), caption=caption, format="mp4")}, step=step)


def log_text(target: Any, tag: str, text: str, step: int) -> None:
    """A block of text at `step` on every TensorBoard / W&B tracker of `target`; other trackers skip it."""
    for tracker in _trackers(target):
        name = getattr(tracker, "name", None)
        if name == "tensorboard":
            tracker.writer.add_text(tag, text, step)
        elif name == "wandb":
            import wandb

            tracker.log({tag: wandb.Html(f"<pre>{_escape_html(text)}</pre>")}, step=step)


def _escape_html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def log_curation_summary(target: Any, summary: Mapping[str, Any], step: int, prefix: str = "curation") -> None:
    """A curation's summary (e.g. Motive's method, mode, kept, of, queries): its numbers as scalars
    `curation/<key>` (plus `curation/kept_fraction` when `kept` and `of` are there) and the whole summary as
    text `curation/summary`, so a run's tracker shows which share of the data it trained on."""
    numbers = {f"{prefix}/{key}": float(value) for key, value in summary.items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    kept, total = summary.get("kept"), summary.get("of")
    if isinstance(kept, (int, float)) and isinstance(total, (int, float)) and total:
        numbers[f"{prefix}/kept_fraction"] = float(kept) / float(total)
    if numbers:
        log_scalars(target, numbers, step)
    log_text(target, f"{prefix}/summary", json.dumps(dict(summary), indent=2, sort_keys=True, default=str), step)


def wandb_init_kwargs(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`wandb.init` arguments that keep a run offline only when the user chose no mode: with `WANDB_MODE`
    set (online, offline, disabled), W&B follows it; unset, nothing leaves the machine unless asked.

    Passed to `init_trackers` rather than written into `os.environ`, so nothing else in the process (or a
    later run in it) inherits a mode the user never set."""
    environ = os.environ if environ is None else environ
    return {} if environ.get("WANDB_MODE") else {"mode": "offline"}
