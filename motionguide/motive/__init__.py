"""Motive: which fine-tuning clips teach a video model its motion (Wu et al., "Motion Attribution for Video
Generation", arXiv 2601.08828, https://arxiv.org/abs/2601.08828).

Intuition: a clip teaches motion when a gradient step on it lowers the loss of the query clips that show the
wanted motion, counting only the moving pixels. So each clip's gradient of a motion-weighted loss (flow-based
mask, one shared timestep and noise) is projected to a few hundred numbers, and clips are ranked by their
cosine with the queries' gradients (majority vote over queries); the top fraction is kept.

The workflow is one object, :class:`Motive` (TRAK's `TRAKer` is the model)::

    from motionguide.motive import Motive, MotiveConfig

    cfg = MotiveConfig(model="assets/toy-model", data="data/pool", queries="data/queries", out="out/motive")
    motive = Motive(cfg.model, cfg)             # swappable: projector=..., store=..., masker=...
    with motive:                                # loads cfg.lora for the pass, if any
        datasets = motive.datasets()            # {"train": cfg.data, "query": cfg.queries}
        for split, dataset in datasets.items():
            motive.featurize(split, dataset)    # resumable, one shard per rank
            motive.finalize(split)              # merge the shards
        selection = motive.select(motive.score())   # -> Selection; writes out/motive/selection.json
    indices, weights = selection.indices_for(datasets["train"].ids)   # or any dataset's clip ids

:func:`run_attribution` is the same pass over a config (what `motionguide curate` and `--curation motive` run).
Modules: `config` (MotiveConfig), `attributor` (Motive), `featurizer` (motion-weighted loss, gradients),
`projectors` (JL sketches), `store` (FeatureStore), `flow` + `masks` (the masker), `scoring` (scores, votes),
`selection` (Selection: the modes and their mapping onto a dataset), `report`, `curation` (the fine-tuning
loop's `--curation motive`), `dataset` (CuratedDataset for any loop), `cli` (`motionguide curate`).
The choices where the paper is silent are documented where they are made.
"""

from .attributor import Motive, ScoreTable, check_common_noise, run_attribution
from .config import AttributionConfig, MotiveConfig
from .dataset import CuratedDataset
from .featurizer import CommonRandomness, FeatureResult, GradientFeaturizer, motion_weighted_loss, select_parameters
from .flow import ANCHORS, FLOW_NAMES, FlowEstimator, FrameDifference, OpenCVFlow, RAFTFlow, get_flow_estimator
from .masks import (TEMPORAL_MODES, ZETA, MotionMask, MotionMasker, camera_motion_cov, motion_mask,
                    normalize_magnitude, to_latent_grid)
from .projectors import (
    PROJECTORS,
    BlockwiseFastfood,
    DenseGaussian,
    FastfoodGlobal,
    Projector,
    SparseJL,
    make_projector,
)
from .report import write_curation_report
from .scoring import (
    MajorityVote,
    majority_vote_selection,
    prune_negative,
    reweight,
    roc_auc,
    score_matrix,
    selection_report,
    spearman,
)
from .selection import MODES, SELECTION_FILE, Selection, load_selection
from .store import FeatureStore, StoreMismatchError, config_hash, read_merged

__all__ = [
    "Motive",
    "MotiveConfig",
    "AttributionConfig",
    "ScoreTable",
    "run_attribution",
    "check_common_noise",
    "Selection",
    "MODES",
    "SELECTION_FILE",
    "load_selection",
    "CuratedDataset",
    "CommonRandomness",
    "FeatureResult",
    "GradientFeaturizer",
    "motion_weighted_loss",
    "select_parameters",
    "ANCHORS",
    "FLOW_NAMES",
    "FlowEstimator",
    "FrameDifference",
    "OpenCVFlow",
    "RAFTFlow",
    "get_flow_estimator",
    "TEMPORAL_MODES",
    "ZETA",
    "MotionMask",
    "MotionMasker",
    "camera_motion_cov",
    "motion_mask",
    "normalize_magnitude",
    "to_latent_grid",
    "PROJECTORS",
    "BlockwiseFastfood",
    "DenseGaussian",
    "FastfoodGlobal",
    "Projector",
    "SparseJL",
    "make_projector",
    "write_curation_report",
    "MajorityVote",
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


def __getattr__(name: str):
    # MotiveCuration is imported on demand: it needs the training layer, which plain attribution does not
    if name == "MotiveCuration":
        from .curation import MotiveCuration

        return MotiveCuration
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
