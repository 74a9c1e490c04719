"""Offline motion metrics: OpenCV flow, video-quality proxies, tracking accuracy, masks and saliency,
and toy-world prompt adherence (turns included). Everything runs on a CPU without downloaded weights."""

from motionguide.metrics.adherence import (
    ObjectAdherence, ObjectDetection, detect_object, guess_shape, parse_toy_caption, summarize_adherence,
    toy_prompt_adherence,
)
from motionguide.metrics.flow import FLOW_METHODS, flow_between, flow_magnitude, optical_flow
from motionguide.metrics.object_consistency import aligned_mask_iou, object_consistency
from motionguide.metrics.masks import binarize_saliency, mask_iou, pointing_game, resize_map
from motionguide.metrics.tracking import delta_avg, pck, pck_tokens, point_errors
from motionguide.metrics.turns import TurnAdherence, TurnReading, read_turn, toy_turn_adherence, turn_success_rate
from motionguide.metrics.video_quality import (
    DynamicDegree, dynamic_degree_proxy, dynamic_degree_rule, flow_warp_smoothness, mean_flow_magnitude,
    temporal_flicker,
)

__all__ = [
    "FLOW_METHODS", "optical_flow", "flow_between", "flow_magnitude",
    "DynamicDegree", "dynamic_degree_proxy", "dynamic_degree_rule", "mean_flow_magnitude",
    "flow_warp_smoothness", "temporal_flicker",
    "point_errors", "pck", "pck_tokens", "delta_avg",
    "mask_iou", "binarize_saliency", "resize_map", "pointing_game",
    "parse_toy_caption", "ObjectDetection", "detect_object", "guess_shape", "ObjectAdherence",
    "toy_prompt_adherence", "summarize_adherence", "object_consistency", "aligned_mask_iou",
    "TurnReading", "TurnAdherence", "read_turn", "toy_turn_adherence", "turn_success_rate",
]
