"""A latent + text-embedding cache on disk, so fine-tuning never runs the VAE or the text encoder.

    root/<key>/<clip>.safetensors       latents (normalised, VAE layout [C, F', h, w], fp32), prompt_embeds [seq, dim]
                                         (and motion_mask [F', h, w] when the key has a `motion_mask` field)
    root/<key>/_empty_prompt.safetensors the "" prompt's embeddings (caption dropout)
    root/<key>/manifest.json             key fields, counts, and per clip: caption, source, status, reason
    root/<key>/_failed.rank<r>.json      a sharded build's failures of rank r > 0, merged by rank 0 and deleted

The key (see :mod:`motionguide.identity`) covers everything that decides the tensors, so one root
can hold caches for several models and settings. Every file is written atomically; each clip file also
carries its own description in the safetensors header, so a build that dies between a clip file and the
next manifest write loses nothing. A rebuild encodes only clips that are missing or whose source video or
caption changed.

On several processes (`build(..., rank=, world_size=, barrier=)`) every rank encodes its share of the
missing clips on its own device; the main process then adopts the other ranks' clip files from their headers,
merges their failure records and writes the one manifest, so no rank idles behind a barrier while one works.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from motionguide.errors import ConfigError, MotionGuideError
from motionguide.files import atomic_write
from motionguide.data.buckets import Bucket
from motionguide.identity import CACHE_FORMAT_VERSION, cache_fields, cache_key, key_json, model_identity

__all__ = ["LatentCache", "CachedLatentDataset", "BuildReport", "clip_file_name"]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
EMPTY_PROMPT_FILE = "_empty_prompt.safetensors"
FAILURES_FILE = "_failed.rank{rank}.json"
_FLUSH_SECONDS = 10.0
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


#: prefix of the conditioning tensors in a clip file (an image-to-video model's first-frame condition)
CONDITION_PREFIX = "condition."


#: key field of a cache that also holds each clip's Motive motion mask (the masker's `describe()`)
MOTION_MASK_FIELD = "motion_mask"


def condition_of(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The conditioning tensors of a loaded clip ({} for a text-to-video cache), without their prefix."""
    return {k[len(CONDITION_PREFIX):]: v for k, v in tensors.items() if k.startswith(CONDITION_PREFIX)}


def clip_file_name(clip_id: str) -> str:
    """A file name for a clip id; ids that are not plain names get a hash suffix so two never collide."""
    if _SAFE_NAME.fullmatch(clip_id) and not clip_id.endswith(".safetensors"):
        return f"{clip_id}.safetensors"
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", clip_id).strip("._-")[:60] or "clip"
    return f"{readable}-{hashlib.sha256(clip_id.encode()).hexdigest()[:10]}.safetensors"


def _source_record(entry: Any) -> dict[str, Any]:
    """What identifies a clip's input: path, size and mtime of the video, caption, output size."""
    path = Path(entry.path)
    try:
        stat = path.stat()
        size, mtime = stat.st_size, stat.st_mtime_ns
    except OSError:
        size = mtime = None
    return {"caption": entry.caption, "source": str(path.resolve()), "source_size": size,
            "source_mtime_ns": mtime, "bucket": list(entry.bucket.as_tuple())}


def _same_source(record: dict[str, Any] | None, source: dict[str, Any]) -> bool:
    return record is not None and all(record.get(k) == v for k, v in source.items())


@dataclass
class BuildReport:
    """What one `LatentCache.build` call did."""

    encoded: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # clip id -> reason
    #: the clips this process encoded itself (= `encoded` on one process; its share on several)
    encoded_here: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"encoded {len(self.encoded)}, reused {len(self.reused)}, failed {len(self.failed)}"


class LatentCache:
    """Cached VAE latents and prompt embeddings of one dataset under one key (see module docstring).

    Usual use: ``cache = LatentCache.for_dataset(root, dataset, backbone, max_sequence_length)`` then
    ``cache.build(dataset, backbone, max_sequence_length)``. In a multi-GPU job every rank calls `build` with
    its `rank`, `world_size` and a `barrier`, and reopens the cache after it returns.
    """

    def __init__(self, root: str | os.PathLike, key: str, fields: dict[str, Any] | None = None):
        if not re.fullmatch(r"[A-Za-z0-9._-]+", key or ""):
            raise ConfigError(f"cache key {key!r} is not a plain folder name; make it with cache_key(**fields)")
        self.root, self.key = Path(root), key
        self.dir = self.root / key
        self._manifest = self._read_manifest()
        saved = self._manifest.get("fields")
        if fields is not None and saved is not None and _jsonish(fields) != saved:
            differing = sorted(k for k in set(fields) | set(saved) if _jsonish(fields.get(k)) != saved.get(k))
            raise ConfigError(f"{self.dir / MANIFEST} was written for other settings (differing: "
                              f"{', '.join(differing)}) under the same key {key!r}; make the key with "
                              "cache_key(**fields) or LatentCache.for_dataset(...)")
        self.fields = _jsonish(fields) if fields is not None else saved

    @classmethod
    def for_dataset(cls, root: str | os.PathLike, dataset: Any, backbone: Any, max_sequence_length: int,
                    sample: bool = False, **extra: Any) -> "LatentCache":
        """The cache folder for this dataset's sampling, this model and this sequence length."""
        fields = cache_fields(dataset, backbone, max_sequence_length, sample=sample, **extra)
        return cls(root, cache_key(**fields), fields)

    # ------------------------------------------------------------------ manifest
    def _read_manifest(self) -> dict[str, Any]:
        path = self.dir / MANIFEST
        if not path.is_file():
            return {"clips": {}}
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path} is not valid JSON ({error.msg}); delete it and run build() again: the clip "
                              "files carry their own descriptions and will be adopted") from None
        if manifest.get("format_version") != CACHE_FORMAT_VERSION:
            raise ConfigError(f"{path} has cache format {manifest.get('format_version')}, this motionguide writes "
                              f"{CACHE_FORMAT_VERSION}; use another cache root or delete {self.dir}")
        manifest.setdefault("clips", {})
        return manifest

    def _write_manifest(self) -> None:
        clips = self._manifest["clips"]
        statuses = [c["status"] for c in clips.values()]
        self._manifest.update(format_version=CACHE_FORMAT_VERSION, key=self.key, fields=self.fields,
                              counts={"ok": statuses.count("ok"), "failed": statuses.count("failed")})
        text = json.dumps(self._manifest, indent=1, sort_keys=False) + "\n"
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.dir / MANIFEST, lambda tmp: Path(tmp).write_text(text))

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest held in memory: key, fields, counts and one record per clip."""
        return self._manifest

    @property
    def ids(self) -> list[str]:
        """Ids of the clips cached successfully, sorted (an order that does not depend on build history)."""
        return sorted(k for k, v in self._manifest["clips"].items() if v["status"] == "ok")

    def clip_record(self, clip_id: str) -> dict[str, Any]:
        """The manifest record of `clip_id` (status, file, caption, ...), failed clips included; KeyError if absent."""
        try:
            return self._manifest["clips"][clip_id]
        except KeyError:
            raise KeyError(f"clip {clip_id!r} is not in the latent cache {self.dir}") from None

    def load(self, clip_id: str) -> dict[str, torch.Tensor]:
        """{latents, prompt_embeds} of one cached clip, and for an image-to-video model its `condition.*`
        tensors (see :func:`condition_of`)."""
        record = self.clip_record(clip_id)
        if record["status"] != "ok":
            raise KeyError(f"clip {clip_id!r} failed to cache ({record.get('reason')}); see {self.dir / MANIFEST}")
        return load_file(str(self.dir / record["file"]))

    # ------------------------------------------------------------------ empty prompt
    def empty_prompt_embeds(self, backbone: Any = None) -> torch.Tensor:
        """Embeddings [seq, dim] of the empty prompt "" (for caption dropout); encoded once if a backbone is given."""
        path = self.dir / EMPTY_PROMPT_FILE
        if not path.is_file():
            if backbone is None:
                raise FileNotFoundError(f"{path} does not exist; run cache.build(...) or pass backbone= to encode it")
            if not self.fields or "max_sequence_length" not in self.fields:
                raise ConfigError(f"{self.dir}: the cache has no recorded max_sequence_length; run cache.build(...)")
            self._encode_empty_prompt(backbone, int(self.fields["max_sequence_length"]))
        return load_file(str(path))["prompt_embeds"]

    def _encode_empty_prompt(self, backbone: Any, max_sequence_length: int) -> None:
        with torch.no_grad():
            embeds = backbone.encode_prompt([""], max_sequence_length)[0].detach().cpu().contiguous()
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / EMPTY_PROMPT_FILE
        atomic_write(path, lambda tmp: save_file({"prompt_embeds": embeds}, tmp, metadata={"key": self.key}))
        self._manifest["empty_prompt"] = {"file": EMPTY_PROMPT_FILE, "shape": list(embeds.shape)}

    # ------------------------------------------------------------------ build
    def _check_settings(self, dataset: Any, backbone: Any, max_sequence_length: int, sample: bool) -> None:
        if self.fields is None:  # a bare key of your own: record what is being built
            self.fields = _jsonish(cache_fields(dataset, backbone, max_sequence_length, sample=sample))
            return
        known = _jsonish(cache_fields(dataset, backbone, max_sequence_length, sample=sample))
        differing = sorted(k for k in known if k in self.fields and self.fields[k] != known[k])
        if differing:
            details = "; ".join(f"{k}: cache {self.fields[k]!r}, now {known[k]!r}" for k in differing)
            raise ConfigError(
                f"latent cache {self.dir} was made for other settings ({details}). Open the right folder with "
                "LatentCache.for_dataset(root, dataset, backbone, max_sequence_length)"
            )

    def _adopt_orphan(self, clip_id: str, source: dict[str, Any]) -> bool:
        """A clip file written before the manifest was last saved (interrupted build): adopt it if current."""
        path = self.dir / clip_file_name(clip_id)
        if not path.is_file():
            return False
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                shapes = {name: list(handle.get_slice(name).get_shape()) for name in handle.keys()}
            record = json.loads(meta.get("record", "null"))
        except Exception:  # unreadable leftover: encode again
            return False
        conditioned = self.fields is not None and "condition" in self.fields
        plain = {k for k in shapes if not k.startswith(CONDITION_PREFIX)}
        if not _same_source(record, source) or plain != {"latents", "prompt_embeds"} | self._mask_names() or \
                conditioned != (len(plain) < len(shapes)):
            return False
        self._manifest["clips"][clip_id] = {**record, "status": "ok", "file": path.name,
                                            "latent_shape": shapes["latents"],
                                            "prompt_shape": shapes["prompt_embeds"]}
        return True

    def _mask_names(self) -> set[str]:
        """{"motion_mask"} when this cache's key asks for motion masks, else an empty set."""
        return {"motion_mask"} if self.fields is not None and MOTION_MASK_FIELD in self.fields else set()

    def _plan(self, dataset: Any, retry_failed: bool, report: BuildReport) -> list[int]:
        todo = []
        for index, entry in enumerate(dataset.entries):
            source = _source_record(entry)
            record = self._manifest["clips"].get(entry.clip_id)
            current = _same_source(record, source)
            if current and record["status"] == "ok" and (self.dir / record["file"]).is_file():
                report.reused.append(entry.clip_id)
            elif current and record["status"] == "failed" and record.get("sticky") and not retry_failed:
                report.failed[entry.clip_id] = record["reason"]
            elif self._adopt_orphan(entry.clip_id, source):
                report.reused.append(entry.clip_id)
            else:
                todo.append(index)
        return todo

    def _encode_latents(self, backbone: Any, pixels: torch.Tensor, ids: Sequence[str], sample: bool) -> torch.Tensor:
        vae = backbone.vae
        x = pixels.to(device=vae.device, dtype=vae.dtype)
        posterior = vae.encode(x).latent_dist
        if sample:  # one seeded draw per clip, so a clip's latent does not depend on its batch neighbours
            noise = torch.stack([
                torch.randn(posterior.mean.shape[1:], generator=torch.Generator().manual_seed(_seed_of(i)))
                for i in ids
            ]).to(posterior.mean.device, posterior.mean.dtype)
            latents = posterior.mean + posterior.std * noise
        else:
            latents = posterior.mode()
        return backbone.normalize_latents(latents.float()).cpu()

    def _record_failure(self, entry: Any, reason: str, sticky: bool, report: BuildReport) -> None:
        self._manifest["clips"][entry.clip_id] = {**_source_record(entry), "status": "failed", "reason": reason,
                                                  "sticky": sticky}
        report.failed[entry.clip_id] = reason
        logger.info("latent cache: skipped clip %r (%s): %s", entry.clip_id, entry.path, reason)

    def _store(self, entry: Any, latents: torch.Tensor, embeds: torch.Tensor,
               condition: dict[str, torch.Tensor] | None = None, mask: torch.Tensor | None = None) -> None:
        record = _source_record(entry)
        name = clip_file_name(entry.clip_id)
        tensors = {"latents": latents.clone(), "prompt_embeds": embeds.clone(),  # own storage, not the batch's
                   **{CONDITION_PREFIX + k: v.clone() for k, v in (condition or {}).items()},
                   **({"motion_mask": mask.float().contiguous()} if mask is not None else {})}
        metadata = {"record": json.dumps(record), "clip_id": entry.clip_id, "key": self.key}
        atomic_write(self.dir / name, lambda tmp: save_file(tensors, tmp, metadata=metadata))
        self._manifest["clips"][entry.clip_id] = {**record, "status": "ok", "file": name,
                                                  "latent_shape": list(latents.shape),
                                                  "prompt_shape": list(embeds.shape)}

    def _encode_group(self, dataset: Any, indices: list[int], backbone: Any, max_sequence_length: int,
                      sample: bool, report: BuildReport, masker: Any = None) -> int:
        """Encode one batch of same-size clips; returns how many encode attempts raised."""
        loaded = []
        for index in indices:
            entry = dataset.entries[index]
            try:
                loaded.append((entry, dataset[index]))
            except Exception as error:  # bad input: recorded, never retried unless the file changes
                self._record_failure(entry, f"load: {type(error).__name__}: {error}", True, report)
        if not loaded:
            return 0
        ids = [entry.clip_id for entry, _ in loaded]
        pixels = torch.stack([item["pixels"] for _, item in loaded])
        try:
            with torch.no_grad():
                latents = self._encode_latents(backbone, pixels, ids, sample)
                # image-to-video: the clip's first frame, encoded as the stock pipeline encodes its image
                # (posterior mode; {} for text-to-video)
                condition = {k: v.float().cpu() for k, v in
                             backbone.encode_condition(pixels[:, :, 0], pixels.shape[2]).items()}
                embeds = backbone.encode_prompt([item["caption"] for _, item in loaded], max_sequence_length)
            # motion_loss_weight: Motive's motion mask of each clip on the latent grid (flow on the same frames)
            masks = [motion_mask_of(masker, item["pixels"], backbone) for _, item in loaded] if masker else None
        except torch.cuda.OutOfMemoryError as error:
            raise MotionGuideError(f"out of memory encoding {len(loaded)} clip(s) for the latent cache; lower "
                                   "batch_size, enable vae tiling/slicing, or use smaller clips") from error
        except Exception as error:  # model-side failure: recorded, retried by the next build
            for entry, _ in loaded:
                self._record_failure(entry, f"encode: {type(error).__name__}: {error}", False, report)
            return len(loaded)
        embeds = embeds.detach().cpu()
        for j, (entry, _) in enumerate(loaded):
            clip_condition = {k: v[j] for k, v in condition.items()}
            if not torch.isfinite(latents[j]).all() or not torch.isfinite(embeds[j]).all() or \
                    not all(torch.isfinite(v).all() for v in clip_condition.values()):
                self._record_failure(entry, "encode: non-finite latents or prompt embeddings", False, report)
                continue
            mask = masks[j] if masks is not None else None
            if mask is not None and tuple(mask.shape) != tuple(latents[j].shape[1:]):
                raise MotionGuideError(f"motion mask of {entry.clip_id!r} is {tuple(mask.shape)}, the latents' grid "
                                       f"{tuple(latents[j].shape[1:])}: the backbone's latent_shape disagrees with "
                                       "its VAE")
            self._store(entry, latents[j], embeds[j], clip_condition, mask)
            report.encoded.append(entry.clip_id)
            report.encoded_here.append(entry.clip_id)
        return 0

    def build(self, dataset: Any, backbone: Any, max_sequence_length: int, batch_size: int = 1,
              progress: bool = True, sample: bool = False, retry_failed: bool = False, rank: int = 0,
              world_size: int = 1, barrier: Callable[[], None] | None = None, masker: Any = None) -> BuildReport:
        """Encode every clip of `dataset` not cached yet (or whose video or caption changed).

        `dataset` is a :class:`VideoDataset` (or anything with `entries` of clip_id/path/caption/bucket,
        `sampling_config()` and items with "pixels" and "caption").

        Latents: the VAE posterior mode (`sample=True`: one seeded draw per clip), normalised with
        `backbone.normalize_latents`, stored fp32. Captions: `backbone.encode_prompt`, exactly as the stock
        pipeline does, on the text encoder's device, stored in its output dtype (bf16 for a bf16 encoder).
        A clip that fails is recorded in the manifest with the reason and skipped; clips that failed to load
        are not retried until their file changes (`retry_failed=True` forces it).
        `masker` (a :class:`~motionguide.motive.masks.MotionMasker`; required when the key has a `motion_mask`
        field) also stores each clip's motion mask on the latent grid, for a motion-weighted loss.

        Sharded (`world_size` > 1; every rank calls this with the same arguments and a `barrier` that waits for
        all ranks, e.g. `accelerator.wait_for_everyone`): each rank encodes every `world_size`-th batch of
        the missing clips, starting at its `rank`; rank 0 then adopts the others' clip files, merges their
        failures and writes the manifest. Other processes reopen the cache after the call to see it. Rank 0's
        report covers the whole build; another rank's covers its share.
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} of world_size {world_size}: need 0 <= rank < world_size")
        if world_size > 1 and barrier is None:
            raise ConfigError("a sharded latent-cache build needs barrier= (e.g. accelerator.wait_for_everyone)")
        if getattr(backbone, "vae", None) is None:
            raise ConfigError("the latent cache needs a backbone with a VAE: build it with backbone_for(pipeline)")
        if bool(self._mask_names()) != (masker is not None):
            raise ConfigError(f"latent cache {self.dir}: " + ("its key asks for motion masks: pass masker=" if masker
                              is None else "masker= given but the key has no motion_mask field: open it with "
                              "LatentCache.for_dataset(..., motion_mask=masker.describe())"))
        sharded, main = world_size > 1, rank == 0
        self._check_settings(dataset, backbone, max_sequence_length, sample)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._manifest["model_name"] = model_identity(backbone)["model_name"]
        report = BuildReport()
        todo = self._plan(dataset, retry_failed, report)
        groups: dict[Any, list[int]] = {}
        for index in todo:
            groups.setdefault(dataset.entries[index].bucket, []).append(index)
        batches = [g[i:i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]
        if sharded:
            barrier()  # every rank planned from the same files before any rank writes one
        mine = batches[rank::world_size]

        raised = 0
        last_flush = time.monotonic()
        try:
            if main and not (self.dir / EMPTY_PROMPT_FILE).is_file():
                self._encode_empty_prompt(backbone, max_sequence_length)
            self._manifest.setdefault("empty_prompt", {"file": EMPTY_PROMPT_FILE})
            with tqdm(total=sum(map(len, mine)), desc=f"latent cache {self.key}", unit="clip",
                      disable=not progress) as bar:
                for batch in mine:
                    raised += self._encode_group(dataset, batch, backbone, max_sequence_length, sample, report,
                                                  masker)
                    bar.update(len(batch))
                    if main and time.monotonic() - last_flush > _FLUSH_SECONDS:
                        self._write_manifest()
                        last_flush = time.monotonic()
        finally:
            if main:
                self._write_manifest()
            else:
                self._write_failures(rank, report, raised)
        if sharded:
            barrier()  # every rank's clip files and failure records are written
            if main:
                raised += self._merge_shards(dataset, batches, world_size, report)
            barrier()  # the manifest is written: the ranks may reopen the cache
        if main and raised and not report.encoded:
            first = next(iter(report.failed.values()))
            raise MotionGuideError(f"latent cache {self.dir}: every clip failed to encode ({first}); this is a "
                                   "model or device problem, not bad data. The reasons are in the manifest")
        if main and report.failed:
            logger.warning("latent cache %s: %s; reasons in %s", self.dir, report, self.dir / MANIFEST)
        return report

    # ------------------------------------------------------------------ sharded builds
    def _write_failures(self, rank: int, report: BuildReport, raised: int) -> None:
        """A non-main rank's failure records (the manifest is rank 0's alone), for `_merge_shards`."""
        clips = {clip_id: self._manifest["clips"][clip_id] for clip_id in report.failed
                 if clip_id in self._manifest["clips"]}
        text = json.dumps({"rank": rank, "raised": raised, "clips": clips}, indent=1) + "\n"
        atomic_write(self.dir / FAILURES_FILE.format(rank=rank), lambda tmp: Path(tmp).write_text(text))

    def _merge_shards(self, dataset: Any, batches: list[list[int]], world_size: int, report: BuildReport) -> int:
        """Rank 0, after every rank encoded its share: adopt the other ranks' clip files (their headers carry
        their records), merge their failure records, write the manifest and delete the failure files.
        Returns how many encode attempts raised on the other ranks."""
        raised = 0
        failures: dict[str, dict[str, Any]] = {}
        for other in range(1, world_size):
            path = self.dir / FAILURES_FILE.format(rank=other)
            try:
                shard = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as error:
                logger.warning("latent cache %s: no failure record from rank %d (%s)", self.dir, other, error)
                continue
            raised += int(shard.get("raised", 0))
            failures.update(shard.get("clips", {}))
        for index in (i for b, batch in enumerate(batches) if b % world_size for i in batch):
            entry = dataset.entries[index]
            if self._adopt_orphan(entry.clip_id, _source_record(entry)):
                report.encoded.append(entry.clip_id)
            elif entry.clip_id in failures:
                record = failures[entry.clip_id]
                self._manifest["clips"][entry.clip_id] = record
                report.failed[entry.clip_id] = record.get("reason", "failed on another rank")
            else:
                logger.warning("latent cache %s: clip %r was another rank's share but left no file and no failure "
                               "record; the next build encodes it", self.dir, entry.clip_id)
        self._write_manifest()
        for path in self.dir.glob(FAILURES_FILE.format(rank="*")):
            path.unlink(missing_ok=True)
        return raised


def motion_mask_of(masker: Any, pixels: torch.Tensor, backbone: Any) -> torch.Tensor:
    """Motive's motion mask [F', h, w] of one clip's pixels [3, F, H, W] in [-1, 1], exactly as Motive makes it."""
    from motionguide.video import pixels_to_uint8

    return masker(pixels_to_uint8(pixels.float().cpu()), backbone).latent.float()


def _jsonish(value: Any) -> Any:
    """The value as it reads back from JSON (tuples become lists), for comparing with a saved manifest."""
    return json.loads(key_json(value))


def _seed_of(clip_id: str) -> int:
    return int(hashlib.sha256(clip_id.encode()).hexdigest()[:15], 16)


class CachedLatentDataset(torch.utils.data.Dataset):
    """Items {id, caption, latents [C, F', h, w], prompt_embeds [seq, dim]} from a built `LatentCache` (and
    `condition`, a dict of tensors, for an image-to-video model).

    `ids` picks a subset (e.g. after curation); by default every successfully cached clip, sorted by id.
    """

    def __init__(self, cache: LatentCache, ids: Sequence[str] | None = None):
        self.cache = cache
        available = cache.ids
        if ids is None:
            self.ids = available
        else:
            known = set(available)
            missing = [i for i in ids if i not in known]
            if missing:
                raise ConfigError(f"{len(missing)} requested clip(s) are not in the latent cache {cache.dir} "
                                  f"(e.g. {missing[:3]}); build the cache for them or drop them from ids")
            self.ids = list(ids)
        if not self.ids:
            counts = cache.manifest.get("counts", {})
            raise ConfigError(f"latent cache {cache.dir} has no encoded clips (counts: {counts or 'no manifest'}); "
                              "build it first with LatentCache.build(dataset, backbone, max_sequence_length)")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip_id = self.ids[index]
        tensors = self.cache.load(clip_id)
        item = {"id": clip_id, "caption": self.cache.clip_record(clip_id)["caption"],
                "latents": tensors["latents"], "prompt_embeds": tensors["prompt_embeds"]}
        if "motion_mask" in tensors:  # motion_loss_weight: [F', h, w] in [0, 1]
            item["motion_mask"] = tensors["motion_mask"]
        condition = condition_of(tensors)
        if condition:  # image-to-video: the first frame's conditioning tensors
            item["condition"] = condition
        return item

    @property
    def bucket_of_index(self) -> list[Bucket]:
        """Each clip's pixel size, for :class:`BucketBatchSampler`."""
        return [Bucket(*self.cache.clip_record(i)["bucket"]) for i in self.ids]
