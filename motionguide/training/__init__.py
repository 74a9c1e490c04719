"""The fine-tuning loop (`Trainer`), its callback and curation slots, LoRA helpers and validation.

The data layer it reads (datasets, buckets, latent cache, batch plan) lives in `motionguide.data`, and the
cache's identity keys in `motionguide.identity`; their public names are re-exported here so imports written
against the older layout keep working.
"""

from ..data import (
    LAYOUTS,
    RESIZE_MODES,
    SKIP_CATEGORIES,
    VIDEO_EXTENSIONS,
    Bucket,
    BucketBatchSampler,
    BuildReport,
    CachedLatentDataset,
    ClipEntry,
    EmptyDatasetError,
    LatentCache,
    SkippedClip,
    VideoDataset,
    VideoProbe,
    assign_bucket,
    check_num_frames,
    clip_file_name,
    frames_to_pixels,
    probe_video,
    read_layout,
)
from ..identity import CACHE_FORMAT_VERSION, cache_fields, cache_key, model_identity
from .callbacks import (Curation, CurationResult, TrainContext, TrainerCallback, get_curation, get_monitor,
                        register_curation, register_monitor, registered_curations, registered_monitors)
from .config import TrainConfig
from .curations import RandomCuration

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
