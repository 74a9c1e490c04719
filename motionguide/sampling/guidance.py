"""Sampling guidances (`--guidance <name>`): each wraps a stock pipeline call.

A guidance is a callable `guidance(pipe, **call_kwargs) -> pipeline output`; "none" calls the pipeline as is.
Methods register themselves (`@register_guidance("correspondence")`) in `motionguide.registry.GUIDANCES`,
which also names the built-in ones, so the sampler CLI and the training loop's validation sampler pick them
up without importing any method package.
"""

from __future__ import annotations

from typing import Any, Callable

from ..registry import GUIDANCES

Guidance = Callable[..., Any]


def register_guidance(name: str):
    """Decorator that registers a guidance factory under `name` for `--guidance`."""
    return GUIDANCES.register(name)


def _plain(pipe, **call_kwargs):
    return pipe(**call_kwargs)


def get_guidance(name: str | None, **options: Any) -> Guidance:
    """The guidance `name` built with `options`; a plain pipeline call for None, "" or "none"."""
    guidance = GUIDANCES.build_or_none(name, **options)
    return _plain if guidance is None else guidance


def registered_guidances() -> list[str]:
    """Names accepted by `--guidance`: "none" first, then the registered ones sorted."""
    return GUIDANCES.names()
