"""`Selection`: which training clips a Motive pass keeps, with which weights, and how that maps onto a dataset.

This is the one place that knows the curation modes, so the pass, the fine-tuning loop's `--curation motive`
and :class:`~motionguide.motive.dataset.CuratedDataset` for other loops cannot drift apart:

* ``filter`` (the paper): keep the top ``fraction`` of the majority-vote ranking.
* ``reweight`` (an unvalidated extension): keep every clip, with sampling weights from the votes or z-scores.
* ``prune-negative`` (an unvalidated extension): keep the clips whose mean score over queries is >= 0.

A selection is saved as ``selection.json`` (atomically); the file carries, next to the kept ids and weights,
what the report needs (ranking, votes, per-clip covariates), kept as they are in :attr:`Selection.details`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ConfigError
from ..files import atomic_write_text
from .scoring import REWEIGHT_MODES, MajorityVote, majority_vote_selection, prune_negative, reweight

__all__ = ["Selection", "MODES", "DEFAULT_MODE", "SELECTION_FILE", "check_mode", "load_selection"]

SELECTION_FILE = "selection.json"
MODES = ("filter", "reweight", "prune-negative")
DEFAULT_MODE = "filter"
#: keys of selection.json in the order they are written (the typed fields first, then the report's details)
_HEAD = ("method", "mode", "fraction", "percentile", "tie_rule")
_IDS = ("train_ids", "query_ids", "selected_ids", "weights")


def check_mode(mode: str, reweight_mode: str = "votes") -> str:
    """`mode` if it is a curation mode (and `reweight_mode` one of the reweighting rules); ConfigError if not."""
    if mode not in MODES:
        raise ConfigError(f"unknown curation mode {mode!r}; valid: {', '.join(MODES)}")
    if reweight_mode not in REWEIGHT_MODES:
        raise ConfigError(f"unknown reweight mode {reweight_mode!r}; valid: {', '.join(REWEIGHT_MODES)}")
    return mode


@dataclass
class Selection:
    """The outcome of a Motive pass: kept training clip ids (best first, or every clip for ``reweight``), their
    weights (``reweight`` only), and the settings it was made with."""

    train_ids: list[str]
    selected_ids: list[str]
    weights: list[float] | None = None  # one per train id, in train_ids order; only in mode "reweight"
    mode: str = DEFAULT_MODE
    fraction: float | None = None
    percentile: float | None = None
    tie_rule: str | None = None
    query_ids: list[str] = field(default_factory=list)
    method: str = "motive"
    #: everything else selection.json holds (config, counts, ranking, votes, report, clips ...), as written
    details: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------ making one

    @classmethod
    def from_scores(cls, scores, train_ids: Sequence[str], query_ids: Sequence[str] = (), mode: str = DEFAULT_MODE,
                    fraction: float = 0.1, percentile: float = 90.0, reweight_mode: str = "votes",
                    floor: float = 0.05) -> tuple["Selection", MajorityVote]:
        """Vote over `scores` [Q, N] and keep clips by `mode`; returns the selection and the vote behind it."""
        check_mode(mode, reweight_mode)
        vote = majority_vote_selection(scores, fraction=fraction, percentile=percentile)
        kept = [int(i) for i in vote.indices]
        weights = None
        if mode == "reweight":
            # the votes behind the weights use the same per-query percentile as the selection
            weights = [float(w) for w in reweight(vote, mode=reweight_mode, floor=floor)]
            kept = list(range(len(train_ids)))
        elif mode == "prune-negative":
            kept = [int(i) for i in prune_negative(scores)]
        selection = cls(train_ids=list(train_ids), selected_ids=[train_ids[i] for i in kept], weights=weights,
                        mode=mode, fraction=fraction, percentile=percentile, tie_rule=vote.tie_rule,
                        query_ids=list(query_ids))
        return selection, vote

    # ------------------------------------------------------------------------------- saving, loading

    def to_dict(self) -> dict[str, Any]:
        """The selection.json content (key order as written since the first release of the file)."""
        head = {"method": self.method, "mode": self.mode, "fraction": self.fraction, "percentile": self.percentile,
                "tie_rule": self.tie_rule}
        ids = {"train_ids": self.train_ids, "query_ids": self.query_ids, "selected_ids": self.selected_ids,
               "weights": self.weights}
        before = {k: v for k, v in self.details.items() if k in ("config", "feature_store", "counts")}
        after = {k: v for k, v in self.details.items() if k not in before}
        return {**head, **before, **ids, **after}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Selection":
        """A selection from its saved content (a selection.json read as a dict)."""
        missing = [k for k in ("train_ids", "selected_ids") if k not in data]
        if missing:
            raise ConfigError(f"not a Motive selection: {', '.join(missing)} missing")
        details = {k: v for k, v in data.items() if k not in _HEAD + _IDS}
        return cls(train_ids=list(data["train_ids"]), selected_ids=list(data["selected_ids"]),
                   weights=None if data.get("weights") is None else [float(w) for w in data["weights"]],
                   mode=data.get("mode") or DEFAULT_MODE, fraction=data.get("fraction"), percentile=data.get("percentile"),
                   tie_rule=data.get("tie_rule"), query_ids=list(data.get("query_ids") or []),
                   method=data.get("method", "motive"), details=details)

    def save(self, path: str | os.PathLike) -> Path:
        """Write selection.json atomically to `path` (the file, or a folder to hold it); returns the file."""
        path = Path(path)
        if path.suffix != ".json":
            path = path / SELECTION_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Selection":
        """The selection saved at `path` (the file or its folder)."""
        return cls.from_dict(load_selection(path))

    # ------------------------------------------------------------------------- mapping onto a dataset

    def indices_for(self, ids: Sequence[str]) -> tuple[list[int], list[float] | None]:
        """(indices, weights) of the kept clips in a dataset whose clip ids, in index order, are `ids`.

        Indices follow the selection's order (best first); weights are None unless the selection reweights.
        Kept clips the dataset lacks are left out (:meth:`missing_from` names them); none in common is an error.
        """
        index_of = {clip_id: i for i, clip_id in enumerate(ids)}
        kept = [clip_id for clip_id in self.selected_ids if clip_id in index_of]
        if not kept:
            raise ConfigError("the Motive selection shares no clip id with this dataset; was it computed on the "
                              "same clips (ids are the metadata `id` or the video file stem)?")
        weights = None
        if self.weights is not None:
            by_id = dict(zip(self.train_ids, self.weights))
            weights = [float(by_id[clip_id]) for clip_id in kept]
        return [index_of[clip_id] for clip_id in kept], weights

    def missing_from(self, ids: Sequence[str]) -> list[str]:
        """Kept clip ids that `ids` does not hold."""
        present = set(ids)
        return [clip_id for clip_id in self.selected_ids if clip_id not in present]

    # ------------------------------------------------------------------------------ settings checks

    def made_with(self, mode: str, fraction: float) -> bool:
        """Whether this selection answers a request for `mode` and `fraction` (the fraction matters only for
        ``filter``: the other modes do not cut at it)."""
        if self.mode != mode:
            return False
        return not (mode == "filter" and self.fraction is not None and abs(float(self.fraction) - fraction) > 1e-9)

    def check_made_with(self, mode: str, fraction: float, where: str | os.PathLike) -> "Selection":
        """Self, or a ConfigError naming the command that makes the selection asked for."""
        if not self.made_with(mode, fraction):
            raise ConfigError(
                f"the Motive selection {where} was made with mode {self.mode}, fraction {self.fraction}, but this "
                f"run asks for mode {mode}, fraction {fraction} (method_options.motive). Rerun `motionguide "
                f"curate` with --mode {mode} --fraction {fraction} and the same --out (its stored features are "
                "reused, only the scoring runs), or ask for the selection's settings.")
        return self

    def summary(self, dataset_size: int, kept: int) -> dict[str, Any]:
        """What a training run logs about the curation it used."""
        return {"method": self.method, "mode": self.mode, "kept": kept, "of": dataset_size,
                "queries": len(self.query_ids)}


def load_selection(path: str | os.PathLike) -> dict[str, Any]:
    """The saved selection.json at `path` (the file or its folder) as a dict."""
    path = Path(path)
    if path.is_dir():
        path = path / SELECTION_FILE
    if not path.is_file():
        raise ConfigError(f"no Motive selection at {path}; run `motionguide curate ... --out {path.parent}` first")
    return json.loads(path.read_text())
