"""Zero-shot point tracking with a video DiT: real videos and the model's own generations.

Real videos (DiffTrack's TAP-Vid protocol): every RGB frame is VAE-encoded alone as a 1-frame clip, so each
becomes one latent frame; frame 0 plus the next `chunk_size` frames are stacked as one latent clip (positions
0..n whatever the real gaps), normalised like training latents, and run through one transformer forward at a
late timestep with an empty prompt. Tracks come from the frame-0 -> frame-j costs of the tracking block; no
temporal interpolation.

Generated videos: the pipeline runs as usual and the tracking block's q/k are captured at one step; latent-frame
tracks are interpolated to pixel frames with the causal VAE map (`latent_to_pixel_tracks`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from ..attention import AttentionController
from ..backbones import (LayerProfile, VideoBackbone, backbone_for, condition_kwargs, image_pixels, move_condition,
                          warn_if_provisional)
from ..backbones.profiles import DEFAULT_CONTENT_WEIGHT
from .matching import CorrespondenceAccumulator
from .profiles import default_tracking_timestep, resolve_profile
from .tracks import check_query_points, latent_to_pixel_tracks


def _backbone(model: Any) -> VideoBackbone:
    return model if isinstance(model, VideoBackbone) else backbone_for(model)


def _module_device_dtype(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """The module's device and compute dtype: diffusers' `dtype` skips the modules it keeps in fp32 in a bf16
    model (the first parameter may be one of them)."""
    param = next(module.parameters())
    return param.device, getattr(module, "dtype", param.dtype)


def encode_frames_individually(backbone: VideoBackbone, frames_uint8: np.ndarray, batch: int = 4) -> torch.Tensor:
    """Each RGB frame [F, H, W, 3] (uint8) encoded alone as a 1-frame clip -> normalised latents [F, C, h, w]."""
    if backbone.vae is None:
        raise ValueError("real-video tracking encodes frames with the VAE: pass a pipeline (or a backbone with vae=)")
    frames = np.asarray(frames_uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [F, H, W, 3]; got {frames.dtype} {frames.shape}")
    device, dtype = _module_device_dtype(backbone.vae)
    latents = []
    for start in range(0, len(frames), batch):
        x = torch.from_numpy(frames[start : start + batch]).to(device)
        x = (x.permute(0, 3, 1, 2).float() / 127.5 - 1.0).to(dtype).unsqueeze(2)  # [b, 3, 1, H, W]
        encoded = backbone.vae.encode(x).latent_dist.mode()  # [b, C, 1, h, w]
        latents.append(backbone.normalize_latents(encoded)[:, :, 0])
    return torch.cat(latents, dim=0)


def _resized_rgb(image: Any, height: int, width: int) -> np.ndarray:
    """A PIL image or uint8 [H, W, 3] array as uint8 [height, width, 3], resized (Lanczos) as the stock
    pipelines' image processor resizes a conditioning image."""
    from PIL import Image

    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    pil = pil.convert("RGB")
    if pil.size != (width, height):
        pil = pil.resize((width, height), resample=Image.LANCZOS)
    return np.asarray(pil, dtype=np.uint8)


def _first_frame_condition(backbone: VideoBackbone, frame0: np.ndarray, latent_frames: int,
                           cache: dict[int, dict[str, torch.Tensor]], device, dtype) -> dict[str, torch.Tensor]:
    """An image-to-video model's condition for a chunk of `latent_frames` (frame 0 first): the video's own first
    frame as the conditioning image, as the stock pipeline would take it; {} for text-to-video."""
    if not backbone.conditions_on_image:
        return {}
    if latent_frames not in cache:
        num_frames = 1 + backbone.vae_scale_temporal * (latent_frames - 1)
        cache[latent_frames] = move_condition(backbone.encode_condition(image_pixels(frame0), num_frames),
                                              device, dtype)
    return cache[latent_frames]


def _empty_prompt(backbone: VideoBackbone, max_sequence_length: int | None, device) -> torch.Tensor:
    if max_sequence_length is None:
        # CogVideoX's joint sequence is built for exactly max_text_seq_length text slots
        max_sequence_length = int(getattr(backbone.config, "max_text_seq_length", 0) or 512)
    return backbone.encode_prompt([""], max_sequence_length=max_sequence_length, device=device)


def _descriptor_settings(resolved: LayerProfile | None, descriptor: str | None,
                         content_weight: float | None) -> dict[str, Any]:
    """Descriptor and content weight: as given, else the profile's when one was read (a profile was passed or
    supplied the block), else DiffTrack's "qk": a profile's descriptor was chosen together with its block."""
    tracking = resolved.tracking if resolved is not None else None
    if tracking is not None:
        descriptor = descriptor or tracking.descriptor
        content_weight = tracking.content_weight if content_weight is None else content_weight
    return {"descriptor": descriptor or "qk",
            "content_weight": DEFAULT_CONTENT_WEIGHT if content_weight is None else content_weight}


def _chunks(num_frames: int, chunk_size: int) -> list[list[int]]:
    """Frame 0 plus contiguous runs of `chunk_size` later frames: [0, 1..n], [0, n+1..2n], ..."""
    return [[0, *range(start, min(start + chunk_size, num_frames))] for start in range(1, num_frames, chunk_size)]


def track_video(
    pipe_or_backbone: Any,
    frames_uint8: np.ndarray,
    query_points_px,
    block: int | None = None,
    timestep: float | None = None,
    chunk_size: int = 12,
    *,
    profile: str | os.PathLike | LayerProfile | None = None,
    prompt_embeds: torch.Tensor | None = None,
    max_sequence_length: int | None = None,
    descriptor: str | None = None,
    content_weight: float | None = None,
    direction: str = "bidirectional",
    temperature: str | float = "sqrt_dim",
    method: str = "argmax",
    add_noise: bool = False,
    seed: int = 0,
    vae_batch: int = 4,
    image: Any = None,
) -> np.ndarray:
    """Track frame-0 query points through a real video: [N, F, 2] (x, y) pixels, frame 0 = the queries.

    Args:
        frames_uint8: [F, H, W, 3] uint8 frames; H and W divisible by the model's pixels per token.
        query_points_px: [N, 2] (x, y) positions in frame 0.
        block, timestep: tracking block and transformer timestep (0..1000); default from the layer profile
            (`profile`, else the model's shipped one): its tracking block and step.
        chunk_size: later frames per transformer forward (DiffTrack uses 12 on CogVideoX, up to 20 fits Wan).
        prompt_embeds: precomputed empty-prompt embeddings (when the pipeline has no text encoder).
        add_noise: forward-noise the clean latents to `timestep` (DiffTrack's default is clean latents).
        descriptor, content_weight: "qk", "qk_no_rope", "qk_mixed" or "output" and the pre-RoPE weight of
            "qk_mixed" (see `CorrespondenceAccumulator`); default the profile's when one is read (passed, or the
            model's shipped one supplying the block), else DiffTrack's "qk".
        image: an image-to-video model's conditioning image (PIL image or uint8 [H, W, 3], resized to the frames
            as the pipeline resizes its image); default the video's own first frame. Refused for text-to-video.
    """
    backbone = _backbone(pipe_or_backbone)
    if image is not None and not backbone.conditions_on_image:
        raise ValueError(f"image=: {backbone.family} here is a text-to-video model and takes no conditioning image")
    if backbone.patch_size[0] != 1:
        raise ValueError("real-video tracking needs one token frame per encoded frame (temporal patch size 1); "
                         f"{backbone.family} here patches {backbone.patch_size[0]} latent frames together")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    resolved = None
    if block is None or timestep is None or profile is not None:
        resolved = resolve_profile(backbone, profile, "tracking without block= and timestep=")
        if resolved.tracking is None and (block is None or timestep is None):
            raise ValueError(f"profile {resolved.name!r} has no tracking section; pass block= and timestep=")
        if block is None:
            warn_if_provisional(resolved, "tracking", "tracking")
        block = resolved.tracking.block if block is None else block
        timestep = default_tracking_timestep(backbone, resolved) if timestep is None else timestep
    matching = _descriptor_settings(resolved, descriptor, content_weight)
    backbone = backbone.for_timestep(timestep)  # a two-expert model (Wan2.2 A14B): the expert that runs t
    frames = np.asarray(frames_uint8)
    s = backbone.pixels_per_token
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [F, H, W, 3], got shape {frames.shape}")
    if frames.shape[0] < 2:
        raise ValueError(f"tracking needs a video of at least 2 frames; this one has {frames.shape[0]}")
    if frames.shape[1] % s or frames.shape[2] % s:
        raise ValueError(f"frame size {frames.shape[1]}x{frames.shape[2]} must be divisible by {s} px per token; "
                         "resize or crop the video first")
    check_query_points(query_points_px, frames.shape[1], frames.shape[2])
    device, dtype = _module_device_dtype(backbone.transformer)
    queries = np.asarray(query_points_px, dtype=np.float32).reshape(-1, 2)
    controller = AttentionController(backbone)
    with torch.no_grad():
        latents = encode_frames_individually(backbone, frames, batch=vae_batch).to(device, dtype)
        embeds = prompt_embeds if prompt_embeds is not None else _empty_prompt(backbone, max_sequence_length, device)
        embeds = embeds.to(device, dtype)
        t = torch.tensor([float(timestep)], device=device)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        tracks = np.empty((len(queries), len(frames), 2), dtype=np.float32)
        tracks[:, 0] = queries
        conditions: dict[int, dict[str, torch.Tensor]] = {}
        first = frames[0] if image is None else _resized_rgb(image, frames.shape[1], frames.shape[2])
        for chunk in _chunks(len(frames), chunk_size):
            clip = latents[chunk].permute(1, 0, 2, 3).unsqueeze(0)  # [1, C, n, h, w]
            if add_noise:
                noise = torch.randn(clip.shape, generator=generator).to(device, dtype)
                clip = backbone.add_noise(clip, noise, t)
            acc = CorrespondenceAccumulator([block], direction=direction, temperature=temperature, **matching)
            condition = _first_frame_condition(backbone, first, len(chunk), conditions, device, dtype)
            with acc.capturing(controller):
                backbone.predict(clip, t, embeds, **condition_kwargs(condition))
            chunk_tracks = acc.tracks(queries, s, method=method)  # [N, n, 2]
            tracks[:, chunk[1:]] = chunk_tracks[:, 1:].numpy()
    return tracks


def track_generation(
    pipe: Any,
    query_points_px,
    block: int | None = None,
    step: int | None = None,
    *,
    profile: str | os.PathLike | LayerProfile | None = None,
    descriptor: str | None = None,
    content_weight: float | None = None,
    direction: str = "bidirectional",
    temperature: str | float = "sqrt_dim",
    method: str = "argmax",
    **call_kwargs: Any,
) -> tuple[np.ndarray, Any]:
    """Generate with a stock pipeline and track frame-0 query points through the result.

    q/k of `block` are captured at sampling step `step` (negative counts from the end) of the conditional pass;
    defaults come from the layer profile. Returns (tracks [N, F, 2] in pixels over all generated frames, the
    pipeline output). Pass the pipeline's own arguments (prompt, num_frames, num_inference_steps, ...).
    descriptor, content_weight: as in `track_video` (default the read profile's, else DiffTrack's "qk").
    """
    if "callback_on_step_end" in call_kwargs:
        raise ValueError("track_generation drives the step gate with callback_on_step_end; do not pass your own")
    backbone = backbone_for(pipe)
    num_steps = int(call_kwargs.get("num_inference_steps", 50))
    resolved = None
    if block is None or step is None or profile is not None:
        resolved = resolve_profile(backbone, profile, "tracking without block= and step=")
        if resolved.tracking is None and (block is None or step is None):
            raise ValueError(f"profile {resolved.name!r} has no tracking section; pass block= and step=")
        if block is None:
            warn_if_provisional(resolved, "tracking", "tracking")
        block = resolved.tracking.block if block is None else block
        if step is None:  # the profile's step, moved to the same place on this call's schedule
            total = resolved.tracking.num_inference_steps
            step = round((resolved.tracking.step % total) * (num_steps - 1) / max(total - 1, 1))
    matching = _descriptor_settings(resolved, descriptor, content_weight)
    if not -num_steps <= step < num_steps:
        raise ValueError(f"step {step} is outside the {num_steps} sampling steps")
    wanted = step % num_steps
    height, width = call_kwargs.get("height"), call_kwargs.get("width")
    if height is not None and width is not None:  # else the pipeline's default size, checked after sampling
        check_query_points(query_points_px, int(height), int(width))
    acc = CorrespondenceAccumulator([block], direction=direction, temperature=temperature, **matching)
    gate = {"active": wanted == 0}

    def consume(capture):
        if gate["active"]:
            acc(capture)

    def on_step_end(_pipe, index, _t, _kwargs):
        gate["active"] = index + 1 == wanted  # the callback runs after step `index`
        return {}

    controller = AttentionController(backbone)
    with controller.capture(consume, blocks=[block], attention="self", pre_rope=acc.pre_rope):
        output = pipe(callback_on_step_end=on_step_end, **call_kwargs)
    latent = acc.tracks(query_points_px, backbone.pixels_per_token, method=method)
    # the causal VAE decodes F' latent frames to s*(F'-1)+1 frames, which is what the pipeline returns
    pixel = latent_to_pixel_tracks(latent, temporal_stride=backbone.vae_scale_temporal)
    return pixel.numpy(), output
