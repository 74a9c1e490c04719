"""Layer profiles: shipped values, round trip, and errors that name the file, the key and the valid range."""

import pytest
import yaml

from motionguide.backbones import LayerProfile, load_profile, shipped_profiles
from motionguide.errors import ConfigError


def test_shipped_profiles_hold_the_papers_values():
    assert set(shipped_profiles()) >= {"cogvideox-2b", "cogvideox-5b", "wan2.1-t2v-1.3b", "wan2.1-t2v-14b"}
    cog2 = load_profile("cogvideox-2b")
    assert cog2.tracking.block == 17 and cog2.tracking.step == -1
    assert cog2.guidance.blocks == [13, 17, 21] and cog2.guidance.renormalize is False
    assert cog2.imap.top_k == 5 and cog2.imap.blocks == [4, 6, 7, *range(10, 24)]
    cog5 = load_profile("cogvideox-5b")
    assert cog5.tracking.block == 17 and cog5.guidance.blocks == [15, 17, 18]
    wan = load_profile("wan2.1-t2v-1.3b")
    assert wan.imap.blocks == list(range(5, 20)) and wan.imap.top_k == 3
    assert wan.tracking.provisional and wan.guidance.provisional and not wan.imap.provisional
    wan14 = load_profile("wan2.1-t2v-14b")
    assert wan14.imap.blocks == list(range(5, 26)) and wan14.imap.top_k == 5


def test_round_trip(tmp_path):
    profile = load_profile("cogvideox-2b")
    path = profile.save(tmp_path / "p.yaml")
    assert LayerProfile.load(path) == profile


def _write(tmp_path, **changes):
    data = load_profile("wan2.1-t2v-1.3b").to_dict()
    for dotted, value in changes.items():
        section, _, key = dotted.partition(".")
        if key:
            data[section][key] = value
        else:
            data[section] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_out_of_range_block_names_file_key_and_range(tmp_path):
    path = _write(tmp_path, **{"guidance.blocks": [13, 30]})
    with pytest.raises(ConfigError) as err:
        LayerProfile.load(path)
    msg = str(err.value)
    assert str(path) in msg and "guidance.blocks" in msg and "0..29" in msg


def test_unknown_key_suggests_the_closest(tmp_path):
    path = tmp_path / "bad.yaml"
    data = load_profile("wan2.1-t2v-1.3b").to_dict()
    data["imap"]["topk"] = 3
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        LayerProfile.load(path)
    msg = str(err.value)
    assert str(path) in msg and "'topk'" in msg and "'top_k'" in msg


def test_bad_timestep_window(tmp_path):
    path = _write(tmp_path, **{"guidance.window": [0.8, 0.2]})
    with pytest.raises(ConfigError, match=r"guidance.window.*0 <= start < stop <= 1"):
        LayerProfile.load(path)


def test_unknown_tracking_descriptor_lists_the_valid_ones(tmp_path):
    path = _write(tmp_path, **{"tracking.descriptor": "qk_pre"})
    with pytest.raises(ConfigError, match=r"tracking.descriptor: 'qk_pre'.*qk, qk_no_rope"):
        LayerProfile.load(path)


def test_top_k_beyond_heads_and_unknown_top_level_key(tmp_path):
    with pytest.raises(ConfigError, match=r"imap.top_k.*1..12"):
        LayerProfile.load(_write(tmp_path, **{"imap.top_k": 13}))
    with pytest.raises(ConfigError, match="'tracker'"):
        LayerProfile.load(_write(tmp_path, tracker={"block": 1}))


def test_profile_for_another_architecture_is_refused():
    from motionguide.backbones import backbone_for
    from motionguide.testing import tiny_wan_transformer

    with pytest.raises(ConfigError, match="analyze-layers"):
        load_profile("wan2.1-t2v-1.3b").check_compatible(backbone_for(tiny_wan_transformer()))


def test_unknown_profile_name_lists_shipped():
    with pytest.raises(ConfigError, match="cogvideox-2b"):
        load_profile("no-such-profile")
