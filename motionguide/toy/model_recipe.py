"""Recipe for the toy text-to-video model: a small Wan transformer trained on the toy world on a CPU.

The pieces are real diffusers / transformers classes, so the result loads with `WanPipeline.from_pretrained`:
- the trained toy `AutoencoderKLWan` (see `vae_recipe`), 17x64x64 -> 5x16x16 latents;
- a frozen, randomly initialised `UMT5EncoderModel` with a word-level tokenizer over the toy vocabulary
  (random features still separate words, which is all the captions need);
- a `WanTransformer3DModel` with patch 1x2x2 (8x8 tokens per latent frame), trained with rectified flow
  (x_t = (1 - s) x0 + s eps, target eps - x0), shifted logit-normal timesteps, 10% empty captions for CFG,
  and an EMA of the weights, which is what gets saved;
- prompt embeddings come from the pipeline's own `encode_prompt` at the sampling length, so training and
  sampling see identical text inputs (the Wan transformer has no text mask).
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..files import atomic_write, atomic_write_text

MAX_SEQUENCE_LENGTH = 16
SCHEDULER_SHIFT = 3.0

TOY_TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=4,
    attention_head_dim=32,
    in_channels=8,
    out_channels=8,
    text_dim=64,
    freq_dim=128,
    ffn_dim=512,
    num_layers=6,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=64,
)

TOY_TEXT_CONFIG = dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, relative_attention_num_buckets=8)


def toy_vocabulary() -> list[str]:
    """Every word a toy caption can contain (captions of many sampled clips plus every name)."""
    from .captions import caption_for
    from .sampling import sample_clip_spec
    from .vocab import COLORS, MOTIONS, SHAPES, SPEEDS

    rng = np.random.default_rng(0)
    words = set(COLORS) | set(SHAPES) | set(MOTIONS) | set(SPEEDS) | {"a", "and"}
    for _ in range(400):
        words |= set(caption_for(sample_clip_spec(rng, num_objects=int(rng.integers(1, 3)))).split())
    return sorted(words)


def build_text_components(seed: int = 0):
    """The toy tokenizer (word level, toy vocabulary) and a frozen, seeded random UMT5 encoder."""
    from transformers import UMT5Config, UMT5EncoderModel

    from ..text import word_level_tokenizer

    tokenizer = word_level_tokenizer(toy_vocabulary())
    torch.manual_seed(seed)
    encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **TOY_TEXT_CONFIG)).eval()
    encoder.requires_grad_(False)
    return tokenizer, encoder


def build_pipeline(vae, transformer, tokenizer, text_encoder):
    """A stock `WanPipeline` from the toy parts, with the flow-matching scheduler the model trains for."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=SCHEDULER_SHIFT))


@torch.no_grad()
def encode_pool(vae, frames: np.ndarray, batch: int = 8) -> torch.Tensor:
    """Normalised latents (what the transformer trains on) of uint8 clips [N, F, H, W, 3]."""
    from ..backbones import WanBackbone
    from .vae_recipe import to_tensor

    stats = WanBackbone(torch.nn.Identity(), vae=vae)
    out = [stats.normalize_latents(vae.encode(to_tensor(frames[i : i + batch])).latent_dist.mode())
           for i in tqdm(range(0, len(frames), batch), desc="encoding latents", leave=False)]
    return torch.cat(out)


def object_weight_maps(masks: list[np.ndarray], latent_shape: tuple[int, ...], object_weight: float,
                       groups: Sequence[range]) -> torch.Tensor:
    """Per-latent-pixel loss weights [N, 1, F', h, w]: `object_weight` where an object is (swept over the pixel
    frames of each latent frame, `groups` from `truth.latent_groups`, one latent pixel of margin), 1 elsewhere.
    Objects cover a few percent of a frame, and motion lives only there: without the weight the loss barely
    notices a wrong direction."""
    import torch.nn.functional as F

    from .truth import latent_masks

    h, w = latent_shape[-2:]
    maps = torch.from_numpy(np.stack([latent_masks(m.any(axis=1), groups) for m in masks])).float()
    maps = F.adaptive_max_pool2d(maps, (h, w))
    maps = F.max_pool2d(maps, 3, stride=1, padding=1)
    return (1.0 + (object_weight - 1.0) * maps).unsqueeze(1)


def sample_sigmas(batch: int, generator: torch.Generator, shift: float = SCHEDULER_SHIFT) -> torch.Tensor:
    """Logit-normal noise levels, shifted towards noise as the sampler's schedule is."""
    s = torch.sigmoid(torch.randn(batch, generator=generator))
    return shift * s / (1 + (shift - 1) * s)


def _save_checkpoint(folder: Path, step: int, transformer, ema, history: list) -> None:
    """Weights of the model and its EMA plus the step, written atomically (optimizer moments restart on resume)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for name, module in (("model", transformer), ("ema", ema)):
        state = {k: v.contiguous() for k, v in module.state_dict().items()}
        atomic_write(folder / f"{name}.safetensors", lambda tmp: save_file(state, tmp))
    atomic_write_text(folder / "state.json", json.dumps({"step": step, "history": history}))


def _load_checkpoint(folder: Path, transformer, ema) -> tuple[int, list]:
    from safetensors.torch import load_file

    if not (folder / "state.json").exists():
        return 0, []
    transformer.load_state_dict(load_file(str(folder / "model.safetensors")))
    ema.load_state_dict(load_file(str(folder / "ema.safetensors")))
    state = json.loads((folder / "state.json").read_text())
    return int(state["step"]), list(state["history"])


def train_toy_transformer(vae_dir: str | os.PathLike, out_dir: str | os.PathLike, steps: int = 1800,
                          batch: int = 24, pool_clips: int = 1500, holdout_fraction: float = 0.25, seed: int = 0,
                          lr: float = 3e-4, caption_dropout: float = 0.1, ema_decay: float = 0.998,
                          checkpoint_every: int = 200, init_from: str | os.PathLike | None = None,
                          object_weight: float = 1.0, background: str | None = None,
                          partial_motion_rate: float = 0.2, device: str = "cpu", log=print) -> dict:
    """Train on toy clips whose (colour, shape, motion) triples exclude a held-out set; save the pipeline.

    A checkpoint is written every `checkpoint_every` steps under `out_dir/checkpoint/`; rerunning the same
    command resumes from it (same data pool, same seed; the optimizer moments restart). `init_from`: continue
    training a saved toy pipeline (its transformer starts both the model and its EMA; same holdout seed).
    `object_weight`: loss weight of latent pixels an object covers (see `object_weight_maps`).
    `background` ("plain" / "textured", default both) and `partial_motion_rate` narrow the training world, e.g.
    for a first curriculum stage on plain backgrounds with whole-clip motion.
    `device`: where the transformer trains ("cuda" on a GPU machine); the data, random draws and saved
    files are the same on every device.
    """
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from ..backbones import WanBackbone
    from .truth import latent_groups

    from .dataset import heldout_combinations
    from .render import render_clip
    from .sampling import sample_clip_spec

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vae = AutoencoderKLWan.from_pretrained(Path(vae_dir)).eval()
    tokenizer, text_encoder = build_text_components(seed)
    held = heldout_combinations(seed, holdout_fraction)
    rng = np.random.default_rng(seed)
    frames, captions, masks = [], [], []
    for _ in tqdm(range(pool_clips), desc="rendering training clips", leave=False):
        spec = sample_clip_spec(rng, num_objects=1, holdout=held, background=background,
                                partial_motion_rate=partial_motion_rate)
        clip = render_clip(spec)
        frames.append(clip.frames)
        captions.append(clip.caption)
        masks.append(clip.masks)
    vae.to(device)
    latents = encode_pool(vae, np.stack(frames)).to(device)
    vae.to("cpu")
    groups = latent_groups(WanBackbone(torch.nn.Identity(), vae=vae), len(masks[0]))
    weights = object_weight_maps(masks, tuple(latents.shape), object_weight, groups).to(device)
    del masks
    torch.manual_seed(seed)
    if init_from:
        transformer = WanTransformer3DModel.from_pretrained(Path(init_from) / "transformer").train()
    else:
        transformer = WanTransformer3DModel(**TOY_TRANSFORMER_CONFIG).train()
    pipe = build_pipeline(vae, transformer, tokenizer, text_encoder)
    unique = sorted(set(captions)) + [""]
    with torch.no_grad():
        table = pipe.encode_prompt(unique, do_classifier_free_guidance=False,
                                   max_sequence_length=MAX_SEQUENCE_LENGTH, device="cpu")[0]
    table = table.to(device)
    caption_index = torch.tensor([unique.index(c) for c in captions])
    empty = len(unique) - 1
    transformer.to(device)
    ema = copy.deepcopy(transformer).eval().requires_grad_(False)
    opt = torch.optim.AdamW(transformer.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    ckpt_dir = out_dir / "checkpoint"
    first_step, history = _load_checkpoint(ckpt_dir, transformer, ema)
    if first_step:
        log(f"resuming from {ckpt_dir} at step {first_step}")
    for _ in range(first_step):
        sched.step()
    g = torch.Generator().manual_seed(seed + first_step)
    start = time.time()
    bar = tqdm(range(first_step, steps), desc="toy transformer", initial=first_step, total=steps)
    for step in bar:
        idx = torch.randint(0, len(latents), (batch,), generator=g)
        x0 = latents[idx.to(device)]
        text_idx = caption_index[idx].clone()
        text_idx[torch.rand(batch, generator=g) < caption_dropout] = empty
        noise = torch.randn(x0.shape, generator=g).to(device)
        sigma = sample_sigmas(batch, g).view(-1, 1, 1, 1, 1).to(device)
        xt = (1 - sigma) * x0 + sigma * noise
        pred = transformer(hidden_states=xt, timestep=sigma.flatten() * 1000, encoder_hidden_states=table[text_idx.to(device)],
                           return_dict=False)[0]
        weight = weights[idx.to(device)]
        loss = ((pred.float() - (noise - x0)).square() * weight).mean() / weight.mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"toy transformer loss became {loss.item()} at step {step}; lower --lr")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(transformer.parameters()), 1 - ema_decay)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
            history.append({"step": step, "loss": loss.item(), "minutes": (time.time() - start) / 60})
        if (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            _save_checkpoint(ckpt_dir, step + 1, transformer, ema, history)
    final = build_pipeline(vae, ema.to("cpu"), tokenizer, text_encoder)
    final.save_pretrained(out_dir, safe_serialization=True)
    report = {"transformer_config": {k: list(v) if isinstance(v, tuple) else v for k, v in TOY_TRANSFORMER_CONFIG.items()},
              "text_config": TOY_TEXT_CONFIG, "steps": steps, "batch": batch, "lr": lr, "seed": seed,
              "pool_clips": pool_clips, "object_weight": object_weight,
              "background": background, "partial_motion_rate": partial_motion_rate, "heldout_combinations": [list(c) for c in held],
              "caption_dropout": caption_dropout, "ema_decay": ema_decay, "max_sequence_length": MAX_SEQUENCE_LENGTH,
              "init_from": str(init_from) if init_from else None, "device": device,
              "previous": (json.loads((Path(init_from) / "training_report.json").read_text())
                           if init_from and (Path(init_from) / "training_report.json").is_file() else None),
              "train_minutes": (time.time() - start) / 60, "loss_history": history,
              "params": sum(p.numel() for p in ema.parameters())}
    (out_dir / "training_report.json").write_text(json.dumps(report, indent=2))
    # read by motionguide.sampling.SamplingSettings.for_model: the settings this model was trained for
    (out_dir / "sampling_defaults.json").write_text(json.dumps(
        {"num_frames": 17, "height": 64, "width": 64, "steps": 25, "cfg": 5.0,
         "max_sequence_length": MAX_SEQUENCE_LENGTH, "fps": 8}, indent=2))
    vae_report = Path(vae_dir).parent / "vae_report.json"
    if vae_report.exists():
        shutil.copyfile(vae_report, out_dir / "vae_report.json")
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # the saved pipeline supersedes it
    log(f"saved toy model to {out_dir} after {report['train_minutes']:.1f} min")
    return report
