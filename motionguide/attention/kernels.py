"""Attention maths that never builds a sequence x sequence matrix: the frame-local attention of DiffTrack.

DiffTrack (https://arxiv.org/abs/2506.17220) finds that a few blocks of a video DiT carry cross-frame point
correspondence in their query-key attention; restricting each video token to the keys of its own latent frame
removes it, which is the perturbation correspondence guidance (CAG) steers away from.

Layout everywhere here is diffusers' dispatch convention: [batch, sequence, heads, head_dim].

- :func:`frame_local_attention` folds latent frames into the batch so each video query sees only the keys
  of its own latent frame (plus leading text tokens in joint-sequence models), then calls the model's own
  attention kernel on the folded batch: 1/F' of the full cost, flash kernels stay usable.
- DiffTrack's non-renormalised form (full softmax, cross-frame probabilities zeroed, no renormalisation)
  is recovered exactly as out_local * exp(LSE_local - LSE_full), with the log-sum-exps computed in query
  chunks of bounded size.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

#: upper bound on the elements of one chunk of attention logits (per head, per query chunk)
DEFAULT_CHUNK_ELEMENTS = 1 << 24


def sdpa_bshd(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """torch SDPA on [B, S, H, D] tensors (the native backend's maths)."""
    out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
    return out.transpose(1, 2)


def chunked_logsumexp(
    query: torch.Tensor,
    key: torch.Tensor,
    scale: float | None = None,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> torch.Tensor:
    """log sum_j exp(q_i . k_j * scale) for every query row, in fp32: [B, Sq, H, D] x [B, Sk, H, D] -> [B, Sq, H].

    Works one head at a time and in query chunks so at most `chunk_elements` logits exist at once.
    """
    b, sq, h, d = query.shape
    sk = key.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    rows = max(1, chunk_elements // max(1, b * sk))
    out = torch.empty(b, sq, h, dtype=torch.float32, device=query.device)
    for head in range(h):
        k_h = key[:, :, head].float()  # [B, Sk, D]
        for start in range(0, sq, rows):
            q_c = query[:, start : start + rows, head].float()  # [B, c, D]
            logits = torch.bmm(q_c, k_h.transpose(1, 2)) * scale  # [B, c, Sk]
            out[:, start : start + rows, head] = torch.logsumexp(logits, dim=-1)
    return out


def fold_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """[B, F*P, H, D] -> [B*F, P, H, D] (token order is frame-major)."""
    b, s, h, d = x.shape
    if s % frames:
        raise ValueError(f"{s} video tokens do not split into {frames} latent frames")
    return x.reshape(b * frames, s // frames, h, d)


def unfold_frames(x: torch.Tensor, batch: int) -> torch.Tensor:
    """Inverse of :func:`fold_frames`."""
    bf, p, h, d = x.shape
    return x.reshape(batch, (bf // batch) * p, h, d)


def frame_local_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    frames: int,
    text_len: int = 0,
    renormalize: bool = True,
    attend: Attend = sdpa_bshd,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Attention in which each video query sees only its own latent frame (and the `text_len` leading text keys).

    Args:
        query, key, value: [B, S, H, D] with S = text_len + frames * tokens_per_frame, text first.
        frames: latent frames F' of the video part.
        text_len: leading text tokens of a joint sequence (CogVideoX); text queries keep full attention.
        renormalize: True -> softmax over the allowed keys only. False -> DiffTrack's form: softmax over all
            keys, then the probabilities outside the allowed set are dropped without renormalising.
        attend: the attention kernel on [B, S, H, D] tensors (the model's backend).
    """
    batch = query.shape[0]
    q_vid, k_vid, v_vid = query[:, text_len:], key[:, text_len:], value[:, text_len:]
    q_f, k_f, v_f = fold_frames(q_vid, frames), fold_frames(k_vid, frames), fold_frames(v_vid, frames)
    if text_len:
        k_txt = key[:, :text_len].repeat_interleave(frames, dim=0)
        v_txt = value[:, :text_len].repeat_interleave(frames, dim=0)
        k_f = torch.cat([k_txt, k_f], dim=1)
        v_f = torch.cat([v_txt, v_f], dim=1)
    out_vid = attend(q_f, k_f, v_f)  # [B*F, P, H, D]
    if not renormalize:
        lse_local = chunked_logsumexp(q_f, k_f, chunk_elements=chunk_elements)  # [B*F, P, H]
        lse_full = chunked_logsumexp(q_vid, key, chunk_elements=chunk_elements)  # [B, S_vid, H]
        kept = torch.exp(unfold_frames(lse_local.unsqueeze(-1), batch).squeeze(-1) - lse_full)
        out_vid = (unfold_frames(out_vid, batch).float() * kept.unsqueeze(-1)).to(out_vid.dtype)
    else:
        out_vid = unfold_frames(out_vid, batch)
    if not text_len:
        return out_vid
    out_txt = attend(query[:, :text_len], key, value)
    return torch.cat([out_txt, out_vid], dim=1)
