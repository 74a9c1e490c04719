"""Layer/step analysis (`analyze_layers`, `motionguide analyze-layers`): scores against a dense reference,
normalisation, selection rules and the command end to end on a tiny pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from motionguide.attention import AttentionController
from motionguide.backbones import GuidanceProfile, LayerProfile, SaliencyProfile, backbone_for
from motionguide.correspondence.analysis import (
    AnalysisResult,
    attention_scores,
    default_steps,
    default_threshold_px,
    harmonic_mean,
    minmax_normalise,
    moving_points,
    query_token_indices,
    token_frame_visibility,
)
from motionguide.correspondence.analysis_data import read_reference_tracks
from motionguide.errors import ConfigError
from motionguide.testing import tiny_cogvideox_transformer, tiny_wan_transformer

# (x, y) pixels on a 4-row x 6-column token grid of 16 px tokens; x > 63 has no row, so an x/y swap clamps away
POINTS = np.array([[72.0, 8.0], [8.0, 40.0], [88.0, 56.0], [40.0, 24.0], [20.0, 3.0]], dtype=np.float32)
GRID_H, GRID_W, LATENT_FRAMES = 4, 6, 3


def _expected_tokens() -> list[int]:
    return [int(y // 16) * GRID_W + int(x // 16) for x, y in POINTS]


def _visible_frames() -> np.ndarray:
    visible = np.ones((len(POINTS), LATENT_FRAMES), dtype=bool)
    visible[1, 1] = False  # point 1 only counts frame 2
    visible[2, 1:] = False  # point 2 has no later visible frame -> NaN confidence
    return visible


def _dense_reference(query, key, text_len, tokens, visible):
    """Full softmax over all keys for the N query rows, head mean, from the raw [1, H, S, D] capture tensors."""
    q = query[0, :, text_len + torch.tensor(tokens)].double()  # [H, N, D]
    k = key[0].double()  # [H, text + video, D]
    a = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1).mean(dim=0)  # [N, S]
    video = a[:, text_len:].reshape(len(tokens), LATENT_FRAMES, GRID_H * GRID_W)
    frame_max = video.amax(dim=-1).numpy()
    confidence = []
    for n in range(len(tokens)):
        kept = [frame_max[n, f] for f in range(1, LATENT_FRAMES) if visible[n, f]]
        confidence.append(np.mean(kept) if kept else np.nan)
    return {
        "confidence": np.array(confidence),
        "attention": video[:, 1:].sum(dim=(1, 2)).numpy(),
        "own_frame_attention": video[:, 0].sum(dim=-1).numpy(),
        "text_attention": a[:, :text_len].sum(dim=-1).numpy(),
        "own_frame_confidence": frame_max[:, 0],
    }


def _capture_and_score(backbone, latents, embeds, text_len):
    tokens = query_token_indices(POINTS, backbone.token_grid(backbone.to_transformer_layout(latents).shape),
                                 backbone.pixels_per_token)
    assert tokens.tolist() == _expected_tokens()
    seen = {}

    def consume(capture):
        seen["raw"] = (capture.query.clone(), capture.key.clone())
        seen["scores"] = attention_scores(capture, tokens, _visible_frames())

    with torch.no_grad(), AttentionController(backbone).capture(consume, blocks=[1], attention="self"):
        backbone.predict(latents, torch.tensor([500.0]), embeds)
    expected = _dense_reference(*seen["raw"], text_len, _expected_tokens(), _visible_frames())
    for name, values in expected.items():
        np.testing.assert_allclose(seen["scores"][name], values, rtol=1e-4, atol=1e-6, err_msg=name)
    assert np.isnan(seen["scores"]["confidence"][2])
    total = sum(seen["scores"][n] for n in ("attention", "own_frame_attention", "text_attention"))
    np.testing.assert_allclose(total, 1.0, rtol=1e-5)
    return seen["scores"]


def test_scores_match_a_dense_softmax_on_tiny_wan():
    backbone = backbone_for(tiny_wan_transformer(num_layers=2))
    latents = torch.randn(1, 16, LATENT_FRAMES, 2 * GRID_H, 2 * GRID_W)
    scores = _capture_and_score(backbone, latents, torch.randn(1, 8, 32), text_len=0)
    assert np.all(scores["text_attention"] == 0) and np.all(np.isnan(scores["text_confidence"]))


def test_scores_match_a_dense_softmax_on_tiny_cogvideox_with_text_keys_first():
    backbone = backbone_for(tiny_cogvideox_transformer(num_layers=2, max_text=16))
    latents = torch.randn(1, 4, LATENT_FRAMES, 2 * GRID_H, 2 * GRID_W)
    scores = _capture_and_score(backbone, latents, torch.randn(1, 16, 32), text_len=16)
    assert np.all(scores["text_attention"] > 0)


def test_token_frame_visibility_needs_every_rgb_frame_of_the_latent():
    visibility = np.ones((2, 9), dtype=bool)
    visibility[0, 3] = False  # RGB frame 3 belongs to latent 1 (frames 1..4)
    visibility[1, 0] = False
    out = token_frame_visibility(visibility, num_token_frames=3, temporal_stride=4)
    assert out.tolist() == [[True, False, True], [False, True, True]]


def test_moving_points_leave_their_token_while_visible():
    tracks = np.zeros((3, 4, 2), np.float32)
    tracks[1, 3] = [7.9, 0]  # under one 8 px token: not moving
    tracks[2, 2] = [0, 8.0]  # one token down at frame 2
    visibility = np.ones((3, 4), bool)
    assert moving_points(tracks, visibility, 8).tolist() == [False, False, True]
    visibility[2, 2] = False  # the only far position is occluded
    assert moving_points(tracks, visibility, 8).tolist() == [False, False, False]


def test_minmax_and_harmonic_mean_on_hand_made_tables():
    acc = np.array([[0.0, 50.0], [100.0, 25.0]])
    conf = np.array([[1.0, 2.0], [3.0, 5.0]])
    attn = np.array([[0.1, 0.3], [0.5, 0.5]])
    np.testing.assert_allclose(minmax_normalise(acc), [[0, 0.5], [1, 0.25]])
    np.testing.assert_allclose(harmonic_mean(acc, conf, attn), [[0.0, 3 / 8], [0.75, 0.5]])
    constant = np.full((2, 2), 0.7)
    assert np.array_equal(minmax_normalise(constant), np.zeros((2, 2)))
    hm = harmonic_mean(acc, conf, constant)
    assert np.array_equal(hm, np.zeros((2, 2))) and not np.isnan(hm).any()
    assert minmax_normalise(np.array([[np.nan, 1.0], [3.0, 2.0]])).tolist() == [[0.0, 0.0], [1.0, 0.5]]


def test_defaults_spread_steps_and_scale_the_threshold():
    assert default_steps(50) == [0, 12, 24, 37, 49]
    assert default_steps(2) == [0, 1]
    assert default_threshold_px(480, 720, 16) == 8.0
    assert default_threshold_px(64, 64, 16) == 16.0


def _planted_result() -> AnalysisResult:
    blocks, steps = list(range(6)), [0, 10, 19]
    acc = np.full((6, 3), 20.0)
    conf = np.full((6, 3), 0.1)
    attn = np.full((6, 3), 0.2)
    acc[3, 2] = acc[1, 2] = 90.0  # tie at the last step: HM breaks it for block 3
    for block, level in ((2, 0.8), (3, 0.9), (4, 0.7)):  # guidance blocks by HM at late steps
        conf[block, 1:] = attn[block, 1:] = level
        acc[block, 1] = 60.0 + 10 * level
    acc[5, 0], conf[5, 0], attn[5, 0] = 99.0, 1.0, 1.0  # strong only at the noisiest step: not picked
    zeros = np.zeros((6, 3))
    tables = {"accuracy": acc, "confidence": conf, "attention": attn, "own_frame_attention": zeros,
              "text_attention": zeros, "own_frame_confidence": zeros, "text_confidence": zeros}
    return AnalysisResult(blocks=blocks, steps=steps, num_inference_steps=20, tables=tables, family="wan",
                          num_blocks=6, num_heads=2,
                          produced_by={"command": "motionguide analyze-layers --model m --data d", "data": "d",
                                       "clips": 3, "threshold_px": 16.0, "date": "2025-01-01T00:00:00+00:00"})


def test_to_profile_picks_the_planted_blocks_and_writes_a_loadable_profile(tmp_path):
    result = _planted_result()
    assert result.tracking_choice() == (3, 19)
    assert result.guidance_choice() == [2, 3, 4]
    imap = SaliencyProfile(blocks=[1, 2], top_k=1)
    base = LayerProfile(name="base", family="wan", num_blocks=6, num_heads=2, model="org/model", imap=imap,
                        guidance=GuidanceProfile(blocks=[0], scale=2.5))
    result.to_profile(base, "analysed", path=tmp_path / "p.yaml")
    loaded = LayerProfile.load(tmp_path / "p.yaml")
    assert (loaded.tracking.block, loaded.tracking.step, loaded.tracking.num_inference_steps) == (3, 19, 20)
    assert not loaded.tracking.provisional and not loaded.guidance.provisional
    assert loaded.guidance.blocks == [2, 3, 4] and loaded.guidance.window == (0.0, 1.0)
    assert loaded.guidance.scale == 2.5 and loaded.imap == imap and loaded.model == "org/model"
    assert loaded.produced_by["command"].startswith("motionguide analyze-layers")
    assert {"data", "clips", "threshold_px", "date"} <= set(loaded.produced_by)
    bare = result.to_profile(LayerProfile(name="b", family="wan", num_blocks=6, num_heads=2), "x")
    assert bare.imap is None
    with pytest.raises(ConfigError, match="analysed model"):
        result.to_profile(LayerProfile(name="c", family="wan", num_blocks=30, num_heads=12), "x")
    again = AnalysisResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.tracking_choice() == (3, 19) and again.guidance_choice() == [2, 3, 4]


def test_reference_tracks_accept_cotracker_layout(tmp_path):
    tracks = np.random.rand(1, 9, 4, 2).astype(np.float32)  # [1, F, N, 2]
    visibility = np.random.rand(1, 9, 4) > 0.5
    np.savez(tmp_path / "c.npz", pred_tracks=tracks, pred_visibility=visibility)
    got_tracks, got_visibility = read_reference_tracks(tmp_path / "c.npz")
    assert np.array_equal(got_tracks, tracks[0].transpose(1, 0, 2))
    assert np.array_equal(got_visibility, visibility[0].T)
    np.savez(tmp_path / "bad.npz", points=tracks)
    with pytest.raises(ConfigError, match="--tracks"):
        read_reference_tracks(tmp_path / "bad.npz")


@pytest.fixture(scope="module")
def wan_model_and_toy_data(tmp_path_factory):
    from motionguide.testing import tiny_wan_pipeline
    from motionguide.toy import make_dataset

    root = tmp_path_factory.mktemp("analysis")
    tiny_wan_pipeline().save_pretrained(root / "model")
    make_dataset(root / "data", num_clips=2, seed=0, progress=False)
    return root / "model", root / "data"


def _pck_by_hand(pred, truth, visible, threshold_px):
    """Percent of visible (point, frame) pairs whose predicted position lies within threshold_px of the truth."""
    distance = np.sqrt(((np.asarray(pred, np.float64) - truth) ** 2).sum(axis=-1))
    hits = [d <= threshold_px for d, v in zip(distance.ravel(), np.asarray(visible).ravel()) if v]
    return 100.0 * sum(hits) / len(hits) if hits else float("nan")


def test_cli_end_to_end_writes_profile_json_and_heatmap(wan_model_and_toy_data, tmp_path, capsys, monkeypatch):
    from motionguide.cli import main
    from motionguide.correspondence import analysis

    model, data = wan_model_and_toy_data
    out = tmp_path / "out" / "profile.yaml"
    # record what each scorer saw (its reference tracks, the block) and the pixel tracks it read from the q-k costs
    scored, predicted = [], []
    real_call, real_to_pixels = analysis._ClipScorer.__call__, analysis.latent_to_pixel_tracks

    def spy_call(scorer, capture):
        real_call(scorer, capture)
        scored.append((scorer, capture.block))

    def spy_to_pixels(*args, **kwargs):
        predicted.append(real_to_pixels(*args, **kwargs).numpy().copy())
        return torch.from_numpy(predicted[-1].copy())

    monkeypatch.setattr(analysis._ClipScorer, "__call__", spy_call)
    monkeypatch.setattr(analysis, "latent_to_pixel_tracks", spy_to_pixels)
    code = main(["analyze-layers", "--model", str(model), "--data", str(data), "--steps", "0,1",
                 "--num-inference-steps", "2", "--max-sequence-length", "16", "--descriptor", "qk_no_rope",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    profile = LayerProfile.load(out)
    assert profile.family == "wan" and profile.num_blocks == 2 and profile.tracking.step == 1
    assert profile.tracking.descriptor == "qk_no_rope" and "--descriptor qk_no_rope" in profile.produced_by["command"]
    assert profile.produced_by["command"].startswith("motionguide analyze-layers --model")
    assert profile.produced_by["clips"] == 2 and profile.produced_by["threshold_px"] == 16.0
    report = json.loads((out.parent / "analysis.json").read_text())
    assert report["blocks"] == [0, 1] and report["steps"] == [0, 1]
    for name in ("accuracy", "confidence", "attention", "moving_accuracy"):
        assert np.array(report["tables"][name], dtype=float).shape == (2, 2)
    # accuracy = PCK of the recorded tracks against the dataset's ground truth (points visible in frame 0, all 17
    # frames, 16 px = one token on 64 px clips), recomputed here and averaged over the two clips
    assert len(scored) == len(predicted) == 2 * 2 * 2  # clips x steps x blocks
    rows = [json.loads(line) for line in (data / "metadata.jsonl").read_text().splitlines()]
    scorers = list(dict.fromkeys(scorer for scorer, _ in scored))  # created per (clip, step), clip-major
    assert len(scorers) == 4
    expected = {"accuracy": np.zeros((2, 2, 2)), "moving_accuracy": np.zeros((2, 2, 2))}  # [clip, block, step]
    for (scorer, block), pred in zip(scored, predicted):
        clip, step = divmod(scorers.index(scorer), 2)
        with np.load(data / rows[clip]["gt_file"]) as truth:
            from_frame0 = truth["visibility"][:, 0]
            gt_tracks, gt_visible = truth["tracks"][from_frame0], truth["visibility"][from_frame0]
        np.testing.assert_array_equal(scorer.tracks, gt_tracks)
        np.testing.assert_array_equal(scorer.visibility, gt_visible)
        expected["accuracy"][clip, block, step] = _pck_by_hand(pred, gt_tracks, gt_visible, 16.0)
        travelled = np.linalg.norm(gt_tracks - gt_tracks[:, :1], axis=-1)
        moving = [bool((travelled[n][gt_visible[n]] >= 16).any()) for n in range(len(gt_tracks))]
        expected["moving_accuracy"][clip, block, step] = (
            _pck_by_hand(pred[moving], gt_tracks[moving], gt_visible[moving], 16.0) if any(moving) else np.nan)
    for name, per_clip in expected.items():
        np.testing.assert_allclose(np.array(report["tables"][name], dtype=float), per_clip.mean(axis=0),
                                   rtol=1e-12, err_msg=name)
    assert report["choice"]["tracking"] == {"block": profile.tracking.block, "step": 1}
    with Image.open(out.parent / "analysis.png") as image:
        assert image.size[0] > 100 and image.size[1] > 40


def test_cli_without_reference_tracks_says_how_to_supply_them(wan_model_and_toy_data, tmp_path, capsys):
    from motionguide.cli import main

    model, data = wan_model_and_toy_data
    rows = [json.loads(line) for line in (data / "metadata.jsonl").read_text().splitlines()]
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "metadata.jsonl").write_text("".join(
        json.dumps({"file_name": str(data / r["file_name"]), "text": r["text"]}) + "\n" for r in rows))
    code = main(["analyze-layers", "--model", str(model), "--data", str(plain), "--steps", "1",
                 "--num-inference-steps", "2", "--out", str(tmp_path / "p.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and "--tracks" in err and "CoTracker" in err


def test_user_tracks_folder_is_matched_by_clip_id(wan_model_and_toy_data, tmp_path):
    from motionguide.correspondence.analysis_data import load_analysis_clips

    _, data = wan_model_and_toy_data
    rows = [json.loads(line) for line in (data / "metadata.jsonl").read_text().splitlines()]
    tracks_dir = tmp_path / "tracks"
    tracks_dir.mkdir()
    truth = np.load(data / rows[1]["gt_file"])
    np.savez(tracks_dir / f"{rows[1]['id']}.npz", tracks=truth["tracks"], visibility=truth["visibility"])
    clips, skipped = load_analysis_clips(data, tracks=tracks_dir)
    assert [c.clip_id for c in clips] == [rows[1]["id"]] and np.array_equal(clips[0].tracks, truth["tracks"])
    assert skipped == [{"clip": rows[0]["id"], "reason": "no reference tracks"}]
