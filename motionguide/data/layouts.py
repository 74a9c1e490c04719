"""Find the clips and captions of a dataset folder, in the layouts video trainers already use.

Detected in this order (the first that exists wins):

    metadata.jsonl          one JSON object per line: video path (relative to the folder), caption, optional id
    metadata.csv            same columns, with a header row (DiffSynth-Studio, HF `videofolder`)
    prompts.txt+videos.txt  line-aligned caption and path lists (diffusers' CogVideoX example, finetrainers)
    a folder of videos      clip1.mp4 + clip1.txt, searched recursively

Nothing here opens a video: this is the cheap "what does the user say is there" step. `VideoDataset` then
checks each entry and skips bad ones with a reason. A row this step already finds bad (a caption that is not
valid UTF-8, a video path or a caption that is not text) becomes an
entry with a `problem`, so one bad row is one recorded skip and never ends the run; only a file that cannot
describe any clip (no header, unknown column, no line of JSON at all) is an error; a jsonl line that is not a
JSON object is one bad row.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from motionguide.errors import ConfigError, closest_names

__all__ = ["VIDEO_EXTENSIONS", "LAYOUTS", "RawEntry", "Layout", "read_layout"]

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
LAYOUTS = ("jsonl", "csv", "lists", "folder")
_DEFAULT_ID_COLUMN = "id"
_PROMPT_LISTS = ("prompts.txt", "prompt.txt")


@dataclass(frozen=True)
class RawEntry:
    """One clip as the dataset description states it; `path` or `caption` is None when the row lacks it."""

    clip_id: str
    path: Path | None
    caption: str | None
    where: str  # e.g. "metadata.csv line 4", for messages
    problem: tuple[str, str] | None = None  # (skip category, reason) of a row that is bad as written


@dataclass(frozen=True)
class Layout:
    """The layout found in a dataset folder: its kind, metadata file and clip entries."""

    kind: str  # one of LAYOUTS
    file: Path | None  # the metadata file the entries come from (None for a folder of videos)
    entries: list[RawEntry]


_UNDECODABLE = re.compile("[\udc80-\udcff]")  # what errors="surrogateescape" makes of bytes that are not UTF-8


def _decode_lines(file: Path, newlines_only: bool = False) -> list[str]:
    """The file's lines; bytes that are not UTF-8 kept as lone surrogates, so one bad line spoils only itself.
    `newlines_only` splits at \\n, \\r\\n and \\r only (as reading a JSONL file line by line does: U+2028 may sit
    inside a JSON string)."""
    text = file.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    return re.split(r"\r\n|\r|\n", text) if newlines_only else text.splitlines()


def _not_utf8(text: str) -> bool:
    return bool(_UNDECODABLE.search(text))


def _readable(text: str) -> str:
    """Undecodable bytes shown as U+FFFD, for ids and messages."""
    return _UNDECODABLE.sub("\ufffd", text)


def _utf8_problem(what: str) -> tuple[str, str]:
    return ("bad_caption", f"not UTF-8: {what} holds bytes that are not valid UTF-8; re-save it as UTF-8")


def _clean_caption(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    return text or None


def _derived_id(root: Path, path: Path | None, fallback: str) -> str:
    """Clip id from the video path relative to the root, without extension (videos/clip_1.mp4 -> videos/clip_1)."""
    if path is None:
        return fallback
    try:
        relative = path.relative_to(root)
    except ValueError:
        relative = Path(path.name)
    return relative.with_suffix("").as_posix()


def _missing_column(file: Path, role: str, column: str, parameter: str, columns: Iterable[str]) -> ConfigError:
    columns = list(columns)
    close = closest_names(column, columns)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(repr(c) for c in columns) or "(none)"
    if not close and {"video", "prompt"} <= set(columns):
        hint = " This looks like DiffSynth-Studio's layout: set video_column: video and caption_column: prompt."
    return ConfigError(
        f"{file}: no {role} column {column!r}.{hint} Columns in the file: {listing}. "
        f"Set {parameter}: <name> in the training config (--{parameter} for `motionguide curate`, "
        f"{parameter}=<name> for VideoDataset), or rename the column."
    )


def _rows_to_entries(root: Path, file: Path, rows: list[tuple[str, dict[str, Any]]], columns: list[str],
                     caption_column: str, video_column: str, id_column: str | None) -> list[RawEntry]:
    if video_column not in columns:
        raise _missing_column(file, "video path", video_column, "video_column", columns)
    if caption_column not in columns:
        raise _missing_column(file, "caption", caption_column, "caption_column", columns)
    use_id = id_column is not None and id_column in columns
    if id_column is not None and not use_id and id_column != _DEFAULT_ID_COLUMN:
        raise _missing_column(file, "id", id_column, "id_column", columns)

    entries = []
    for where, row in rows:
        if _UNREADABLE_ROW in row:  # one line that is not JSON: one skip, the other rows kept
            entries.append(RawEntry(where, None, None, where, ("bad_row", row[_UNREADABLE_ROW])))
            continue
        problem = None
        raw_path, raw_caption = row.get(video_column), row.get(caption_column)
        if raw_path is not None and not isinstance(raw_path, str):
            problem = ("bad_row", f"bad row: {where}: {video_column} must be a video path (text), got {raw_path!r}")
            raw_path = None
        elif raw_caption is not None and not isinstance(raw_caption, str):
            problem = ("bad_row", f"bad row: {where}: {caption_column} must be text, got {raw_caption!r}")
        raw_path = _readable(raw_path.strip()) if raw_path is not None else ""
        path = root / raw_path if raw_path else None
        if problem is None and any(_not_utf8(v) for v in row.values() if isinstance(v, str)):
            problem = _utf8_problem(where)
        raw_id = row.get(id_column) if use_id else None
        clip_id = (_readable(str(raw_id).strip()) if raw_id not in (None, "")
                   else _derived_id(root, path, fallback=where))
        caption = _clean_caption(raw_caption) if problem is None else None
        entries.append(RawEntry(clip_id, path, caption, where, problem))
    return entries


_UNREADABLE_ROW = "\0unreadable"  # the key of a jsonl line that is not a JSON object (never a real column)


def _read_jsonl(file: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """The rows of a jsonl file. A line that is not a JSON object is one bad row (a recorded skip), unless no
    line is: then the file is not JSON lines at all, an error naming the first bad line."""
    rows, columns, first_error = [], {}, None
    for number, line in enumerate(_decode_lines(file, newlines_only=True), start=1):
        if not line.strip():
            continue
        where = f"{file.name} line {number}"
        try:
            row = json.loads(line)
            error = None if isinstance(row, dict) else f"expected a JSON object, got {type(row).__name__}"
        except json.JSONDecodeError as exc:
            error = f"not valid JSON ({exc.msg})"
        if error is not None:
            first_error = first_error or f"{file} line {number}: {error}"
            rows.append((where, {_UNREADABLE_ROW: f"bad row: {where}: {error}; each line must be one JSON "
                                 "object such as {\"file_name\": \"videos/a.mp4\", \"text\": \"...\"}"}))
            continue
        columns.update(dict.fromkeys(row))
        rows.append((where, row))
    if not rows:
        raise ConfigError(f"{file} has no rows; add one JSON object per clip or delete the file")
    if not columns:
        raise ConfigError(f"{first_error}; each line must be one JSON object such as "
                          "{\"file_name\": \"videos/a.mp4\", \"text\": \"...\"}")
    return rows, list(columns)


def _read_csv(file: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    import io

    text = file.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    reader = csv.DictReader(io.StringIO(text, newline=""))  # a row that is not UTF-8 is one bad row
    columns = [c for c in (reader.fieldnames or []) if c is not None]
    rows = [(f"{file.name} line {reader.line_num}", row) for row in reader]
    if any(_not_utf8(c) for c in columns):
        raise ConfigError(f"{file}: the header row is not valid UTF-8; re-save the file as UTF-8")
    if not columns:
        raise ConfigError(f"{file} is empty; it needs a header row (e.g. file_name,text) and one row per clip")
    if not rows:
        raise ConfigError(f"{file} has a header but no rows; add one row per clip or delete the file")
    return rows, columns


def _lines_without_trailing_blanks(file: Path) -> list[str]:
    lines = _decode_lines(file)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _read_lists(root: Path, prompts_file: Path, videos_file: Path) -> list[RawEntry]:
    prompts = _lines_without_trailing_blanks(prompts_file)
    videos = _lines_without_trailing_blanks(videos_file)
    if len(prompts) != len(videos):
        raise ConfigError(f"{prompts_file} has {len(prompts)} lines but {videos_file} has {len(videos)}; line i "
                          "of one must caption line i of the other")
    entries = []
    for number, (caption, video) in enumerate(zip(prompts, videos), start=1):
        problem = None
        if _not_utf8(video):
            problem = _utf8_problem(f"{videos_file.name} line {number}")
        elif _not_utf8(caption):
            problem = _utf8_problem(f"{prompts_file.name} line {number}")
        video = _readable(video.strip())
        path = root / video if video else None
        where = f"{videos_file.name} line {number}"
        caption_text = _clean_caption(caption) if problem is None else None
        entries.append(RawEntry(_derived_id(root, path, where), path, caption_text, where, problem))
    return entries


def _read_folder(root: Path) -> list[RawEntry]:
    videos = sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    entries = []
    for path in videos:
        caption_file = path.with_suffix(".txt")
        caption, problem = None, None
        if caption_file.is_file():
            try:
                text = caption_file.read_bytes().decode("utf-8-sig")
                caption = _clean_caption(text.replace("\r\n", "\n").replace("\r", "\n"))  # as read_text reads it
            except UnicodeDecodeError as error:
                problem = _utf8_problem(f"caption file {caption_file} (byte {error.start + 1})")
        entries.append(RawEntry(_derived_id(root, path, path.name), path, caption,
                                path.relative_to(root).as_posix(), problem))
    return entries


def _check_unique_ids(entries: list[RawEntry], source: Path) -> None:
    seen: dict[str, str] = {}
    for entry in entries:
        if entry.clip_id in seen:
            raise ConfigError(
                f"{source}: clip id {entry.clip_id!r} appears twice ({seen[entry.clip_id]} and {entry.where}); ids "
                "name the cached latents, so make them unique (or list each video once)"
            )
        seen[entry.clip_id] = entry.where


def read_layout(root: str | Path, caption_column: str = "text", video_column: str = "file_name",
                id_column: str | None = "id") -> Layout:
    """The entries of the dataset at `root` (see the module docstring for the layouts and their order).

    Ids come from `id_column` when the file has it; otherwise from the video path (relative, no extension).
    A missing id column is only an error when you named a column other than the default "id".
    """
    root = Path(root)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise ConfigError(f"dataset folder {root} {what}; pass the folder that holds metadata.jsonl / "
                          "metadata.csv or the videos")
    jsonl, csv_file, videos_list = root / "metadata.jsonl", root / "metadata.csv", root / "videos.txt"
    prompts_list = next((root / name for name in _PROMPT_LISTS if (root / name).is_file()), None)

    if jsonl.is_file() or csv_file.is_file():
        file = jsonl if jsonl.is_file() else csv_file
        rows, columns = _read_jsonl(file) if file is jsonl else _read_csv(file)
        layout = Layout("jsonl" if file is jsonl else "csv", file,
                        _rows_to_entries(root, file, rows, columns, caption_column, video_column, id_column))
    elif prompts_list is not None and videos_list.is_file():
        layout = Layout("lists", videos_list, _read_lists(root, prompts_list, videos_list))
    else:
        entries = _read_folder(root)
        if not entries:
            raise ConfigError(
                f"{root}: found no metadata.jsonl, metadata.csv, prompts.txt + videos.txt, or videos "
                f"({', '.join(VIDEO_EXTENSIONS)}) with same-name .txt captions; add one of these layouts"
            )
        layout = Layout("folder", None, entries)
    _check_unique_ids(layout.entries, layout.file or root)
    return layout
