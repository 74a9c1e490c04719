"""Toy-world ground truth brought to the latent-frame resolution models work at.

Ground truth is per pixel frame; saliency maps and motion masks are per latent frame. Time follows the causal
VAE rule of the backbone (latent 0 <- frame 0, latent k <- frames 4k-3..4k), so masks are grouped the same
way the model saw the frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np


def latent_groups(backbone: Any, num_frames: int) -> list[range]:
    """Pixel frames of each latent frame, from the backbone's causal temporal map."""
    return [backbone.pixel_frames_of_latent(k) for k in range(backbone.num_latent_frames(num_frames))]


def latent_masks(masks: np.ndarray, groups: Sequence[range]) -> np.ndarray:
    """bool [F, H, W] per-frame mask -> [F', H, W]: where the object is on any frame of a latent frame
    (a latent frame encodes all its pixel frames, so the object's swept area is its footprint there)."""
    return np.stack([np.asarray(masks)[list(g)].any(axis=0) for g in groups])


def clip_masks_fn(data_root: str | Path, backbone: Any, num_frames: int,
                  object_index: int = 0) -> Callable[[str], np.ndarray | None]:
    """clip_id -> bool [F', H, W] latent-frame masks of one object from a toy dataset's gt/ files (None when the
    clip has no ground truth); object 0 is the subject of the caption's first clause."""
    from .dataset import load_ground_truth

    groups = latent_groups(backbone, num_frames)

    def masks_for(clip_id: str) -> np.ndarray | None:
        path = Path(data_root) / "gt" / f"{clip_id}.npz"
        if not path.is_file():
            return None
        masks = load_ground_truth(path)["masks"][:, object_index]
        return latent_masks(masks, groups) if masks.shape[0] == num_frames else None

    return masks_for
