"""Motion masks against toy-world ground truth: where, when, and degenerate cases."""

import numpy as np
import pytest
import torch

from motionguide.backbones import WanBackbone
from motionguide.errors import ConfigError
from motionguide.metrics import mask_iou, pointing_game
from motionguide.motive import (FrameDifference, RAFTFlow, camera_motion_cov, get_flow_estimator, motion_mask,
                                normalize_magnitude, to_latent_grid)
from motionguide.testing import tiny_wan_transformer
from motionguide.toy import ClipSpec, ObjectSpec, render_clip


@pytest.fixture(scope="module")
def backbone():
    return WanBackbone(tiny_wan_transformer())  # default factors: 8x space, 4x causal time


def clip(motion="right", defect=None, background="plain", pan=None, speed="quickly"):
    spec = ClipSpec(objects=[ObjectSpec("square", "red", motion, speed, radius=8.0, start_xy=(20, 32))],
                    background=background, camera_pan=pan, defect=defect)
    return render_clip(spec)


def test_consecutive_mask_marks_the_object_where_it_is(backbone):
    c = clip()
    mask = motion_mask(c.frames, backbone, "dis")
    assert mask.pixel.shape == (17, 64, 64) and mask.latent.shape == (5, 8, 8)
    # min-max normalised over the clip: (M - min) / (max - min + zeta), min and max as the mask reports them
    span = mask.stats["raw_max"] - mask.stats["raw_min"]
    assert span > 1.0 and mask.pixel.min() == 0.0 and mask.pixel.max() == pytest.approx(span / (span + 1e-6), rel=1e-6)
    literal = motion_mask(c.frames, backbone, "dis", gate="none")
    obj, bg = c.masks[1:, 0], ~c.masks[1:, 0]

    def mass_on_object(m):
        return float(m.pixel[1:][obj].sum() / m.pixel[1:].sum())

    # plain background: classical flow spreads into flat regions; the change gate pulls mass back onto the object
    assert mass_on_object(mask) > 0.35 and mass_on_object(mask) > 1.5 * mass_on_object(literal)
    assert mask.pixel[1:][obj].mean() > 10 * mask.pixel[1:][bg].mean()
    assert pointing_game(mask.pixel[1:], c.masks[1:, 0], tolerance_px=2) >= 0.8


def test_anchored_mask_marks_where_the_object_was(backbone):
    c = clip(speed="slowly")
    anchored = motion_mask(c.frames, backbone, "farneback", anchor="anchored")
    assert anchored.pixel[0].max() == 0.0  # frame 0 against itself
    late = anchored.pixel[6] > 0.3
    assert mask_iou(late, c.masks[0, 0]) > mask_iou(late, c.masks[16, 0])


def test_static_clip_is_degenerate_not_nan(backbone):
    mask = motion_mask(clip(defect="static").frames, backbone)
    assert mask.is_degenerate and mask.stats["degenerate"]
    assert torch.count_nonzero(mask.latent) == 0 and np.isfinite(mask.pixel).all()


def test_normalisation_and_temporal_mapping():
    w, degenerate = normalize_magnitude(np.array([[1.0, 3.0]]))
    assert not degenerate and w[0, 0] == 0.0 and abs(w[0, 1] - 2 / (2 + 1e-6)) < 1e-7
    ramp = np.repeat(np.arange(9, dtype=np.float32)[:, None, None] / 8, 8, 1).repeat(8, 2)  # frame f = f/8
    frames_of = WanBackbone.pixel_frames_of_latent.__get__(WanBackbone(tiny_wan_transformer()))
    mean = to_latent_grid(ramp, 3, 4, 4, frames_of, "mean")
    peak = to_latent_grid(ramp, 3, 4, 4, frames_of, "max")
    torch.testing.assert_close(mean[:, 0, 0], torch.tensor([0.0, 2.5 / 8, 6.5 / 8]))
    torch.testing.assert_close(peak[:, 0, 0], torch.tensor([0.0, 4 / 8, 8 / 8]))
    # the literal reading: 9 frames resampled to 3 at cell centres, latent k <- pixel position 3k + 1 (no causal
    # alignment), and on a linear ramp interpolation is exact
    trilinear = to_latent_grid(ramp, 3, 4, 4, frames_of, "trilinear")
    assert trilinear.shape == (3, 4, 4)
    torch.testing.assert_close(trilinear, torch.tensor([1 / 8, 4 / 8, 7 / 8])[:, None, None].expand(3, 4, 4))
    with pytest.raises(ConfigError, match="trilinear"):
        to_latent_grid(ramp, 3, 4, 4, frames_of, "nearest")


def test_camera_pan_spreads_motion_over_the_frame(backbone):
    pan = motion_mask(clip(motion="still", background="textured", pan=(1.5, 0.0)).frames, backbone)
    obj = motion_mask(clip(motion="right", background="textured").frames, backbone)
    assert pan.stats["camera_cov"] < obj.stats["camera_cov"]
    assert camera_motion_cov(np.zeros((3, 4, 4))) == 0.0


def test_frame_difference_and_names(backbone):
    c = clip()
    fd = FrameDifference()(c.frames)
    assert fd.shape == (17, 64, 64, 2) and fd[1, ..., 0][c.masks[1, 0]].mean() > 0
    with pytest.raises(ConfigError, match="dis, farneback"):
        get_flow_estimator("sea-raft")


def test_raft_needs_a_local_weights_file_and_runs_from_one(tmp_path):
    with pytest.raises(ConfigError, match="--flow_weights"):
        RAFTFlow(tmp_path / "missing.pth")
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    torch.save(raft_small(weights=None).state_dict(), tmp_path / "raft_small.pth")
    flow = RAFTFlow(tmp_path / "raft_small.pth", iterations=2)(clip().frames[:3])
    assert flow.shape == (3, 64, 64, 2) and np.isfinite(flow).all()
