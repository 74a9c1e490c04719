"""`FeatureStore`: sharded, append-only, resumable storage of per-clip gradient features.

Layout (``h`` = :func:`config_hash` of everything that decides a feature)::

    root/h/config.json                                  the config, written once; reopening checks it
    root/h/<split>/rank{r}/part-{k:05d}.safetensors     tensor "features" [n, dim] float32
    root/h/<split>/rank{r}/part-{k:05d}.json            one record per clip of the part (rows and skips)

Why it is built this way:

* **Nothing lost, nothing counted twice.** Each file is written to a temp file and renamed; the JSON goes last,
  so a part counts only once both files are complete and agree. A crash loses at most the clips still in the
  buffer (at most ``flush_every``); they are not in :meth:`FeatureStore.done_ids`, so a resumed run redoes
  them. A part written twice around a crash is harmless: :meth:`FeatureStore.load` keeps the first
  occurrence of every clip id, ordered by (rank, part, row).
* **One folder per config.** Train and query features must come from the identical featurizer, so both
  splits live under one config hash; a different projector, seed, ε, loss or mask setting lands in another
  folder instead of mixing with old features.
* **Ranks never share a file.** Each rank appends to its own folder; any process can read all of them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..files import atomic_write
from ..identity import json_default, stable_json
from ..errors import ConfigError, MotionGuideError

__all__ = ["FeatureStore", "StoreMismatchError", "config_hash", "read_merged"]

logger = logging.getLogger(__name__)

STORE_FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
MERGED_FEATURES = "features.safetensors"
MERGED_MANIFEST = "manifest.json"
_PART = re.compile(r"part-(\d{5,})\.(safetensors|json)$")
_SPLIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class StoreMismatchError(MotionGuideError, ValueError):
    """A store folder holds features made with a different config or dimension."""


def config_hash(config: dict) -> str:
    """Short sha256 (16 hex digits) of the sorted-key JSON of a config."""
    try:
        text = stable_json(config)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"feature-store config must be JSON-serialisable without NaN/inf: {exc}") from exc
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _write_json(path: Path, value: Any) -> None:
    text = json.dumps(value, sort_keys=True, indent=1, default=json_default, allow_nan=False)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


class FeatureStore:
    """Append features per clip; read them back merged over ranks and parts.

    Typical loop on rank r of w (every rank passes the same full id list)::

        with FeatureStore(root, config, rank=r, world_size=w) as store:
            for clip_id in store.pending(all_ids):
                ...
                store.add(clip_id, feature, {"grad_norm": g})        # or add(clip_id, None, {"skip_reason": ...})
    """

    def __init__(self, root: str | os.PathLike, config: dict, rank: int = 0, world_size: int = 1,
                 dim: int = 512, flush_every: int = 8, split: str = "train"):
        if not isinstance(config, dict):
            raise ConfigError(f"config must be a dict, got {type(config).__name__}")
        if not 0 <= int(rank) < int(world_size):
            raise ConfigError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if int(dim) < 1 or int(flush_every) < 1:
            raise ConfigError(f"dim and flush_every must be >= 1, got dim={dim}, flush_every={flush_every}")
        self._check_split(split)
        self.config = json.loads(stable_json(config))
        self.config_hash = config_hash(config)
        self.rank, self.world_size = int(rank), int(world_size)
        self.dim, self.flush_every, self.split = int(dim), int(flush_every), split
        self.dir = Path(root) / self.config_hash
        self.rank_dir = self.dir / split / f"rank{self.rank}"
        self.rank_dir.mkdir(parents=True, exist_ok=True)
        self._write_or_check_config()
        self._buffer: list[tuple[str, torch.Tensor | None, dict]] = []
        self._next_part = self._first_free_part()
        self._seen = self.done_ids()

    # ------------------------------------------------------------------------------------------ setup

    @staticmethod
    def _check_split(split: str) -> None:
        if not isinstance(split, str) or not _SPLIT.fullmatch(split):
            raise ConfigError(f"split must be a short name of letters, digits, '_' or '-', got {split!r}")

    def _write_or_check_config(self) -> None:
        path = self.dir / CONFIG_FILE
        wanted = {"format": STORE_FORMAT_VERSION, "config_hash": self.config_hash, "dim": self.dim,
                  "config": self.config}
        if not path.exists():
            _write_json(path, wanted)
            return
        try:
            existing = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreMismatchError(f"{path} is unreadable ({exc}); restore it or move the folder away") from exc
        if existing.get("config") != self.config:
            raise StoreMismatchError(
                f"{path} was written for a different config than this run's (hash {self.config_hash}); the "
                "folder name is the config hash, so the file was edited or copied. Move it away or pass the "
                "config it was made with.")
        if existing.get("dim") != self.dim:
            raise StoreMismatchError(f"{path} holds {existing.get('dim')}-d features but this store was opened "
                                     f"with dim={self.dim}; pass dim={existing.get('dim')} or use a new root")

    def _first_free_part(self) -> int:
        """The part number after every existing file (complete or torn), so nothing is ever overwritten."""
        numbers = [int(m.group(1)) for p in self.rank_dir.iterdir() if (m := _PART.match(p.name))]
        return max(numbers, default=-1) + 1

    # ---------------------------------------------------------------------------------------- writing

    def pending(self, clip_ids: Sequence[str]) -> list[str]:
        """This rank's share of ``clip_ids`` (every world_size-th, from position ``rank``) not yet done.

        The share depends only on the list, not on timing, so ranks never disagree about who does what.
        """
        done = self.done_ids()
        return [c for i, c in enumerate(clip_ids) if i % self.world_size == self.rank and c not in done]

    def add(self, clip_id: str, feature: torch.Tensor | None, record: dict | None = None) -> bool:
        """Buffer one clip; ``feature=None`` records a skip and needs ``record["skip_reason"]``.

        A non-finite feature is recorded as a skip (reason ``non_finite_feature``) rather than stored. Returns
        False (and logs) when the clip is already done or buffered, so a retry never makes a duplicate.
        """
        if not isinstance(clip_id, str) or not clip_id:
            raise ValueError(f"clip_id must be a non-empty string, got {clip_id!r}")
        record = dict(record or {})
        for reserved in ("clip_id", "row", "config_hash"):
            if reserved in record:
                raise ValueError(f"record key {reserved!r} is set by the store; rename it")
        if clip_id in self._seen:
            logger.warning("feature store: clip %r is already done or buffered; ignoring the new one", clip_id)
            return False
        if feature is None:
            if not record.get("skip_reason"):
                raise ValueError(f"clip {clip_id!r}: feature is None, so record['skip_reason'] must say why "
                                 "(e.g. 'static_mask', 'decode_error')")
        else:
            if not isinstance(feature, torch.Tensor):
                raise TypeError(f"feature must be a torch.Tensor or None, got {type(feature).__name__}")
            feature = feature.detach().reshape(-1).to(device="cpu", dtype=torch.float32)
            if feature.numel() != self.dim:
                raise ValueError(f"clip {clip_id!r}: feature has {feature.numel()} values, the store holds "
                                 f"{self.dim}-d features")
            if not bool(torch.isfinite(feature).all()):
                logger.warning("feature store: clip %r has a non-finite feature; recorded as skipped", clip_id)
                feature = None
                record["skip_reason"] = "non_finite_feature"
        try:
            stable_json(record)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"clip {clip_id!r}: record is not JSON-serialisable without NaN/inf: {exc}") from exc
        self._buffer.append((clip_id, feature, record))
        self._seen.add(clip_id)
        if len(self._buffer) >= self.flush_every:
            self.flush()
        return True

    def flush(self) -> Path | None:
        """Write the buffer as one part (features first, then its JSON); returns the JSON path or None."""
        if not self._buffer:
            return None
        rows, records = [], []
        for clip_id, feature, record in self._buffer:
            entry = {**record, "clip_id": clip_id, "row": None, "config_hash": self.config_hash}  # per-clip manifest
            if feature is not None:
                entry["row"] = len(rows)
                rows.append(feature)
            records.append(entry)
        features = torch.stack(rows) if rows else torch.zeros(0, self.dim)
        stem = self.rank_dir / f"part-{self._next_part:05d}"
        meta = {"config_hash": self.config_hash, "split": self.split, "rank": str(self.rank)}
        atomic_write(stem.with_suffix(".safetensors"),
                      lambda tmp: save_file({"features": features.contiguous()}, tmp, metadata=meta))
        manifest = {"format": STORE_FORMAT_VERSION, "config_hash": self.config_hash, "split": self.split,
                    "rank": self.rank, "part": self._next_part, "rows": len(rows), "records": records}
        json_path = stem.with_suffix(".json")
        _write_json(json_path, manifest)
        self._next_part += 1
        self._buffer.clear()
        return json_path

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc) -> None:
        # Buffered clips are complete results: keep them even when the loop died on a later clip.
        self.flush()

    # ---------------------------------------------------------------------------------------- reading

    def _parts(self, split: str, with_features: bool = True) -> Iterable[tuple[list[dict], torch.Tensor | None]]:
        """Complete parts of a split, ordered by (rank, part); torn or inconsistent parts are skipped.

        Without features only the tensor file's header is read (enough to check the part is complete).
        """
        split_dir = self.dir / split
        if not split_dir.is_dir():
            return
        rank_dirs = [(int(p.name[4:]), p) for p in split_dir.iterdir()
                     if p.is_dir() and p.name.startswith("rank") and p.name[4:].isdigit()]
        for _, rank_dir in sorted(rank_dirs):
            numbered = sorted((int(m.group(1)), p) for p in rank_dir.iterdir()
                              if (m := _PART.match(p.name)) and m.group(2) == "json")
            for _, json_path in numbered:
                part = self._read_part(json_path, with_features)
                if part is not None:
                    yield part

    def _read_part(self, json_path: Path, with_features: bool) -> tuple[list[dict], torch.Tensor | None] | None:
        tensor_path = json_path.with_suffix(".safetensors")
        features = None
        try:
            manifest = json.loads(json_path.read_text())
            records, n_rows = manifest["records"], manifest["rows"]
            if with_features:
                features = load_file(str(tensor_path))["features"]
                shape = tuple(features.shape)
            else:
                with safe_open(str(tensor_path), framework="pt") as f:
                    shape = tuple(f.get_slice("features").get_shape())
        except Exception as exc:  # torn JSON, missing or corrupt tensor file: the part never completed
            logger.warning("feature store: ignoring incomplete part %s (%s)", json_path, exc)
            return None
        rows = [r["row"] for r in records if r.get("row") is not None]
        if (manifest.get("config_hash") != self.config_hash or shape != (n_rows, self.dim)
                or sorted(rows) != list(range(n_rows))):
            logger.warning("feature store: ignoring inconsistent part %s", json_path)
            return None
        return records, features

    def done_ids(self, split: str | None = None) -> set[str]:
        """Clip ids in complete parts of all ranks (stored rows and recorded skips); the buffer is not done."""
        split = split or self.split
        self._check_split(split)
        return {r["clip_id"] for records, _ in self._parts(split, with_features=False) for r in records}

    def counts(self, split: str | None = None) -> dict[str, int]:
        """featurised / skipped / flagged clips of a split over the complete parts of every rank and every
        invocation, one per clip id (the counts of the whole pass, not of the last run)."""
        split = split or self.split
        self._check_split(split)
        first: dict[str, dict] = {}
        for records, _ in self._parts(split, with_features=False):
            for record in records:
                first.setdefault(record["clip_id"], record)
        stored = [r for r in first.values() if r.get("row") is not None]
        return {"featurised": len(stored), "skipped": len(first) - len(stored),
                "flagged": sum(bool(r.get("flags")) for r in stored)}

    def _first_occurrences(self, split: str) -> tuple[dict[str, tuple[dict, torch.Tensor | None]], int]:
        found: dict[str, tuple[dict, torch.Tensor | None]] = {}
        duplicates = 0
        for records, features in self._parts(split):
            for record in records:
                if record["clip_id"] in found:
                    duplicates += 1
                    continue
                row = record.get("row")
                found[record["clip_id"]] = (record, None if row is None else features[row])
        if duplicates:
            logger.info("feature store: %d duplicate clip records ignored (first occurrence kept)", duplicates)
        return found, duplicates

    def load(self, split: str | None = None) -> tuple[list[str], torch.Tensor, list[dict]]:
        """(ids, features [N, dim] float32, records) of stored rows, sorted by clip id, one per id.

        Skipped clips have no row and are not returned here; see :meth:`skipped`.
        """
        split = split or self.split
        self._check_split(split)
        return self._rows(self._first_occurrences(split)[0])

    def _rows(self, found: dict[str, tuple[dict, torch.Tensor | None]]) -> tuple[list[str], torch.Tensor, list[dict]]:
        ids = sorted(c for c, (_, f) in found.items() if f is not None)
        assert len(ids) == len(set(ids)), "feature store returned duplicate clip ids"
        features = torch.stack([found[c][1] for c in ids]) if ids else torch.zeros(0, self.dim)
        return ids, features, [_public(found[c][0]) for c in ids]

    def skipped(self, split: str | None = None) -> list[dict]:
        """Records of clips recorded without a feature (each with ``skip_reason``), sorted by clip id."""
        return self._skips(self._first_occurrences(split or self.split)[0])

    @staticmethod
    def _skips(found: dict[str, tuple[dict, torch.Tensor | None]]) -> list[dict]:
        return [_public(found[c][0]) for c in sorted(found) if found[c][1] is None]

    def merge(self, out_dir: str | os.PathLike | None = None, split: str | None = None) -> Path:
        """Write ``features.safetensors`` + ``manifest.json`` (all ranks, deduplicated, by id) atomically.

        Defaults to ``root/<hash>/<split>/merged``. The manifest is written last and names the feature count,
        so a reader can tell a finished merge from an interrupted one.
        """
        split = split or self.split
        self._check_split(split)
        found, _ = self._first_occurrences(split)  # one read of the parts for the rows and the skips
        ids, features, records = self._rows(found)
        out = Path(out_dir) if out_dir is not None else self.dir / split / "merged"
        out.mkdir(parents=True, exist_ok=True)
        meta = {"config_hash": self.config_hash, "split": split}
        atomic_write(out / MERGED_FEATURES,
                      lambda tmp: save_file({"features": features.contiguous()}, tmp, metadata=meta))
        _write_json(out / MERGED_MANIFEST, {
            "format": STORE_FORMAT_VERSION, "config_hash": self.config_hash, "config": self.config,
            "split": split, "dim": self.dim, "count": len(ids), "ids": ids, "records": records,
            "skipped": self._skips(found)})
        return out


def _public(record: dict) -> dict:
    """A stored record without its part-local row number."""
    return {k: v for k, v in record.items() if k != "row"}


def read_merged(out_dir: str | os.PathLike) -> tuple[list[str], torch.Tensor, list[dict], dict]:
    """Read a :meth:`FeatureStore.merge` folder: (ids, features, records, manifest)."""
    out = Path(out_dir)
    manifest = json.loads((out / MERGED_MANIFEST).read_text())
    features = load_file(str(out / MERGED_FEATURES))["features"]
    if features.shape[0] != manifest["count"] or len(manifest["ids"]) != manifest["count"]:
        raise MotionGuideError(f"{out}: features ({features.shape[0]} rows) and manifest "
                               f"({manifest['count']}) disagree; run merge() again")
    return manifest["ids"], features, manifest["records"], manifest
