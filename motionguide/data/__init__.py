"""The data layer the three methods share: video datasets in the layouts users bring, shape buckets, the
latent + text-embedding cache, and the per-step batch plan.

Fine-tuning (`motionguide.training`), Motive's attribution pass and DiffTrack's layer analysis all read clips
through here, so a folder that trains also curates and analyses. Nothing here imports a method or the loop.
"""

from .batches import StepBatchPlan
from .buckets import Bucket, BucketBatchSampler, assign_bucket
from .cache import BuildReport, CachedLatentDataset, LatentCache, clip_file_name
from .dataset import (
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
from .layouts import LAYOUTS, VIDEO_EXTENSIONS, read_layout

__all__ = [
    "VideoDataset", "SkippedClip", "ClipEntry", "VideoProbe", "EmptyDatasetError", "SKIP_CATEGORIES",
    "RESIZE_MODES", "check_num_frames", "probe_video", "frames_to_pixels",
    "LAYOUTS", "VIDEO_EXTENSIONS", "read_layout",
    "Bucket", "assign_bucket", "BucketBatchSampler", "StepBatchPlan",
    "LatentCache", "CachedLatentDataset", "BuildReport", "clip_file_name",
]
