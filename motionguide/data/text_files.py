"""Text files a user hands over (a prompts file: one prompt per line), read with errors that name the line.

A prompts file with one byte that is not UTF-8 used to end a run with a bare `UnicodeDecodeError` naming no
file; here it is a `ConfigError` naming the file, the line and the fix, raised before any model loads.
"""

from __future__ import annotations

import os
from pathlib import Path

from motionguide.errors import ConfigError

__all__ = ["read_prompt_lines"]


def read_prompt_lines(path: str | os.PathLike, flag: str = "--prompts_file") -> list[str]:
    """The non-blank lines of `path`, stripped (a UTF-8 byte-order mark dropped); ConfigError naming `flag`,
    the file and the first line that is not valid UTF-8 (or the file that is missing or a folder)."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ConfigError(f"{flag} {path}: {what}; give a text file with one prompt per line")
    lines = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError(f"{flag} {path} line {number}: byte {error.start + 1} of the line is not valid "
                              "UTF-8; re-save the file as UTF-8") from None
        if line.strip():
            lines.append(line.strip())
    return lines
