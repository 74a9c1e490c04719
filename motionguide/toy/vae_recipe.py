"""Recipe for the toy model's autoencoder: a small `AutoencoderKLWan` trained on the toy world on a CPU.

Choices, and why (see shared notes on this machine):
- 4x spatial, 4x causal temporal compression, z_dim 8: 17x64x64 clips -> 5x16x16 latents, so a patch-2
  transformer sees an 8x8 token grid per latent frame (8 px per token).
- Curriculum: single frames first (cheap; learns colour and shape), then full 17-frame clips through
  `vae.encode` / `vae.decode` so every causal chunk is trained (short clips leave late chunks broken).
- Posterior mode while the autoencoder forms, then samples with a tiny KL weight; lr 3e-4; zero biases and
  x4 weights on the layers around the bottleneck at init; object pixels weighted 5x in the loss. From-scratch
  defaults were seen to stall at the background-only level (~19 dB).
- Latent statistics (`latents_mean` / `latents_std`) are measured after training and written to the config,
  where `WanPipeline` reads them.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

TOY_VAE_CONFIG = dict(
    base_dim=16,
    z_dim=8,
    dim_mult=[1, 2, 4],
    num_res_blocks=1,
    attn_scales=[],
    temperal_downsample=[True, True],
    in_channels=3,
    out_channels=3,
    scale_factor_spatial=4,
    scale_factor_temporal=4,
)


def build_toy_vae(seed: int = 0):
    """A fresh toy `AutoencoderKLWan` with the bottleneck layers scaled x4 and their biases zeroed."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(**TOY_VAE_CONFIG)
    for module in (vae.encoder.conv_out, vae.quant_conv, vae.post_quant_conv, vae.decoder.conv_in):
        with torch.no_grad():
            module.weight.mul_(4.0)
            if module.bias is not None:
                module.bias.zero_()
    return vae


def render_pool(num_clips: int, seed: int, num_frames: int = 17, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Clips uint8 [N, F, H, W, 3] and the union of object masks bool [N, F, H, W], rendered in memory."""
    from .render import render_clip
    from .sampling import sample_clip_spec

    rng = np.random.default_rng(seed)
    frames = np.empty((num_clips, num_frames, size, size, 3), np.uint8)
    masks = np.empty((num_clips, num_frames, size, size), bool)
    for i in tqdm(range(num_clips), desc="rendering toy clips", leave=False):
        spec = sample_clip_spec(rng, num_objects=int(rng.integers(1, 3)), num_frames=num_frames, height=size,
                                width=size)
        clip = render_clip(spec)
        frames[i], masks[i] = clip.frames, clip.masks.any(axis=1)
    return frames, masks


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [B, F, H, W, 3] -> float [B, 3, F, H, W] in [-1, 1] (the VAE's range)."""
    return torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """PSNR in dB on the [-1, 1] scale (peak-to-peak 2), optionally over masked pixels only."""
    err = (a - b).square().mean(dim=1)  # over channels -> [B, F, H, W]
    mse = err[mask].mean() if mask is not None else err.mean()
    return float(10 * torch.log10(4.0 / mse.clamp_min(1e-12)))


def reconstruct(vae, x: torch.Tensor, sample: bool = False) -> torch.Tensor:
    """(decoded clip, posterior) of `x`, decoding the posterior mode, or a sample if `sample`."""
    posterior = vae.encode(x).latent_dist
    z = posterior.sample() if sample else posterior.mode()
    return vae.decode(z).sample, posterior


@torch.no_grad()
def evaluate(vae, frames: np.ndarray, masks: np.ndarray, batch: int = 4) -> dict:
    """PSNR of mode reconstructions over all and object pixels; leaves the VAE in train mode."""
    vae.eval()
    outs = []
    for i in range(0, len(frames), batch):
        outs.append(reconstruct(vae, to_tensor(frames[i : i + batch]))[0])
    x, y = to_tensor(frames), torch.cat(outs)
    m = torch.from_numpy(masks)
    vae.train()
    return {"psnr_db": psnr(y, x), "psnr_object_db": psnr(y, x, m), "clips": len(frames)}


@torch.no_grad()
def latent_statistics(vae, frames: np.ndarray, batch: int = 8) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of posterior means over clips, for `latents_mean` / `latents_std`."""
    zs = [vae.encode(to_tensor(frames[i : i + batch])).latent_dist.mode() for i in range(0, len(frames), batch)]
    z = torch.cat(zs).transpose(0, 1).flatten(1)
    return z.mean(1).tolist(), z.std(1).clamp_min(1e-3).tolist()


def _loss(vae, x: torch.Tensor, m: torch.Tensor, sample: bool, kl_weight: float,
          object_weight: float = 5.0) -> torch.Tensor:
    y, posterior = reconstruct(vae, x, sample=sample)
    weight = 1.0 + (object_weight - 1.0) * m.unsqueeze(1).float()
    rec = ((y - x).abs() * weight).mean() + ((y - x).square() * weight).mean()
    if sample and kl_weight > 0:
        rec = rec + kl_weight * posterior.kl().mean()
    return rec


def train_toy_vae(out_dir: str | os.PathLike, frame_steps: int = 1200, clip_steps: int = 450, seed: int = 0,
                  pool_clips: int = 1200, eval_clips: int = 48, lr: float = 3e-4, init_from: str | None = None,
                  clip_batch: int = 4, object_weight: float = 5.0, log=print) -> dict:
    """Train, measure held-out PSNR, set latent statistics, save in diffusers format under `out_dir`.

    `init_from`: continue from a saved toy VAE folder (e.g. more clip steps after a first run).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    frames, masks = render_pool(pool_clips, seed=seed)
    eval_frames, eval_masks = render_pool(eval_clips, seed=seed + 10_000)
    if init_from:
        from diffusers import AutoencoderKLWan

        vae = AutoencoderKLWan.from_pretrained(init_from).train()
    else:
        vae = build_toy_vae(seed).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    total = frame_steps + clip_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    start = time.time()
    history = []
    bar = tqdm(range(total), desc="toy VAE")
    for step in bar:
        if step < frame_steps:  # single frames, batch 16
            idx, f = rng.integers(0, len(frames), 16), rng.integers(0, frames.shape[1], 16)
            x = to_tensor(frames[idx, f][:, None])
            m = torch.from_numpy(masks[idx, f][:, None])
        else:  # full clips, batch 4
            idx = rng.integers(0, len(frames), clip_batch)
            x, m = to_tensor(frames[idx]), torch.from_numpy(masks[idx])
        sample = step >= frame_steps // 2
        loss = _loss(vae, x, m, sample=sample, kl_weight=1e-6, object_weight=object_weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % 300 == 0 or step + 1 == total:
            metrics = evaluate(vae, eval_frames[:16], eval_masks[:16])
            history.append({"step": step + 1, "minutes": (time.time() - start) / 60, **metrics})
            log(json.dumps(history[-1]))
    vae.eval()
    mean, std = latent_statistics(vae, frames[:256])
    vae.register_to_config(latents_mean=mean, latents_std=std)
    final = evaluate(vae, eval_frames, eval_masks)
    vae.save_pretrained(out_dir / "vae", safe_serialization=True)
    report = {"config": TOY_VAE_CONFIG, "seed": seed, "init_from": init_from, "clip_batch": clip_batch,
              "object_weight": object_weight, "previous": _previous_report(init_from), "frame_steps": frame_steps, "clip_steps": clip_steps,
              "lr": lr, "train_minutes": (time.time() - start) / 60, "heldout": final, "history": history,
              "params": sum(p.numel() for p in vae.parameters())}
    (out_dir / "vae_report.json").write_text(json.dumps(report, indent=2))
    log(f"held-out PSNR {final['psnr_db']:.2f} dB (object pixels {final['psnr_object_db']:.2f} dB)")
    return report


def _previous_report(init_from: str | None) -> dict | None:
    """The report of the run a continued training started from (kept so the whole recipe stays on record)."""
    if not init_from:
        return None
    path = Path(init_from).parent / "vae_report.json"
    return json.loads(path.read_text()) if path.is_file() else None
