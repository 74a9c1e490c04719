"""The data layer the three methods share: video datasets in the layouts users bring, shape buckets, the
latent + text-embedding cache, and the per-step batch plan.

Fine-tuning (`motionguide.training`), Motive's attribution pass and DiffTrack's layer analysis all read clips
through here, so a folder that trains also curates and analyses. Nothing here imports a method or the loop.
"""

from .batches import StepBatchPlan
from .buckets import Bucket, BucketBatchSampler, assign_bucket, parse_buckets
from .cache import BuildReport, CachedLatentDataset, LatentCache, clip_file_name, condition_of
from .dataset import (
    RESIZE_MODES,
    SKIP_CATEGORIES,
    ClipEntry,
    EmptyDatasetError,
    SkippedClip,
    VideoDataset,
    VideoProbe,
    check_num_frames,
    dataset_options,
    frames_to_pixels,
    probe_video,
)
from .layouts import LAYOUTS, VIDEO_EXTENSIONS, read_layout
from .readers import VIDEO_READERS, open_video, resolve_reader

__all__ = [
    "VideoDataset", "SkippedClip", "ClipEntry", "VideoProbe", "EmptyDatasetError", "SKIP_CATEGORIES",
    "RESIZE_MODES", "check_num_frames", "probe_video", "frames_to_pixels", "dataset_options",
    "VIDEO_READERS", "open_video", "resolve_reader",
    "LAYOUTS", "VIDEO_EXTENSIONS", "read_layout",
    "Bucket", "assign_bucket", "parse_buckets", "BucketBatchSampler", "StepBatchPlan",
    "LatentCache", "CachedLatentDataset", "BuildReport", "clip_file_name", "condition_of",
]
