"""Real-size configs on the meta device: token grids, heads, blocks and attention footprints."""

from motionguide.backbones import backbone_for
from motionguide.backbones.reference_configs import build_on_meta
from motionguide.backbones.shapes import real_size_footprints


def test_real_size_token_grids_and_footprints():
    rows = {r.model: r for r in real_size_footprints()}
    wan = rows["wan2.1-t2v-1.3b"]
    assert wan.token_grid == (21, 30, 52) and wan.video_tokens == 32_760 and wan.sequence == 32_760
    assert (wan.blocks, wan.heads, wan.head_dim) == (30, 12, 128)
    assert wan.full_map_bytes_per_layer == 12 * 32_760**2 * 2  # ~25.8 GB per layer in bf16
    assert wan.frame_pair_cost_bytes == 1560**2 * 4
    cog = rows["cogvideox-2b"]
    assert cog.token_grid == (13, 30, 45) and cog.video_tokens == 17_550 and cog.sequence == 17_776
    assert (cog.blocks, cog.heads, cog.head_dim) == (30, 30, 64)
    assert round(cog.full_map_bytes_per_layer / 1e9) == 19
    assert rows["cogvideox-5b"].heads == 48 and rows["wan2.1-t2v-14b"].heads == 40


def test_meta_models_report_shipped_default_profiles():
    for name in ("wan2.1-t2v-1.3b", "cogvideox-2b", "cogvideox-5b", "wan2.1-t2v-14b"):
        assert backbone_for(build_on_meta(name)).default_profile().name == name


def test_image_to_video_models_list_their_real_token_grids_and_footprints():
    """The conditioning image rides on the channel axis (or, for Wan2.1-I2V's CLIP tokens, in the cross-attention),
    so each image-to-video model's self-attention has its text-to-video sibling's token grid and footprint."""
    rows = {r.model: r for r in real_size_footprints()}
    for name in ("wan2.1-i2v-14b", "wan2.2-i2v-a14b"):
        row = rows[name]
        assert row.token_grid == (21, 30, 52) and row.sequence == 21 * 30 * 52 == 32_760  # 81x480x832: 4x, 8x, 2x2
        assert (row.blocks, row.heads, row.head_dim) == (40, 40, 128)
        assert row.full_map_bytes_per_layer == 40 * 32_760**2 * 2
    cog = rows["cogvideox-5b-i2v"]
    assert cog.token_grid == (13, 30, 45) and cog.sequence == 13 * 30 * 45 + 226 == 17_776  # 49x480x720 + its text
    assert (cog.blocks, cog.heads, cog.head_dim) == (42, 48, 64)
    assert cog.full_map_bytes_per_layer == rows["cogvideox-5b"].full_map_bytes_per_layer == 48 * 17_776**2 * 2


def test_the_released_image_to_video_layouts_read_the_image_on_the_channel_axis():
    """CogVideoX-5B-I2V: 32 = 16 noise + 16 image channels; Wan2.1-I2V-14B and each Wan2.2-I2V-A14B expert: 36 =
    16 + 4 mask + 16, Wan2.1's with CLIP image key / value projections, Wan2.2's without (it has no image encoder)."""
    expected = {"cogvideox-5b-i2v": (32, 16), "wan2.1-i2v-14b": (36, 16), "wan2.2-i2v-a14b": (36, 16)}
    for name, (inputs, outputs) in expected.items():
        transformer = build_on_meta(name)
        backbone = backbone_for(transformer)
        assert (transformer.config.in_channels, transformer.config.out_channels) == (inputs, outputs)
        assert backbone.conditions_on_image, name
    wan21, wan22 = build_on_meta("wan2.1-i2v-14b"), build_on_meta("wan2.2-i2v-a14b")
    assert wan21.config.image_dim == 1280 and wan21.blocks[0].attn2.add_k_proj is not None
    assert wan22.config.image_dim is None and wan22.blocks[0].attn2.add_k_proj is None
    assert backbone_for(wan22).default_profile().name == "wan2.1-t2v-14b"  # one expert alone: the 14B's shape
