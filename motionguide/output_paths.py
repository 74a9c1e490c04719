"""Checks that an output folder or file can be written, made before a command loads a model or computes.

Why: a sampler or tracker that finds its output path blocked only after minutes of work loses that work. The
checks look at what is on disk (a file where a folder must go, a folder where a file must go) and then try to
create a temporary file where the output will be written, so they hold for any user, root included (whose
permission bits say little), and on read-only file systems.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import ConfigError

__all__ = ["check_output_folder", "check_output_file"]


def _nearest_existing(path: Path) -> Path:
    """`path` or the closest of its parents that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")  # pragma: no cover - the root always exists


def _check_folder_route(folder: Path, flag: str, target: Path) -> Path:
    """The existing folder a new `folder` would be made in (or `folder` itself), after checking no file blocks
    the way and a file can be created there."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise ConfigError(f"{flag} {target}: {existing} is a file, not a folder; remove it or choose another path")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ConfigError(f"{flag} {target}: cannot write in {existing} ({exc.strerror or exc}); choose a "
                          "writable path") from None
    return existing


def check_output_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Raise a one-line `ConfigError` unless `path` is, or can become, a writable folder. Creates nothing."""
    folder = Path(path).expanduser()
    _check_folder_route(folder, flag, folder)
    return folder


def check_output_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Raise a one-line `ConfigError` unless a file can be written at `path` (its folder exists or can be made,
    and no folder sits where the file goes). Creates nothing."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise ConfigError(f"{flag} {file}: a folder, not a file; give a file path, e.g. {file / 'tracks.npz'}")
    _check_folder_route(file.parent, flag, file)
    return file
