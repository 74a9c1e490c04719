"""Slots through which methods join the fine-tuning loop without editing it.

- `TrainerCallback`: `on_train_start`, `on_step_end`, `on_validation`, `on_save`, `on_train_end`, each given the
  `TrainContext` (accelerator, model, step, logger ...). Monitors (`--monitor imap`) are callbacks.
- `Curation`: decides which cached clips the loop samples, and with which weights (`--curation motive`),
  before the first step; its state is checkpointed so a resumed run keeps the same selection.

Each kind has a registry in `motionguide.registry` (which also names the built-in methods); methods register
themselves by name (`@register_monitor("imap")`).
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from ..errors import ConfigError, unknown_key_message
from ..registry import CURATIONS, MONITORS

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
    model: Any  # the wrapped (prepared) transformer; a two-expert model's `training.experts.ExpertRouter`
    output_dir: Path
    dataset: Any = None  # the cached-latent dataset the loop samples from
    step: int = 0
    log: Callable[[dict[str, Any], int], None] = lambda values, step: None
    log_images: Callable[[str, Any, int], None] = lambda tag, images, step: None
    #: (tag, uint8 frames [F, H, W, 3], step, fps, mp4=..., caption=...): a clip to the trackers
    log_videos: Callable[..., None] = lambda tag, frames, step, fps, **kwargs: None
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
    """Base class of a data curation: `select` runs once before training (on every rank, same answer).

    Options come from `method_options.<name>` as keyword arguments. A subclass that sets `options_class` (a
    dataclass) gets them checked against it: an unknown key is a ConfigError naming the valid ones, and
    `self.settings` is the filled-in dataclass. `fingerprint()` is what a checkpoint stores about the
    selection; resuming with a different fingerprint is refused, so a resumed run never trains on other clips.
    """

    name: ClassVar[str] = "curation"
    options_class: ClassVar[type | None] = None

    def __init__(self, **options: Any):
        self.options = options
        self.settings = parse_options(self.options_class, options, f"method_options.{self.name}") \
            if self.options_class is not None else None

    def select(self, ctx: TrainContext) -> CurationResult:
        """The clips to train on and their weights; subclasses must implement it."""
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        """What decides the selection, as JSON-like values; the loop stores it with the curation's name in
        checkpoints and refuses to resume with a different one. Default: the options (or filled-in settings)."""
        return dataclasses.asdict(self.settings) if self.settings is not None else dict(self.options)


def parse_options(options_class: type, options: dict[str, Any], where: str) -> Any:
    """`options_class(**options)`, with an unknown key or a bad value reported as a ConfigError at `where`."""
    names = [f.name for f in dataclasses.fields(options_class)]
    for key in options:
        if key not in names:
            raise ConfigError(unknown_key_message(key, names, where))
    try:
        return options_class(**options)
    except (TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{where}: {error}") from None


# ---------------------------------------------------------------------- registries
# Thin wrappers over motionguide.registry, which names the built-in methods: the loop never imports a
# method package itself.


def register_curation(name: str):
    """Class decorator that registers a `Curation` under `name` for `--curation`."""
    return CURATIONS.register(name)


def register_monitor(name: str):
    """Decorator that registers a monitor factory under `name` for `--monitor`."""
    return MONITORS.register(name)


def get_curation(name: str | None, **options: Any) -> Curation | None:
    """The curation `name` built with `options`; None for "none", "" or None."""
    return CURATIONS.build_or_none(name, **options)


def get_monitor(name: str, **options: Any) -> TrainerCallback:
    """The monitor `name` built with `options`; ConfigError if none is registered under it, or if an option
    is not one of its factory's keyword arguments (named, with the closest valid ones)."""
    factory = MONITORS.get(name)
    parameters = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        for key in options:
            if key not in parameters:
                raise ConfigError(unknown_key_message(key, parameters, f"method_options.{name}"))
    return factory(**options)


def registered_curations() -> list[str]:
    """Names accepted by `--curation`: "none" first, then the registered ones sorted."""
    return CURATIONS.names()


def registered_monitors() -> list[str]:
    """Names accepted by `--monitor`, sorted."""
    return MONITORS.names()
