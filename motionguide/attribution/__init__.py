"""Motive: motion-aware gradient attribution for curating fine-tuning clips (Wu et al., "Motion Attribution for
Video Generation", arXiv 2601.08828; the choices where the paper is silent are documented where they are made)."""

from .curation import MotiveCuration  # registers --curation motive
from .dataset import CuratedDataset
from .featurizer import CommonRandomness, FeatureResult, GradientFeaturizer, motion_weighted_loss, select_parameters
from .report import write_curation_report
from .run import AttributionConfig, load_selection, run_attribution, select_from_store
from .projectors import (
    PROJECTORS,
    BlockwiseFastfood,
    DenseGaussian,
    FastfoodGlobal,
    Projector,
    SparseJL,
    make_projector,
)
from .selection import (
    Selection,
    majority_vote_selection,
    prune_negative,
    reweight,
    roc_auc,
    score_matrix,
    selection_report,
    spearman,
)
from .store import FeatureStore, StoreMismatchError, config_hash, read_merged

__all__ = [
    "MotiveCuration",
    "CuratedDataset",
    "CommonRandomness",
    "FeatureResult",
    "GradientFeaturizer",
    "motion_weighted_loss",
    "select_parameters",
    "AttributionConfig",
    "load_selection",
    "run_attribution",
    "select_from_store",
    "write_curation_report",
    "PROJECTORS",
    "BlockwiseFastfood",
    "DenseGaussian",
    "FastfoodGlobal",
    "Projector",
    "SparseJL",
    "make_projector",
    "Selection",
    "majority_vote_selection",
    "prune_negative",
    "reweight",
    "roc_auc",
    "score_matrix",
    "selection_report",
    "spearman",
    "FeatureStore",
    "StoreMismatchError",
    "config_hash",
    "read_merged",
]
