"""Real-size token counts and what attention would cost if materialised, vs what the instruments need.

Used by `motionguide shapes` and the Foundation tests on meta-device builds of the real configs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..attention.kernels import DEFAULT_CHUNK_ELEMENTS
from .base import VideoBackbone


@dataclass
class AttentionFootprint:
    """Token counts and memory figures of one model at one video size (one row of `motionguide shapes`)."""

    model: str
    video: str  # "FxHxW" in pixels
    token_grid: tuple[int, int, int]
    video_tokens: int
    text_tokens_in_sequence: int
    sequence: int
    blocks: int
    heads: int
    head_dim: int
    full_map_bytes_per_layer: int  # heads x S x S at `dtype_bytes`, one sample
    frame_pair_cost_bytes: int  # one head, one (frame 0, frame j) matching cost in fp32
    lse_chunk_bytes: int  # bound on the logits chunk of the non-renormalised frame-local form (fp32)
    qk_capture_bytes_per_head: int  # q and k of one head for the whole clip (the most a consumer may hold)

    def as_dict(self) -> dict:
        """The fields as a plain dict (for JSON output)."""
        return asdict(self)


def attention_footprint(backbone: VideoBackbone, num_frames: int, height: int, width: int, name: str = "",
                        dtype_bytes: int = 2) -> AttentionFootprint:
    """Token grid, sequence length and attention memory figures of `backbone` at one video size."""
    grid = backbone.token_grid_for_video(num_frames, height, width)
    text = 0  # text in its own cross-attention (Wan)
    if backbone.text_layout == "joint_first":  # CogVideoX: the fixed text slots the joint sequence is built for
        text = int(getattr(backbone.config, "max_text_seq_length", 0))
    elif backbone.text_layout == "joint_last":  # HunyuanVideo: the prompt length its pipeline pads to
        text = int(backbone.sampling_defaults.max_sequence_length or 0)
    seq = grid.num_tokens + text
    heads, d = backbone.num_heads, backbone.head_dim
    p = grid.tokens_per_frame
    return AttentionFootprint(
        model=name or type(backbone.transformer).__name__,
        video=f"{num_frames}x{height}x{width}",
        token_grid=grid.as_tuple(),
        video_tokens=grid.num_tokens,
        text_tokens_in_sequence=text,
        sequence=seq,
        blocks=backbone.num_blocks,
        heads=heads,
        head_dim=d,
        full_map_bytes_per_layer=heads * seq * seq * dtype_bytes,
        frame_pair_cost_bytes=p * p * 4,
        lse_chunk_bytes=DEFAULT_CHUNK_ELEMENTS * 4,
        qk_capture_bytes_per_head=2 * grid.num_tokens * d * dtype_bytes,
    )


def footprint_table(rows: list[AttentionFootprint]) -> str:
    """Markdown table of footprints (GB = 1e9 bytes, MB = 1e6)."""
    lines = [
        "| model | video | token grid | sequence | blocks x heads x d | full map / layer (bf16) | "
        "frame-pair cost / head (fp32) | LSE chunk bound | q+k / head (bf16) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f, h, w = r.token_grid
        lines.append(
            f"| {r.model} | {r.video} | {f}x{h}x{w} | {r.sequence:,} | {r.blocks} x {r.heads} x {r.head_dim} | "
            f"{r.full_map_bytes_per_layer / 1e9:.1f} GB | {r.frame_pair_cost_bytes / 1e6:.1f} MB | "
            f"{r.lse_chunk_bytes / 1e6:.0f} MB | {r.qk_capture_bytes_per_head / 1e6:.1f} MB |"
        )
    return "\n".join(lines)


REAL_SIZE_CASES = [
    ("wan2.1-t2v-1.3b", 81, 480, 832),
    ("wan2.1-t2v-14b", 81, 480, 832),
    ("wan2.2-ti2v-5b", 81, 480, 832),  # Motive's fine-tuning setting (latent 21x30x52)
    ("wan2.2-ti2v-5b", 121, 704, 1280),  # the model card's 720p, 24 fps
    ("wan2.2-t2v-a14b", 81, 480, 832),  # per expert: both have this shape
    ("wan2.1-i2v-14b", 81, 480, 832),  # the 480P release (self-attention as 14B; CLIP tokens only in attn2)
    ("wan2.2-i2v-a14b", 81, 480, 832),  # per expert
    ("cogvideox-2b", 49, 480, 720),
    ("cogvideox-5b", 49, 480, 720),
    ("cogvideox-5b-i2v", 49, 480, 720),  # its stored position table fixes this size
    ("hunyuanvideo", 49, 480, 720),
]


def real_size_footprints() -> list[AttentionFootprint]:
    """Footprints of the real target models, built on the meta device (no weights, no download)."""
    from .reference_configs import build_on_meta
    from .registry import backbone_for

    rows = []
    for name, frames, height, width in REAL_SIZE_CASES:
        backbone = backbone_for(build_on_meta(name))
        rows.append(attention_footprint(backbone, frames, height, width, name=name))
    return rows
