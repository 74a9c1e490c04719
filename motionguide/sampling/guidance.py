"""Registry of sampling guidances (`--guidance <name>`): each wraps a stock pipeline call.

A guidance is a callable `guidance(pipe, **call_kwargs) -> pipeline output`; "none" calls the pipeline as is.
Methods register themselves (`@register_guidance("correspondence")`), so the sampler CLI and the training
loop's validation sampler pick them up without changes.
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import ConfigError, closest_names

Guidance = Callable[..., Any]
_GUIDANCES: dict[str, Callable[..., Guidance]] = {}


def register_guidance(name: str):
    """Decorator that registers a guidance factory under `name` for `--guidance`."""
    def wrap(factory: Callable[..., Guidance]):
        _GUIDANCES[name] = factory
        return factory

    return wrap


def _plain(pipe, **call_kwargs):
    return pipe(**call_kwargs)


def get_guidance(name: str | None, **options: Any) -> Guidance:
    """The guidance `name` built with `options`; a plain pipeline call for None, "" or "none"."""
    if name in (None, "", "none"):
        return _plain
    _load_builtin_guidances()
    if name not in _GUIDANCES:
        close = closest_names(name, _GUIDANCES)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"--guidance {name!r}: no such guidance.{hint} Registered: none, "
                          f"{', '.join(sorted(_GUIDANCES)) or '(no others yet)'}")
    return _GUIDANCES[name](**options)


def registered_guidances() -> list[str]:
    """Names accepted by `--guidance`: "none" first, then the registered ones sorted."""
    _load_builtin_guidances()
    return ["none", *sorted(_GUIDANCES)]


def _load_builtin_guidances() -> None:
    import importlib

    try:
        importlib.import_module("motionguide.correspondence")
    except ModuleNotFoundError as exc:
        if exc.name != "motionguide.correspondence":
            raise
