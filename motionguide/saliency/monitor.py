"""`IMAPMonitor`: live saliency maps during fine-tuning, as an interpretability check (`--monitor imap`).

IMAP (GramCol maps of the heads chosen by Calinski-Harabasz separability, see `saliency.imap`) reads where a
video DiT attends for a word, per frame. Watching those maps
during a fine-tune shows whether the model still localises its subject and its motion, at the cost of one
gradient-free forward per probe clip.

Two ways in:

- Any accelerate / diffusers training loop::

      monitor = IMAPMonitor(words=["dog", "running"])
      monitor.set_probes(pipe, latents, prompt_embeds, captions)  # cached VAE latents, prompt embeddings
      ...
      if step % monitor.every == 0:
          monitor.probe(transformer, step)     # -> IMAPProbe: maps, heatmap grids, scalars
          monitor.log(accelerator, step)       # every tracker the accelerator started

- The motionguide Trainer (`--monitor imap`): the callback takes its probes from the Trainer's latent cache
  and logs through the Trainer's trackers; nothing else differs.

Each probe is one clip's cached latents and prompt embeddings with one seeded noise, re-noised once to
`timestep`; a probe runs one conditional forward in eval mode with a capture at the IMAP blocks and returns
per word a heatmap grid (probes x frames), the maps' spatial entropy, head stability (Jaccard overlap of the
selected (block, head) pairs with the previous probe) and, when `masks_fn` gives ground truth, pointing game
and IoU. Instruments exist only inside the probe, so training forwards, checkpoint recomputation and the
training RNG streams are untouched.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..attention import AttentionController
from ..backbones.base import condition_kwargs, move_condition
from ..data.cache import condition_of
from ..errors import ConfigError
from ..files import atomic_write, atomic_write_text
from ..training.callbacks import TrainContext, TrainerCallback, register_monitor
from ..training.trackers import log_image, log_scalars
from ..viz import save_png
from .compute import eval_mode, resolve_imap_settings
from .imap import SaliencyAccumulator
from .maps import SaliencyMaps
from .render import heatmap_grid, mask_scores, spatial_entropy
from .words import EOS_WORD, default_caption_words, word_token_positions

__all__ = ["IMAPMonitor", "IMAPProbe", "word_tag"]

#: the toy package's ground-truth masks, named by the deprecated `masks: toy`
TOY_MASKS_FACTORY = "motionguide.toy.truth:clip_masks_fn"


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
    #: an image-to-video model's conditioning of the clip (batch axis of 1, model device); {} for text-to-video
    condition: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class IMAPProbe:
    """What one probe found: per word tag the maps of every probe clip ([F', h, w] each) and their heatmap
    grid (HWC uint8), and the scalars to log (`saliency/<word>/entropy`, ..., `saliency/head_stability`)."""

    step: int
    maps: dict[str, list[np.ndarray]] = field(default_factory=dict)
    probe_rows: dict[str, list[int]] = field(default_factory=dict)  # which probe each of a word's maps belongs to
    grids: dict[str, np.ndarray] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as handle:  # a file object: np.savez would append ".npz" to a temporary name
        np.savez(handle, **arrays)


def _jaccard(a: set, b: set) -> float:
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def _masks_factory(spec: str) -> Callable[..., Callable[[str], Any]]:
    """"package.module:function" -> the function (a factory (data_root, backbone, num_frames) -> masks_fn)."""
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"method_options.imap.masks_fn: cannot import {spec!r}; expected 'package.module:"
                          "function' naming a factory (data_root, backbone, num_frames) -> (clip_id -> masks)") from None


@register_monitor("imap")
class IMAPMonitor(TrainerCallback):
    """See the module docstring. Options (`method_options: {imap: {...}}` in a training config):

    every: probe every N optimiser steps (50). num_probes: clips (4). probe_ids: explicit cache ids instead.
    words: words to map in every probe caption that contains them (default per caption: its subject and
    verb, read from the caption's own words; see `default_caption_words`). blocks / top_k: IMAP blocks and
    heads per layer (default: the model's profile; without one the middle half of the blocks and heads // 4).
    timestep: re-noise level on the 0..1000 scale (400). seed: probe noise seed (0). cell: heatmap tile size
    in pixels (64). masks_fn: ground truth for pointing game and IoU, clip_id -> bool masks [F', H, W] or
    None; in a config, "package.module:function" naming a factory (data_root, backbone, num_frames) ->
    masks_fn (the toy world's is "motionguide.toy.truth:clip_masks_fn"). masks: "toy" is the deprecated
    spelling of that toy factory. save_images: in the Trainer, also write each heatmap grid as
    `<output_dir>/imap/<word>_step<N>.png` and the scalars to `<output_dir>/imap/history.json` (True);
    standalone, when `output_dir` is set.
    """

    name = "imap"

    def __init__(self, every: int = 50, num_probes: int = 4, words: Sequence[str] | None = None,
                 blocks: Any = None, top_k: int | None = None, timestep: float = 400.0, seed: int = 0,
                 probe_ids: Sequence[str] | None = None, cell: int = 64,
                 masks: str | None = None, masks_fn: Callable[[str], Any] | str | None = None,
                 save_images: bool = True, output_dir: str | Path | None = None):
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
            raise ConfigError(f"{where}.masks: only the deprecated 'toy' is accepted, got {masks!r}; give "
                              f"masks_fn instead (e.g. {TOY_MASKS_FACTORY!r})")
        if masks == "toy":
            warnings.warn(f"{where}.masks: toy is deprecated; use masks_fn: {TOY_MASKS_FACTORY}",
                          DeprecationWarning, stacklevel=2)
            if masks_fn is None:
                masks_fn = TOY_MASKS_FACTORY
        if isinstance(masks_fn, str):
            self.masks_factory, self.masks_fn = _masks_factory(masks_fn), None
        else:
            self.masks_factory, self.masks_fn = None, masks_fn
        self.save_images = bool(save_images)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.backbone: Any = None
        self.probes: list[_Probe] = []
        self.blocks: list[int] = []
        self.top_k = 0
        self.active = False
        self.last: IMAPProbe | None = None
        self.steps_logged: list[int] = []
        self.previous_heads: set[tuple[int, int]] | None = None
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ the standalone API
    def set_probes(self, model: Any, latents: torch.Tensor | Sequence[torch.Tensor],
                   prompt_embeds: torch.Tensor | Sequence[torch.Tensor], captions: Sequence[str],
                   ids: Sequence[str] | None = None, device: torch.device | str | None = None,
                   conditions: Sequence[dict[str, torch.Tensor]] | None = None) -> None:
        """Fix the probe clips: `model` is the diffusers pipeline (or a motionguide backbone) being trained;
        `latents` [N, C, F', h, w] are the clips' normalised VAE latents (as a training step sees them),
        `prompt_embeds` [N, T, D] their caption embeddings, `captions` the N captions, `ids` names for
        `masks_fn` (default "0", "1", ...). Resolves blocks and heads, finds the words' text slots and noises
        each clip once with its own seeded noise (`seed + i`). `conditions`: an image-to-video model's
        conditioning of each clip (the latent cache's `condition.*` tensors, no batch axis)."""
        from ..backbones import VideoBackbone, backbone_for

        backbone = model if isinstance(model, VideoBackbone) else backbone_for(model)
        if backbone.tokenizer is None:
            raise ConfigError("the imap monitor needs the model's tokenizer to find words in the probe captions")
        captions = list(captions)
        ids = [str(i) for i in range(len(captions))] if ids is None else [str(i) for i in ids]
        if not captions or len(latents) != len(captions) or len(prompt_embeds) != len(captions) \
                or len(ids) != len(captions):
            raise ConfigError(f"set_probes needs one latent, one prompt embedding and one id per caption; got "
                              f"{len(latents)} latents, {len(prompt_embeds)} embeddings, {len(ids)} ids and "
                              f"{len(captions)} captions")
        conditions = list(conditions) if conditions is not None else [{}] * len(captions)
        if len(conditions) != len(captions):
            raise ConfigError(f"set_probes needs one condition per caption; got {len(conditions)} for "
                              f"{len(captions)} captions")
        conditions = [backbone.check_condition(c) for c in conditions]
        self.backbone = backbone
        self.blocks, self.top_k, _ = resolve_imap_settings(backbone, self.blocks_option, self.top_k_option)
        device = torch.device(device) if device is not None else next(backbone.transformer.parameters()).device
        t = torch.full((1,), self.timestep, device=device)
        self.probes = []
        for index, (clip_id, caption) in enumerate(zip(ids, captions)):
            clip_latents = latents[index][None].float()
            embeds = prompt_embeds[index][None]
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
            noise = torch.randn(clip_latents.shape, generator=torch.Generator().manual_seed(self.seed + index))
            with torch.no_grad():
                noisy = backbone.add_noise(clip_latents.to(device), noise.to(device), t)
            self.probes.append(_Probe(clip_id, caption, noisy, embeds.to(device), positions,
                                      move_condition(conditions[index], device, add_batch=True)))
        if not self.probes:
            raise ConfigError(f"none of the words {self.words} occurs in the probe captions {captions}; "
                              "set method_options.imap.words")

    def probe_maps(self, transformer: torch.nn.Module | None = None,
                   autocast: Callable[[], Any] | None = None) -> list[SaliencyMaps]:
        """One no-grad conditional forward per probe clip (eval mode, current weights); IMAP maps of its words.

        `transformer` defaults to the probed model's own (pass the unwrapped one, not a DDP wrapper);
        `autocast` (e.g. `accelerator.autocast`) runs the forward in the training precision."""
        if not self.probes:
            raise ConfigError("IMAPMonitor.probe: no probes yet; call set_probes(...) first")
        transformer = transformer if transformer is not None else self.backbone.transformer
        dtype = getattr(transformer, "dtype", torch.float32)
        controller = AttentionController(self.backbone)
        t = torch.full((1,), self.timestep, device=self.probes[0].noisy.device)
        precision = autocast if autocast is not None else contextlib.nullcontext
        results = []
        with torch.no_grad(), eval_mode(transformer):
            for probe in self.probes:
                accumulator = SaliencyAccumulator(probe.positions, self.blocks, self.top_k, kinds=("imap",))
                # Same precision as the training forward (the maps' maths is fp32 regardless).
                with precision(), controller.capture(accumulator, blocks=self.blocks, attention="text"):
                    self.backbone.predict(probe.noisy.to(dtype), t, probe.embeds.to(dtype), model=transformer,
                                          **condition_kwargs(move_condition(probe.condition, dtype=dtype)))
                results.append(accumulator.result())
        return results

    def probe(self, transformer: torch.nn.Module | None = None, step: int = 0,
              autocast: Callable[[], Any] | None = None) -> IMAPProbe:
        """Probe at `step`: maps, heatmap grids and scalars (kept as `self.last` for :meth:`log`). With an
        `output_dir`, also writes the grids as PNGs and the scalar history as JSON there."""
        return self._summarize(self.probe_maps(transformer, autocast), step)

    def log(self, target: Any, step: int | None = None) -> None:
        """Log the last probe through `target`: an `Accelerator` (all its trackers), one accelerate tracker,
        or anything with `log(values, step=...)`; heatmap grids go to TensorBoard / W&B trackers."""
        if self.last is None:
            raise ConfigError("IMAPMonitor.log: nothing probed yet; call probe(transformer, step) first")
        step = self.last.step if step is None else step
        for tag, grid in self.last.grids.items():
            log_image(target, f"saliency/{tag}", grid, step)
        log_scalars(target, self.last.scalars, step)

    # ------------------------------------------------------------------ summaries
    def _selected_heads(self, results: list[SaliencyMaps]) -> set[tuple[int, int]]:
        """Per block, the top-k heads by CHI averaged over the probes."""
        chosen = set()
        for block in self.blocks:
            chi = torch.stack([r.chi[block] for r in results]).mean(dim=0)
            order = torch.sort(-chi, stable=True).indices[: self.top_k]
            chosen.update((block, int(h)) for h in order)
        return chosen

    def _summarize(self, results: list[SaliencyMaps], step: int) -> IMAPProbe:
        """Entropy, mask scores and heatmap grids per word; head stability against the previous probe."""
        found = IMAPProbe(step=step)
        per_word: dict[str, dict[str, list]] = {}
        for index, (probe, maps) in enumerate(zip(self.probes, results)):
            masks = self.masks_fn(probe.clip_id) if self.masks_fn is not None else None
            for word in maps.words:
                word_map = maps.get(word).numpy()
                entry = per_word.setdefault(word_tag(word), {"maps": [], "entropy": [], "pointing_game": [], "iou": [],
                                                             "probes": []})
                entry["maps"].append(word_map)
                entry["probes"].append(index)
                entry["entropy"].append(spatial_entropy(word_map))
                if masks is not None:
                    for key, value in mask_scores(word_map, np.asarray(masks)).items():
                        entry[key].append(value)
        for tag, entry in per_word.items():
            for key in ("entropy", "pointing_game", "iou"):
                values = [v for v in entry[key] if np.isfinite(v)]
                if values:
                    found.scalars[f"saliency/{tag}/{key}"] = float(np.mean(values))
            found.maps[tag] = entry["maps"]
            found.probe_rows[tag] = entry["probes"]
            found.grids[tag] = heatmap_grid(entry["maps"], self.cell)
        heads = self._selected_heads(results)
        if self.previous_heads is not None:
            found.scalars["saliency/head_stability"] = _jaccard(heads, self.previous_heads)
        self.previous_heads = heads
        self.steps_logged.append(step)
        self.history.append({"step": step, **found.scalars})
        self.last = found
        if self.save_images and self.output_dir is not None:
            self._save(found)
        return found

    def _save(self, found: IMAPProbe) -> None:
        """Heatmap grids as `<output_dir>/imap/<word>_step<N>.png`, the maps themselves as `maps_step<N>.npz`
        (`<word>`: float32 [probes, F', h, w]; `<word>.probes`: their probe indices; for overlays on the probe
        clips' frames), the scalar history as `history.json`."""
        folder = self.output_dir / "imap"
        for tag, grid in found.grids.items():
            save_png(Image.fromarray(grid), folder / f"{tag}_step{found.step:06d}.png")
        arrays = {}
        for tag, maps in found.maps.items():
            arrays[tag] = np.stack([np.asarray(m, np.float32) for m in maps])
            arrays[f"{tag}.probes"] = np.asarray(found.probe_rows.get(tag, range(len(maps))), np.int64)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / f"maps_step{found.step:06d}.npz", lambda tmp: _savez(tmp, arrays))
        atomic_write_text(folder / "history.json", json.dumps(
            {"probes": [{"clip_id": p.clip_id, "caption": p.caption, "words": list(p.positions)} for p in self.probes],
             "blocks": self.blocks, "top_k": self.top_k, "timestep": self.timestep, "history": self.history},
            indent=2))

    # ------------------------------------------------------------------ the Trainer adapter
    @staticmethod
    def _runs_here(accelerator: Any) -> bool:
        """Main process only, unless parameters are sharded (ZeRO-3 / FSDP): then every rank must join."""
        plugin = getattr(accelerator.state, "deepspeed_plugin", None)
        sharded = plugin is not None and getattr(plugin, "zero_stage", 0) == 3
        sharded = sharded or str(getattr(accelerator, "distributed_type", "")).endswith("FSDP")
        return sharded or accelerator.is_main_process

    def on_train_start(self, ctx: TrainContext) -> None:
        """Probes from the Trainer's latent cache (the first `num_probes` training clips, or `probe_ids`)."""
        self.active = self._runs_here(ctx.accelerator)
        if not self.active:
            return
        cache = ctx.extras.get("cache")
        if cache is None:
            raise ConfigError("the imap monitor's Trainer adapter reads probes from the latent cache "
                              "(ctx.extras['cache']); outside the Trainer call set_probes(...) yourself")
        if self.masks_fn is None and self.masks_factory is not None:
            self.masks_fn = self.masks_factory(ctx.config.data_root, ctx.backbone, ctx.config.num_frames)
        if self.output_dir is None:
            self.output_dir = ctx.output_dir
        available = list(ctx.dataset.ids) if ctx.dataset is not None else list(cache.ids)
        ids = self.probe_ids if self.probe_ids is not None else available[: self.num_probes]
        if not ids:
            raise ConfigError("the imap monitor found no cached clips to probe; check the dataset and cache")
        records = [cache.load(clip_id) for clip_id in ids]
        self.set_probes(ctx.backbone, [r["latents"] for r in records], [r["prompt_embeds"] for r in records],
                        [cache.clip_record(clip_id)["caption"] for clip_id in ids], ids=ids,
                        device=ctx.accelerator.device, conditions=[condition_of(r) for r in records])

    def on_step_end(self, ctx: TrainContext, logs: dict[str, float]) -> None:
        """Every `every` steps: probe, then log entropy, mask scores, heatmaps and head stability."""
        if not self.active or not self.probes or ctx.step % self.every:
            return
        results = self.probe_maps(ctx.transformer, ctx.accelerator.autocast)
        if not ctx.is_main_process:
            return
        found = self._summarize(results, ctx.step)
        for tag, grid in found.grids.items():
            ctx.log_images(f"saliency/{tag}", grid, ctx.step)
        ctx.log(found.scalars, ctx.step)
        del results

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
