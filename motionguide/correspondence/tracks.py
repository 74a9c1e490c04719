"""From matching costs to point tracks in pixels.

Coordinate conventions (pixel-centre coordinates: pixel i spans [i - 0.5, i + 0.5] and its centre is at i):

- Token (r, c) of a grid with `s` pixels per token covers pixels [c*s, (c+1)*s) x [r*s, (r+1)*s); its centre
  is at pixel ((c + 0.5) * s - 0.5, (r + 0.5) * s - 0.5). A pixel u sits at token coordinate (u + 0.5) / s - 0.5.
- The match field M maps each source token to the (x, y) token coordinate of its best match in the target
  frame (argmax, or a soft-argmax around it). Query points are moved by the *displacement* M(p) - p, read out
  bilinearly at the query's token coordinate (clamped to the grid): track = query + s * D(query).

Reading out the displacement rather than M itself makes zero motion the identity for every query, borders
included, and an integer-token shift exactly that shift in pixels (DiffTrack reads M and multiplies by s,
which drops the half-token centre offset).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from ..backbones.base import TokenGrid

METHODS = ("argmax", "soft_argmax")


def pixels_to_token_coords(points_px: torch.Tensor, pixels_per_token: int) -> torch.Tensor:
    """Pixel-centre coordinates -> continuous token coordinates (token centres at integers)."""
    return (points_px + 0.5) / pixels_per_token - 0.5


def token_coords_to_pixels(coords: torch.Tensor, pixels_per_token: int) -> torch.Tensor:
    """Inverse of :func:`pixels_to_token_coords`."""
    return (coords + 0.5) * pixels_per_token - 0.5


def _token_xy(height: int, width: int, device=None) -> torch.Tensor:
    """(x, y) token coordinate of each token in row-major order: [h*w, 2]."""
    rows, cols = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device),
                                indexing="ij")
    return torch.stack([cols.flatten(), rows.flatten()], dim=-1).float()


def match_field(cost: torch.Tensor, height: int, width: int, method: str = "argmax",
                soft_radius: int = 1) -> torch.Tensor:
    """Best-match token coordinate (x, y) in the target frame for every source token: [h, w, 2].

    method "argmax" takes the highest cost; "soft_argmax" averages the target coordinates within `soft_radius`
    tokens (Chebyshev) of the argmax, weighted by the cost clamped at zero (meant for the q-k costs, whose
    rows are probabilities). Falls back to the argmax where the window holds no positive weight.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    p = height * width
    if cost.shape != (p, p):
        raise ValueError(f"cost must be [{p}, {p}] for a {height}x{width} token grid; got {tuple(cost.shape)}")
    xy = _token_xy(height, width, cost.device)
    best = xy[cost.argmax(dim=1)]  # [P0, 2]
    if method == "soft_argmax":
        near = (xy[None, :, :] - best[:, None, :]).abs().amax(dim=-1) <= soft_radius  # [P0, Pj]
        weights = cost.float().clamp(min=0) * near
        total = weights.sum(dim=1, keepdim=True)
        soft = (weights @ xy) / total.clamp(min=1e-12)
        best = torch.where(total > 0, soft, best)
    return best.view(height, width, 2)


def bilinear_sample(field: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear read-out of a [h, w, C] field at continuous (x, y) token coordinates [N, 2] -> [N, C].

    Coordinates outside the grid are clamped to the border token centres.
    """
    h, w, _ = field.shape
    x = coords[:, 0].clamp(0, w - 1)
    y = coords[:, 1].clamp(0, h - 1)
    x0 = x.floor().clamp(max=max(w - 2, 0)).long()
    y0 = y.floor().clamp(max=max(h - 2, 0)).long()
    x1 = (x0 + 1).clamp(max=w - 1)
    y1 = (y0 + 1).clamp(max=h - 1)
    fx = (x - x0.float()).unsqueeze(-1)
    fy = (y - y0.float()).unsqueeze(-1)
    top = field[y0, x0] * (1 - fx) + field[y0, x1] * fx
    bottom = field[y1, x0] * (1 - fx) + field[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def check_query_points(query_points_px, height: int, width: int) -> np.ndarray:
    """[N, 2] float32 (x, y) pixel points, refused with the offending point and the valid range when any lies
    outside the frame (pixel centres at integers: -0.5 <= x <= W - 0.5, -0.5 <= y <= H - 0.5) or is not finite."""
    points = np.asarray(query_points_px, dtype=np.float32)
    if points.size == 0 or points.reshape(-1).size % 2:
        raise ValueError(f"query points must be [N, 2] (x, y) pixels with N >= 1, got shape {points.shape}")
    points = points.reshape(-1, 2)
    bad = ~np.isfinite(points).all(axis=1)
    bad |= (points[:, 0] < -0.5) | (points[:, 0] > width - 0.5) | (points[:, 1] < -0.5) | (points[:, 1] > height - 0.5)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"query point {i} (x={points[i, 0]:g}, y={points[i, 1]:g}) is outside the {width}x{height} "
                         f"frame; valid: -0.5 <= x <= {width - 0.5:g}, -0.5 <= y <= {height - 0.5:g} "
                         f"({int(bad.sum())} of {len(points)} points are outside)")
    return points


def tracks_from_costs(
    costs: Iterable[torch.Tensor],
    query_points_px,
    grid: TokenGrid,
    pixels_per_token: int,
    method: str = "argmax",
    soft_radius: int = 1,
) -> torch.Tensor:
    """Tracks [N, F', 2] in pixels (x, y) of frame-0 query points over the latent frames of `grid`.

    Args:
        costs: one [P0, P] cost per target frame 1..F'-1, in order (any iterable; consumed one at a time).
        query_points_px: [N, 2] (x, y) pixel positions in frame 0; frame 0 of the result is these points.
        grid: token grid (frames, height, width) the costs were computed on.
        pixels_per_token: side of one token in pixels (16 on Wan2.1 / CogVideoX).
    """
    points = check_query_points(query_points_px, grid.height * pixels_per_token, grid.width * pixels_per_token)
    queries = torch.as_tensor(points)
    coords = pixels_to_token_coords(queries, pixels_per_token)
    identity = _token_xy(grid.height, grid.width).view(grid.height, grid.width, 2)
    out = [queries]
    for cost in costs:
        field = match_field(cost.detach().float().cpu(), grid.height, grid.width, method, soft_radius)
        displacement = bilinear_sample(field - identity, coords)
        out.append(queries + pixels_per_token * displacement)
    if len(out) != grid.frames:
        raise ValueError(f"got costs for {len(out) - 1} target frames; the grid has {grid.frames} latent frames, "
                         f"so give one cost for each of frames 1..{grid.frames - 1}")
    return torch.stack(out, dim=1)


def latent_frame_times(num_latent_frames: int, temporal_stride: int = 4) -> torch.Tensor:
    """Pixel-frame time of each latent frame under the causal VAE: latent 0 is frame 0; latent k >= 1 covers
    frames s*k-(s-1) .. s*k and sits at their centre, s*k - (s-1)/2 (2.5, 6.5, ... for s = 4)."""
    k = torch.arange(num_latent_frames, dtype=torch.float32)
    times = temporal_stride * k - (temporal_stride - 1) / 2.0
    times[0] = 0.0
    return times


def latent_to_pixel_tracks(latent_tracks: torch.Tensor, num_frames: int | None = None,
                           temporal_stride: int = 4) -> torch.Tensor:
    """Interpolate latent-frame tracks [N, F', 2] linearly in time to pixel frames [N, F, 2].

    Each latent frame is placed at :func:`latent_frame_times`; frames after the last latent centre keep its
    position. `num_frames` defaults to the causal VAE's s*(F'-1)+1.
    """
    latent_tracks = torch.as_tensor(latent_tracks, dtype=torch.float32)
    n_latent = latent_tracks.shape[1]
    num_frames = temporal_stride * (n_latent - 1) + 1 if num_frames is None else num_frames
    times = latent_frame_times(n_latent, temporal_stride)
    if n_latent == 1:
        return latent_tracks.expand(-1, num_frames, -1).clone()
    t = torch.arange(num_frames, dtype=torch.float32).clamp(max=float(times[-1]))
    upper = torch.searchsorted(times, t, right=False).clamp(1, n_latent - 1)
    lower = upper - 1
    frac = ((t - times[lower]) / (times[upper] - times[lower])).view(1, -1, 1)
    return latent_tracks[:, lower] * (1 - frac) + latent_tracks[:, upper] * frac
