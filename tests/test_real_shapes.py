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
