"""Head selection: how well a head's outputs separate by latent frame (Calinski-Harabasz index, CHI).

IMAP keeps, per layer, the heads whose per-token outputs cluster by frame ("motion heads"). The reference
scores each head with sklearn on the CPU (one device-to-host copy per head and layer); here it is one closed
form over all heads on the tensors' own device, in fp32:

    CHI = [SSB / (F - 1)] / [SSW / (N - F)],  SSB = sum_f P |mu_f - mu|^2,  SSW = sum_i |x_i - mu_f(i)|^2
"""

from __future__ import annotations

import torch

__all__ = ["calinski_harabasz", "top_k_heads"]


def calinski_harabasz(outputs: torch.Tensor, frames: int, head_chunk: int | None = None) -> torch.Tensor:
    """CHI of every head's video outputs [heads, N_v, d] with frame labels (token n is in frame n // (N_v / F)).

    Returns [heads] fp32 on the input's device. A perfectly separable head (SSW = 0) scores +inf; with a
    single frame the index is undefined and every head scores 0.
    """
    if outputs.ndim != 3:
        raise ValueError(f"outputs must be [heads, tokens, head_dim], got shape {tuple(outputs.shape)}")
    heads, tokens, _ = outputs.shape
    if frames < 1 or tokens % frames:
        raise ValueError(f"{tokens} video tokens do not split into {frames} frames of equal size")
    if frames == 1:
        return torch.zeros(heads, dtype=torch.float32, device=outputs.device)
    per_frame = tokens // frames
    chunk = head_chunk or heads
    scores = []
    for start in range(0, heads, chunk):
        x = outputs[start:start + chunk].float().reshape(-1, frames, per_frame, outputs.shape[-1])
        frame_means = x.mean(dim=2, keepdim=True)  # [h, F, 1, d]
        grand_mean = frame_means.mean(dim=1, keepdim=True)  # equal frame sizes: mean of means
        ssb = per_frame * (frame_means - grand_mean).square().sum(dim=(1, 2, 3))
        ssw = (x - frame_means).square().sum(dim=(1, 2, 3))
        scores.append((ssb / (frames - 1)) / (ssw / max(tokens - frames, 1)))
    chi = torch.cat(scores)
    return torch.nan_to_num(chi, nan=0.0, posinf=float("inf"))  # 0/0 (constant head) scores 0


def top_k_heads(chi: torch.Tensor, k: int) -> list[int]:
    """Indices of the k highest-scoring heads, best first (ties: lower index first)."""
    heads = chi.numel()
    if not 1 <= k <= heads:
        raise ValueError(f"top_k={k} must lie in 1..{heads} (the layer has {heads} heads)")
    order = torch.sort(-chi.float().cpu(), stable=True).indices
    return [int(i) for i in order[:k]]
