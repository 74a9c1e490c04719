"""Checks of numeric command-line values, made before a model loads.

Why: a pipeline given 0 steps, 0 frames or a NaN scale does not fail; it writes noise, one frame or a black
video with exit code 0. These turn such values into one `error:` line naming the flag.
"""

from __future__ import annotations

import math

from .errors import ConfigError

__all__ = ["check_positive", "check_finite"]


def check_positive(flag: str, value: int | float | None) -> None:
    """A count such as steps, frames or pixels must be at least 1 (None: not given, nothing to check)."""
    if value is not None and value < 1:
        raise ConfigError(f"{flag} {value}: must be at least 1")


def check_finite(flag: str, value: float | None) -> None:
    """A scale must be a finite number (NaN and inf pass argparse's float())."""
    if value is not None and not math.isfinite(value):
        raise ConfigError(f"{flag} {value}: must be a finite number")
