"""`--curation motive` for the fine-tuning loop: read a finished selection or run the attribution pass first.

Options (YAML `method_options: {motive: {...}}` or the CLI's JSON): `selection` (a selection.json or its
folder), `queries` (a dataset folder of query clips; needed when no selection exists), `toy_queries`
(generate `queries` on first use as clean toy clips, e.g. `{num_clips: 8, seed: 1, motions: [right]}`),
and any `AttributionConfig` field (flow, projector, lora, ...). The mode and the kept fraction come from
`--curation_mode filter|reweight|prune-negative` and `--curation_fraction`.

With `queries` set, the pass runs in `<output_dir>/motive` every time: it reuses every stored feature that
still applies (same model weights, settings and clips), so an unchanged rerun, or one that changes only the
fraction or the mode, just rescores. A finished selection given as `selection` (or found there without
`queries`) is used as is, after checking it was made with the asked mode and fraction.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import ConfigError
from ..training.callbacks import Curation, CurationResult, TrainContext, register_curation
from .run import SELECTION_FILE, AttributionConfig, load_selection, run_attribution


@register_curation("motive")
class MotiveCuration(Curation):
    """The `motive` curation: keeps (or reweights) the clips a Motive selection picked."""

    name = "motive"

    def _config(self, ctx: TrainContext) -> AttributionConfig:
        cfg = ctx.config
        if "fraction" in self.options:
            raise ConfigError("method_options.motive.fraction: set the kept share with --curation_fraction "
                              f"(now {cfg.curation_fraction}) instead")
        options = {k: v for k, v in self.options.items() if k not in ("selection", "toy_queries")}
        known = {f.name for f in dataclasses.fields(AttributionConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"method_options.motive: unknown option(s) {', '.join(unknown)}; valid: "
                              f"selection, toy_queries, {', '.join(sorted(known))}")
        if "queries" not in options:
            raise ConfigError("--curation motive needs query clips or a finished selection: set method_options "
                              "{motive: {queries: DIR}} (a dataset folder like the training data) or "
                              "{motive: {selection: PATH}} from `motionguide curate`")
        base = dict(model=cfg.pretrained_model_name_or_path, data=cfg.data_root, out=str(ctx.output_dir / "motive"),
                    num_frames=cfg.num_frames, height=cfg.height, width=cfg.width,
                    max_sequence_length=cfg.max_sequence_length, cache_dir=cfg.cache_dir,
                    fraction=cfg.curation_fraction, seed=cfg.seed, mode=self._mode(ctx))
        base.update({k: v for k, v in options.items() if k != "mode"})
        return AttributionConfig(**base).check()

    def _mode(self, ctx: TrainContext) -> str:
        """--curation_mode, or the older `method_options.motive.mode` (they must agree when both are set)."""
        mode, legacy = ctx.config.curation_mode, self.options.get("mode")
        if legacy is not None and mode is not None and legacy != mode:
            raise ConfigError(f"--curation_mode {mode} disagrees with method_options.motive.mode={legacy}; "
                              "keep one of them (--curation_mode is the documented one)")
        return mode or legacy or "filter"

    def _check_settings(self, ctx: TrainContext, selection: dict, where: Path | str) -> None:
        """A finished selection used as is must have been made with the mode and fraction asked for."""
        mode, fraction = self._mode(ctx), ctx.config.curation_fraction
        made_mode, made_fraction = selection.get("mode"), selection.get("fraction")
        if made_mode != mode or (mode == "filter" and made_fraction is not None
                                 and abs(float(made_fraction) - fraction) > 1e-9):
            raise ConfigError(
                f"the Motive selection {where} was made with mode {made_mode}, fraction {made_fraction}, but this "
                f"run asks for --curation_mode {mode} --curation_fraction {fraction}. Rerun `motionguide curate` "
                f"with --mode {mode} --fraction {fraction} and the same --out (its stored features are reused, only "
                "the scoring runs), or ask for the selection's settings.")

    def _make_toy_queries(self, ctx: TrainContext, folder: Path) -> None:
        """Generate the toy query set named by `toy_queries` when its folder does not exist yet."""
        spec = self.options.get("toy_queries")
        if spec is None or folder.exists():
            return
        if not isinstance(spec, dict):
            raise ConfigError(f"method_options.motive.toy_queries: expected a mapping such as "
                              f"{{num_clips: 8, seed: 1, motions: [right]}}, got {spec!r}")
        if ctx.is_main_process:
            from ..toy import make_dataset

            print(f"{folder} does not exist: generating the toy query clips {spec}", flush=True)
            make_dataset(folder, **{"partial_motion_rate": 0.0, "id_prefix": "query", "defect_rate": 0.0, **spec})
        ctx.accelerator.wait_for_everyone()

    def select(self, ctx: TrainContext) -> CurationResult:
        """Load (or compute) the Motive selection and map its clip ids onto this dataset's indices and weights."""
        explicit = self.options.get("selection")
        default = ctx.output_dir / "motive" / SELECTION_FILE
        if explicit is not None:
            selection = load_selection(explicit)
            self._check_settings(ctx, selection, explicit)
        elif "queries" not in self.options and default.is_file():
            selection = load_selection(default)
            self._check_settings(ctx, selection, default)
        else:
            # always through the pass: it skips every clip whose stored feature still applies (same model,
            # settings and data), so an unchanged rerun only rescores, and changed settings are never ignored
            cfg = self._config(ctx)
            self._make_toy_queries(ctx, Path(cfg.queries))
            result = run_attribution(cfg, progress=ctx.is_main_process, pipeline=ctx.extras.get("pipeline"))
            ctx.accelerator.wait_for_everyone()
            selection = result if result is not None else load_selection(Path(cfg.out))
        index_of = {clip_id: i for i, clip_id in enumerate(ctx.dataset.ids)}
        kept = [index_of[i] for i in selection["selected_ids"] if i in index_of]
        if not kept:
            raise ConfigError("the Motive selection shares no clip with the training data: was it computed for "
                              f"{ctx.config.data_root}?")
        weights = None
        if selection.get("weights") is not None:
            by_id = dict(zip(selection["train_ids"], selection["weights"]))
            weights = [float(by_id[ctx.dataset.ids[i]]) for i in kept]
        summary = {"method": "motive", "mode": selection.get("mode"), "kept": len(kept), "of": len(ctx.dataset),
                   "queries": len(selection.get("query_ids", []))}
        return CurationResult(indices=kept, weights=weights, summary=summary)
