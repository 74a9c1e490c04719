"""GramCol: a word's saliency as one column of a head's output Gram matrix, per latent frame.

From IMAP (Jun et al., "I'm a Map! Interpretable Motion-Attentive Maps...", arXiv 2603.02919,
https://arxiv.org/abs/2603.02919).

Query-key matching finds where a text slot peaks (a sharp point); the Gram column spreads that point to every
token whose attention output resembles the peak's, giving object-shaped maps. Per head and frame f:

    a(t, f)     = argmax_p  Q_v[f, p] . K_c[t]          anchor token of slot t in frame f
    G[t, f, p]  = < O_v[f, a(t, f)], O_v[f, p] >         plain dot product, no softmax or cosine
    Z[t, f, p]  = (G - mean_t G) / (std_t G + 1e-6)      over all T slots (padding too), unbiased std

All maths in fp32. Callers pass a few heads at a time: the [heads, T, N_v] intermediates are the largest
tensors here, so the chunk size bounds the memory (see :func:`head_chunk_size`).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..backbones.base import TokenGrid

__all__ = ["gramcol_head", "gramcol_heads", "gramcol_from_scores", "match_scores", "head_chunk_size", "ZSCORE_EPS"]

ZSCORE_EPS = 1e-6
#: elements of one [heads, N_v, T] fp32 intermediate per chunk (2**25 floats = 128 MiB)
DEFAULT_CHUNK_ELEMENTS = 2**25


def head_chunk_size(num_heads: int, num_video_tokens: int, num_text: int,
                    budget_elements: int = DEFAULT_CHUNK_ELEMENTS) -> int:
    """How many heads to process together so one [chunk, N_v, T] fp32 tensor stays within the budget."""
    per_head = max(1, num_video_tokens * num_text)
    return max(1, min(num_heads, budget_elements // per_head))


def _check_shapes(q_video: torch.Tensor, k_text: torch.Tensor, out_video: torch.Tensor, grid: TokenGrid) -> None:
    if q_video.ndim != 3 or k_text.ndim != 3 or out_video.ndim != 3:
        raise ValueError(
            f"expected [heads, tokens, head_dim] tensors, got q {tuple(q_video.shape)}, k {tuple(k_text.shape)}, "
            f"out {tuple(out_video.shape)}; for one head use gramcol_head"
        )
    if q_video.shape[1] != grid.num_tokens or out_video.shape[1] != grid.num_tokens:
        raise ValueError(
            f"video tokens ({q_video.shape[1]} queries, {out_video.shape[1]} outputs) do not match the grid "
            f"{grid.as_tuple()} = {grid.num_tokens} tokens; pass the video part only (AttentionCapture.video_query())"
        )
    if q_video.shape[-1] != k_text.shape[-1]:
        raise ValueError(f"query and key head dims differ: {q_video.shape[-1]} vs {k_text.shape[-1]}")


def match_scores(q_video: torch.Tensor, k_text: torch.Tensor) -> torch.Tensor:
    """Q_v K_c^T per head in fp32: [heads, N_v, d] x [heads, T, d] -> [heads, N_v, T] (no 1/sqrt(d): argmax only)."""
    return torch.bmm(q_video.float(), k_text.float().transpose(1, 2))


def _slot_range(num_text: int, real_slots: int | None) -> int:
    if real_slots is None:
        return num_text
    if not 2 <= real_slots <= num_text:
        raise ValueError(
            f"real_slots={real_slots} must lie in 2..{num_text} (the z-score needs at least two text slots); "
            "use None to z-score over all slots"
        )
    return real_slots


def _check_keep(keep: Sequence[int] | None, num_slots: int) -> list[int] | None:
    if keep is None:
        return None
    keep = [int(i) for i in keep]
    bad = [i for i in keep if not 0 <= i < num_slots]
    if bad:
        raise ValueError(
            f"text positions {bad} are outside the {num_slots} slots being z-scored; raise max_sequence_length or "
            "real_slots, or pick words earlier in the prompt"
        )
    return keep


def gramcol_from_scores(scores: torch.Tensor, out_video: torch.Tensor, grid: TokenGrid,
                        real_slots: int | None = None, keep: Sequence[int] | None = None) -> torch.Tensor:
    """GramCol maps from precomputed match scores [heads, N_v, T] -> [heads, T_keep, F', H', W'] (fp32).

    real_slots: z-score over the first `real_slots` text slots only (None: all T, the reference's choice).
    keep: text positions to return (after the z-score); None returns every z-scored slot.
    """
    heads, num_video, num_text = scores.shape
    frames, per_frame = grid.frames, grid.tokens_per_frame
    slots = _slot_range(num_text, real_slots)
    keep = _check_keep(keep, slots)
    out = out_video.float().reshape(heads, frames, per_frame, -1)  # [h, F, P, d]
    framed = scores[..., :slots].reshape(heads, frames, per_frame, slots)
    anchors = framed.argmax(dim=2)  # [h, F, T]: per frame and slot, the best-matching token
    index = anchors.unsqueeze(-1).expand(-1, -1, -1, out.shape[-1])
    anchor_features = torch.gather(out, 2, index)  # [h, F, T, d]
    gram = torch.matmul(anchor_features, out.transpose(-1, -2))  # [h, F, T, P]
    mean = gram.mean(dim=2, keepdim=True)
    std = gram.std(dim=2, keepdim=True, unbiased=True)
    if keep is not None:
        gram = gram[:, :, keep]
    z = (gram - mean) / (std + ZSCORE_EPS)
    return z.permute(0, 2, 1, 3).reshape(heads, z.shape[2], frames, grid.height, grid.width)


def gramcol_heads(q_video: torch.Tensor, k_text: torch.Tensor, out_video: torch.Tensor, grid: TokenGrid,
                  real_slots: int | None = None, keep: Sequence[int] | None = None) -> torch.Tensor:
    """GramCol for a chunk of heads: [h, N_v, d], [h, T, d], [h, N_v, d] -> [h, T_keep, F', H', W']."""
    _check_shapes(q_video, k_text, out_video, grid)
    return gramcol_from_scores(match_scores(q_video, k_text), out_video, grid, real_slots, keep)


def gramcol_head(q_video: torch.Tensor, k_text: torch.Tensor, out_video: torch.Tensor, grid: TokenGrid,
                 real_slots: int | None = None, keep: Sequence[int] | None = None) -> torch.Tensor:
    """GramCol for one head: q [N_v, d], k [T, d], out [N_v, d] -> [T, F', H', W'] (or [T_keep, ...])."""
    if q_video.ndim != 2 or k_text.ndim != 2 or out_video.ndim != 2:
        raise ValueError(
            f"gramcol_head takes one head's [tokens, head_dim] tensors, got q {tuple(q_video.shape)}, "
            f"k {tuple(k_text.shape)}, out {tuple(out_video.shape)}; for several heads use gramcol_heads"
        )
    return gramcol_heads(q_video[None], k_text[None], out_video[None], grid, real_slots, keep)[0]
