"""Error types with messages that say what went wrong and how to fix it."""

from __future__ import annotations

import difflib
from typing import Iterable


class MotionGuideError(Exception):
    """Base class of the library's own errors."""


class UnsupportedModelError(MotionGuideError, TypeError):
    """A diffusers model class that no backbone adapter knows."""


class VideoReadError(MotionGuideError, ValueError):
    """A video file could not be decoded into frames; the message names the file and what to do."""


class ConfigError(MotionGuideError, ValueError):
    """A config or profile file with a bad key or value; the message names the file and the key."""


def closest_names(name: str, valid: Iterable[str], n: int = 3) -> list[str]:
    """The valid names closest to a misspelt one, for 'did you mean' hints."""
    return difflib.get_close_matches(name, list(valid), n=n, cutoff=0.4)


def unknown_key_message(key: str, valid: Iterable[str], where: str) -> str:
    """One line naming an unknown key, where it was found, and the closest valid keys."""
    valid = sorted(valid)
    close = closest_names(key, valid)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"{where}: unknown key {key!r}.{hint} Valid keys: {', '.join(valid)}."
