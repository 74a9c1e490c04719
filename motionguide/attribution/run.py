"""The Motive attribution pass: featurise every training clip and every query clip, score, select.

Runs in one process or under `torchrun` / `accelerate launch` with the clips split across ranks (no DDP wrapper:
each rank needs its own per-example gradients, pitfall P7). Each rank appends to its own feature-store shard;
a rerun skips finished clips (resume after a crash); the main process merges, scores and writes
`selection.json`. Bad clips are recorded with the reason and the pass continues.
"""

from __future__ import annotations

import json
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
    floor: float = 0.05
    flush_every: int = 8  # clips per feature-store part (a crash loses at most this many)
    report: bool = True  # write report.md with thumbnails next to selection.json

    def feature_config(self, featurizer_description: dict, model_identity: dict) -> dict[str, Any]:
        """Everything that determines a feature vector (the feature store's config hash)."""
        return {
            "featurizer": featurizer_description,
            "model": model_identity,
            "clip": [self.num_frames, self.height, self.width, self.max_sequence_length],
            "mask": {"use": self.use_mask, "flow": self.flow, "anchor": self.mask_anchor,
                     "temporal": self.mask_temporal, "gate": self.mask_gate} if self.use_mask else {"use": False},
        }


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


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _pixels_to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """[3, F, H, W] in [-1, 1] -> uint8 [F, H, W, 3]."""
    return ((pixels.permute(1, 2, 3, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def featurize_split(split: str, dataset, cache, featurizer, store, cfg: AttributionConfig, backbone,
                    rank: int, world: int, progress: bool = True) -> dict[str, int]:
    """Featurise this rank's share of one split (train or query) into `store`; returns counts."""
    from ..motion import get_flow_estimator, motion_mask
    from ..video import VideoReadError

    done = store.done_ids()
    for skipped in dataset.skipped:  # unreadable / too short / no caption: recorded once, by rank 0
        key = skipped.clip_id or str(skipped.path)
        if rank == 0 and key not in done:
            store.add(key, None, {"skip_reason": skipped.reason, "category": skipped.category, "split": split})
    estimator = get_flow_estimator(cfg.flow, cfg.flow_weights) if cfg.use_mask else None
    cached = set(cache.ids)
    mine = [i for i, entry in enumerate(dataset.entries) if i % world == rank and entry.clip_id not in done]
    counts = {"featurised": 0, "skipped": 0, "flagged": 0}
    for i in tqdm(mine, desc=f"motive {split} (rank {rank})", disable=not progress):
        entry = dataset.entries[i]
        record: dict[str, Any] = {"split": split, "caption": entry.caption, "path": str(entry.path),
                                  "num_frames": entry.probe.num_frames if entry.probe else None}
        if entry.clip_id not in cached:
            record["skip_reason"] = "not in the latent cache (encoding failed; see the cache manifest)"
            store.add(entry.clip_id, None, record)
            counts["skipped"] += 1
            continue
        mask = None
        if cfg.use_mask:
            try:
                frames = _pixels_to_uint8(dataset[i]["pixels"])
            except VideoReadError as exc:
                record["skip_reason"] = str(exc)
                store.add(entry.clip_id, None, record)
                counts["skipped"] += 1
                continue
            m = motion_mask(frames, backbone, estimator, anchor=cfg.mask_anchor, temporal=cfg.mask_temporal,
                            gate=cfg.mask_gate)
            mask = m.latent
            record["mask"] = m.stats
        tensors = cache.load(entry.clip_id)
        result = featurizer.featurize(tensors["latents"], tensors["prompt_embeds"], mask,
                                      num_pixel_frames=cfg.num_frames)
        record.update({"loss": result.loss, "grad_norm": result.grad_norm, "flags": result.flags})
        if result.feature is None:
            record["skip_reason"] = result.skip_reason
            counts["skipped"] += 1
        else:
            counts["featurised"] += 1
            counts["flagged"] += bool(result.flags)
        store.add(entry.clip_id, result.feature, record)
    store.flush()
    return counts


def run_attribution(cfg: AttributionConfig, progress: bool = True, pipeline=None) -> dict[str, Any] | None:
    """The whole pass; returns the selection summary on the main process (None on other ranks)."""
    from diffusers import DiffusionPipeline

    from ..training.cache import LatentCache
    from ..training.data import VideoDataset
    from ..training.identity import model_identity
    from .featurizer import CommonRandomness, GradientFeaturizer
    from .projectors import make_projector
    from .store import FeatureStore

    if cfg.mode not in MODES:
        raise ConfigError(f"unknown curation mode {cfg.mode!r}; valid: {', '.join(MODES)}")
    rank, world = _dist_info()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = pipeline if pipeline is not None else DiffusionPipeline.from_pretrained(cfg.model)
    pipe.set_progress_bar_config(disable=True)
    backbone = backbone_for(pipe)
    datasets = {
        "train": VideoDataset(cfg.data, num_frames=cfg.num_frames, height=cfg.height, width=cfg.width),
        "query": VideoDataset(cfg.queries, num_frames=cfg.num_frames, height=cfg.height, width=cfg.width),
    }
    cache_root = Path(cfg.cache_dir) if cfg.cache_dir else out / "cache"
    caches = {}
    for split, ds in datasets.items():
        cache = LatentCache.for_dataset(cache_root, ds, backbone, cfg.max_sequence_length)
        if rank == 0:
            cache.build(ds, backbone, cfg.max_sequence_length, progress=progress)
        caches[split] = cache
    _barrier()
    caches = {s: LatentCache.for_dataset(cache_root, datasets[s], backbone, cfg.max_sequence_length) for s in datasets}

    randomness = CommonRandomness(timestep=cfg.timestep, seed=cfg.seed)
    featurizer = GradientFeaturizer(
        backbone, lambda sizes: make_projector(cfg.projector, sizes, dim=cfg.dim, seed=cfg.seed), randomness,
        scope=cfg.params, blocks=cfg.blocks, loss=cfg.loss)
    store_config = cfg.feature_config(featurizer.describe(), model_identity(backbone))
    counts = {}
    for split in ("train", "query"):
        with FeatureStore(out / "features", store_config, rank=rank, world_size=world, dim=cfg.dim,
                          flush_every=cfg.flush_every, split=split) as store:
            counts[split] = featurize_split(split, datasets[split], caches[split], featurizer, store, cfg, backbone,
                                            rank, world, progress)
    _barrier()
    if rank != 0:
        return None
    return select_from_store(cfg, store_config, counts)


def select_from_store(cfg: AttributionConfig, store_config: dict, counts: dict | None = None) -> dict[str, Any]:
    """Score queries against the corpus and write `selection.json` (atomic)."""
    from .report import clip_summaries, covariate_arrays, write_curation_report
    from .selection import majority_vote_selection, prune_negative, reweight, score_matrix, selection_report
    from .store import FeatureStore

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
    scores = score_matrix(query_feats, train_feats)
    selection = majority_vote_selection(scores, fraction=cfg.fraction, percentile=cfg.percentile)
    weights = None
    kept = [int(i) for i in selection.indices]
    if cfg.mode == "reweight":
        weights = [float(w) for w in reweight(scores, mode="votes", floor=cfg.floor)]
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

