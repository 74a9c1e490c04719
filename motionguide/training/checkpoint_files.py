"""The files of a checkpoint and their sha256, recorded when the run writes it and compared on resume.

Why: a checkpoint cut short (a full disk, a copy that stopped, a file deleted or edited) must not resume into
garbage or into a traceback that names no file. The trainer state lists every file the run wrote into the
checkpoint folder (DeepSpeed's own `pytorch_model/` folder too) with its hash; `checkpoint_problem` names the
first file that is missing or differs, so `--resume_from_checkpoint latest` can fall back to the previous
complete checkpoint and an explicitly named one is refused with that file in the message.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

__all__ = ["FILES_KEY", "STATE_FILE", "checkpoint_problem", "file_hashes", "read_state"]

STATE_FILE = "trainer_state.json"
FILES_KEY = "files"  # trainer-state key: {relative posix path: sha256 hex}
_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(folder: str | Path) -> dict[str, str]:
    """sha256 of every file under `folder` (recursively, the trainer state itself excluded), by relative path."""
    folder = Path(folder)
    return {path.relative_to(folder).as_posix(): _sha256(path)
            for path in sorted(folder.rglob("*")) if path.is_file() and path != folder / STATE_FILE}


def read_state(folder: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the trainer state, None), or (None, what is wrong with it, naming the file)."""
    path = Path(folder) / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{path} is missing"
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None, f"{path} is not readable JSON ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        return None, f"{path} records no step"
    return state, None


def checkpoint_problem(folder: str | Path) -> str | None:
    """What makes `folder` unusable for resuming (naming the file), or None when it is complete.

    A checkpoint written before hashes were recorded (no `files` in its state) is only checked for its state."""
    folder = Path(folder)
    state, problem = read_state(folder)
    if problem is not None:
        return problem
    recorded = state.get(FILES_KEY)
    if recorded is None:
        return None
    if not isinstance(recorded, dict):
        return f"{folder / STATE_FILE}: its '{FILES_KEY}' entry is not a mapping of file to sha256"
    for name, digest in recorded.items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing (the run wrote it into this checkpoint)"
        if _sha256(path) != digest:
            return f"{path} differs from what the run wrote (sha256 mismatch: truncated, corrupt or replaced)"
    return None
