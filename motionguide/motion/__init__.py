"""Deprecated: the flow estimators and motion masks live in :mod:`motionguide.motive` (`flow`, `masks`)."""

import warnings

from ..motive.flow import (ANCHORS, FLOW_NAMES, FlowEstimator, FrameDifference, OpenCVFlow, RAFTFlow,
                           get_flow_estimator)
from ..motive.masks import (TEMPORAL_MODES, ZETA, MotionMask, camera_motion_cov, motion_mask, normalize_magnitude,
                            to_latent_grid)

warnings.warn("motionguide.motion is deprecated; import from motionguide.motive", DeprecationWarning, stacklevel=2)

__all__ = ["ANCHORS", "FLOW_NAMES", "FlowEstimator", "OpenCVFlow", "FrameDifference", "RAFTFlow",
           "get_flow_estimator", "MotionMask", "motion_mask", "normalize_magnitude", "to_latent_grid",
           "camera_motion_cov", "TEMPORAL_MODES", "ZETA"]
