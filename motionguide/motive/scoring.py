"""Scoring and voting (Motive, sec. 6): cosine scores, per-query percentile vote, top fraction, weights.

The maths only: which clips a curation keeps in which mode, and how that maps onto a dataset, is
:class:`motionguide.motive.selection.Selection`.

* Score I(n, q) = g̃_qᵀ g̃_n on ℓ2-normalised features, no minus sign: large positive means a step on clip n
  lowers query q's motion loss. A zero feature (static clip, zero mask) scores exactly 0.
* Many queries (ICONS majority vote): τ_q = the ``percentile`` of query q's scores over the corpus;
  votes_n = Σ_q 1[I(n, q) > τ_q]; rank by votes. Votes take only Q + 1 values, so ties at the cut are common;
  they are broken by the mean within-query percentile rank (average ranks for tied scores, compared exactly
  as integers), then the mean raw score, then the lower clip index. ``MajorityVote.tie_rule`` states this for logs.
* Reweighting and negative pruning are extensions the paper did not validate; they are offered for
  experiments and say so.

All arrays are handled as numpy float64 so that thresholds, ranks and tie-breaks do not depend on the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from ..errors import ConfigError

__all__ = [
    "MajorityVote",
    "TIE_RULE",
    "score_matrix",
    "majority_vote_selection",
    "reweight",
    "prune_negative",
    "selection_report",
    "spearman",
    "rank_average",
    "roc_auc",
]

TIE_RULE = ("votes desc, then mean within-query percentile rank desc (average ranks for tied scores), "
            "then mean raw score desc, then clip index asc")
REWEIGHT_MODES = ("votes", "zscore")


def _to_numpy(x, what: str, ndim: Sequence[int]) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim not in ndim:
        raise ValueError(f"{what} must have {' or '.join(map(str, ndim))} dimensions, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} has NaN or inf values; score zero features as 0 (score_matrix does) and "
                         "drop clips whose features are missing")
    return a


def score_matrix(query_features: torch.Tensor, train_features: torch.Tensor,
                 normalize: bool = False) -> torch.Tensor:
    """[Q, d] × [N, d] -> [Q, N] float32 cosine scores in one matmul.

    Features are expected ℓ2-normalised already; ``normalize=True`` normalises them here (zero rows stay zero).
    """
    q = torch.as_tensor(query_features).detach().to(torch.float32)
    t = torch.as_tensor(train_features).detach().to(torch.float32)
    if q.dim() != 2 or t.dim() != 2 or q.shape[1] != t.shape[1]:
        raise ValueError(f"need query [Q, d] and train [N, d] features with the same d, got {tuple(q.shape)} "
                         f"and {tuple(t.shape)}")
    if not (torch.isfinite(q).all() and torch.isfinite(t).all()):
        raise ValueError("features contain NaN or inf; the feature store records such clips as skipped")
    if normalize:
        q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-30)
        t = t / t.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return q @ t.T.to(q.device)


def _twice_average_ranks(a: np.ndarray) -> np.ndarray:
    """2 × the 1-based average ranks of a 1-D array (ties share the mean rank); integers, so exact."""
    order = np.argsort(a, kind="mergesort")
    ordered = a[order]
    starts_mask = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    starts = np.flatnonzero(starts_mask)
    ends = np.append(starts[1:], a.size)  # exclusive: a tie group covers positions starts+1 .. ends
    group = np.cumsum(starts_mask) - 1
    twice = np.empty(a.size, dtype=np.int64)
    twice[order] = (starts + 1 + ends)[group]
    return twice


def rank_average(a) -> np.ndarray:
    """1-based ranks of a 1-D array, tied values getting their average rank (like scipy.stats.rankdata)."""
    return _twice_average_ranks(np.asarray(a, dtype=np.float64).ravel()) / 2.0


@dataclass
class MajorityVote:
    """The outcome of a majority vote, with everything needed to log and reproduce it."""

    indices: np.ndarray  # kept clip indices, best first
    order: np.ndarray  # every clip index, best first
    votes: np.ndarray  # [N] int
    thresholds: np.ndarray  # [Q] τ_q
    mean_rank: np.ndarray  # [N] mean within-query percentile rank in [0, 100]
    mean_score: np.ndarray  # [N] mean raw score over queries
    tie_rule: str
    fraction: float
    percentile: float
    n_queries: int
    boundary_tie: bool  # whether kept and dropped clips share the vote count at the cut

    @property
    def k(self) -> int:
        """Number of clips kept."""
        return int(self.indices.size)

    def to_dict(self) -> dict:
        """JSON-able summary for ``selection.json``."""
        return {"indices": self.indices.tolist(), "votes": self.votes.tolist(),
                "thresholds": self.thresholds.tolist(), "tie_rule": self.tie_rule, "fraction": self.fraction,
                "percentile": self.percentile, "n_queries": self.n_queries, "k": self.k,
                "boundary_tie": self.boundary_tie}


def _keep_count(fraction: float, n: int) -> int:
    """round(fraction × n), halves up, at least 1."""
    return min(n, max(1, int(math.floor(fraction * n + 0.5))))


def majority_vote_selection(scores, fraction: float = 0.1, percentile: float = 90.0) -> MajorityVote:
    """Per-query percentile threshold, votes, deterministic ranking, top ``fraction`` (at least one clip)."""
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
    if not 0.0 <= percentile <= 100.0:
        raise ConfigError(f"percentile must be in [0, 100], got {percentile}")
    s = _to_numpy(scores, "scores", (1, 2))
    if s.ndim == 1:
        s = s[None]
    n_queries, n = s.shape
    if n == 0 or n_queries == 0:
        raise ValueError(f"scores must be [Q, N] with Q, N >= 1, got shape {s.shape}")
    thresholds = np.percentile(s, percentile, axis=1)
    votes = (s > thresholds[:, None]).sum(axis=0).astype(np.int64)
    twice_rank_sum = np.zeros(n, dtype=np.int64)
    for row in s:
        twice_rank_sum += _twice_average_ranks(row)
    mean_score = s.mean(axis=0)
    mean_rank = (twice_rank_sum / (2.0 * n_queries) - 1.0) / max(n - 1, 1) * 100.0
    order = np.lexsort((np.arange(n), -mean_score, -twice_rank_sum, -votes))
    k = _keep_count(fraction, n)
    boundary_tie = bool(k < n and votes[order[k - 1]] == votes[order[k]])
    return MajorityVote(indices=order[:k].copy(), order=order, votes=votes, thresholds=thresholds,
                     mean_rank=mean_rank, mean_score=mean_score, tie_rule=TIE_RULE, fraction=float(fraction),
                     percentile=float(percentile), n_queries=n_queries, boundary_tie=boundary_tie)


def reweight(selection_or_scores, mode: str = "votes", floor: float = 0.05,
             percentile: float = 90.0) -> np.ndarray:
    """Per-clip sampling weights in [floor, 1] (e.g. for ``WeightedRandomSampler``). Unvalidated extension.

    ``votes``: floor + (1 - floor) · votes / max votes. ``zscore``: the same on the positive part of the
    z-scored mean score (clips at or below the corpus mean get the floor). The floor keeps every clip
    reachable; a corpus without signal (no votes, constant scores) gets uniform weights.
    """
    if mode not in REWEIGHT_MODES:
        raise ConfigError(f"unknown reweight mode {mode!r}; valid: {', '.join(REWEIGHT_MODES)}")
    if not 0.0 < floor <= 1.0:
        raise ConfigError(f"floor must be in (0, 1], got {floor}")
    selection = selection_or_scores
    if not isinstance(selection, MajorityVote):
        selection = majority_vote_selection(selection_or_scores, fraction=1.0, percentile=percentile)
    if mode == "votes":
        signal = selection.votes.astype(np.float64)
    else:
        m = selection.mean_score
        std = m.std()
        signal = np.clip((m - m.mean()) / std, 0.0, None) if std > 0 else np.zeros_like(m)
    top = signal.max()
    base = signal / top if top > 0 else np.ones_like(signal)
    return floor + (1.0 - floor) * base


def prune_negative(scores) -> np.ndarray:
    """Indices (ascending) of clips whose mean score over queries is >= 0. Unvalidated extension."""
    s = _to_numpy(scores, "scores", (1, 2))
    mean = s.mean(axis=0) if s.ndim == 2 else s
    return np.flatnonzero(mean >= 0.0)


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties, then Pearson); NaN when either side is constant."""
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.size != y.size:
        raise ValueError(f"spearman needs equal lengths, got {x.size} and {y.size}")
    rx, ry = rank_average(x) - (x.size + 1) / 2.0, rank_average(y) - (y.size + 1) / 2.0
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / denom if denom > 0 else float("nan")


def roc_auc(scores, labels) -> float:
    """P(score of a positive > score of a negative), ties counting half (Mann–Whitney U / n_pos n_neg).

    Higher scores must mean "more likely positive": to detect defects that attribution scores low, pass
    ``-scores``.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.size != y.size:
        raise ValueError(f"scores and labels differ in length: {s.size} vs {y.size}")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_auc needs at least one positive and one negative label")
    rank_sum_pos = rank_average(s)[y].sum()
    return float((rank_sum_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _finite_or_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def selection_report(selection: MajorityVote, covariates: Mapping[str, Sequence[float]] | None = None) -> dict:
    """JSON-able report data: vote histogram, the cut, and per covariate (clip length, mask coverage, motion
    magnitude, ...) its Spearman correlation with the mean score and its mean in the kept set vs the rest."""
    n = selection.votes.size
    kept = np.zeros(n, dtype=bool)
    kept[selection.indices] = True
    cut_votes = int(selection.votes[selection.indices[-1]])
    report = {
        "n_clips": n, "n_queries": selection.n_queries, "k": selection.k, "fraction": selection.fraction,
        "percentile": selection.percentile, "tie_rule": selection.tie_rule,
        "thresholds": selection.thresholds.tolist(),
        "vote_histogram": np.bincount(selection.votes, minlength=selection.n_queries + 1).tolist(),
        "cut": {"votes": cut_votes, "kept_at_cut": int((kept & (selection.votes == cut_votes)).sum()),
                "clips_at_cut": int((selection.votes == cut_votes).sum()),
                "boundary_tie": selection.boundary_tie},
        "mean_score": {"kept": float(selection.mean_score[kept].mean()),
                       "rest": _finite_or_none(float(selection.mean_score[~kept].mean())) if (~kept).any()
                       else None},
        "covariates": {},
    }
    for name, values in (covariates or {}).items():
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size != n:
            raise ValueError(f"covariate {name!r} has {v.size} values for {n} clips")
        report["covariates"][name] = {
            "spearman_with_mean_score": _finite_or_none(spearman(selection.mean_score, v)),
            "kept_mean": float(v[kept].mean()),
            "rest_mean": float(v[~kept].mean()) if (~kept).any() else None,
        }
    return report
