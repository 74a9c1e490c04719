"""Training data layer: video datasets in the layouts users bring, buckets, and the latent/text cache."""

from .buckets import Bucket, BucketBatchSampler, assign_bucket
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
    "VideoDataset", "SkippedClip", "ClipEntry", "VideoProbe", "EmptyDatasetError", "SKIP_CATEGORIES",
    "RESIZE_MODES", "check_num_frames", "probe_video", "frames_to_pixels",
    "LAYOUTS", "VIDEO_EXTENSIONS", "read_layout",
    "Bucket", "assign_bucket", "BucketBatchSampler",
    "LatentCache", "CachedLatentDataset", "BuildReport", "clip_file_name",
    "CACHE_FORMAT_VERSION", "cache_key", "cache_fields", "model_identity",
]
