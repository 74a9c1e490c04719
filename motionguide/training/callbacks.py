"""Slots through which methods join the fine-tuning loop without editing it.

- `TrainerCallback`: `on_train_start`, `on_step_end`, `on_validation`, `on_save`, `on_train_end`, each given the
  `TrainContext` (accelerator, model, step, logger ...). Monitors (`--monitor imap`) are callbacks.
- `Curation`: decides which cached clips the loop samples, and with which weights (`--curation motive`),
  before the first step; its state is checkpointed so a resumed run keeps the same selection.

Each kind has a registry; methods register themselves by name (`@register_monitor("imap")`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from ..errors import ConfigError, closest_names

if TYPE_CHECKING:  # pragma: no cover
    from accelerate import Accelerator

    from ..backbones import VideoBackbone
    from .config import TrainConfig


@dataclass
class TrainContext:
    """What callbacks may read (and log through) at each event."""

    config: "TrainConfig"
    accelerator: "Accelerator"
    backbone: "VideoBackbone"
    model: Any  # the wrapped (prepared) transformer
    output_dir: Path
    dataset: Any = None  # the cached-latent dataset the loop samples from
    step: int = 0
    log: Callable[[dict[str, Any], int], None] = lambda values, step: None
    log_images: Callable[[str, Any, int], None] = lambda tag, images, step: None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def is_main_process(self) -> bool:
        """Whether this is the main process of the accelerator."""
        return self.accelerator.is_main_process

    @property
    def transformer(self):
        """The unwrapped transformer (for no-grad probes and sampling)."""
        return self.accelerator.unwrap_model(self.model)


class TrainerCallback:
    """Base class: every event is a no-op; override what you need. State goes into checkpoints."""

    name: ClassVar[str] = "callback"

    def on_train_start(self, ctx: TrainContext) -> None:
        """Called once before the first step; does nothing here."""

    def on_step_end(self, ctx: TrainContext, logs: dict[str, float]) -> None:
        """Called after every optimiser step with its logged scalars; does nothing here."""

    def on_validation(self, ctx: TrainContext, results: dict[str, Any]) -> None:
        """Called after each validation run with its results; does nothing here."""

    def on_save(self, ctx: TrainContext, checkpoint_dir: Path) -> None:
        """Called on the main process after a checkpoint is written; does nothing here."""

    def on_train_end(self, ctx: TrainContext) -> None:
        """Called once after the last step; does nothing here."""

    def state_dict(self) -> dict[str, Any]:
        """What to store in checkpoints; nothing here."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned on resume; does nothing here."""


@dataclass
class CurationResult:
    """Which dataset indices to train on, optional per-index sampling weights, and a summary for reports."""

    indices: list[int]
    weights: list[float] | None = None
    summary: dict[str, Any] = field(default_factory=dict)


class Curation:
    """Base class of a data curation: `select` runs once before training (on every rank, same answer)."""

    name: ClassVar[str] = "curation"

    def __init__(self, **options: Any):
        self.options = options

    def select(self, ctx: TrainContext) -> CurationResult:
        """The clips to train on and their weights; subclasses must implement it."""
        raise NotImplementedError


class RandomCuration(Curation):
    """The baseline: a seeded random fraction of the clips (same budget as a method's top fraction)."""

    name = "random"

    def select(self, ctx: TrainContext) -> CurationResult:
        """A seeded random `curation_fraction` of the clips (at least one), sorted."""
        n = len(ctx.dataset)
        k = max(1, int(round(ctx.config.curation_fraction * n)))
        rng = np.random.default_rng(ctx.config.seed)
        chosen = sorted(int(i) for i in rng.choice(n, size=k, replace=False))
        return CurationResult(indices=chosen, summary={"method": "random", "kept": k, "of": n})


# ---------------------------------------------------------------------- registries
_CURATIONS: dict[str, type[Curation]] = {"random": RandomCuration}
_MONITORS: dict[str, Callable[..., TrainerCallback]] = {}


def register_curation(name: str):
    """Class decorator that registers a `Curation` under `name` for `--curation`."""
    def wrap(cls: type[Curation]) -> type[Curation]:
        _CURATIONS[name] = cls
        return cls

    return wrap


def register_monitor(name: str):
    """Decorator that registers a monitor factory under `name` for `--monitor`."""
    def wrap(factory: Callable[..., TrainerCallback]):
        _MONITORS[name] = factory
        return factory

    return wrap


def _lookup(kind: str, name: str, registry: dict[str, Any], flag: str) -> Any:
    _load_builtin_methods()
    if name not in registry:
        close = closest_names(name, registry)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{flag} {name!r}: no such {kind}.{hint} Registered: {', '.join(sorted(registry)) or '(none)'}")
    return registry[name]


def get_curation(name: str, **options: Any) -> Curation | None:
    """The curation `name` built with `options`; None for "none", "" or None."""
    if name in ("none", "", None):
        return None
    return _lookup("curation", name, _CURATIONS, "--curation")(**options)


def get_monitor(name: str, **options: Any) -> TrainerCallback:
    """The monitor `name` built with `options`; ConfigError if none is registered under it."""
    return _lookup("monitor", name, _MONITORS, "--monitor")(**options)


def registered_curations() -> list[str]:
    """Names accepted by `--curation`: "none" first, then the registered ones sorted."""
    _load_builtin_methods()
    return ["none", *sorted(_CURATIONS)]


def registered_monitors() -> list[str]:
    """Names accepted by `--monitor`, sorted."""
    _load_builtin_methods()
    return sorted(_MONITORS)


def _load_builtin_methods() -> None:
    """Import the method packages that register themselves (each optional until it exists)."""
    import importlib

    for module in ("motionguide.motive.curation", "motionguide.saliency"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
