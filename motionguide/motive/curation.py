"""`--curation motive` for the fine-tuning loop: read a finished selection or run the attribution pass first.

Options (YAML `method_options: {motive: {...}}` or the CLI's JSON), checked by :meth:`MotiveCuration.validate`
before any model loads:

* `fraction` (default 0.1) and `mode` (`filter` default, `reweight`, `prune-negative`): what the selection
  keeps (see :mod:`motionguide.motive.selection`);
* `selection`: a finished selection.json (or its folder) from `motionguide curate`;
* `queries`: a dataset folder of query clips (needed when no selection exists);
* `queries_recipe`: `{name: RECIPE, ...options}` creates `queries` on first use through a registered data recipe
  (`motionguide.registry.DATA_RECIPES`, e.g. `{name: toy, num_clips: 8, seed: 1, motions: [right]}`);
  `toy_queries: {...}` is its deprecated spelling for the toy recipe;
* any :class:`~motionguide.motive.config.MotiveConfig` setting (flow, projector, lora, ...).

With `queries` set, the pass runs in `<output_dir>/motive` every time: it reuses every stored feature that
still applies (same model weights, settings and clips), so an unchanged rerun, or one that changes only the
fraction or the mode, just rescores. A finished selection given as `selection` (or found there without
`queries`) is used as is, after checking it was made with the asked mode and fraction.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError
from ..registry import CURATIONS, DATA_RECIPES
from ..training.callbacks import Curation, CurationResult, TrainContext
from .attributor import run_attribution
from .config import MotiveConfig
from .selection import SELECTION_FILE, Selection

__all__ = ["MotiveCuration"]

WHERE = "method_options.motive"
#: options the curation handles itself (the rest are MotiveConfig settings)
OWN_OPTIONS = ("selection", "queries_recipe")
#: what `toy_queries` adds to its spec: clean query clips (no defects, motion over the whole clip)
TOY_QUERY_DEFAULTS = {"partial_motion_rate": 0.0, "id_prefix": "query", "defect_rate": 0.0}
#: MotiveConfig fields that the fine-tuning config fills in; placeholders when options are checked alone
_FROM_TRAINING = {"model": "", "data": "", "queries": "", "out": ""}
#: how clips become frames: copied from the training config so the pass reads the frames training reads
_SAMPLING_FROM_TRAINING = ("frame_stride", "target_fps", "resize_mode", "buckets", "caption_column",
                           "video_column", "video_reader")


def placement_from_training(ctx: TrainContext) -> dict[str, Any]:
    """Device, dtype and checkpointing of the pass inside a fine-tuning run: the accelerator's device, the dtype
    the frozen weights are loaded in (`transformer_dtype` when the config has it, else `mixed_precision`; it
    matters only when the pass loads the model itself) and the run's `gradient_checkpointing`. Accelerate
    already initialised the process group: the pass joins it (no second group, no timeout of its own)."""
    cfg = ctx.config
    placement: dict[str, Any] = {"gradient_checkpointing": bool(getattr(cfg, "gradient_checkpointing", False))}
    device = getattr(getattr(ctx, "accelerator", None), "device", None)
    if device is not None:
        placement["device"] = str(device)
    dtype = getattr(cfg, "transformer_dtype", None) or getattr(cfg, "mixed_precision", None)
    if dtype and str(dtype) != "no":
        placement["dtype"] = str(dtype).replace("torch.", "")
    return placement


@CURATIONS.register("motive")
class MotiveCuration(Curation):
    """The `motive` curation: keeps (or reweights) the clips a Motive selection picked."""

    name = "motive"

    def __init__(self, **options: Any):
        super().__init__(**self.validate(options))
        self.fraction = float(self.options.get("fraction", MotiveConfig.fraction))
        self.mode = str(self.options.get("mode", MotiveConfig.mode))

    @classmethod
    def validate(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options with deprecated names replaced, after checking every key and value; loads nothing.

        An unknown key, a bad mode or fraction, an unknown data recipe: a ConfigError naming the valid choices.
        """
        options = dict(options)
        if "toy_queries" in options:
            spec = options.pop("toy_queries")
            warnings.warn(f"{WHERE}.toy_queries is deprecated; use queries_recipe: {{name: toy, ...}}",
                          DeprecationWarning, stacklevel=2)
            if "queries_recipe" in options:
                raise ConfigError(f"{WHERE}: toy_queries and queries_recipe both set; keep queries_recipe")
            if not isinstance(spec, Mapping):
                raise ConfigError(f"{WHERE}.toy_queries: expected a mapping such as "
                                  f"{{num_clips: 8, seed: 1, motions: [right]}}, got {spec!r}")
            options["queries_recipe"] = {"name": "toy", **TOY_QUERY_DEFAULTS, **spec}
        options = MotiveConfig.normalize_options(options, WHERE, extra=OWN_OPTIONS)
        recipe = options.get("queries_recipe")
        if recipe is not None:
            if not isinstance(recipe, Mapping) or not isinstance(recipe.get("name"), str):
                raise ConfigError(f"{WHERE}.queries_recipe: expected a mapping with a recipe name, such as "
                                  f"{{name: toy, num_clips: 8, seed: 1}}, got {recipe!r}")
            DATA_RECIPES.check(recipe["name"])
        settings = {k: v for k, v in options.items() if k not in OWN_OPTIONS}
        try:
            MotiveConfig(**{**_FROM_TRAINING, **settings}).check()
        except ConfigError as exc:  # name the option's place in the training config
            raise ConfigError(f"{WHERE}: {exc}") from None
        return options

    def preflight(self) -> None:
        """What the trainer checks before the model loads: the query folder exists, is a folder and holds
        something, or `queries_recipe` (its options checked now) will create it. Not in `validate`: a
        curation may be built in code before its folder is."""
        queries, recipe = self.options.get("queries"), self.options.get("queries_recipe")
        if queries is None:
            return
        path = Path(str(queries))
        if not path.exists():
            if recipe is not None:
                from ..registry import check_recipe_options

                check_recipe_options(recipe, f"{WHERE}.queries_recipe")
            elif "selection" not in self.options:
                raise ConfigError(f"{WHERE}.queries {queries}: no such folder; give a dataset folder of query "
                                  "clips (or a queries_recipe to create one)")
        elif not path.is_dir() or not any(path.iterdir()):
            what = "a file, not a folder" if not path.is_dir() else "an empty folder"
            raise ConfigError(f"{WHERE}.queries {queries}: {what}; give a dataset folder of query clips")

    def fingerprint(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it resumes (same clips, same weights)."""
        return {"fraction": self.fraction, "mode": self.mode}

    def config_for(self, ctx: TrainContext) -> MotiveConfig:
        """The pass's settings: model, data, clip shape and frame sampling (stride, target fps, resize mode,
        buckets, metadata columns, reader) and placement (the accelerator's device, the load dtype, gradient
        checkpointing) from the training run, the rest from the options (which may override any of them)."""
        if "queries" not in self.options:
            raise ConfigError("--curation motive needs query clips or a finished selection: set method_options "
                              "{motive: {queries: DIR}} (a dataset folder like the training data) or "
                              "{motive: {selection: PATH}} from `motionguide curate`")
        cfg = ctx.config
        base = dict(model=cfg.pretrained_model_name_or_path, data=cfg.data_root, out=str(ctx.output_dir / "motive"),
                    num_frames=cfg.num_frames, height=cfg.height, width=cfg.width,
                    max_sequence_length=cfg.max_sequence_length,
                    **{name: getattr(cfg, name) for name in _SAMPLING_FROM_TRAINING if hasattr(cfg, name)},
                    latent_cache_dir=getattr(cfg, "latent_cache_dir", None) or getattr(cfg, "cache_dir", None),
                    seed=cfg.seed, **placement_from_training(ctx))
        base.update({k: v for k, v in self.options.items() if k not in OWN_OPTIONS})
        return MotiveConfig(**base).check()

    def _make_queries(self, ctx: TrainContext, folder: Path) -> None:
        """Create the query set with `queries_recipe` when its folder does not exist yet (main process)."""
        recipe = self.options.get("queries_recipe")
        if recipe is None or folder.exists():
            return
        if ctx.is_main_process:
            options = {k: v for k, v in recipe.items() if k != "name"}
            print(f"{folder} does not exist: creating the query clips with data recipe {recipe['name']!r} "
                  f"{options}", flush=True)
            DATA_RECIPES.get(recipe["name"])(folder, **options)
        ctx.accelerator.wait_for_everyone()

    def selection(self, ctx: TrainContext) -> Selection:
        """The Motive selection for this run: the given or finished one, or a fresh pass."""
        explicit = self.options.get("selection")
        default = ctx.output_dir / "motive" / SELECTION_FILE
        if explicit is not None:
            return Selection.load(explicit).check_made_with(self.mode, self.fraction, explicit)
        if "queries" not in self.options and default.is_file():
            return Selection.load(default).check_made_with(self.mode, self.fraction, default)
        # always through the pass: it skips every clip whose stored feature still applies (same model,
        # settings and data), so an unchanged rerun only rescores, and changed settings are never ignored
        cfg = self.config_for(ctx)
        self._make_queries(ctx, Path(cfg.queries))
        result = run_attribution(cfg, progress=ctx.is_main_process, pipeline=ctx.extras.get("pipeline"))
        ctx.accelerator.wait_for_everyone()
        return Selection.from_dict(result) if result is not None else Selection.load(cfg.out)

    def select(self, ctx: TrainContext) -> CurationResult:
        """Load (or compute) the Motive selection and map its clip ids onto this dataset's indices and weights."""
        selection = self.selection(ctx)
        try:
            indices, weights = selection.indices_for(ctx.dataset.ids)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (training data: {ctx.config.data_root})") from exc
        return CurationResult(indices=indices, weights=weights, summary=selection.summary(len(ctx.dataset),
                                                                                          len(indices)))
