"""`IMAPMonitor`: live saliency maps during fine-tuning (`--monitor imap`), as an interpretability check.

Every `every` optimiser steps it runs one gradient-free, conditional forward per probe clip (eval mode, the
current weights) with a capture at the IMAP blocks, and logs per word a heatmap grid (probes x frames), the
maps' spatial entropy, head stability (Jaccard overlap of the selected (block, head) pairs with the previous
probe) and, when `masks_fn` gives ground truth, pointing game and IoU. Probes are fixed at train start: the
first `num_probes` cached clips with their cached latents and prompt embeddings and one seeded noise each,
re-noised once to `timestep`. Instruments exist only inside the probe, so training forwards, checkpoint
recomputation and the training RNG streams are untouched.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..attention import AttentionController
from ..errors import ConfigError
from ..files import atomic_write_text
from ..training.callbacks import TrainContext, TrainerCallback, register_monitor
from .compute import eval_mode, resolve_imap_settings
from .imap import SaliencyAccumulator
from .maps import SaliencyMaps
from .render import heatmap_grid, mask_scores, spatial_entropy
from ..viz import save_png
from .words import EOS_WORD, default_caption_words, word_token_positions

__all__ = ["IMAPMonitor", "word_tag"]


def word_tag(word: str) -> str:
    """A logger-safe tag for a word ("</s>" -> "eos")."""
    return "eos" if word == EOS_WORD else re.sub(r"[^\w.-]+", "_", word)


@dataclass
class _Probe:
    clip_id: str
    caption: str
    noisy: torch.Tensor  # [1, C, F', h, w] on the model device
    embeds: torch.Tensor  # [1, T, D] on the model device
    positions: dict[str, list[int]]


def _jaccard(a: set, b: set) -> float:
    return 1.0 if not a and not b else len(a & b) / len(a | b)


@register_monitor("imap")
class IMAPMonitor(TrainerCallback):
    """See the module docstring. Options (all from `method_options: {imap: {...}}` except `masks_fn`):

    every: probe every N optimiser steps (50). num_probes: clips (4). probe_ids: explicit cache ids instead.
    words: words to map in every probe caption that contains them (default per caption: its noun and motion
    verb, else its first and last content words). blocks / top_k: IMAP blocks and heads per layer (default:
    the model's profile; without one the middle half of the blocks and heads // 4). timestep: re-noise level
    on the 0..1000 scale (400). seed: probe noise seed (0). cell: heatmap tile size in pixels (64).
    masks: "toy" reads the training dataset's ground-truth masks (gt/<clip id>.npz, as toy datasets have) for
    pointing game and IoU. masks_fn: the same from code, clip_id -> bool masks [F', H, W] or None.
    save_images: also write each heatmap grid as `<output_dir>/imap/<word>_step<N>.png` and the scalars to
    `<output_dir>/imap/history.json` (True), so a report can show the maps without a tracker.
    """

    name = "imap"

    def __init__(self, every: int = 50, num_probes: int = 4, words: Sequence[str] | None = None,
                 blocks: Any = None, top_k: int | None = None, timestep: float = 400.0, seed: int = 0,
                 probe_ids: Sequence[str] | None = None, cell: int = 64,
                 masks: str | None = None, masks_fn: Callable[[str], Any] | None = None, save_images: bool = True):
        where = "method_options.imap"
        for key, value in (("every", every), ("num_probes", num_probes), ("cell", cell)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{where}.{key}: expected a positive integer, got {value!r}")
        if not isinstance(timestep, (int, float)) or not 0 <= timestep <= 1000:
            raise ConfigError(f"{where}.timestep: expected a number in 0..1000, got {timestep!r}")
        if words is not None and (isinstance(words, str) or not all(isinstance(w, str) for w in words) or not words):
            raise ConfigError(f"{where}.words: expected a list of words, e.g. [circle, moves], got {words!r}")
        self.every, self.num_probes, self.cell = every, num_probes, cell
        self.words = list(words) if words is not None else None
        self.blocks_option, self.top_k_option = blocks, top_k
        self.timestep, self.seed = float(timestep), int(seed)
        self.probe_ids = list(probe_ids) if probe_ids is not None else None
        if masks not in (None, "toy"):
            raise ConfigError(f"{where}.masks: only 'toy' (ground truth next to a toy dataset) is supported, got {masks!r}")
        self.masks_option = masks
        self.masks_fn = masks_fn
        self.save_images = bool(save_images)
        self.probes: list[_Probe] = []
        self.blocks: list[int] = []
        self.top_k = 0
        self.active = False
        self.steps_logged: list[int] = []
        self.previous_heads: set[tuple[int, int]] | None = None
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _runs_here(accelerator: Any) -> bool:
        """Main process only, unless parameters are sharded (ZeRO-3 / FSDP): then every rank must join."""
        plugin = getattr(accelerator.state, "deepspeed_plugin", None)
        sharded = plugin is not None and getattr(plugin, "zero_stage", 0) == 3
        sharded = sharded or str(getattr(accelerator, "distributed_type", "")).endswith("FSDP")
        return sharded or accelerator.is_main_process

    def on_train_start(self, ctx: TrainContext) -> None:
        """Resolve blocks and heads and pre-noise the probe clips' cached latents (on the ranks that probe)."""
        self.active = self._runs_here(ctx.accelerator)
        if not self.active:
            return
        cache = ctx.extras.get("cache")
        if cache is None:
            raise ConfigError("the imap monitor needs the latent cache (ctx.extras['cache']); run it inside the "
                              "motionguide training loop or put a LatentCache there")
        backbone = ctx.backbone
        if backbone.tokenizer is None:
            raise ConfigError("the imap monitor needs the model's tokenizer to find words in the probe captions")
        self.blocks, self.top_k, _ = resolve_imap_settings(backbone, self.blocks_option, self.top_k_option)
        if self.masks_option == "toy" and self.masks_fn is None:
            from ..toy.truth import clip_masks_fn

            self.masks_fn = clip_masks_fn(ctx.config.data_root, backbone, ctx.config.num_frames)
        available = list(ctx.dataset.ids) if ctx.dataset is not None else list(cache.ids)
        ids = self.probe_ids if self.probe_ids is not None else available[: self.num_probes]
        if not ids:
            raise ConfigError("the imap monitor found no cached clips to probe; check the dataset and cache")
        device = ctx.accelerator.device
        t = torch.full((1,), self.timestep, device=device)
        self.probes = []
        for index, clip_id in enumerate(ids):
            record = cache.load(clip_id)
            caption = cache.clip_record(clip_id)["caption"]
            latents = record["latents"][None].float()
            embeds = record["prompt_embeds"][None]
            wanted = self.words if self.words is not None else default_caption_words(caption)
            positions = {}
            for word in wanted:
                try:
                    positions.update(word_token_positions(backbone.tokenizer, caption, [word],
                                                          max_slots=embeds.shape[1]))
                except ValueError:
                    if self.words is None:
                        raise
            if not positions:
                continue
            noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(self.seed + index))
            with torch.no_grad():
                noisy = backbone.add_noise(latents.to(device), noise.to(device), t)
            self.probes.append(_Probe(clip_id, caption, noisy, embeds.to(device), positions))
        if not self.probes:
            raise ConfigError(f"none of the words {self.words} occurs in the probe captions "
                              f"{[cache.clip_record(i)['caption'] for i in ids]}; set method_options.imap.words")

    # ------------------------------------------------------------------ probing
    def probe(self, ctx: TrainContext) -> list[SaliencyMaps]:
        """One no-grad conditional forward per probe; IMAP maps for its words."""
        transformer = ctx.transformer
        dtype = getattr(transformer, "dtype", torch.float32)
        controller = AttentionController(ctx.backbone)
        t = torch.full((1,), self.timestep, device=self.probes[0].noisy.device)
        results = []
        with torch.no_grad(), eval_mode(transformer):
            for probe in self.probes:
                accumulator = SaliencyAccumulator(probe.positions, self.blocks, self.top_k, kinds=("imap",))
                # Same precision as the training forward (the maps' maths is fp32 regardless).
                with ctx.accelerator.autocast(), controller.capture(accumulator, blocks=self.blocks, attention="text"):
                    ctx.backbone.predict(probe.noisy.to(dtype), t, probe.embeds.to(dtype), model=transformer)
                results.append(accumulator.result())
        return results

    def _selected_heads(self, results: list[SaliencyMaps]) -> set[tuple[int, int]]:
        """Per block, the top-k heads by CHI averaged over the probes."""
        chosen = set()
        for block in self.blocks:
            chi = torch.stack([r.chi[block] for r in results]).mean(dim=0)
            order = torch.sort(-chi, stable=True).indices[: self.top_k]
            chosen.update((block, int(h)) for h in order)
        return chosen

    def on_step_end(self, ctx: TrainContext, logs: dict[str, float]) -> None:
        """Every `every` steps: probe, then log entropy, mask scores, heatmaps and head stability."""
        if not self.active or not self.probes or ctx.step % self.every:
            return
        results = self.probe(ctx)
        if not ctx.is_main_process:
            return
        scalars: dict[str, float] = {}
        per_word: dict[str, dict[str, list]] = {}
        for probe, maps in zip(self.probes, results):
            masks = self.masks_fn(probe.clip_id) if self.masks_fn is not None else None
            for word in maps.words:
                word_map = maps.get(word).numpy()
                entry = per_word.setdefault(word_tag(word), {"maps": [], "entropy": [], "pointing_game": [], "iou": []})
                entry["maps"].append(word_map)
                entry["entropy"].append(spatial_entropy(word_map))
                if masks is not None:
                    for key, value in mask_scores(word_map, np.asarray(masks)).items():
                        entry[key].append(value)
        for tag, entry in per_word.items():
            for key in ("entropy", "pointing_game", "iou"):
                values = [v for v in entry[key] if np.isfinite(v)]
                if values:
                    scalars[f"saliency/{tag}/{key}"] = float(np.mean(values))
            grid = heatmap_grid(entry["maps"], self.cell)
            ctx.log_images(f"saliency/{tag}", grid, ctx.step)
            if self.save_images:
                save_png(Image.fromarray(grid), ctx.output_dir / "imap" / f"{tag}_step{ctx.step:06d}.png")
        heads = self._selected_heads(results)
        if self.previous_heads is not None:
            scalars["saliency/head_stability"] = _jaccard(heads, self.previous_heads)
        self.previous_heads = heads
        ctx.log(scalars, ctx.step)
        self.steps_logged.append(ctx.step)
        self.history.append({"step": ctx.step, **scalars})
        if self.save_images:
            atomic_write_text(ctx.output_dir / "imap" / "history.json", json.dumps(
                {"probes": [{"clip_id": p.clip_id, "caption": p.caption, "words": list(p.positions)} for p in self.probes],
                 "blocks": self.blocks, "top_k": self.top_k, "timestep": self.timestep, "history": self.history},
                indent=2))
        del results, per_word

    def on_train_end(self, ctx: TrainContext) -> None:
        """Release the probe tensors."""
        self.probes = []  # release the cached probe tensors

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Logged steps, last selected heads and the scalar history, for checkpoints."""
        previous = None if self.previous_heads is None else sorted([b, h] for b, h in self.previous_heads)
        return {"steps_logged": list(self.steps_logged), "previous_heads": previous, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved."""
        self.steps_logged = list(state.get("steps_logged", []))
        previous = state.get("previous_heads")
        self.previous_heads = None if previous is None else {(int(b), int(h)) for b, h in previous}
        self.history = list(state.get("history", []))
