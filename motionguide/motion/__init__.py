"""Motion estimation for Motive: flow estimators and motion masks on the latent grid."""

from .flow import (ANCHORS, FLOW_NAMES, FlowEstimator, FrameDifference, OpenCVFlow, RAFTFlow,
                   get_flow_estimator)
from .masks import (TEMPORAL_MODES, ZETA, MotionMask, camera_motion_cov, motion_mask, normalize_magnitude,
                    to_latent_grid)

__all__ = ["ANCHORS", "FLOW_NAMES", "FlowEstimator", "OpenCVFlow", "FrameDifference", "RAFTFlow",
           "get_flow_estimator", "MotionMask", "motion_mask", "normalize_magnitude", "to_latent_grid",
           "camera_motion_cov", "TEMPORAL_MODES", "ZETA"]
