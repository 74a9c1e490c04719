"""The Motive attribution pass: featurise every training clip and every query clip, score, select.

Runs in one process or under `torchrun` / `accelerate launch` with the clips split across ranks (no DDP wrapper:
each rank needs its own per-example gradients, pitfall P7). Each rank appends to its own feature-store shard;
a rerun skips finished clips (resume after a crash); the main process merges, scores and writes
`selection.json`. Bad clips are recorded with the reason and the pass continues.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..backbones import backbone_for
from ..errors import ConfigError

SELECTION_FILE = "selection.json"
LORA_ADAPTER = "motive_attribution"  # the name `--lora` is loaded under for the pass
MODES = ("filter", "reweight", "prune-negative")


@dataclass
class AttributionConfig:
    """Settings of one Motive attribution pass: model, data, queries, masking, projection and selection."""

    model: str
    data: str
    queries: str
    out: str
    num_frames: int = 17
    height: int = 64
    width: int = 64
    max_sequence_length: int = 16
    cache_dir: str | None = None  # default: <out>/cache (shareable with training via --cache_dir)
    timestep: float = 751.0
    seed: int = 0
    projector: str = "fastfood_blockwise"
    dim: int = 512
    params: str = "all"
    blocks: list[int] = field(default_factory=list)
    loss: str = "motion_weighted"  # or "temporal_difference" (a deviation from the paper)
    use_mask: bool = True
    flow: str = "dis"
    flow_weights: str | None = None
    mask_anchor: str = "consecutive"
    mask_temporal: str = "mean"
    mask_gate: str = "change"
    fraction: float = 0.1
    percentile: float = 90.0
    mode: str = "filter"
    reweight_mode: str = "votes"  # with mode "reweight": "votes" (vote share) or "zscore" (z-scored mean score)
    floor: float = 0.05
    lora: str | None = None  # a saved LoRA to load for the pass (what --params lora differentiates)
    flush_every: int = 8  # clips per feature-store part (a crash loses at most this many)
    report: bool = True  # write report.md with thumbnails next to selection.json

    def feature_config(self, featurizer_description: dict, model_identity: dict,
                       transformer_identity: dict | None = None) -> dict[str, Any]:
        """Everything that determines a feature vector (the feature store's config hash): the featurizer, the
        VAE / text encoder (`model_identity`), the transformer's weights (LoRA included), clip sampling, mask."""
        mask: dict[str, Any] = {"use": False}
        if self.use_mask:
            mask = {"use": True, "flow": self.flow, "anchor": self.mask_anchor, "temporal": self.mask_temporal,
                    "gate": self.mask_gate}
            if self.flow_weights:
                mask["flow_weights"] = _file_identity(self.flow_weights)
        return {
            "featurizer": featurizer_description,
            "model": model_identity,
            "transformer": transformer_identity,
            "clip": [self.num_frames, self.height, self.width, self.max_sequence_length],
            "mask": mask,
        }

    def check(self) -> "AttributionConfig":
        """Self, after checking the choices that would otherwise fail only after the cache is built."""
        from .selection import REWEIGHT_MODES

        if self.mode not in MODES:
            raise ConfigError(f"unknown curation mode {self.mode!r}; valid: {', '.join(MODES)}")
        if self.reweight_mode not in REWEIGHT_MODES:
            raise ConfigError(f"unknown reweight mode {self.reweight_mode!r}; valid: {', '.join(REWEIGHT_MODES)}")
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"fraction must be in (0, 1], got {self.fraction}")
        if not 0.0 <= self.percentile <= 100.0:
            raise ConfigError(f"percentile must be in [0, 100], got {self.percentile}")
        if not 0.0 < self.floor <= 1.0:
            raise ConfigError(f"floor must be in (0, 1], got {self.floor}")
        from ..motion.flow import ANCHORS
        from ..motion.masks import GATES, TEMPORAL_MODES

        for key, value, valid in (("mask_anchor", self.mask_anchor, ANCHORS),
                                  ("mask_temporal", self.mask_temporal, TEMPORAL_MODES),
                                  ("mask_gate", self.mask_gate, GATES)):
            if value not in valid:
                raise ConfigError(f"{key}={value!r} is not one of {', '.join(valid)}")
        if self.lora is not None and not Path(self.lora).exists():
            raise ConfigError(f"lora={self.lora}: no such file or folder (a LoRA saved by the fine-tuning loop, "
                              "e.g. <output_dir>/lora, or a .safetensors file)")
        return self


def _file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """Name, size and sha256 of a file (e.g. flow weights): two different files never share a feature store."""
    path = Path(path)
    if not path.is_file():
        return {"name": path.name, "missing": True}
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"name": path.name, "size": path.stat().st_size, "sha256": digest.hexdigest()[:16]}


def _finite_or_none(value: float | None) -> float | None:
    """JSON-safe number for a manifest: NaN / inf become None (the flags and skip reason say why)."""
    return None if value is None or not math.isfinite(value) else float(value)


def _dist_info() -> tuple[int, int]:
    """(rank, world size); joins the process group torchrun / accelerate launch prepared, if any.

    The pass needs barriers (cache built before reading, every shard written before scoring), so a launch
    with several ranks initialises the group itself: gloo on CPUs, nccl on GPUs. No DDP wrapper is used.
    """
    dist = torch.distributed
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _sum_over_ranks(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Per-split counts summed over every rank (each rank counted only its own share of the clips)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return counts
    keys = [(split, name) for split in sorted(counts) for name in sorted(counts[split])]
    total = torch.tensor([counts[split][name] for split, name in keys], dtype=torch.int64)
    dist.all_reduce(total)
    summed: dict[str, dict[str, int]] = {split: {} for split in counts}
    for (split, name), value in zip(keys, total.tolist()):
        summed[split][name] = int(value)
    return summed


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _pixels_to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """[3, F, H, W] in [-1, 1] -> uint8 [F, H, W, 3]."""
    return ((pixels.permute(1, 2, 3, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def featurize_split(split: str, dataset, cache, featurizer, store, cfg: AttributionConfig, backbone,
                    rank: int, world: int, progress: bool = True, estimator=None) -> dict[str, int]:
    """Featurise this rank's share of one split (train or query) into `store`; returns counts.

    A bad clip (unreadable, too short, no caption, not encodable, a failing motion mask, a NaN / inf loss or
    gradient) is recorded with its reason and the pass goes on.
    """
    from ..motion import get_flow_estimator, motion_mask
    from ..video import VideoReadError

    counts = {"featurised": 0, "skipped": 0, "flagged": 0}
    done = store.done_ids()
    for skipped in dataset.skipped:  # unreadable / too short / no caption: recorded once, by rank 0
        key = skipped.clip_id or str(skipped.path)
        if rank == 0 and key not in done:
            store.add(key, None, {"skip_reason": skipped.reason, "category": skipped.category, "split": split,
                                  "path": str(skipped.path)})
            counts["skipped"] += 1
    if cfg.use_mask and estimator is None:
        estimator = get_flow_estimator(cfg.flow, cfg.flow_weights)
    cached = set(cache.ids)
    mine = [i for i, entry in enumerate(dataset.entries) if i % world == rank and entry.clip_id not in done]

    def skip(clip_id: str, record: dict, reason: str) -> None:
        record["skip_reason"] = reason
        store.add(clip_id, None, record)
        counts["skipped"] += 1

    for i in tqdm(mine, desc=f"motive {split} (rank {rank})", disable=not progress):
        entry = dataset.entries[i]
        record: dict[str, Any] = {"split": split, "caption": entry.caption, "path": str(entry.path),
                                  "num_frames": entry.probe.num_frames if entry.probe else None}
        if entry.clip_id not in cached:
            skip(entry.clip_id, record, "not in the latent cache (encoding failed; see the cache manifest)")
            continue
        mask = None
        if cfg.use_mask:
            try:
                frames = _pixels_to_uint8(dataset[i]["pixels"])
                m = motion_mask(frames, backbone, estimator, anchor=cfg.mask_anchor, temporal=cfg.mask_temporal,
                                gate=cfg.mask_gate)
            except VideoReadError as exc:
                skip(entry.clip_id, record, str(exc))
                continue
            except ConfigError:  # a wrong setting is the user's to fix, not a bad clip
                raise
            except (ValueError, ArithmeticError) as exc:  # e.g. non-finite flow from a damaged frame
                skip(entry.clip_id, record, f"motion mask failed: {exc}")
                continue
            mask = m.latent
            record["mask"] = {k: _finite_or_none(v) if isinstance(v, float) else v for k, v in m.stats.items()}
        tensors = cache.load(entry.clip_id)
        latents = tensors["latents"]
        result = featurizer.featurize(latents, tensors["prompt_embeds"], mask, num_pixel_frames=cfg.num_frames)
        record.update({"loss": _finite_or_none(result.loss), "grad_norm": _finite_or_none(result.grad_norm),
                       "flags": result.flags,
                       "noise": {"shape": list(latents.shape), "hash": featurizer.randomness.fingerprint(latents.shape)}})
        if result.feature is None:
            skip(entry.clip_id, record, result.skip_reason or "no feature")
            continue
        counts["featurised"] += 1
        counts["flagged"] += bool(result.flags)
        store.add(entry.clip_id, result.feature, record)
    store.flush()
    return counts


def check_common_noise(*record_lists: list[dict]) -> None:
    """Every clip of one latent shape, training and query, on every rank, must have used the same noise."""
    seen: dict[tuple, str] = {}
    for records in record_lists:
        for record in records:
            noise = record.get("noise")
            if not noise:
                continue
            shape = tuple(noise["shape"])
            if seen.setdefault(shape, noise["hash"]) != noise["hash"]:
                raise ConfigError(
                    f"clips of latent shape {shape} were featurised with different noise (hashes {seen[shape]} and "
                    f"{noise['hash']}): ranks or runs disagree on the shared (t, eps). Use one torch version on "
                    "every rank and the same --seed / --timestep, or start over in a new --out.")


def run_attribution(cfg: AttributionConfig, progress: bool = True, pipeline=None) -> dict[str, Any] | None:
    """The whole pass; returns the selection summary on the main process (None on other ranks).

    `pipeline`: an already loaded pipeline to reuse (the fine-tuning loop passes its own); with `cfg.lora` the
    adapter is loaded into it for the pass and unloaded afterwards.
    """
    from diffusers import DiffusionPipeline

    from ..motion import get_flow_estimator

    cfg.check()
    # a missing RAFT weights file (or an unknown estimator) fails now, not after the latent cache is built
    estimator = get_flow_estimator(cfg.flow, cfg.flow_weights) if cfg.use_mask else None
    rank, world = _dist_info()
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    pipe = pipeline if pipeline is not None else DiffusionPipeline.from_pretrained(cfg.model)
    pipe.set_progress_bar_config(disable=True)
    if cfg.lora is None:
        return _featurize_and_select(cfg, pipe, estimator, rank, world, progress)
    if not hasattr(pipe, "load_lora_weights"):
        raise ConfigError(f"lora={cfg.lora}: {type(pipe).__name__} cannot load LoRA weights")
    existing = _adapter_names(pipe)
    if existing:
        raise ConfigError(f"lora={cfg.lora}: the pipeline already holds LoRA adapter(s) {', '.join(existing)}; "
                          "attribute one adapter at a time: pass a pipeline without adapters, or drop --lora to "
                          "differentiate the active adapter already loaded (--params lora)")
    # loading freezes the base weights and unloading does not thaw them: put every flag back afterwards
    trainable = {name: p.requires_grad for name, p in pipe.transformer.named_parameters()}
    try:
        pipe.load_lora_weights(cfg.lora, adapter_name=LORA_ADAPTER)
        return _featurize_and_select(cfg, pipe, estimator, rank, world, progress)
    finally:
        if _adapter_names(pipe):
            pipe.unload_lora_weights()
        for name, p in pipe.transformer.named_parameters():
            p.requires_grad_(trainable.get(name, p.requires_grad))


def _adapter_names(pipe) -> list[str]:
    """Every LoRA adapter loaded anywhere in the pipeline."""
    return sorted({name for names in pipe.get_list_adapters().values() for name in names})


def _featurize_and_select(cfg: AttributionConfig, pipe, estimator, rank: int, world: int,
                          progress: bool) -> dict[str, Any] | None:
    from ..training.cache import LatentCache
    from ..training.data import VideoDataset
    from ..training.identity import model_identity, module_identity
    from .featurizer import CommonRandomness, GradientFeaturizer
    from .projectors import make_projector
    from .store import FeatureStore

    out = Path(cfg.out)
    backbone = backbone_for(pipe)
    datasets = {
        "train": VideoDataset(cfg.data, num_frames=cfg.num_frames, height=cfg.height, width=cfg.width),
        "query": VideoDataset(cfg.queries, num_frames=cfg.num_frames, height=cfg.height, width=cfg.width),
    }
    cache_root = Path(cfg.cache_dir) if cfg.cache_dir else out / "cache"
    for split, ds in datasets.items():
        if rank == 0:
            LatentCache.for_dataset(cache_root, ds, backbone, cfg.max_sequence_length).build(
                ds, backbone, cfg.max_sequence_length, progress=progress)
    _barrier()
    caches = {s: LatentCache.for_dataset(cache_root, datasets[s], backbone, cfg.max_sequence_length) for s in datasets}

    randomness = CommonRandomness(timestep=cfg.timestep, seed=cfg.seed)
    featurizer = GradientFeaturizer(
        backbone, lambda sizes: make_projector(cfg.projector, sizes, dim=cfg.dim, seed=cfg.seed), randomness,
        scope=cfg.params, blocks=cfg.blocks, loss=cfg.loss)
    store_config = cfg.feature_config(featurizer.describe(), model_identity(backbone),
                                      module_identity(backbone.transformer))
    counts = {}
    for split in ("train", "query"):
        with FeatureStore(out / "features", store_config, rank=rank, world_size=world, dim=cfg.dim,
                          flush_every=cfg.flush_every, split=split) as store:
            counts[split] = featurize_split(split, datasets[split], caches[split], featurizer, store, cfg, backbone,
                                            rank, world, progress, estimator=estimator)
    counts = _sum_over_ranks(counts)
    _barrier()
    if rank != 0:
        return None
    for split in ("train", "query"):  # one deduplicated file per split, next to the rank shards
        FeatureStore(out / "features", store_config, dim=cfg.dim, split=split).merge()
    return select_from_store(cfg, store_config, counts)


def select_from_store(cfg: AttributionConfig, store_config: dict, counts: dict | None = None) -> dict[str, Any]:
    """Score queries against the corpus and write `selection.json` (atomic)."""
    from .report import clip_summaries, covariate_arrays, write_curation_report
    from .selection import majority_vote_selection, prune_negative, reweight, score_matrix, selection_report
    from .store import FeatureStore, config_hash

    out = Path(cfg.out)
    train_ids, train_feats, train_records = FeatureStore(out / "features", store_config, dim=cfg.dim,
                                                         split="train").load()
    query_ids, query_feats, query_records = FeatureStore(out / "features", store_config, dim=cfg.dim,
                                                         split="query").load()
    if not len(query_ids):
        raise ConfigError(f"no usable query clips in {cfg.queries}: every query was skipped (see the manifest "
                          f"under {out / 'features'})")
    if not len(train_ids):
        raise ConfigError(f"no usable training clips in {cfg.data}")
    check_common_noise(train_records, query_records)
    scores = score_matrix(query_feats, train_feats)
    selection = majority_vote_selection(scores, fraction=cfg.fraction, percentile=cfg.percentile)
    weights = None
    kept = [int(i) for i in selection.indices]
    if cfg.mode == "reweight":
        # the votes behind the weights use the same per-query percentile as the selection
        weights = [float(w) for w in reweight(selection, mode=cfg.reweight_mode, floor=cfg.floor)]
        kept = list(range(len(train_ids)))
    elif cfg.mode == "prune-negative":
        kept = [int(i) for i in prune_negative(scores)]
    clips = clip_summaries(train_ids, train_records)
    result = {
        "method": "motive",
        "mode": cfg.mode,
        "fraction": cfg.fraction,
        "percentile": cfg.percentile,
        "tie_rule": selection.tie_rule,
        "config": asdict(cfg),
        "feature_store": str(out / "features" / config_hash(store_config)),
        "counts": counts or {},
        "train_ids": train_ids,
        "query_ids": query_ids,
        "selected_ids": [train_ids[i] for i in kept],
        "weights": weights,
        "ranking": [train_ids[int(i)] for i in selection.order],
        "votes": [int(v) for v in selection.votes],
        "mean_score": [float(s) for s in selection.mean_score],
        "flags": {tid: rec.get("flags", []) for tid, rec in zip(train_ids, train_records) if rec.get("flags")},
        "report": selection_report(selection, covariate_arrays(train_ids, clips)),
        "clips": clips,
        "queries": clip_summaries(query_ids, query_records),
    }
    path = out / SELECTION_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, path)
    np.save(out / "scores.npy", scores.numpy() if hasattr(scores, "numpy") else np.asarray(scores))
    if cfg.report:
        write_curation_report(out)
    return result


def load_selection(path: str | os.PathLike) -> dict[str, Any]:
    """The Motive `selection.json` at `path` (the file or its folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / SELECTION_FILE
    if not path.is_file():
        raise ConfigError(f"no Motive selection at {path}; run `motionguide curate ... --out {path.parent}` first")
    return json.loads(path.read_text())

