"""Turns in the toy world ("a red circle moves right then left"), the turn-success metric, turn pools and query sets."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from motionguide.metrics.turns import read_turn, toy_turn_adherence, turn_success_rate
from motionguide.toy import load_ground_truth, make_dataset
from motionguide.toy.captions import caption_for, object_clause, parse_caption
from motionguide.toy.render import render_clip
from motionguide.toy.sampling import TURN_SPEEDS, all_turn_combinations, sample_clip_spec, turn_pairs
from motionguide.toy.spec import ClipSpec, ObjectSpec
from motionguide.toy.turn_pool import (
    CAPTION_KINDS, load_truth, make_turn_pool, make_turn_queries, pool_summary, turn_pool_plan,
)
from motionguide.toy.turns import heldout_turn_combinations, mentions_turn, pair_set, turn_prompts
from motionguide.toy.vocab import COLORS, DIRECTIONS, SHAPES, SPEEDS, TURN_MOTIONS, split_turn
from motionguide.video import read_video


def _turn(first="right", second="left", turn_frame=9, start=(20.0, 32.0), speed="normal", defect=None, seed=3,
          background="plain", color="red", shape="circle"):
    obj = ObjectSpec(shape, color, first, speed, 6.0, start, turn_motion=second, turn_frame=turn_frame)
    return ClipSpec((obj,), background=background, defect=defect, seed=seed)


def _mask_centroids(masks):
    rows, cols = np.indices(masks.shape[1:])
    area = masks.sum(axis=(1, 2))
    return np.stack([(masks * cols).sum(axis=(1, 2)) / area, (masks * rows).sum(axis=(1, 2)) / area], axis=1)


# ---------- the motion ----------

@pytest.mark.parametrize("first, second", [("right", "left"), ("up", "right"), ("down", "left")])
def test_a_turn_moves_the_first_way_until_its_turn_frame_then_the_second_way(first, second):
    spec = _turn(first, second, turn_frame=7, start=(32.0, 32.0))
    clip = render_clip(spec)
    steps = np.diff(_mask_centroids(clip.masks[:, 0]), axis=0)  # step f-1 -> f is row f-1
    speed = SPEEDS["normal"]
    np.testing.assert_allclose(steps[:6], np.tile(np.asarray(DIRECTIONS[first]) * speed, (6, 1)), atol=0.15)
    np.testing.assert_allclose(steps[6:], np.tile(np.asarray(DIRECTIONS[second]) * speed, (10, 1)), atol=0.15)
    assert clip.moving[1:, 0].all()


def test_turn_captions_follow_the_grammar_and_parse_to_the_turn_phrase():
    assert caption_for(_turn()) == "a red circle moves right then left"
    assert caption_for(_turn("up", "right", speed="quickly", start=(20.0, 50.0))) == "a red circle moves up quickly then right"
    late = ObjectSpec("square", "blue", "down", "normal", 5.0, (32.0, 10.0), motion_start=3, motion_stop=14,
                      turn_motion="left", turn_frame=8)
    assert object_clause(late, 17) == "a blue square starts moving down then left then stops"
    assert parse_caption("a blue square starts moving down then left then stops") == [
        ("blue", "square", "down then left", "normal")]
    assert parse_caption("a red circle moves right quickly then up and a green square stays still") == [
        ("red", "circle", "right then up", "quickly"), ("green", "square", "still", None)]
    assert split_turn("right then up") == ("right", "up") and split_turn("up-right") is None
    with pytest.raises(ValueError, match="already moves"):
        parse_caption("a red circle moves right then right")


def test_turn_words_are_words_the_shipped_toy_tokenizer_knows():
    from motionguide.toy.model_recipe import toy_vocabulary

    vocabulary = set(toy_vocabulary())
    words = {word for prompt in turn_prompts(all_turn_combinations(), speed="quickly") for word in prompt.split()}
    assert words <= vocabulary


@pytest.mark.parametrize("kwargs, message", [
    (dict(turn_motion="left"), "both turn_motion and turn_frame"),
    (dict(turn_frame=5), "both turn_motion and turn_frame"),
    (dict(turn_motion="right", turn_frame=5), "unknown turn_motion 'right'"),
    (dict(turn_motion="sideways", turn_frame=5), "unknown turn_motion"),
    (dict(turn_motion="left", turn_frame=1), "both sides"),
    (dict(turn_motion="left", turn_frame=12, motion_stop=12), "both sides"),
    (dict(motion="still", turn_motion="left", turn_frame=5), "cannot turn"),
])
def test_bad_turns_are_refused_with_the_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ObjectSpec(**{"shape": "circle", "color": "red", "motion": "right", **kwargs})


def test_a_turn_after_the_last_frame_is_refused():
    with pytest.raises(ValueError, match="clip ends"):
        ClipSpec((ObjectSpec("circle", "red", "right", turn_motion="up", turn_frame=20),))


def test_turn_specs_round_trip_and_straight_specs_carry_no_turn_keys():
    spec = sample_clip_spec(np.random.default_rng(3), 2, turns=all_turn_combinations(), defect="jitter")
    data = json.loads(json.dumps(spec.to_dict()))
    assert ClipSpec.from_dict(data) == spec
    assert "turn_frame" in data["objects"][0] and "turn_frame" not in data["objects"][1]
    straight = sample_clip_spec(np.random.default_rng(3), 2)
    assert all("turn_motion" not in o for o in straight.to_dict()["objects"])
    labels = render_clip(straight).labels
    assert "turn_frame" not in labels and all("turn_frame" not in o for o in labels["objects"])


def test_sampled_turns_stay_in_frame_and_turn_between_frames_6_and_12():
    rng = np.random.default_rng(8)
    turn_frames, pairs, speeds = set(), set(), set()
    for _ in range(80):
        spec = sample_clip_spec(rng, 1, turns=all_turn_combinations())
        obj = spec.objects[0]
        clip = render_clip(spec)
        assert clip.masks[:, 0].any(axis=(1, 2)).all()  # on screen on every frame
        assert (obj.motion_start, obj.motion_stop) == (0, None)
        assert clip.labels["motion"] == f"{obj.motion} then {obj.turn_motion}" and clip.labels["turn_frame"] == obj.turn_frame
        turn_frames.add(obj.turn_frame)
        pairs.add((obj.motion, obj.turn_motion))
        speeds.add(obj.speed)
    assert turn_frames == set(range(6, 13)) and pairs == set(turn_pairs()) and speeds == set(TURN_SPEEDS)


def test_straight_clips_draw_as_before_turns_existed():
    """Hashes of sampled specs, captions, labels and a written dataset's metadata, taken with the code before turns
    (commit 36b0296): turns are opt-in and shift no existing random stream."""
    rng = np.random.default_rng(2024)
    specs = [sample_clip_spec(rng, 1 + i % 3, defect=[None, "jitter", "teleport", "camera_pan", "static",
                                                       "reversed"][i % 6]) for i in range(30)]
    text = json.dumps([[s.to_dict(), caption_for(s), render_clip(s).labels] for s in specs])
    assert hashlib.sha256(text.encode()).hexdigest() == "1ff44d1c27c1ac183e32fa3818737560900e630821e9800449cc3ca71758c161"


def test_a_written_straight_dataset_is_unchanged_by_turns(tmp_path):
    out = make_dataset(tmp_path / "d", 8, 3, defect_rate=0.5, num_objects=(1, 2), fmt=("jsonl",), progress=False)
    digest = hashlib.sha256((out / "metadata.jsonl").read_bytes()).hexdigest()
    assert digest == "75774c4c009725f1b48ffef9ef16994202a29ee47ff3a07516e692df0dcffd21"  # taken before turns


# ---------- held-out turns and the keyword filter ----------

def test_heldout_turns_are_seeded_and_keep_every_colour_shape_and_pair_in_training():
    held = heldout_turn_combinations()
    assert held == heldout_turn_combinations(0, 0.25) and len(held) == 36 and held != heldout_turn_combinations(1)
    training = set(all_turn_combinations()) - set(held)
    assert {t[0] for t in training} == set(COLORS) and {t[1] for t in training} == set(SHAPES)
    assert {(t[2], t[3]) for t in training} == set(turn_pairs())
    assert turn_prompts([("red", "circle", "right", "left")]) == ["a red circle moves right then left"]


def test_the_one_order_pair_set_names_each_unordered_direction_pair_once():
    assert pair_set("all") is None
    pairs = pair_set("one_order")
    assert len(pairs) == 6 and {frozenset(p) for p in pairs} == {frozenset(p) for p in turn_pairs()}
    held = heldout_turn_combinations(pairs=pairs)
    assert len(held) == 18 and {(t[2], t[3]) for t in held} <= set(pairs)
    assert {(t[2], t[3]) for t in set(all_turn_combinations(pairs)) - set(held)} == set(pairs)
    with pytest.raises(ValueError, match="unknown pair set 'both'; choose from all, one_order"):
        pair_set("both")


def test_the_shipped_toy_model_reads_the_two_orders_of_a_turn_as_nearly_one_input():
    """Why `one_order` exists: the frozen random text encoder gives a word nearly the same vector wherever it
    stands, and the transformer's cross-attention has no text positions, so swapping two word vectors changes
    nothing and the two orders of a caption differ far less than the turn and its diagonal."""
    import torch

    from motionguide.sampling import load_pipeline

    pipe = load_pipeline(str(Path(__file__).resolve().parent.parent / "assets" / "toy-model"))

    def embed(prompt):
        return pipe.encode_prompt([prompt], do_classifier_free_guidance=False, max_sequence_length=16)[0]

    with torch.no_grad():
        right_up, up_right = embed("a red circle moves right then up"), embed("a red circle moves up then right")
        diagonal = embed("a red circle moves up-right")
        cos = torch.nn.functional.cosine_similarity
        assert cos(right_up[0, 4], up_right[0, 6], dim=0) > 0.99  # "right" in either place
        assert cos(right_up[0, 4], up_right[0, 4], dim=0) < 0.5   # "right" vs "up" in one place
        swapped = right_up.clone()
        swapped[:, [4, 6]] = swapped[:, [6, 4]]
        x = torch.randn(1, 8, 5, 16, 16, generator=torch.Generator().manual_seed(0))
        t = torch.tensor([900.0])
        out = lambda e: pipe.transformer(x, t, e, return_dict=False)[0]  # noqa: E731
        reference = out(right_up)
        torch.testing.assert_close(out(swapped), reference, atol=1e-5, rtol=1e-5)
        order_gap, diagonal_gap = (out(up_right) - reference).norm(), (out(diagonal) - reference).norm()
        assert order_gap < 0.5 * diagonal_gap


def test_the_keyword_filter_wants_then_and_a_direction():
    assert mentions_turn("a red circle moves right then left")
    assert mentions_turn("A red circle moves up quickly then down-left.")
    assert not mentions_turn("a red circle moves right then stops")
    assert not mentions_turn("a red circle moves right and a blue square stays still")


# ---------- the metric ----------

def test_turn_success_is_full_on_rendered_turns_and_nil_on_their_straight_first_legs():
    rng = np.random.default_rng(21)
    turn_scores, straight_scores, frame_errors = [], [], []
    for index in range(30):
        spec = sample_clip_spec(rng, 1 + index % 2, turns=all_turn_combinations())
        obj = spec.objects[0]
        clip = render_clip(spec)
        result = toy_turn_adherence(clip.frames, clip.caption)
        assert len(result) == 1 and result[0].presence == 1.0
        turn_scores.append(result[0])
        frame_errors.append(abs(result[0].reading.turn_frame - obj.turn_frame))
        # the same object going straight on: the first leg only, over the whole clip
        straight = sample_clip_spec(np.random.default_rng(index), 1, combinations=[(obj.color, obj.shape, obj.motion)],
                                    partial_motion_rate=0.0)
        straight_scores.append(toy_turn_adherence(render_clip(straight).frames, clip.caption)[0])
    assert turn_success_rate(turn_scores) == 1.0 and max(frame_errors) <= 1
    assert turn_success_rate(straight_scores) == 0.0


def test_turn_success_fails_reversed_and_static_defects():
    reversed_clip = render_clip(_turn("right", "up", start=(40.0, 20.0), defect="reversed"))
    result = toy_turn_adherence(reversed_clip.frames, reversed_clip.caption)[0]
    assert not result.success and (result.reading.first_direction, result.reading.second_direction) == ("left", "down")
    static_clip = render_clip(_turn(defect="static"))
    result = toy_turn_adherence(static_clip.frames, static_clip.caption)[0]
    assert not result.success and result.reading.first_direction == "still"


def test_read_turn_finds_the_turn_wherever_it_is_and_tolerates_noise_and_gaps():
    rng = np.random.default_rng(0)
    for turn_frame in (4, 8, 13):
        frames = np.arange(17)
        x = np.where(frames < turn_frame, 10 + 2.0 * frames, 10 + 2.0 * (turn_frame - 1) - 2.0 * (frames - turn_frame + 1))
        track = np.stack([x, np.full(17, 30.0)], axis=1) + rng.normal(0, 0.4, (17, 2))
        track[[2, 15]] = np.nan  # the object missed on two frames
        reading = read_turn(track)
        assert (reading.first_direction, reading.second_direction) == ("right", "left")
        assert abs(reading.turn_frame - turn_frame) <= 1
    assert read_turn(np.full((17, 2), np.nan)).turn_frame is None


def test_turn_metric_refuses_a_caption_without_a_turn():
    clip = render_clip(_turn())
    with pytest.raises(ValueError, match="no turn"):
        toy_turn_adherence(clip.frames, "a red circle moves right")


# ---------- pools and queries ----------

def test_the_default_pool_plan_has_the_specified_proportions_and_keyword_precision():
    for seed in (0, 1, 2):
        plan = turn_pool_plan(600, seed)
        kinds = [(p["motion_kind"], p["caption_kind"]) for p in plan]
        assert kinds.count(("turn", "clean")) == 45 and kinds.count(("turn", "truncated")) == 15
        assert kinds.count(("straight", "mislabeled")) == 20 and kinds.count(("straight", "clean")) == 520
        assert sum(p["defect"] is not None for p in plan) == 120
        clean_captioned_turns = sum(k == ("turn", "clean") and p["defect"] is None for k, p in zip(kinds, plan))
        precision = clean_captioned_turns / (45 + 20)
        assert clean_captioned_turns == 36 and 0.5 <= precision <= 0.6
    assert turn_pool_plan(600, 0) == turn_pool_plan(600, 0) and turn_pool_plan(600, 0) != turn_pool_plan(600, 1)


@pytest.fixture(scope="module")
def small_pool(tmp_path_factory):
    return make_turn_pool(tmp_path_factory.mktemp("pool") / "p", num_clips=120, seed=5, progress=False)


def test_a_pool_is_the_same_bytes_when_built_twice(small_pool, tmp_path):
    again = make_turn_pool(tmp_path / "again", num_clips=120, seed=5, progress=False)
    for name in ("metadata.jsonl", "metadata.csv", "truth.json", "truth.csv", "dataset.json",
                 "gt/clip_00007.npz", "videos/clip_00007.mp4"):
        assert (small_pool / name).read_bytes() == (again / name).read_bytes(), name


def test_the_pool_truth_table_matches_its_clips_and_captions(small_pool):
    truth = load_truth(small_pool)
    meta = [json.loads(line) for line in (small_pool / "metadata.jsonl").read_text().splitlines()]
    assert [r["id"] for r in truth] == [m["id"] for m in meta] and len(truth) == 120
    summary = pool_summary(truth)
    assert summary["turn_share"] == 0.1 and summary["caption_kinds"] == {"clean": 113, "truncated": 3, "mislabeled": 4}
    assert 0.5 <= summary["keyword_precision"] <= 0.6 and summary["keyword_recall"] == 1.0
    held = {tuple(t) for t in heldout_turn_combinations()}
    for row, m in zip(truth, meta):
        gt = load_ground_truth(small_pool / m["gt_file"])
        assert m["text"] == row["caption"] and gt["caption"] == row["true_caption"]
        assert row["defect"] == (gt["spec"]["defect"] or "none") == m["defect"]
        turn = split_turn(row["true_motion"])
        said = split_turn(parse_caption(row["caption"])[0].motion)
        if said is not None:  # no caption and no clip uses a held-out turn
            assert (m["color"], m["shape"], *said) not in held
        if turn is not None:
            assert (m["color"], m["shape"], *turn) not in held
        assert row["caption_kind"] in CAPTION_KINDS
        if row["caption_kind"] == "truncated":
            assert turn is not None and not mentions_turn(row["caption"]) and said is None
            assert parse_caption(row["caption"])[0].motion == turn[0]
        elif row["caption_kind"] == "mislabeled":
            assert turn is None and said is not None and said[0] == row["true_motion"]
        else:
            assert row["caption"] == row["true_caption"]
        assert row["clean_turn"] == (turn is not None and row["defect"] == "none" and row["caption_kind"] == "clean")
    # clips read from disk (every clean turn or mislabeled clip, and 20 others): the video shows what the truth
    # table says, read by the turn metric on the decoded video
    sample = [(row, m) for index, (row, m) in enumerate(zip(truth, meta)) if row["defect"] == "none" and (
        index < 20 or split_turn(row["true_motion"]) or row["caption_kind"] == "mislabeled")]
    checked = {"turns": 0, "straight": 0}
    for row, m in sample:
        frames = read_video(small_pool / m["file_name"])
        turn = split_turn(row["true_motion"])
        if turn is not None:
            result = toy_turn_adherence(frames, row["true_caption"])[0]
            assert result.success and abs(result.reading.turn_frame - row["turn_frame"]) <= 1
            checked["turns"] += 1
        elif row["true_motion"] in TURN_MOTIONS:  # a straight clip never passes a turn prompt on it
            fake = f"a {m['color']} {m['shape']} moves {row['true_motion']} then " + (
                "up" if row["true_motion"] in ("left", "right") else "left")
            assert not toy_turn_adherence(frames, fake)[0].success
            checked["straight"] += 1
    assert checked["turns"] >= 7 and checked["straight"] >= 3  # 7 clean-captioned + 2 truncated defect-free turns


def test_query_sets_are_clean_training_turns_with_spread_pairs_and_no_pool_clip(small_pool, tmp_path):
    queries = make_turn_queries(tmp_path / "q", num_clips=6, seed=5)
    truth = load_truth(queries)
    assert [r["id"] for r in truth] == [f"query_{i:05d}" for i in range(6)]
    assert all(r["clean_turn"] and r["caption"] == r["true_caption"] for r in truth)
    pairs = [split_turn(r["true_motion"]) for r in truth]
    assert len(set(pairs)) == 6
    colours = [load_ground_truth(queries / "gt" / f"{r['id']}.npz")["spec"]["objects"][0]["color"] for r in truth]
    assert max(colours.count(c) for c in set(colours)) - min(colours.count(c) for c in set(colours)) <= 1
    assert len(set(colours)) == min(6, len(COLORS))  # spread over colours, not one colour with different turns
    held = {tuple(t) for t in heldout_turn_combinations()}
    pool_specs = {json.dumps(load_ground_truth(p)["spec"]) for p in sorted((small_pool / "gt").glob("*.npz"))}
    for row in truth:
        gt = load_ground_truth(queries / "gt" / f"{row['id']}.npz")
        obj = gt["spec"]["objects"][0]
        assert (obj["color"], obj["shape"], obj["motion"], obj["turn_motion"]) not in held
        assert json.dumps(gt["spec"]) not in pool_specs


def test_cli_and_data_recipes_build_turn_pools_and_queries(tmp_path, capsys):
    from motionguide.registry import DATA_RECIPES
    from motionguide.toy.cli import main as toy_main

    argv = ["make-turn-pool", "--out", str(tmp_path / "cli"), "--num-clips", "30", "--seed", "2",
            "--pairs", "right:left,up:right", "--no-progress"]
    assert toy_main(argv) == 0 and "truth.json" in capsys.readouterr().out
    motions = {r["true_motion"] for r in load_truth(tmp_path / "cli")}
    assert {m for m in motions if split_turn(m)} <= {"right then left", "up then right"}
    assert toy_main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        toy_main(["make-turn-pool", "--out", str(tmp_path / "bad"), "--pairs", "right:right"])
    assert toy_main(["make-turn-queries", "--out", str(tmp_path / "q"), "--num-clips", "5"]) == 0
    assert len(load_truth(tmp_path / "q")) == 5

    DATA_RECIPES.get("toy_turn_pool")(tmp_path / "recipe", num_clips=20, seed=1, progress=False)
    assert len(load_truth(tmp_path / "recipe")) == 20
    from motionguide.errors import ConfigError

    with pytest.raises(ConfigError, match="seed"):
        DATA_RECIPES.get("toy_turn_queries")(tmp_path / "r2", num_clips=5)
