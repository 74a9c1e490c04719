"""DiffTrack's layer/step analysis: which (block, sampling step) of a video DiT carries temporal correspondence.

For every clip and every requested step, the clean normalised latents are forward-noised to that step's
timestep (seeded noise) and ONE conditional transformer forward captures the self-attention of all requested
blocks at once. Each capture is reduced on the spot to, per block:

- accuracy: PCK (% of visible (point, frame) pairs within `threshold_px`) of the tracks read from the q-k
  matching cost (`CorrespondenceAccumulator` -> `latent_to_pixel_tracks`; descriptor "qk" after RoPE, as
  DiffTrack, "qk_no_rope" or "qk_mixed"), against reference tracks; also the same PCK over the moving points only
  ("moving_accuracy": points whose visible reference positions get at least one token from the start), since on
  clips with a static background the all-point PCK rewards matching every token to its own position;
- cross-frame confidence: for each query point's frame-0 token, a = softmax over ALL keys (text + every frame)
  of q.k/sqrt(d), head-averaged; per latent frame f >= 1 the max of a over frame f's keys, kept where the
  point is visible in every RGB frame of that latent; averaged over frames, then over points;
- cross-frame attention: the probability mass of those rows on frames other than frame 0 (own-frame and text
  mass are kept for the report).

Only the N query rows are ever scored ([heads, N, S], a few heads at a time), never the full attention map.
Query token of a point (x, y): row = y, column = x in token units (DiffTrack's released code swaps them).

Each [blocks x steps] table is min-max normalised (a constant table becomes zeros) and combined as the
harmonic mean HM = 3 / (1/acc + 1/conf + 1/attn), NaN/inf -> 0.

Selection rules (tracking block/step, guidance blocks): `AnalysisResult` in `analysis_result.py`.
"""

from __future__ import annotations

import copy
import datetime as _dt
import math
import os
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..attention import AttentionController
from ..attention.capture import AttentionCapture
from ..backbones import VideoBackbone, backbone_for, condition_kwargs, image_pixels, move_condition
from ..backbones.profiles import DEFAULT_CONTENT_WEIGHT, PRE_ROPE_DESCRIPTORS, TRACKING_DESCRIPTORS
from ..backbones.base import TokenGrid
from ..metrics.tracking import pck
from .analysis_data import AnalysisClip, load_analysis_clips, read_reference_tracks
from .analysis_result import EXTRAS, METRICS, AnalysisResult, harmonic_mean, minmax_normalise
from .matching import CorrespondenceAccumulator
from .tracks import latent_to_pixel_tracks, pixels_to_token_coords

__all__ = [
    "AnalysisResult",
    "analyze_layers",
    "attention_scores",
    "query_token_indices",
    "token_frame_visibility",
    "moving_points",
    "minmax_normalise",
    "harmonic_mean",
    "default_steps",
    "default_threshold_px",
]

#: logits held at once while scoring the query rows (elements, fp32)
SCORE_CHUNK_ELEMENTS = 1 << 24


# ---------------------------------------------------------------------- defaults
def default_steps(num_inference_steps: int, count: int = 5) -> list[int]:
    """`count` step indices spread evenly over the schedule, first and last included (0 = noisiest)."""
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    return sorted({int(round(s)) for s in np.linspace(0, num_inference_steps - 1, min(count, num_inference_steps))})


def default_threshold_px(height: int, width: int, pixels_per_token: int) -> float:
    """DiffTrack's 8 px at 480x720 scaled to the clip (8 * min(H, W) / 480). Below a quarter token that asks
    for a precision the token-quantised argmax tracks cannot give (the toy world's 64 px clips: ~1 px), so
    one token (`pixels_per_token`) is used instead."""
    scaled = 8.0 * min(height, width) / 480.0
    return float(pixels_per_token) if scaled < pixels_per_token / 4 else scaled


# ---------------------------------------------------------------------- per-capture scores
def query_token_indices(points_px, grid: TokenGrid, pixels_per_token: int) -> torch.Tensor:
    """Frame-0 token index (row * width + column) holding each (x, y) pixel point: [N] long.

    x picks the column and y the row; points off the grid are clamped to its border tokens.
    """
    points = torch.as_tensor(np.asarray(points_px, dtype=np.float32)).reshape(-1, 2)
    coords = pixels_to_token_coords(points, pixels_per_token).round().long()
    cols = coords[:, 0].clamp(0, grid.width - 1)
    rows = coords[:, 1].clamp(0, grid.height - 1)
    return rows * grid.width + cols


def token_frame_visibility(visibility: np.ndarray, num_token_frames: int, temporal_stride: int) -> np.ndarray:
    """[N, F'] bool: the point is visible in every RGB frame of latent frame f (0 <- 0, f <- s*f-s+1 .. s*f)."""
    visibility = np.asarray(visibility, bool)
    out = np.zeros((visibility.shape[0], num_token_frames), dtype=bool)
    for f in range(num_token_frames):
        first = 0 if f == 0 else temporal_stride * f - (temporal_stride - 1)
        frames = range(first, min(temporal_stride * f + 1, visibility.shape[1]))
        out[:, f] = visibility[:, list(frames)].all(axis=1) if len(frames) else False
    return out


def attention_scores(capture: AttentionCapture, tokens: torch.Tensor, visible_frames: np.ndarray,
                     sample: int = 0, chunk_elements: int = SCORE_CHUNK_ELEMENTS) -> dict[str, np.ndarray]:
    """Per-point confidence and attention mass of frame-0 query rows `tokens` ([N] frame-0 token indices).

    a = mean over heads of softmax over ALL keys (text first where the model has joint text, then every
    frame) of q.k / sqrt(d). Returns [N] arrays: "confidence" (mean over frames f >= 1 visible in
    `visible_frames` [N, F'] of max_x a(frame f); NaN where no such frame), "attention" (mass on frames >= 1),
    "own_frame_attention", "text_attention" (0 without text keys), "own_frame_confidence", "text_confidence"
    (NaN without text keys).
    """
    grid = capture.grid
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    query = capture.video_query()[sample][:, tokens.to(capture.query.device)]  # [H, N, D]
    video_keys = capture.video_key()[sample]  # [H, F'*P, D]
    text_keys = capture.text_key()
    text_len = 0 if text_keys is None else text_keys.shape[2]
    keys = video_keys if text_keys is None else torch.cat([text_keys[sample], video_keys], dim=1)
    heads, n, dim = query.shape
    probs = torch.zeros(n, keys.shape[1], dtype=torch.float32, device=query.device)
    step = max(1, chunk_elements // max(1, n * keys.shape[1]))
    for start in range(0, heads, step):
        part = slice(start, start + step)
        logits = torch.bmm(query[part].float(), keys[part].float().transpose(1, 2)) / math.sqrt(dim)
        probs += logits.softmax(dim=-1).sum(dim=0)
        del logits
    probs = (probs / heads).cpu()
    text = probs[:, :text_len]
    video = probs[:, text_len:].reshape(n, grid.frames, grid.tokens_per_frame)
    frame_max, frame_mass = video.amax(dim=-1).numpy(), video.sum(dim=-1).numpy()  # [N, F']
    later = np.where(np.asarray(visible_frames, bool)[:, 1:], frame_max[:, 1:], np.nan)
    with np.errstate(all="ignore"):
        confidence = np.array([np.nanmean(row) if np.isfinite(row).any() else np.nan for row in later])
    return {
        "confidence": confidence,
        "attention": frame_mass[:, 1:].sum(axis=1),
        "own_frame_attention": frame_mass[:, 0],
        "text_attention": text.sum(dim=-1).numpy() if text_len else np.zeros(n),
        "own_frame_confidence": frame_max[:, 0],
        "text_confidence": text.amax(dim=-1).numpy() if text_len else np.full(n, np.nan),
    }


# ---------------------------------------------------------------------- running the model
def _schedule_timesteps(backbone: VideoBackbone, num_inference_steps: int) -> list[float]:
    if backbone.scheduler is None or not hasattr(backbone.scheduler, "set_timesteps"):
        raise ValueError("the layer analysis maps step indices to timesteps with the model's scheduler; pass a "
                         "pipeline (or a backbone with scheduler=)")
    scheduler = copy.deepcopy(backbone.scheduler)
    try:
        scheduler.set_timesteps(num_inference_steps)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{type(scheduler).__name__}.set_timesteps({num_inference_steps}) failed ({exc}); the "
                         "layer analysis needs a scheduler whose schedule depends on the step count only") from exc
    return [float(t) for t in scheduler.timesteps]


def _prompt_embeds(backbone: VideoBackbone, caption: str, max_sequence_length: int | None, device, dtype):
    if max_sequence_length is None:
        # CogVideoX's joint sequence is built for exactly max_text_seq_length text slots
        max_sequence_length = int(getattr(backbone.config, "max_text_seq_length", 0) or 512)
    embeds = backbone.encode_prompt([caption], max_sequence_length=max_sequence_length, device=device)
    return embeds.to(device, dtype)


def _module_device_dtype(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(module.parameters())
    return param.device, param.dtype


def _encode_clip(backbone: VideoBackbone, frames: np.ndarray) -> torch.Tensor:
    """uint8 [F, H, W, 3] -> normalised clip latents [1, C, F', h, w] (one causal-VAE pass, posterior mode)."""
    if backbone.vae is None:
        raise ValueError("the layer analysis encodes clips with the VAE: pass a pipeline (or a backbone with vae=)")
    device, dtype = _module_device_dtype(backbone.vae)
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    x = (x.permute(3, 0, 1, 2).float() / 127.5 - 1.0).unsqueeze(0).to(dtype)  # [1, 3, F, H, W]
    return backbone.normalize_latents(backbone.vae.encode(x).latent_dist.mode())


def _usable_frames(backbone: VideoBackbone, clip: AnalysisClip, frames: np.ndarray) -> int:
    s, r = backbone.pixels_per_token, backbone.vae_scale_temporal
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"clip {clip.clip_id!r}: frames must be uint8 [F, H, W, 3], got {frames.shape}")
    if frames.shape[1] % s or frames.shape[2] % s:
        raise ValueError(f"clip {clip.clip_id!r}: frame size {frames.shape[1]}x{frames.shape[2]} must be divisible "
                         f"by {s} px per token; resize or crop the videos (and their tracks) first")
    if clip.tracks.shape[1] != frames.shape[0]:
        raise ValueError(f"clip {clip.clip_id!r}: reference tracks cover {clip.tracks.shape[1]} frames, the video "
                         f"has {frames.shape[0]}; track every frame of the video")
    return r * ((frames.shape[0] - 1) // r) + 1  # the causal VAE takes r*k+1 frames: later ones are dropped


def moving_points(tracks: np.ndarray, visibility: np.ndarray, pixels_per_token: float) -> np.ndarray:
    """[N] bool: the point's visible positions get at least one token away from where it starts."""
    shift = np.linalg.norm(np.asarray(tracks, np.float64) - np.asarray(tracks, np.float64)[:, :1], axis=-1)
    return (np.where(np.asarray(visibility, bool), shift, 0.0) >= pixels_per_token).any(axis=1)


def _query_rows(visibility: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of reference points visible in frame 0 (DiffTrack's "first" mode), at most `max_points`, evenly."""
    rows = np.flatnonzero(visibility[:, 0])
    if len(rows) > max_points:
        rows = rows[np.linspace(0, len(rows) - 1, max_points).round().astype(int)]
    return rows


class _ClipScorer:
    """Capture consumer: per block, PCK of the q-k tracks and the query rows' attention scores, reduced on the
    spot so no block's q/k outlive its attention call."""

    def __init__(self, clip_tracks: np.ndarray, visibility: np.ndarray, threshold_px: float,
                 pixels_per_token: int, temporal_stride: int, descriptor: str = "qk",
                 content_weight: float = DEFAULT_CONTENT_WEIGHT):
        self.descriptor, self.content_weight = descriptor, content_weight
        self.pre_rope = descriptor in PRE_ROPE_DESCRIPTORS  # read by controller.capture
        self.tracks, self.visibility = clip_tracks, visibility
        self.queries = clip_tracks[:, 0]
        self.threshold_px = threshold_px
        self.pixels_per_token, self.temporal_stride = pixels_per_token, temporal_stride
        self.rows: dict[int, dict[str, float]] = {}

    def __call__(self, capture: AttentionCapture) -> None:
        grid = capture.grid
        acc = CorrespondenceAccumulator([capture.block], descriptor=self.descriptor,
                                        content_weight=self.content_weight)
        acc(capture)
        latent_tracks = acc.tracks(self.queries, self.pixels_per_token)
        pixel_tracks = latent_to_pixel_tracks(latent_tracks, num_frames=self.tracks.shape[1],
                                              temporal_stride=self.temporal_stride).numpy()
        del acc
        tokens = query_token_indices(self.queries, grid, self.pixels_per_token)
        visible = token_frame_visibility(self.visibility, grid.frames, self.temporal_stride)
        scores = attention_scores(capture, tokens, visible)
        with np.errstate(all="ignore"):
            row = {name: float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
                   for name, values in scores.items()}
        row["accuracy"] = pck(pixel_tracks, self.tracks, self.visibility, self.threshold_px)
        moving = moving_points(self.tracks, self.visibility, self.pixels_per_token)
        row["moving_accuracy"] = (pck(pixel_tracks[moving], self.tracks[moving], self.visibility[moving],
                                      self.threshold_px) if moving.any() else float("nan"))
        self.rows[capture.block] = row


def _as_clips(videos_or_dataset: Any, reference_tracks: Any, captions: Sequence[str] | None,
              max_clips: int | None) -> tuple[list[AnalysisClip], list[dict[str, str]], str]:
    if isinstance(videos_or_dataset, (str, os.PathLike)):
        clips, skipped = load_analysis_clips(videos_or_dataset, reference_tracks, max_clips)
        return clips, skipped, str(videos_or_dataset)
    items = list(videos_or_dataset)
    if items and all(isinstance(item, AnalysisClip) for item in items):
        return items[:max_clips] if max_clips else items, [], "AnalysisClip list"
    if reference_tracks is None or len(reference_tracks) != len(items):
        raise ValueError("give reference_tracks: one (tracks [N, F, 2], visibility [N, F]) pair, dict or npz path "
                         "per video, e.g. CoTracker tracks of a grid of frame-0 points")
    clips = []
    for i, (frames, ref) in enumerate(zip(items, reference_tracks)):
        if isinstance(ref, (str, os.PathLike)):
            tracks, visibility = read_reference_tracks(ref)
        elif isinstance(ref, dict):
            tracks, visibility = ref["tracks"], ref["visibility"]
        else:
            tracks, visibility = ref
        caption = captions[i] if captions is not None else ""
        clips.append(AnalysisClip(f"clip_{i}", np.asarray(tracks, np.float32), np.asarray(visibility, bool),
                                  caption, frames=np.asarray(frames)))
    return clips[:max_clips] if max_clips else clips, [], f"{len(items)} given videos"


def _check_steps(steps: Sequence[int] | None, num_inference_steps: int) -> list[int]:
    if steps is None:
        return default_steps(num_inference_steps)
    out = []
    for s in steps:
        if not -num_inference_steps <= int(s) < num_inference_steps:
            raise ValueError(f"step {s} is outside the {num_inference_steps}-step schedule "
                             f"(0..{num_inference_steps - 1}, or negative from the end)")
        out.append(int(s) % num_inference_steps)
    if not out:
        raise ValueError("give at least one step to analyse")
    return sorted(set(out))


def analyze_layers(
    pipe: Any,
    videos_or_dataset: Any,
    reference_tracks: Any = None,
    blocks: Sequence[int] | None = None,
    steps: Sequence[int] | None = None,
    num_inference_steps: int = 50,
    mode: str = "real",
    threshold_px: float | None = None,
    *,
    captions: Sequence[str] | None = None,
    use_captions: bool = True,
    max_sequence_length: int | None = None,
    max_clips: int | None = None,
    max_points: int = 400,
    seed: int = 0,
    descriptor: str = "qk",
    content_weight: float = DEFAULT_CONTENT_WEIGHT,
    command: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> AnalysisResult:
    """Accuracy, cross-frame confidence and attention per (block, step) of `pipe`'s video self-attention.

    Args:
        pipe: a Wan / CogVideoX pipeline (or a backbone with VAE, text encoder and scheduler).
        videos_or_dataset: a dataset folder (reference tracks from its `gt_file` metadata column or
            `reference_tracks` = a folder / npz), a list of `AnalysisClip`, or a list of uint8 [F, H, W, 3] videos
            with `reference_tracks` = one (tracks [N, F, 2] px, visibility [N, F]) per video.
        blocks: blocks to analyse (default all); steps: step indices of a `num_inference_steps` schedule
            (0 = noisiest; default 5 spread over it, the last included).
        mode: "real" (re-noise each clip's clean latents to every step; the only mode implemented).
        threshold_px: PCK threshold; default `default_threshold_px` of each clip's size.
        use_captions: condition on each clip's caption (else the empty prompt).
        max_points: query points per clip (reference points visible in frame 0, evenly subsampled).
        seed: noise seed; clip i uses seed + i, the same noise at every step.
        descriptor, content_weight: matching descriptor of the accuracy tables, "qk" (DiffTrack's, after RoPE),
            "qk_no_rope" or "qk_mixed" (with its pre-RoPE weight); confidence and attention always use the
            attention's own (post-RoPE) q and k.
        command: recorded in `produced_by` (the CLI passes its command line).
        progress: called with a short line per clip.
    """
    if mode != "real":
        raise ValueError(f"mode {mode!r} is not implemented; use mode='real': generate the videos first, track them "
                         "with an external tracker (e.g. CoTracker) and analyse them as real clips")
    if descriptor not in TRACKING_DESCRIPTORS:
        raise ValueError(f"descriptor {descriptor!r}: the analysis scores one of {', '.join(TRACKING_DESCRIPTORS)}")
    backbone = pipe if isinstance(pipe, VideoBackbone) else backbone_for(pipe)
    if backbone.patch_size[0] != 1:
        raise ValueError(f"the layer analysis needs one token frame per latent frame; this {backbone.family} model "
                         f"patches {backbone.patch_size[0]} latent frames together")
    wanted = range(backbone.num_blocks) if blocks is None else blocks
    block_list = sorted({backbone.check_block(int(b)) for b in wanted})
    if not block_list:
        raise ValueError("give at least one block to analyse")
    step_list = _check_steps(steps, num_inference_steps)
    schedule = _schedule_timesteps(backbone, num_inference_steps)
    timesteps = [schedule[s] for s in step_list]
    clips, skipped, data = _as_clips(videos_or_dataset, reference_tracks, captions, max_clips)
    device, dtype = _module_device_dtype(backbone.transformer)
    controller = AttentionController(backbone)
    names = METRICS + EXTRAS
    per_clip: list[np.ndarray] = []  # each [metrics, blocks, steps]
    thresholds: list[float] = []
    s, r = backbone.pixels_per_token, backbone.vae_scale_temporal
    for index, clip in enumerate(clips):
        frames = np.asarray(clip.read_frames())
        usable = _usable_frames(backbone, clip, frames)
        query = _query_rows(clip.visibility[:, :usable], max_points)
        if not len(query):
            skipped.append({"clip": clip.clip_id, "reason": "no reference point visible in frame 0"})
            continue
        tracks, visibility = clip.tracks[query, :usable], clip.visibility[query, :usable]
        threshold = float(threshold_px) if threshold_px is not None else default_threshold_px(
            frames.shape[1], frames.shape[2], s)
        thresholds.append(threshold)
        table = np.full((len(names), len(block_list), len(step_list)), np.nan)
        with torch.no_grad():
            latents = _encode_clip(backbone, frames[:usable]).to(device, dtype)
            # an image-to-video model: the clip's own first frame is its conditioning image
            condition = move_condition(backbone.encode_condition(image_pixels(frames[0]), usable), device, dtype)
            embeds = _prompt_embeds(backbone, clip.caption if use_captions else "", max_sequence_length, device, dtype)
            noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed + index))
            noise = noise.to(device, dtype)
            for col, timestep in enumerate(timesteps):
                t = torch.tensor([timestep], device=device)
                scorer = _ClipScorer(tracks, visibility, threshold, s, r, descriptor, content_weight)
                with controller.capture(scorer, blocks=block_list, attention="self"):
                    backbone.predict(backbone.add_noise(latents, noise, t), t, embeds, **condition_kwargs(condition))
                for row, block in enumerate(block_list):
                    table[:, row, col] = [scorer.rows[block][name] for name in names]
        per_clip.append(table)
        if progress is not None:
            progress(f"clip {index + 1}/{len(clips)} {clip.clip_id}: best PCK {np.nanmax(table[0]):.1f}")
    if not per_clip:
        raise ValueError(f"no clip could be analysed: {skipped}")
    with warnings.catch_warnings():  # all-NaN cells are expected (e.g. no text keys in Wan's attn1)
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(np.stack(per_clip), axis=0)
    unique = sorted(set(thresholds))
    produced_by = {
        "command": command or "motionguide.correspondence.analyze_layers (Python API)",
        "data": data,
        "clips": len(per_clip),
        "threshold_px": unique[0] if len(unique) == 1 else unique,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": mode,
        "blocks": block_list,
        "steps": step_list,
        "num_inference_steps": num_inference_steps,
        "seed": seed,
        "descriptor": descriptor,
        **({"content_weight": content_weight} if descriptor == "qk_mixed" else {}),
        "prompt": "clip captions" if use_captions else "empty",
        "rule": "tracking: argmax PCK at the last analysed step (ties: HM); guidance: top-3 mean HM over the later "
                "half of the analysed steps",
    }
    if skipped:
        produced_by["skipped"] = skipped
    return AnalysisResult(blocks=block_list, steps=step_list, num_inference_steps=num_inference_steps,
                          tables={name: mean[i] for i, name in enumerate(names)}, family=backbone.family,
                          num_blocks=backbone.num_blocks, num_heads=backbone.num_heads, timesteps=timesteps,
                          produced_by=produced_by)

