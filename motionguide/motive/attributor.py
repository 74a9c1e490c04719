"""`Motive`: the attribution pass as one object whose verbs are the workflow (TRAK's `TRAKer` is the model).

    motive = Motive(pipeline, config)            # projector, store and masker: from the config, or passed in
    with motive:                                 # loads `config.lora` for the pass, puts the pipeline back after
        motive.featurize("train", train_set)     # this rank's share of the clips -> feature-store shards
        motive.featurize("query", query_set)
        motive.finalize("train"); motive.finalize("query")   # merge the ranks' shards (main process)
        scores = motive.score()                  # [queries, clips] cosine scores from the store
        selection = motive.select(scores)        # majority vote, mode -> Selection; writes selection.json

Runs in one process or under `torchrun` / `accelerate launch` with the clips split across ranks (no DDP wrapper:
each rank needs its own per-example gradients, pitfall P7). Each rank appends to its own feature-store shard;
a rerun skips finished clips (resume after a crash); the main process merges, scores and selects. Bad clips are
recorded with the reason and the pass continues. :func:`run_attribution` is the whole pass over a config.

Placement (`MotiveConfig.device`, `dtype`, `gradient_checkpointing`, `enable_model_cpu_offload`, `vae_tiling`):
a model given by path is loaded with `motionguide.loading.load_pipeline` on the pass's device (each torchrun rank
its LOCAL_RANK's GPU), so the latent cache and the gradients are computed there; a pipeline passed in keeps its
dtypes and is moved only when `device` names a device. Under torchrun without a group the pass creates one (NCCL
on GPUs, gloo otherwise, `process_group_timeout_s`), and its collectives use the backend's device.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..arg_checks import block_count_of, check_block_indices, check_lora_file
from ..backbones import backbone_for
from ..data.cache import condition_of
from ..errors import ConfigError
from ..files import atomic_write
from ..video import pixels_to_uint8
from .config import MotiveConfig
from .selection import SELECTION_FILE, Selection

__all__ = ["Motive", "ScoreTable", "run_attribution", "check_common_noise", "LORA_ADAPTER"]

LORA_ADAPTER = "motive_attribution"  # the name `config.lora` is loaded under for the pass
SPLITS = ("train", "query")


def _finite_or_none(value: float | None) -> float | None:
    """JSON-safe number for a manifest: NaN / inf become None (the flags and skip reason say why)."""
    return None if value is None or not math.isfinite(value) else float(value)


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def _dist_info(device: torch.device | None = None, timeout_s: float = 1800.0) -> tuple[int, int]:
    """(rank, world size); joins the process group torchrun / accelerate launch prepared, if any.

    The pass needs barriers (cache built before reading, every shard written before scoring), so a launch
    with several ranks initialises the group itself when nobody did (inside the Trainer accelerate already
    has: that group is reused): nccl when the pass runs on CUDA (each rank on its LOCAL_RANK's GPU), gloo
    otherwise, with `timeout_s` for every collective. No DDP wrapper is used.
    """
    dist = torch.distributed
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        on_cuda = device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available()
        if on_cuda:
            torch.cuda.set_device(_local_rank())
        dist.init_process_group(backend="nccl" if on_cuda else "gloo", timeout=timedelta(seconds=float(timeout_s)))
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _collective_device() -> torch.device:
    """Where a collective's tensors must live for the group's backend: this rank's GPU for NCCL (LOCAL_RANK,
    as torchrun and accelerate number them), the CPU for gloo."""
    if torch.distributed.get_backend() == "nccl":
        local = os.environ.get("LOCAL_RANK")
        return torch.device("cuda", int(local) if local is not None else torch.cuda.current_device())
    return torch.device("cpu")


def _sum_over_ranks(counts: dict[str, int]) -> dict[str, int]:
    """Counts summed over every rank (each rank counted only its own share of the clips)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return counts
    names = sorted(counts)
    total = torch.tensor([counts[name] for name in names], dtype=torch.int64, device=_collective_device())
    dist.all_reduce(total)
    return {name: int(value) for name, value in zip(names, total.cpu().tolist())}


def _barrier() -> None:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        device = _collective_device()
        dist.barrier(device_ids=[device.index]) if device.type == "cuda" else dist.barrier()


def pass_device(config: MotiveConfig) -> torch.device:
    """The device the pass runs on for `config.device`; "cuda" without an index under torchrun means this
    rank's GPU (LOCAL_RANK), so N ranks use N GPUs rather than all sharing the first."""
    from ..loading import resolve_device

    device = resolve_device(config.device)
    if device.type == "cuda" and device.index is None and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        device = torch.device("cuda", _local_rank())
    return device


def pass_datasets(cfg: MotiveConfig) -> dict[str, Any]:
    """The training (`data`) and query (`queries`) datasets, sampled as fine-tuning samples them; every clip is
    probed, and a query set with an unusable clip is a ConfigError (checked before any model loads).

    Query clips show the motion to curate for, so each must be usable: captioned, and at least as long as a
    training clip (num_frames samples every frame_stride frames, at target_fps when set)."""
    from ..data import EmptyDatasetError, VideoDataset, dataset_options
    from ..data.buckets import frames_needed

    options = dataset_options(cfg)
    train = VideoDataset(cfg.data, **options)
    lengths = [b.num_frames for b in options["buckets"]] if options["buckets"] else [cfg.num_frames]
    need = frames_needed(min(lengths), cfg.frame_stride)
    rule = (f"each query clip needs a caption and at least {need} frames"
            + (f" at {cfg.target_fps:g} fps" if cfg.target_fps is not None else "")
            + f" ({min(lengths)} samples every {cfg.frame_stride} frame(s), as in training)")
    try:
        query = VideoDataset(cfg.queries, **options)
    except EmptyDatasetError as exc:
        raise ConfigError(f"queries {cfg.queries}: no usable query clip; {rule}. {exc}") from None
    if query.skipped:
        reasons = "; ".join(f"{s.clip_id or s.path}: {s.reason}" for s in query.skipped[:5])
        more = f" (and {len(query.skipped) - 5} more)" if len(query.skipped) > 5 else ""
        raise ConfigError(f"queries {cfg.queries}: {len(query.skipped)} of {len(query.skipped) + len(query)} "
                          f"query clips are unusable ({reasons}{more}); {rule}. Fix or remove them.")
    return {"train": train, "query": query}


def _sampling_identity(cfg: Any) -> dict[str, Any]:
    """How frames were sampled, for the feature store's key: only settings that differ from the defaults, so
    stores written before these settings existed stay valid (the reader and the columns change no pixels)."""
    from ..data.buckets import parse_buckets

    changed = {"frame_stride": cfg.frame_stride if cfg.frame_stride != 1 else None,
               "target_fps": cfg.target_fps,
               "resize_mode": cfg.resize_mode if cfg.resize_mode != "center_crop" else None,
               "buckets": [list(b.as_tuple()) for b in parse_buckets(cfg.buckets) or ()] or None}
    changed = {k: v for k, v in changed.items() if v is not None}
    return {"sampling": changed} if changed else {}


def _place_given_pipeline(pipe, config: MotiveConfig, device: torch.device) -> None:
    """A pipeline passed in (the fine-tuning loop's own) keeps its dtypes (`config.dtype` applies when the pass
    loads the model) and stays where it is unless `config.device` names a device (the Trainer passes its
    accelerator's); VAE tiling and model offload are switched on when asked."""
    vae = getattr(pipe, "vae", None)
    if config.vae_tiling and vae is not None and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
    if config.enable_model_cpu_offload:
        if not _has_offload_hooks(pipe):
            pipe.enable_model_cpu_offload(device=device)
    elif str(config.device) != "auto":
        for module in pipe.components.values():  # only what is elsewhere: a placed pipeline is left untouched
            first = next(module.parameters(), None) if isinstance(module, torch.nn.Module) else None
            if first is not None and first.device != device:
                module.to(device)


def _has_offload_hooks(pipe) -> bool:
    return any(hasattr(module, "_hf_hook") for module in pipe.components.values()
               if isinstance(module, torch.nn.Module))


def _adapter_names(pipe) -> list[str]:
    """Every LoRA adapter loaded anywhere in the pipeline."""
    return sorted({name for names in pipe.get_list_adapters().values() for name in names})


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


@dataclass
class ScoreTable:
    """What :meth:`Motive.score` read from the store: scores [Q, N] with the clip ids and records behind them."""

    scores: torch.Tensor
    train_ids: list[str]
    query_ids: list[str]
    train_records: list[dict]
    query_records: list[dict]


class Motive:
    """Motive's attribution pass for one pipeline and one :class:`MotiveConfig` (see the module docstring).

    Swappable parts, each built from the config when not given:

    * ``projector``: a function ``sizes -> Projector`` (the sizes of the differentiated parameters), or a built
      :class:`~motionguide.motive.projectors.Projector`;
    * ``store``: a function ``(config: dict, split: str, rank: int, world_size: int) -> FeatureStore``-like
      object (`add`, `flush`, `done_ids`, `load`, `merge`, a context manager);
    * ``masker``: ``masker(frames, backbone) -> MotionMask`` with ``describe()``
      (:class:`~motionguide.motive.masks.MotionMasker`); ``False`` for the unweighted loss.
    """

    def __init__(self, pipeline, config: MotiveConfig, projector=None, store=None, masker=None,
                 progress: bool = True):
        config.check()
        self.config = config
        # a missing RAFT weights file (or an unknown estimator) fails now, not after the latent cache is built
        self.masker = None if masker is False else (masker if masker is not None else config.make_masker())
        self.device = pass_device(config)
        self.rank, self.world_size = _dist_info(self.device, config.process_group_timeout_s)
        if isinstance(pipeline, (str, os.PathLike)):
            from ..loading import load_pipeline

            pipeline = load_pipeline(pipeline, config.placement(self.device))
        else:
            _place_given_pipeline(pipeline, config, self.device)
        self.pipeline = pipeline
        self.pipeline.set_progress_bar_config(disable=True)
        if config.max_sequence_length is None:  # the model's own text length, as training resolves it
            from ..sampling.generate import model_max_sequence_length

            config.max_sequence_length = model_max_sequence_length(config.model, pipeline)
        self.progress = progress
        self.out = Path(config.out)
        self._projector = projector
        self._store = store
        self._featurizer = None
        self._backbone = None
        self._store_config: dict[str, Any] | None = None
        self._caches: dict[str, tuple[Any, Any]] = {}  # split -> (dataset, its latent cache)
        self._trainable: dict[str, bool] | None = None
        self.counts: dict[str, dict[str, int]] = {}  # per split, the whole pass (every invocation)
        self.counts_this_run: dict[str, dict[str, int]] = {}  # per split, this invocation only

    # --------------------------------------------------------------------------- the adapter (lora)

    def __enter__(self) -> "Motive":
        """Load `config.lora` into the pipeline for the pass (nothing to do without it)."""
        lora, pipe = self.config.lora, self.pipeline
        if lora is None:
            return self
        if not hasattr(pipe, "load_lora_weights"):
            raise ConfigError(f"lora={lora}: {type(pipe).__name__} cannot load LoRA weights")
        existing = _adapter_names(pipe)
        if existing:
            raise ConfigError(f"lora={lora}: the pipeline already holds LoRA adapter(s) {', '.join(existing)}; "
                              "attribute one adapter at a time: pass a pipeline without adapters, or drop --lora "
                              "to differentiate the active adapter already loaded (--params lora)")
        # loading freezes the base weights and unloading does not thaw them: put every flag back afterwards
        self._trainable = {(index, name): p.requires_grad for index, expert in enumerate(self._experts())
                           for name, p in expert.named_parameters()}
        try:
            from ..loading import load_lora_into_pipeline

            # a two-expert model's LoRA (Wan2.2-T2V-A14B): each expert's part into that expert, so the gradients
            # at t_fix come from the LoRA of the expert that runs it
            load_lora_into_pipeline(pipe, lora, adapter_name=LORA_ADAPTER)
        except (ValueError, KeyError, RuntimeError, OSError) as exc:  # weights that do not fit this model
            self.__exit__()
            raise ConfigError(f"lora={lora}: not a LoRA this model can load ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); pass a LoRA saved by "
                              "the fine-tuning loop for this base model") from exc
        except BaseException:
            self.__exit__()
            raise
        self._featurizer = self._store_config = None  # the differentiated weights changed
        return self

    def __exit__(self, *exc) -> None:
        """Unload the adapter `__enter__` loaded and restore every parameter's `requires_grad`."""
        if self._trainable is None:
            return
        pipe = self.pipeline
        if _adapter_names(pipe):
            pipe.unload_lora_weights()
        for index, expert in enumerate(self._experts()):
            for name, p in expert.named_parameters():
                p.requires_grad_(self._trainable.get((index, name), p.requires_grad))
        self._trainable = None
        self._featurizer = self._store_config = None

    def _experts(self) -> tuple[torch.nn.Module, ...]:
        """The pipeline's transformers (two for Wan2.2-T2V-A14B)."""
        return tuple(backbone_for(self.pipeline).experts)

    # -------------------------------------------------------------------------------- the parts

    @property
    def backbone(self):
        """The backbone adapter of the pipeline's model family."""
        if self._backbone is None:
            self._backbone = backbone_for(self.pipeline)
        return self._backbone

    @property
    def featurizer(self):
        """The gradient featurizer (built on first use, after the adapter is loaded)."""
        if self._featurizer is None:
            from .featurizer import CommonRandomness, GradientFeaturizer

            cfg = self.config
            device = self.execution_device
            factory = self._projector if self._projector is not None else cfg.make_projector_factory(device)
            if hasattr(factory, "project_full"):  # a projector built already (for these parameters' sizes)
                built = factory
                factory = lambda sizes: built  # noqa: E731
            self._featurizer = GradientFeaturizer(
                self.backbone, factory, CommonRandomness(timestep=cfg.timestep, seed=cfg.seed),
                scope=cfg.params, blocks=cfg.blocks, loss=cfg.loss,
                gradient_checkpointing=cfg.gradient_checkpointing, device=device)
        return self._featurizer

    @property
    def execution_device(self) -> torch.device:
        """Where the transformer computes: its weights' device, or with model CPU offload the device the
        offload hooks move it to (the weights sit on the CPU between calls)."""
        if self.config.enable_model_cpu_offload and hasattr(self.pipeline, "_execution_device"):
            return torch.device(self.pipeline._execution_device)
        first = next(self.backbone.transformer.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    @property
    def dim(self) -> int:
        """The feature dimension (the projector's)."""
        return int(self.featurizer.projector.dim)

    @property
    def store_config(self) -> dict[str, Any]:
        """Everything that determines a feature vector (the feature store's config hash): the featurizer, the
        VAE / text encoder, the transformer's weights (LoRA included), clip sampling, mask."""
        if self._store_config is None:
            from ..identity import model_identity, module_identity

            cfg = self.config
            self._store_config = {
                "featurizer": self.featurizer.describe(),
                "model": model_identity(self.backbone),
                # the weights the gradients come from (a two-expert model: the expert that runs t_fix)
                "transformer": module_identity(self.featurizer.backbone.transformer),
                "clip": [cfg.num_frames, cfg.height, cfg.width, cfg.max_sequence_length],
                **_sampling_identity(cfg),
                "mask": self.masker.describe() if self.masker is not None else {"use": False},
            }
        return self._store_config

    def open_store(self, split: str, rank: int | None = None, world_size: int | None = None):
        """The feature store of `split` for this config (this rank's shard unless told otherwise)."""
        rank = self.rank if rank is None else rank
        world_size = self.world_size if world_size is None else world_size
        if self._store is not None:
            return self._store(self.store_config, split, rank, world_size)
        from .store import FeatureStore

        return FeatureStore(self.out / "features", self.store_config, rank=rank, world_size=world_size,
                            dim=self.dim, flush_every=self.config.flush_every, split=split)

    def datasets(self) -> dict[str, Any]:
        """The config's training (`data`) and query (`queries`) datasets."""
        return pass_datasets(self.config)

    # -------------------------------------------------------------------------------- the verbs

    def prepare(self, split: str, dataset) -> Any:
        """Encode `dataset` into the latent cache on the pass's device and return the cache. Several ranks
        share the encoding when the cache can be built sharded (`build(rank=, world_size=, barrier=)`);
        otherwise the main process encodes while the others wait."""
        import inspect

        from ..data import LatentCache

        cfg = self.config
        sharded = self.world_size > 1 and "world_size" in inspect.signature(LatentCache.build).parameters
        if sharded or self.rank == 0:
            shard = dict(rank=self.rank, world_size=self.world_size, barrier=_barrier) if sharded else {}
            LatentCache.for_dataset(cfg.cache_root(), dataset, self.backbone, cfg.max_sequence_length).build(
                dataset, self.backbone, cfg.max_sequence_length, progress=self.progress, **shard)
        _barrier()
        cache = LatentCache.for_dataset(cfg.cache_root(), dataset, self.backbone, cfg.max_sequence_length)
        self._caches[split] = (dataset, cache)
        return cache

    def featurize(self, split: str, dataset, cache=None) -> dict[str, int]:
        """Featurise this rank's share of `dataset` into the feature store of `split`; returns the counts
        (featurised, skipped, flagged) of the whole pass, all ranks and every invocation (a resumed pass counts
        the clips stored before it was interrupted; `counts_this_run` has this invocation's alone). Clips
        already stored are not featurised again (resume).

        A bad clip (unreadable, too short, no caption, not encodable, a failing motion mask, a NaN / inf loss or
        gradient) is recorded with its reason and the pass goes on.
        """
        if cache is None:
            prepared_for, cache = self._caches.get(split, (None, None))
            if prepared_for is not dataset:
                cache = self.prepare(split, dataset)
        self.out.mkdir(parents=True, exist_ok=True)
        with self.open_store(split) as store:
            counts = self._featurize_into(store, split, dataset, cache)
            # summed over ranks: also the point from which every rank's parts are on disk
            self.counts_this_run[split] = _sum_over_ranks(counts)
            # the whole pass: clips featurised or skipped by earlier (interrupted) invocations count too
            whole_pass = getattr(store, "counts", None)  # a swapped-in store without it: this run's counts
            self.counts[split] = whole_pass(split) if whole_pass else dict(self.counts_this_run[split])
        return self.counts[split]

    def _featurize_into(self, store, split: str, dataset, cache) -> dict[str, int]:
        from ..video import VideoReadError

        rank, world = self.rank, self.world_size
        featurizer, backbone = self.featurizer, self.backbone
        counts = {"featurised": 0, "skipped": 0, "flagged": 0}
        done = store.done_ids()
        for skipped in dataset.skipped:  # unreadable / too short / no caption: recorded once, by rank 0
            key = skipped.clip_id or str(skipped.path)
            if rank == 0 and key not in done:
                store.add(key, None, {"skip_reason": skipped.reason, "category": skipped.category, "split": split,
                                      "path": str(skipped.path)})
                counts["skipped"] += 1
        cached = set(cache.ids)
        mine = [i for i, entry in enumerate(dataset.entries) if i % world == rank and entry.clip_id not in done]

        def skip(clip_id: str, record: dict, reason: str) -> None:
            record["skip_reason"] = reason
            store.add(clip_id, None, record)
            counts["skipped"] += 1

        for i in tqdm(mine, desc=f"motive {split} (rank {rank})", disable=not self.progress):
            entry = dataset.entries[i]
            record: dict[str, Any] = {"split": split, "caption": entry.caption, "path": str(entry.path),
                                      "num_frames": entry.probe.num_frames if entry.probe else None}
            if entry.clip_id not in cached:
                skip(entry.clip_id, record, "not in the latent cache (encoding failed; see the cache manifest)")
                continue
            mask = None
            if self.masker is not None:
                try:
                    m = self.masker(pixels_to_uint8(dataset[i]["pixels"]), backbone)
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
            result = featurizer.featurize(latents, tensors["prompt_embeds"], mask,
                                          num_pixel_frames=entry.bucket.num_frames, condition=condition_of(tensors))
            record.update({"loss": _finite_or_none(result.loss), "grad_norm": _finite_or_none(result.grad_norm),
                           "flags": result.flags,
                           "noise": {"shape": list(latents.shape),
                                     "hash": featurizer.randomness.fingerprint(latents.shape)}})
            if result.feature is None:
                skip(entry.clip_id, record, result.skip_reason or "no feature")
                continue
            counts["featurised"] += 1
            counts["flagged"] += bool(result.flags)
            store.add(entry.clip_id, result.feature, record)
        store.flush()
        return counts

    def finalize(self, split: str) -> Path | None:
        """Wait for every rank's shards of `split`, then merge them into one deduplicated file next to them
        (main process; returns its folder, None on the other ranks)."""
        _barrier()
        if self.rank != 0:
            return None
        return self.open_store(split, rank=0, world_size=1).merge()

    def score(self, train: str = "train", query: str = "query") -> ScoreTable:
        """Cosine scores [queries, training clips] from the stored features of the two splits."""
        from .scoring import score_matrix

        cfg = self.config
        train_ids, train_feats, train_records = self.open_store(train, rank=0, world_size=1).load()
        query_ids, query_feats, query_records = self.open_store(query, rank=0, world_size=1).load()
        if not len(query_ids):
            raise ConfigError(f"no usable query clips in {cfg.queries}: every query was skipped (see the "
                              f"manifest under {self.out / 'features'})")
        if not len(train_ids):
            raise ConfigError(f"no usable training clips in {cfg.data}")
        check_common_noise(train_records, query_records)
        return ScoreTable(score_matrix(query_feats, train_feats), train_ids, query_ids, train_records,
                          query_records)

    def select(self, table: ScoreTable | None = None, save: bool = True) -> Selection:
        """The selection the config's mode asks for; with `save`, write selection.json (atomic), scores.npy
        and (with `config.report`) report.md into `config.out`."""
        from .report import clip_summaries, covariate_arrays, write_curation_report
        from .scoring import selection_report
        from .store import config_hash

        cfg = self.config
        table = table if table is not None else self.score()
        selection, vote = Selection.from_scores(
            table.scores, table.train_ids, table.query_ids, mode=cfg.mode, fraction=cfg.fraction,
            percentile=cfg.percentile, reweight_mode=cfg.reweight_mode, floor=cfg.floor)
        clips = clip_summaries(table.train_ids, table.train_records)
        selection.details = {
            "config": asdict(cfg),
            # which expert each loss timestep ran on (the Motive loss has one, t_fix): the pipeline component
            # whose weights (or LoRA) the gradients come from
            "timesteps": [{"timestep": float(cfg.timestep),
                           "expert": self.backbone.expert_names[self.featurizer.backbone.expert],
                           "expert_index": int(self.featurizer.backbone.expert)}],
            "feature_store": str(self.out / "features" / config_hash(self.store_config)),
            "counts": {split: dict(c) for split, c in self.counts.items()},
            "counts_this_run": {split: dict(c) for split, c in self.counts_this_run.items()},
            "ranking": [table.train_ids[int(i)] for i in vote.order],
            "votes": [int(v) for v in vote.votes],
            "mean_score": [float(s) for s in vote.mean_score],
            "flags": {tid: rec.get("flags", []) for tid, rec in zip(table.train_ids, table.train_records)
                      if rec.get("flags")},
            "report": selection_report(vote, covariate_arrays(table.train_ids, clips)),
            "clips": clips,
            "queries": clip_summaries(table.query_ids, table.query_records),
        }
        if save:
            self.out.mkdir(parents=True, exist_ok=True)
            selection.save(self.out / SELECTION_FILE)
            scores = table.scores
            scores = scores.numpy() if hasattr(scores, "numpy") else np.asarray(scores)

            def write_scores(tmp: str) -> None:
                with open(tmp, "wb") as handle:  # a handle: np.save would append ".npy" to the temp name
                    np.save(handle, scores)

            atomic_write(self.out / "scores.npy", write_scores)
            if cfg.report:
                write_curation_report(self.out)
        return selection


def run_attribution(cfg: MotiveConfig, progress: bool = True, pipeline=None) -> dict[str, Any] | None:
    """The whole pass over `cfg`; returns the selection.json content on the main process (None elsewhere).

    `pipeline`: an already loaded pipeline to reuse (the fine-tuning loop passes its own; default: loaded from
    `cfg.model`); with `cfg.lora` the adapter is loaded into it for the pass and unloaded afterwards.
    """
    cfg.check()
    from ..output_paths import check_output_folder

    check_output_folder(cfg.out, "--out")  # a file in the way: named now, not after the model load
    check_output_folder(cfg.cache_root(), "--latent_cache_dir")
    if pipeline is None:
        from ..training.preflight import check_frame_sizes

        check_frame_sizes(cfg, where="curate")  # the frame size against the model's token size (config files)
    if cfg.params == "blocks":  # a block past the end selects nothing: checked from the config files now
        count = backbone_for(pipeline).num_blocks if pipeline is not None else block_count_of(cfg.model)
        check_block_indices("--blocks", cfg.blocks, count)
    check_lora_file(cfg.lora, "lora=")
    masker = cfg.make_masker()  # fails before any model load on a missing RAFT weights file
    datasets = pass_datasets(cfg)  # so does a query set that cannot work (every clip probed, nothing decoded)
    if pipeline is None:
        from ..arg_checks import check_model_folder

        check_model_folder(cfg.model)  # a typo'd or empty model folder: one line, not diffusers' OSError
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    motive = Motive(pipeline if pipeline is not None else cfg.model, cfg, masker=masker if masker else False,
                    progress=progress)
    with motive:
        if cfg.params == "blocks":  # a family whose config files did not tell: now the loaded model does
            check_block_indices("--blocks", cfg.blocks, motive.backbone.num_blocks)
        for split in SPLITS:  # every cache first, so a bad setting or clip shows before the long part
            motive.prepare(split, datasets[split])
        for split in SPLITS:
            motive.featurize(split, datasets[split])
        for split in SPLITS:
            motive.finalize(split)
        if motive.rank != 0:
            return None
        return motive.select().to_dict()

