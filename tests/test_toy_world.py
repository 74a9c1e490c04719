import csv
import json

import numpy as np
import pytest

from motionguide.toy.cli import add_toy_commands, main as toy_main
from motionguide.toy.dataset import (
    heldout_combinations, load_ground_truth, make_dataset, prompts_for_combinations,
)
from motionguide.toy.world import (
    COLORS, DEFECTS, DIRECTIONS, MOTIONS, SHAPES, SPEEDS, ClipSpec, ObjectSpec, all_combinations,
    caption_for, object_paths, parse_caption, render_clip, sample_clip_spec, shape_extent,
)
from motionguide.video import read_video


def _clip(motion="right", speed="normal", start=(20.0, 32.0), defect=None, pan=None, background="plain",
          shape="circle", color="red", motion_start=0, motion_stop=None, seed=7, radius=6.0):
    obj = ObjectSpec(shape, color, motion, speed, radius, start, motion_start, motion_stop)
    return ClipSpec((obj,), background=background, camera_pan=pan, defect=defect, seed=seed)


def _mask_centroids(masks):
    """[F, 2] (x, y) centroid of each frame's mask."""
    rows, cols = np.indices(masks.shape[1:])
    area = masks.sum(axis=(1, 2))
    return np.stack([(masks * cols).sum(axis=(1, 2)) / area, (masks * rows).sum(axis=(1, 2)) / area], axis=1)


# ---------- determinism ----------

def test_same_seed_same_clip_and_ground_truth():
    spec_a = sample_clip_spec(np.random.default_rng(11), 2, defect="jitter")
    spec_b = sample_clip_spec(np.random.default_rng(11), 2, defect="jitter")
    assert spec_a == spec_b
    a, b = render_clip(spec_a), render_clip(spec_b)
    for name in ("frames", "masks", "tracks", "visibility", "point_owner", "moving"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.caption == b.caption and a.labels == b.labels


def test_different_seed_different_clip():
    a = render_clip(sample_clip_spec(np.random.default_rng(1)))
    b = render_clip(sample_clip_spec(np.random.default_rng(2)))
    assert not np.array_equal(a.frames, b.frames)
    textured = [render_clip(_clip(background="textured", seed=s)).frames for s in (1, 2)]
    assert not np.array_equal(*textured)


# ---------- ground truth consistency ----------

@pytest.mark.parametrize("motion", [m for m in MOTIONS if m != "still"])
def test_mask_centroid_moves_by_speed_in_captioned_direction(motion):
    start = np.array([32.0, 32.0]) - np.asarray(DIRECTIONS[motion]) * SPEEDS["normal"] * 8  # centred path
    spec = _clip(motion=motion, speed="normal", start=tuple(start), radius=5.0)
    clip = render_clip(spec)
    centroids = _mask_centroids(clip.masks[:, 0])
    velocity = (centroids[-1] - centroids[0]) / (spec.num_frames - 1)
    np.testing.assert_allclose(velocity, np.asarray(DIRECTIONS[motion]) * SPEEDS["normal"], atol=0.08)
    steps = np.linalg.norm(np.diff(centroids, axis=0), axis=1)
    assert np.all(np.abs(steps - SPEEDS["normal"]) < 0.6)


@pytest.mark.parametrize("speed", list(SPEEDS))
def test_speed_names_set_pixels_per_frame(speed):
    clip = render_clip(_clip(motion="right", speed=speed, start=(10.0, 32.0), radius=5.0))
    centroids = _mask_centroids(clip.masks[:, 0])
    assert (centroids[-1, 0] - centroids[0, 0]) / 16 == pytest.approx(SPEEDS[speed], abs=0.08)
    assert clip.labels["speed_px"] == SPEEDS[speed] and clip.labels["speed"] == speed


def test_object_track_points_stay_inside_the_mask():
    clip = render_clip(_clip(motion="down-right", shape="triangle", start=(20.0, 20.0), background="textured"))
    on_object = clip.point_owner == 0
    assert on_object.sum() >= 8 and (clip.point_owner == -1).sum() >= 16
    assert clip.visibility[on_object].all()  # one object, no defect: never hidden
    for n in np.flatnonzero(on_object):
        for f in range(clip.tracks.shape[1]):
            x, y = clip.tracks[n, f]
            assert clip.masks[f, 0, int(np.floor(y + 0.5)), int(np.floor(x + 0.5))]
    # background points are visible exactly where no object covers them
    for n in np.flatnonzero(~on_object):
        for f in (0, 8, 16):
            x, y = np.floor(clip.tracks[n, f] + 0.5).astype(int)
            assert clip.visibility[n, f] == (not clip.masks[f, 0, y, x])


def test_moving_follows_motion_window_and_caption():
    spec = _clip(motion="left", start=(44.0, 32.0), motion_start=5, motion_stop=12)
    clip = render_clip(spec)
    expected = np.array([5 <= f < 12 for f in range(17)])
    np.testing.assert_array_equal(clip.moving[:, 0], expected)
    centers = clip.centers[:, 0]
    assert np.all(centers[:5] == centers[0]) and np.all(centers[11:] == centers[11])
    assert centers[11, 0] == pytest.approx(centers[0, 0] - 7 * SPEEDS["normal"], abs=1e-4)
    assert clip.caption == "a red circle starts moving left then stops"
    assert caption_for(_clip(motion="left", start=(44.0, 32.0), motion_start=5)) == "a red circle starts moving left"
    assert caption_for(_clip(motion="left", start=(44.0, 32.0), motion_stop=9)) == "a red circle moves left then stops"


def test_static_defect_keeps_caption_but_does_not_move():
    clip = render_clip(_clip(motion="right", defect="static"))
    assert clip.caption == "a red circle moves right"
    assert np.all(_mask_centroids(clip.masks[:, 0]) == _mask_centroids(clip.masks[:1, 0]))
    assert not clip.moving.any() and clip.labels["defect"] == "static"


def test_reversed_defect_moves_opposite():
    clip = render_clip(_clip(motion="up-right", defect="reversed", start=(40.0, 24.0), radius=5.0))
    assert clip.caption == "a red circle moves up-right"
    centroids = _mask_centroids(clip.masks[:, 0])
    direction = (centroids[-1] - centroids[0]) / np.linalg.norm(centroids[-1] - centroids[0])
    np.testing.assert_allclose(direction, -np.asarray(DIRECTIONS["up-right"]), atol=0.05)


def test_camera_pan_moves_background_by_the_pan():
    spec = _clip(motion="still", defect="camera_pan", pan=(2.0, -1.0), background="textured", start=(20.0, 44.0))
    clip = render_clip(spec)
    background = clip.point_owner == -1
    expected = clip.tracks[background, :1] + np.arange(17)[None, :, None] * np.array([2.0, -1.0])
    np.testing.assert_allclose(clip.tracks[background], expected, atol=1e-5)
    assert not clip.visibility[background][clip.tracks[background][..., 0] > 63.5].any()
    # the pixels really move: frame f at p + f·pan shows what frame 0 showed at p (away from the object)
    f = 6
    shifted = clip.frames[f, 10 + (-1) * f:40 + (-1) * f, 2 + 2 * f:30 + 2 * f]
    np.testing.assert_array_equal(shifted, clip.frames[0, 10:40, 2:30])
    # a "still" object under a panning camera moves with the scene but is not 'moving' in the world
    np.testing.assert_allclose(clip.centers[-1, 0] - clip.centers[0, 0], [32.0, -16.0], atol=1e-5)
    assert not clip.moving.any()


def test_jitter_defect_offsets_two_to_three_pixels():
    spec = _clip(motion="right", defect="jitter", start=(20.0, 32.0))
    clip = render_clip(spec)
    intended = np.array([20.0, 32.0]) + np.arange(17)[:, None] * np.array([SPEEDS["normal"], 0.0])
    offsets = np.abs(clip.centers[:, 0] - intended)
    assert np.all((offsets >= 2.0 - 1e-4) & (offsets <= 3.0 + 1e-4))
    assert clip.moving[1:, 0].all()


def test_teleport_defect_jumps_or_vanishes_and_gt_follows():
    found_jump = found_vanish = False
    for seed in range(12):
        clip = render_clip(_clip(motion="right", defect="teleport", seed=seed, start=(20.0, 32.0)))
        intended = np.array([20.0, 32.0]) + np.arange(17)[:, None] * np.array([SPEEDS["normal"], 0.0])
        away = np.linalg.norm(clip.centers[:, 0] - intended, axis=1) > 10
        empty = clip.masks[:, 0].sum(axis=(1, 2)) == 0
        assert 1 <= away.sum() + empty.sum() <= 2
        assert not away[:2].any() and not empty[:2].any()
        object_points = clip.point_owner == 0
        assert not clip.visibility[object_points][:, empty].any()
        found_jump |= away.any()
        found_vanish |= empty.any()
        assert clip.caption == "a red circle moves right"
    assert found_jump and found_vanish


def test_occluded_points_are_not_visible():
    back = ObjectSpec("square", "blue", "right", "normal", 7.0, (16.0, 32.0))
    front = ObjectSpec("circle", "yellow", "left", "normal", 7.0, (48.0, 32.0))
    clip = render_clip(ClipSpec((back, front), seed=3))
    assert not (clip.masks[:, 0] & clip.masks[:, 1]).any()
    assert clip.masks[:, 0].sum() < render_clip(ClipSpec((back,), seed=3)).masks.sum()
    back_points = clip.point_owner == 0
    assert not clip.visibility[back_points, 8].all() and clip.visibility[back_points, 0].all()
    assert clip.caption == "a blue square moves right and a yellow circle moves left"


def test_sampled_objects_stay_inside_the_frame():
    rng = np.random.default_rng(0)
    for i in range(150):
        defect = (None,) + DEFECTS
        spec = sample_clip_spec(rng, 1 + i % 2, defect=defect[i % len(defect)])
        for obj, path in zip(spec.objects, object_paths(spec)):
            extent = shape_extent(obj.shape, obj.radius)
            assert np.all(path.centers - extent >= 0) and np.all(path.centers[:, 0] + extent <= spec.width - 1)
            assert np.all(path.centers[:, 1] + extent <= spec.height - 1)
        if spec.defect in ("static", "reversed"):
            assert spec.objects[0].motion != "still"
        if len(spec.objects) == 2:
            assert spec.objects[0].color != spec.objects[1].color


# ---------- captions ----------

def test_caption_grammar():
    assert caption_for(_clip(motion="left")) == "a red circle moves left"
    assert caption_for(_clip(motion="still", shape="square", color="blue")) == "a blue square stays still"
    assert caption_for(_clip(motion="up", speed="quickly", shape="triangle", color="green",
                             start=(32.0, 56.0), radius=5.0)) == "a green triangle moves up quickly"
    slow = _clip(motion="down-left", speed="slowly", color="yellow")
    assert caption_for(slow) == "a yellow circle moves down-left slowly"
    two = ClipSpec((ObjectSpec("circle", "red", "left"), ObjectSpec("square", "blue", "still")))
    assert caption_for(two) == "a red circle moves left and a blue square stays still"


def test_parse_caption_inverts_caption_for():
    rng = np.random.default_rng(4)
    for i in range(60):
        spec = sample_clip_spec(rng, 1 + i % 2)
        parsed = parse_caption(caption_for(spec))
        assert [(p.color, p.shape, p.motion) for p in parsed] == [(o.color, o.shape, o.motion) for o in spec.objects]
        assert [p.speed for p in parsed] == [o.speed if o.motion != "still" else None for o in spec.objects]
    with pytest.raises(ValueError, match="cannot parse"):
        parse_caption("a purple circle moves left")


# ---------- validation ----------

@pytest.mark.parametrize("field, value, listed", [
    ("shape", "hexagon", "circle, square, triangle"),
    ("color", "purple", "red, green, blue, yellow"),
    ("motion", "sideways", "left, right, up"),
    ("speed", "fast", "slowly, normal, quickly"),
])
def test_bad_object_names_list_valid_ones(field, value, listed):
    kwargs = dict(shape="circle", color="red", motion="left")
    kwargs[field] = value
    with pytest.raises(ValueError, match=listed):
        ObjectSpec(**kwargs)


def test_bad_clip_names_list_valid_ones():
    obj = ObjectSpec("circle", "red", "left")
    with pytest.raises(ValueError, match="plain, textured"):
        ClipSpec((obj,), background="stripes")
    with pytest.raises(ValueError, match="static, jitter, teleport, reversed, camera_pan"):
        ClipSpec((obj,), defect="melting")
    with pytest.raises(ValueError, match="camera_pan"):
        ClipSpec((obj,), defect="camera_pan")
    with pytest.raises(ValueError, match="moving object"):
        ClipSpec((ObjectSpec("circle", "red", "still"),), defect="static")
    with pytest.raises(ValueError, match="static, jitter"):
        sample_clip_spec(np.random.default_rng(0), defect="melting")


def test_spec_round_trips_through_dict():
    spec = sample_clip_spec(np.random.default_rng(9), 2, defect="camera_pan")
    assert ClipSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


# ---------- holdout ----------

def test_heldout_combinations_are_seeded_and_keep_every_value():
    held = heldout_combinations(seed=3, fraction=0.2)
    assert held == heldout_combinations(seed=3, fraction=0.2) != heldout_combinations(seed=4, fraction=0.2)
    assert len(held) == round(0.2 * len(all_combinations()))
    train = set(all_combinations()) - set(held)
    for axis, values in enumerate((COLORS, SHAPES, MOTIONS)):
        assert {combo[axis] for combo in train} == set(values)
    rng = np.random.default_rng(0)
    for _ in range(100):
        for obj in sample_clip_spec(rng, 2, holdout=held).objects:
            assert (obj.color, obj.shape, obj.motion) not in held
    assert prompts_for_combinations([("red", "circle", "left"), ("blue", "square", "still")]) == [
        "a red circle moves left", "a blue square stays still"]


# ---------- dataset on disk ----------

def test_make_dataset_writes_videos_metadata_and_ground_truth(tmp_path):
    out = make_dataset(tmp_path / "toy", num_clips=4, seed=5, defect_rate=0.5, num_objects=(1, 2), progress=False)
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    with open(out / "metadata.csv", newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert len(rows) == len(csv_rows) == 4
    assert [r["file_name"] for r in rows] == [f"videos/clip_{i:05d}.mp4" for i in range(4)]
    assert [r["text"] for r in rows] == [r["text"] for r in csv_rows]
    assert {"file_name", "text", "id", "defect", "shape", "color", "motion", "speed"} <= set(csv_rows[0])
    assert sum(r["defect"] != "none" for r in rows) == 2
    for row in rows:
        frames = read_video(out / row["file_name"])
        assert frames.shape == (17, 64, 64, 3)
        gt = load_ground_truth(out / row["gt_file"])
        assert gt["caption"] == row["text"] and gt["labels"]["defect"] == row["defect"]
        assert gt["masks"].dtype == bool and gt["masks"].shape[:1] + gt["masks"].shape[2:] == (17, 64, 64)
        clip = render_clip(ClipSpec.from_dict(gt["spec"]))
        np.testing.assert_array_equal(gt["masks"], clip.masks)
        np.testing.assert_array_equal(gt["tracks"], clip.tracks)
        assert np.abs(frames.astype(int) - clip.frames.astype(int)).mean() < 2.0
    info = json.loads((out / "dataset.json").read_text())
    assert info["num_clips"] == 4 and info["seed"] == 5 and info["defect_rate"] == 0.5


def test_existing_dataset_needs_overwrite(tmp_path):
    out = make_dataset(tmp_path / "toy", num_clips=1, seed=0, progress=False, fmt=("csv",))
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_dataset(out, num_clips=1, seed=1, progress=False)
    (out / "notes.txt").write_text("keep me")
    make_dataset(out, num_clips=2, seed=1, progress=False, fmt=("jsonl",), overwrite=True)
    assert not (out / "metadata.csv").exists() and (out / "notes.txt").exists()
    assert len((out / "metadata.jsonl").read_text().splitlines()) == 2


def test_same_arguments_same_dataset(tmp_path):
    a = make_dataset(tmp_path / "a", num_clips=2, seed=8, defect_rate=0.5, progress=False)
    b = make_dataset(tmp_path / "b", num_clips=2, seed=8, defect_rate=0.5, progress=False)
    assert (a / "metadata.jsonl").read_text() == (b / "metadata.jsonl").read_text()
    np.testing.assert_array_equal(load_ground_truth(a / "gt/clip_00001.npz")["tracks"],
                                  load_ground_truth(b / "gt/clip_00001.npz")["tracks"])


def test_cli_make_dataset(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["make-dataset", "--out", str(out), "--num-clips", "2", "--seed", "3", "--defect-rate", "0.5",
            "--defects", "static,jitter", "--objects", "1,2", "--no-progress"]
    assert toy_main(argv) == 0
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and {r["defect"] for r in rows} <= {"none", "static", "jitter"}
    assert toy_main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        toy_main(argv + ["--defects", "melting"])

    import argparse
    parser = argparse.ArgumentParser(prog="motionguide")
    add_toy_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["toy", "make-dataset", "--out", str(out), "--num-clips", "1", "--overwrite",
                              "--no-progress"])
    assert args.func(args) == 0


def test_query_sets_draw_only_the_named_motions_over_the_whole_clip(tmp_path):
    from motionguide.toy.dataset import make_dataset as make

    out = make(tmp_path / "q", num_clips=4, seed=3, motions=["right"], partial_motion_rate=0.0, id_prefix="query",
               fmt=("jsonl",), progress=False)
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"query_{i:05d}" for i in range(4)]
    assert {r["motion"] for r in rows} == {"right"} and all("then stops" not in r["text"] for r in rows)
    with pytest.raises(ValueError, match="unknown motion"):
        make(tmp_path / "bad", num_clips=1, seed=0, motions=["sideways"], progress=False)


def test_object_weight_maps_cover_the_swept_object_in_latent_space():
    import torch

    from motionguide.toy.model_recipe import object_weight_maps
    from motionguide.toy.world import render_clip, sample_clip_spec

    clip = render_clip(sample_clip_spec(np.random.default_rng(5), partial_motion_rate=0.0))
    groups = [range(0, 1)] + [range(4 * k - 3, 4 * k + 1) for k in range(1, 5)]  # the causal VAE's map, by hand
    weights = object_weight_maps([clip.masks], (1, 8, 5, 16, 16), 5.0, groups)
    assert weights.shape == (1, 1, 5, 16, 16) and set(torch.unique(weights).tolist()) == {1.0, 5.0}
    # independent check: every pixel of the object on the first frame lies in a weighted latent pixel (4x4 px each)
    ys, xs = np.nonzero(clip.masks[0, 0])
    assert bool((weights[0, 0, 0, ys // 4, xs // 4] == 5.0).all())
    # and the last latent frame (pixel frames 13-16) is weighted where the object ends, not where it started
    end_y, end_x = np.argwhere(clip.masks[16, 0]).mean(axis=0) // 4
    assert weights[0, 0, 4, int(end_y), int(end_x)] == 5.0
