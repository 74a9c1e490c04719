"""Training data layer: video datasets in the layouts users bring, buckets, and the latent/text cache."""

from .buckets import Bucket, BucketBatchSampler, assign_bucket
from .callbacks import (Curation, CurationResult, RandomCuration, TrainContext, TrainerCallback, get_curation,
                        get_monitor, register_curation, register_monitor, registered_curations, registered_monitors)
from .config import TrainConfig
from .cache import BuildReport, CachedLatentDataset, LatentCache, clip_file_name
from .data import (
    RESIZE_MODES,
    SKIP_CATEGORIES,
    ClipEntry,
    EmptyDatasetError,
    SkippedClip,
    VideoDataset,
    VideoProbe,
    check_num_frames,
    frames_to_pixels,
    probe_video,
)
from .identity import CACHE_FORMAT_VERSION, cache_fields, cache_key, model_identity
from .layouts import LAYOUTS, VIDEO_EXTENSIONS, read_layout

__all__ = [
    "TrainConfig", "TrainerCallback", "TrainContext", "Curation", "CurationResult", "RandomCuration",
    "register_curation", "register_monitor", "get_curation", "get_monitor", "registered_curations",
    "registered_monitors", "Trainer",
    "VideoDataset", "SkippedClip", "ClipEntry", "VideoProbe", "EmptyDatasetError", "SKIP_CATEGORIES",
    "RESIZE_MODES", "check_num_frames", "probe_video", "frames_to_pixels",
    "LAYOUTS", "VIDEO_EXTENSIONS", "read_layout",
    "Bucket", "assign_bucket", "BucketBatchSampler",
    "LatentCache", "CachedLatentDataset", "BuildReport", "clip_file_name",
    "CACHE_FORMAT_VERSION", "cache_key", "cache_fields", "model_identity",
]


def __getattr__(name):
    """`Trainer` imports accelerate and diffusers pipelines: load it only when asked for."""
    if name == "Trainer":
        from .loop import Trainer

        return Trainer
    raise AttributeError(name)
