"""Does a toy model use each part of its caption? Its denoising loss with the true caption vs edited ones.

If swapping the motion word ("right" -> "left") barely raises the loss while swapping the colour does, the
model has learned colour from text but not motion: sampling will then ignore the prompted direction however
long it runs. This is cheap (a few batched forwards) and tracks motion conditioning during training.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .render import render_clip
from .sampling import sample_clip_spec
from .vocab import COLORS, OPPOSITE_MOTION

EDITS = ("true caption", "motion swapped", "colour swapped", "empty caption")


def edit_caption(caption: str, edit: str) -> str:
    """The caption with its first motion word replaced by the opposite one, or its first colour by the next."""
    words = caption.split()
    if edit == "motion swapped":
        for i, word in enumerate(words):
            if word in OPPOSITE_MOTION:
                words[i] = OPPOSITE_MOTION[word]
                return " ".join(words)
        raise ValueError(f"no motion word in {caption!r}")
    if edit == "colour swapped":
        names = list(COLORS)
        index = next(i for i, w in enumerate(words) if w in COLORS)
        words[index] = names[(names.index(words[index]) + 1) % len(names)]
        return " ".join(words)
    if edit == "empty caption":
        return ""
    return caption


@torch.no_grad()
def caption_sensitivity(pipe, num_clips: int = 32, sigmas: Sequence[float] = (0.6, 0.8, 0.95), seed: int = 123,
                        max_sequence_length: int = 16) -> dict:
    """Flow-matching loss per caption edit and noise level on fresh moving single-object toy clips.

    Same clips, same noise for every edit, so the differences are the caption's effect alone. Returns
    {"sigmas": [...], "loss": {edit: [per sigma]}, "clips": n}."""
    from .model_recipe import encode_pool

    rng = np.random.default_rng(seed)
    clips = []
    while len(clips) < num_clips:
        spec = sample_clip_spec(rng, num_objects=1, partial_motion_rate=0.0)
        if spec.objects[0].motion != "still":
            clips.append(render_clip(spec))
    latents = encode_pool(pipe.vae, np.stack([c.frames for c in clips]))
    captions = [c.caption for c in clips]
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
    transformer = pipe.transformer
    losses: dict[str, list[float]] = {}
    for edit in EDITS:
        embeds = pipe.encode_prompt([edit_caption(c, edit) for c in captions], do_classifier_free_guidance=False,
                                    max_sequence_length=max_sequence_length, device=latents.device)[0]
        per_sigma = []
        for sigma in sigmas:
            noisy = (1 - sigma) * latents + sigma * noise
            pred = transformer(hidden_states=noisy, timestep=torch.full((len(latents),), sigma * 1000.0),
                               encoder_hidden_states=embeds, return_dict=False)[0]
            per_sigma.append(float((pred.float() - (noise - latents)).square().mean()))
        losses[edit] = per_sigma
    return {"sigmas": list(sigmas), "loss": losses, "clips": len(clips)}
