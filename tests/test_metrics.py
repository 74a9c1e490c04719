import cv2
import numpy as np
import pytest

from motionguide.metrics.adherence import (
    detect_object, parse_toy_caption, summarize_adherence, toy_prompt_adherence,
)
from motionguide.metrics.flow import FLOW_METHODS, optical_flow
from motionguide.metrics.masks import binarize_saliency, mask_iou, pointing_game
from motionguide.metrics.tracking import delta_avg, pck, pck_tokens
from motionguide.metrics.video_quality import (
    dynamic_degree_proxy, dynamic_degree_rule, flow_warp_smoothness, mean_flow_magnitude, temporal_flicker,
)
from motionguide.toy.world import ClipSpec, ObjectSpec, render_clip
from motionguide.video import read_video, write_video


def _texture(size, seed=0):
    noise = np.random.default_rng(seed).uniform(0, 255, (size, size, 3)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), 2.0)
    return np.clip((blurred - blurred.mean()) / blurred.std() * 40 + 128, 0, 255).astype(np.uint8)


def _shifting_clip(step=2, num_frames=6, size=96, seed=0):
    """A textured image sliding right by `step` px per frame (content shifts by +step in x)."""
    margin = step * num_frames + 4
    big = _texture(size + 2 * margin, seed)
    return np.stack([big[margin:margin + size, margin - step * f:margin - step * f + size]
                     for f in range(num_frames)])


# ---------- flow ----------

@pytest.mark.parametrize("method", FLOW_METHODS)
def test_flow_of_a_two_pixel_shift(method):
    flow = optical_flow(_shifting_clip(step=2), method=method)
    assert flow.shape == (5, 96, 96, 2) and flow.dtype == np.float32
    inner = flow[:, 10:-10, 10:-10]
    assert np.median(inner[..., 0]) == pytest.approx(2.0, abs=0.05)
    assert np.median(inner[..., 1]) == pytest.approx(0.0, abs=0.05)
    anchored = optical_flow(_shifting_clip(step=2, num_frames=5), method=method, anchor="first")
    np.testing.assert_allclose(np.median(anchored[:, 10:-10, 10:-10, 0], axis=(1, 2)), [2, 4, 6, 8], atol=0.1)


def test_flow_rejects_bad_arguments():
    clip = _shifting_clip(num_frames=2, size=32)
    with pytest.raises(ValueError, match="dis, farneback"):
        optical_flow(clip, method="raft")
    with pytest.raises(ValueError, match="consecutive, first"):
        optical_flow(clip, anchor="last")
    with pytest.raises(ValueError, match="uint8"):
        optical_flow(clip.astype(np.float32))


# ---------- video quality proxies ----------

def test_static_video_is_not_dynamic_and_does_not_flicker():
    static = np.repeat(_texture(64)[None], 9, axis=0)
    result = dynamic_degree_proxy(static)
    assert not result.is_dynamic and result.pair_scores.shape == (8,) and result.pair_scores.max() < 0.1
    assert temporal_flicker(static) == pytest.approx(1.0)
    assert flow_warp_smoothness(static) == pytest.approx(1.0, abs=1e-3)
    assert mean_flow_magnitude(static) < 0.05


def test_moving_video_is_dynamic():
    moving = _shifting_clip(step=3, num_frames=9, size=64)
    is_dynamic, pair_scores = dynamic_degree_proxy(moving, method="farneback")
    assert is_dynamic and pair_scores.shape == (8,) and np.all(pair_scores > 2.5)
    assert dynamic_degree_rule(64, 80, 8) == (1.5, 2) and dynamic_degree_rule(256, 256, 16) == (6.0, 4)
    assert dynamic_degree_rule(64, 64, 1)[1] == 1
    assert mean_flow_magnitude(moving) == pytest.approx(3.0, abs=0.3)
    assert temporal_flicker(moving) < 0.97


def test_smooth_motion_scores_higher_than_noise():
    smooth = flow_warp_smoothness(_shifting_clip(step=2, num_frames=5, size=64))
    noise = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    assert smooth > 0.97 and flow_warp_smoothness(noise) < smooth - 0.1
    with pytest.raises(ValueError, match="at least 3 frames"):
        flow_warp_smoothness(noise[:2])


# ---------- tracking ----------

def _random_tracks(num_points=40, num_frames=8, seed=0):
    rng = np.random.default_rng(seed)
    start = rng.uniform(0, 64, (num_points, 1, 2))
    tracks = start + np.cumsum(rng.normal(0, 1, (num_points, num_frames, 2)), axis=1)
    visible = rng.random((num_points, num_frames)) > 0.2
    return tracks.astype(np.float32), visible


def test_perfect_tracker_scores_100():
    gt, visible = _random_tracks()
    assert pck(gt, gt, visible, threshold_px=1.0) == 100.0
    assert delta_avg(gt, gt, visible) == 100.0
    assert pck_tokens(gt, gt, visible, token_px=8.0) == {"pck@0.5tok": 100.0, "pck@1tok": 100.0}


def test_shuffled_tracks_score_low_and_nan_misses():
    gt, visible = _random_tracks()
    shuffled = gt[np.random.default_rng(1).permutation(len(gt))]
    assert pck(shuffled, gt, visible, threshold_px=2.0) < 10.0
    assert delta_avg(shuffled, gt, visible) < 40.0
    off_by_three = gt + np.array([3.0, 0.0], np.float32)
    assert pck(off_by_three, gt, visible, 2.0) == 0.0 and pck(off_by_three, gt, visible, 4.0) == 100.0
    assert delta_avg(off_by_three, gt, visible) == pytest.approx(60.0)  # hits at 4, 8, 16 of 1..16
    with_nan = gt.copy()
    with_nan[:, :] = np.nan
    assert pck(with_nan, gt, visible, 100.0) == 0.0
    with pytest.raises(ValueError, match=r"\[N, F\]"):
        pck(gt, gt, visible[:, :3], 1.0)


def test_only_visible_pairs_count():
    gt, _ = _random_tracks()
    pred = gt.copy()
    pred[:, 4:] += 50.0
    visible = np.zeros(gt.shape[:2], bool)
    visible[:, :4] = True
    assert pck(pred, gt, visible, 1.0) == 100.0


# ---------- masks ----------

def test_mask_iou_known_answers():
    a = np.zeros((16, 16), bool)
    a[:8] = True
    b = np.zeros((16, 16), bool)
    b[8:] = True
    c = np.zeros((16, 16), bool)
    c[4:12] = True
    assert mask_iou(a, a) == 1.0 and mask_iou(a, b) == 0.0
    assert mask_iou(a, c) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="same shape"):
        mask_iou(a, a[:8])


def test_binarize_saliency():
    saliency = np.zeros((2, 8, 8), np.float32)
    saliency[:, 2:4, 2:4] = 1.0
    saliency += np.random.default_rng(0).uniform(0, 0.1, saliency.shape).astype(np.float32)
    for method in ("mean", "otsu", 0.9):
        binary = binarize_saliency(saliency, method)
        assert binary.shape == saliency.shape and binary[:, 2:4, 2:4].all()
    assert binarize_saliency(saliency, "otsu").sum() == 8
    with pytest.raises(ValueError, match="mean"):
        binarize_saliency(saliency, "magic")


def test_pointing_game_hits_when_peak_is_inside_the_mask():
    masks = np.zeros((3, 64, 64), bool)
    masks[:, 40:56, 40:56] = True
    inside = np.zeros((3, 8, 8), np.float32)
    inside[:, 6, 6] = 1.0  # an 8x8 map: cell (6, 6) covers pixels 48-55
    outside = np.zeros((8, 8), np.float32)
    outside[1, 1] = 1.0
    assert pointing_game(inside, masks) == 1.0
    assert pointing_game(outside, masks) == 0.0
    assert pointing_game(outside, masks, tolerance_px=45) == 1.0  # peak near (11, 11), mask corner (40, 40)
    mixed = inside.copy()
    mixed[0] = outside
    assert pointing_game(mixed, masks) == pytest.approx(2 / 3)


# ---------- toy prompt adherence ----------

def _toy(motion="right", defect=None, background="textured", start=(18.0, 30.0), shape="circle"):
    objects = (ObjectSpec(shape, "red", motion, "normal", 6.0, start),)
    return render_clip(ClipSpec(objects, background=background, defect=defect, seed=2))


def test_parse_toy_caption():
    parsed = parse_toy_caption("a yellow circle moves down-left slowly and a blue square stays still")
    assert parsed == [("yellow", "circle", "down-left", "slowly"), ("blue", "square", "still", None)]
    parsed = parse_toy_caption("A red triangle starts moving up quickly then stops.")
    assert parsed == [("red", "triangle", "up", "quickly")]
    with pytest.raises(ValueError, match="toy caption"):
        parse_toy_caption("a cat jumps")


def test_detect_object_on_textured_background():
    clip = _toy()
    detection = detect_object(clip.frames[0], "red")
    assert detection is not None and detection.area == clip.masks[0, 0].sum()
    np.testing.assert_allclose(detection.centroid, clip.centers[0, 0], atol=0.5)
    assert detect_object(clip.frames[0], "blue") is None


@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
def test_adherence_on_a_rendered_clip(shape):
    clip = _toy(shape=shape)
    assert clip.caption == f"a red {shape} moves right"
    (result,) = toy_prompt_adherence(clip.frames, clip.caption)
    assert result.presence == 1.0
    assert result.measured_direction == "right" and result.direction_correct
    assert result.measured_speed_px == pytest.approx(1.8, abs=0.15)
    assert result.shape_guess == shape and result.shape_correct
    assert np.isfinite(result.trajectory).all()


def test_adherence_flags_reversed_and_static_defects():
    (reversed_result,) = toy_prompt_adherence(_toy(defect="reversed", start=(46.0, 30.0)).frames,
                                              "a red circle moves right")
    assert reversed_result.measured_direction == "left" and not reversed_result.direction_correct
    (static_result,) = toy_prompt_adherence(_toy(defect="static").frames, "a red circle moves right")
    assert static_result.measured_direction == "still" and not static_result.direction_correct
    (missing,) = toy_prompt_adherence(_toy().frames, "a blue circle moves right")
    assert missing.presence == 0.0 and missing.measured_direction is None and not missing.direction_correct
    summary = summarize_adherence([reversed_result, static_result])
    assert summary["presence"] == 1.0 and summary["direction_accuracy"] == 0.0


def test_adherence_survives_mp4_and_blur(tmp_path):
    clip = _toy(motion="up-left", start=(44.0, 46.0))
    frames = read_video(write_video(tmp_path / "clip.mp4", clip.frames, crf=18))
    blurred = np.stack([cv2.GaussianBlur(frame, (0, 0), 1.0) for frame in frames])
    (result,) = toy_prompt_adherence(blurred, clip.caption, token_px=8)
    assert result.presence == 1.0 and result.direction_correct and result.still_threshold_px == 8


def test_object_consistency_of_a_clean_clip_and_of_planted_inconsistencies():
    from motionguide.metrics import object_consistency

    clean = _toy()
    scores = object_consistency(clean.frames, clean.caption)
    assert scores["colour_drift"] < 2.0 and scores["shape_consistency"] > 0.9 and scores["trajectory_jerk"] < 0.6
    jittered = object_consistency(_toy(defect="jitter").frames, clean.caption)
    assert jittered["trajectory_jerk"] > 3 * scores["trajectory_jerk"] + 1.0
    recoloured = clean.frames.copy()
    for f in range(0, len(recoloured), 2):  # every other frame: the object darker (still nearest to red)
        recoloured[f][clean.masks[f, 0]] = (recoloured[f][clean.masks[f, 0]] * 0.75).astype(np.uint8)
    assert object_consistency(recoloured, clean.caption)["colour_drift"] > scores["colour_drift"] + 10
    square = _toy(shape="square")
    spliced = np.stack([square.frames[f] if f % 2 else clean.frames[f] for f in range(len(clean.frames))])
    assert object_consistency(spliced, clean.caption)["shape_consistency"] < scores["shape_consistency"] - 0.05
    missing = object_consistency(clean.frames, "a blue circle moves right")
    assert all(np.isnan(v) for v in missing.values())
