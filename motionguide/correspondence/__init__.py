"""DiffTrack: temporal correspondences from video DiT self-attention, point tracks, and correspondence guidance.

Nam et al., "Emergent Temporal Correspondences from Video Diffusion Transformers", arXiv 2506.17220,
https://arxiv.org/abs/2506.17220 (DiffTrack; its guidance is CAG).

Intuition: in a few blocks, at late steps, a frame-0 token's query attends most to the keys of the same point in
the other frames, so the q-k matching cost between two frames is a point tracker. CAG guides a sample away from a
prediction made with those blocks frame-local (cross-frame attention removed), as CFG guides away from the
unconditional one, which strengthens temporal consistency.

- `CorrespondenceAccumulator` (a capture consumer) -> frame-pair matching costs, never a full attention map.
- `tracks_from_costs`, `latent_to_pixel_tracks`: costs -> pixel tracks; `track_video` (real videos) and
  `track_generation` (the model's own samples).
- `correspondence_guided` / `--guidance correspondence`: CAG on the classic Wan / CogVideoX pipelines;
  `CorrespondenceGuidance`: the same as a diffusers guider for modular pipelines.
"""

from .analysis import analyze_layers
from .analysis_data import load_analysis_clips
from .analysis_result import AnalysisResult
from .guidance import CorrespondenceGuidedTransformer, correspondence_guidance, correspondence_guided
from .guider import CorrespondenceGuidance
from .matching import CorrespondenceAccumulator, feature_cost, pair_cost, resolve_temperature
from .profiles import default_tracking_timestep, resolve_profile
from .settings import CAGSettings, cag_combine, check_attention_backend, resolve_cag_settings, step_in_window
from .tracker import encode_frames_individually, track_generation, track_video
from .tracks import (
    bilinear_sample,
    latent_frame_times,
    latent_to_pixel_tracks,
    match_field,
    pixels_to_token_coords,
    token_coords_to_pixels,
    tracks_from_costs,
)

__all__ = [
    "analyze_layers",
    "AnalysisResult",
    "load_analysis_clips",
    "CorrespondenceAccumulator",
    "pair_cost",
    "feature_cost",
    "resolve_temperature",
    "match_field",
    "bilinear_sample",
    "pixels_to_token_coords",
    "token_coords_to_pixels",
    "tracks_from_costs",
    "latent_frame_times",
    "latent_to_pixel_tracks",
    "track_video",
    "track_generation",
    "encode_frames_individually",
    "CAGSettings",
    "resolve_cag_settings",
    "step_in_window",
    "check_attention_backend",
    "cag_combine",
    "correspondence_guided",
    "correspondence_guidance",
    "CorrespondenceGuidedTransformer",
    "CorrespondenceGuidance",
    "resolve_profile",
    "default_tracking_timestep",
]
