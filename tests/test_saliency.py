"""IMAP / GramCol saliency: exact pieces against references written from the equations, the real-video and
sampling entry points on tiny Wan and CogVideoX pipelines, and the training monitor inside the real loop."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from motionguide.attention import AttentionController
from motionguide.backbones import TokenGrid
from motionguide.errors import ConfigError
from motionguide.saliency import (
    IMAPMonitor,
    SaliencyAccumulator,
    calinski_harabasz,
    default_caption_words,
    gramcol_head,
    saliency_for_latents,
    saliency_while_sampling,
    top_k_heads,
    word_token_positions,
)
from motionguide.saliency.render import heatmap_grid, spatial_entropy
from motionguide.testing import TEST_WORDS, tiny_cogvideox_pipeline, tiny_wan_pipeline, tiny_wan_transformer
from motionguide.text import word_level_tokenizer

from helpers import tensorboard_tags, train_config, training_workspace, wan_inputs


# ---------------------------------------------------------------------- references from the equations
def reference_gramcol(q, k, out, grid, real_slots=None):
    """Dense, loop-by-loop GramCol of one head in float64: [T, F, H, W]."""
    q, k, out = q.double(), k.double(), out.double()
    frames, per_frame = grid.frames, grid.height * grid.width
    slots = k.shape[0] if real_slots is None else real_slots
    gram = torch.zeros(slots, frames, per_frame, dtype=torch.float64)
    for f in range(frames):
        tokens = out[f * per_frame:(f + 1) * per_frame]
        scores = q[f * per_frame:(f + 1) * per_frame] @ k[:slots].T  # [P, T]
        for t in range(slots):
            anchor = int(torch.argmax(scores[:, t]))
            gram[t, f] = tokens @ tokens[anchor]
    z = (gram - gram.mean(dim=0)) / (torch.std(gram, dim=0) + 1e-6)  # torch.std is unbiased
    return z.reshape(slots, frames, grid.height, grid.width)


def reference_chi(x, labels):
    """Calinski-Harabasz: [SSB / (k - 1)] / [SSW / (n - k)], SSB = sum_c n_c |mu_c - mu|^2, SSW = sum |x - mu_c|^2."""
    x = np.asarray(x, np.float64)
    classes = np.unique(labels)
    mu = x.mean(axis=0)
    ssb = sum((labels == c).sum() * np.sum((x[labels == c].mean(axis=0) - mu) ** 2) for c in classes)
    ssw = sum(np.sum((x[labels == c] - x[labels == c].mean(axis=0)) ** 2) for c in classes)
    return (ssb / (len(classes) - 1)) / (ssw / (len(x) - len(classes)))


def reference_layer_maps(q, k, out, grid, positions, top_k):
    """One layer from raw per-head tensors [H, N, d] / [H, T, d]: (IMAP, all-head GramCol sum) at `positions`."""
    labels = np.repeat(np.arange(grid.frames), grid.height * grid.width)
    chi = np.array([reference_chi(out[h].numpy(), labels) for h in range(out.shape[0])])
    chosen = np.argsort(-chi, kind="stable")[:top_k]
    z = [reference_gramcol(q[h], k[h], out[h], grid)[positions] for h in range(q.shape[0])]
    return torch.stack([z[h] for h in chosen]).mean(0), torch.stack(z).sum(0), sorted(chosen.tolist())


# ---------------------------------------------------------------------- GramCol and CHI
def test_gramcol_head_equals_dense_reference():
    g = torch.Generator().manual_seed(0)
    grid = TokenGrid(3, 4, 5)
    q, k, out = (torch.randn(60, 8, generator=g), torch.randn(7, 8, generator=g), torch.randn(60, 8, generator=g))
    got = gramcol_head(q, k, out, grid)
    assert got.shape == (7, 3, 4, 5) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), reference_gramcol(q, k, out, grid), atol=1e-5, rtol=1e-5)
    # restricted to the first 5 (real) slots, and only some positions kept
    real = gramcol_head(q, k, out, grid, real_slots=5, keep=[1, 4])
    torch.testing.assert_close(real.double(), reference_gramcol(q, k, out, grid, real_slots=5)[[1, 4]],
                               atol=1e-5, rtol=1e-5)
    # padded slots share one key: one anchor, identical rows, a large "null concept" in the z-score
    k_pad = torch.cat([k[:3], k[3:4].expand(4, -1)])
    padded = gramcol_head(q, k_pad, out, grid)
    torch.testing.assert_close(padded[3], padded[6])
    with pytest.raises(ValueError, match="outside"):
        gramcol_head(q, k, out, grid, real_slots=5, keep=[5])
    with pytest.raises(ValueError, match="grid"):
        gramcol_head(q[:50], k, out[:50], grid)


def test_chi_equals_calinski_harabasz_formula_and_prefers_frame_separable_heads():
    g = torch.Generator().manual_seed(1)
    frames, per_frame, dim = 4, 10, 6
    centres = torch.randn(3, frames, 1, dim, generator=g) * torch.tensor([0.1, 1.0, 3.0]).view(3, 1, 1, 1)
    x = (centres + torch.randn(3, frames, per_frame, dim, generator=g)).reshape(3, frames * per_frame, dim)
    labels = np.repeat(np.arange(frames), per_frame)
    chi = calinski_harabasz(x, frames)
    expected = torch.tensor([reference_chi(x[h].numpy(), labels) for h in range(3)])
    torch.testing.assert_close(chi.double(), expected.double(), rtol=1e-5, atol=1e-6)
    assert top_k_heads(chi, 2) == [2, 1]
    torch.testing.assert_close(calinski_harabasz(x, frames, head_chunk=1), chi)

    centres = torch.randint(-4, 5, (frames, 1, dim), generator=g).float()  # exact: SSW is exactly 0
    separable = centres.expand(frames, per_frame, dim).reshape(1, -1, dim)
    random_head = torch.randn(1, frames * per_frame, dim, generator=g)
    nearly = separable + 1e-3 * torch.randn(separable.shape, generator=g)
    scores = calinski_harabasz(torch.cat([random_head, nearly, separable]), frames)
    assert scores[0] < scores[1] < scores[2] and torch.isinf(scores[2])
    assert top_k_heads(scores, 1) == [2]
    with pytest.raises(ValueError, match="top_k"):
        top_k_heads(scores, 4)


# ---------------------------------------------------------------------- accumulator on a real capture
def _recorder(store):
    def record(capture):
        store.append({"block": capture.block, "query": capture.query.clone(), "key": capture.key.clone(),
                      "output": capture.output.clone(), "text_len": capture.text_len, "grid": capture.grid,
                      "attention": capture.attention})
    return record


def test_accumulator_imap_is_the_mean_of_the_top_k_heads_gramcol_on_tiny_wan():
    transformer = tiny_wan_transformer(heads=4)
    positions = {"w2": [2], "w0": [0], "w24": [2, 4]}
    accumulator = SaliencyAccumulator(positions, blocks=[0, 1], top_k=2, head_chunk=1)
    imap_only = SaliencyAccumulator(positions, blocks=[0, 1], top_k=2, kinds=("imap",))  # selected heads only
    records = []
    controller = AttentionController(transformer)
    with torch.no_grad(), controller.capture(_recorder(records), blocks=[0, 1], attention="text"), \
            controller.capture(accumulator, blocks=[0, 1], attention="text"), \
            controller.capture(imap_only, blocks=[0, 1], attention="text"):
        transformer(**wan_inputs(transformer, frames=3, size=8, text_len=6))
    maps = accumulator.result()
    assert imap_only.result().kinds == ["imap"]
    torch.testing.assert_close(imap_only.result().maps["imap"], maps.maps["imap"])
    assert len(records) == 2 and maps.words == ["w2", "w0", "w24"]
    keep = [0, 2, 4]
    imap_layers, gram_layers, cross_layers = [], [], []
    for rec in records:
        q, k, out = rec["query"][0], rec["key"][0], rec["output"][0]
        imap, gram, chosen = reference_layer_maps(q, k, out, rec["grid"], keep, top_k=2)
        assert sorted(maps.selected_heads[rec["block"]]) == chosen
        imap_layers.append(imap)
        gram_layers.append(gram)
        probs = ((q.double() @ k.double().transpose(1, 2)) / q.shape[-1]).softmax(-1)  # Wan: softmax of logits / d
        cross_layers.append(probs.mean(0)[:, keep].T.reshape(3, *rec["grid"].as_tuple()))
    rows = {"w2": [1], "w0": [0], "w24": [1, 2]}
    for kind, layers in (("imap", imap_layers), ("gramcol", gram_layers), ("cross_attention", cross_layers)):
        mean = torch.stack(layers).mean(0)
        expected = torch.stack([mean[rows[w]].mean(0) for w in maps.words]).float()
        torch.testing.assert_close(maps.maps[kind], expected, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------- word alignment
def _wordpiece_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "[UNK]": 2, "a": 3, "red": 4, "circ": 5, "##le": 6, "moves": 7, "left": 8}
    core = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="[UNK]")


class _SlowChunkTokenizer:
    """A slow tokenizer stand-in without offsets: every word becomes ceil(len / 3) pieces, then </s>."""

    eos_token_id = 1
    all_special_ids = [0, 1]

    def __call__(self, text, add_special_tokens=True, return_offsets_mapping=False):
        if return_offsets_mapping:
            raise NotImplementedError("return_offset_mapping is not available when using Python tokenizers")
        ids = [10 + len(w) for w in text.split() for _ in range(0, len(w), 3)]
        return {"input_ids": ids + [self.eos_token_id]}


def test_word_positions_subtokens_eos_and_errors():
    tok = word_level_tokenizer(TEST_WORDS)
    prompt = "a red circle moves up-left"
    assert word_token_positions(tok, prompt, ["circle", "Moves", "</s>"]) == {"circle": [2], "Moves": [3], "</s>": [7]}
    # "up-left" is three tokens (up, -, left): the first by default, all on request
    assert word_token_positions(tok, prompt, ["up-left"]) == {"up-left": [4]}
    assert word_token_positions(tok, prompt, ["up-left"], subtokens="all") == {"up-left": [4, 5, 6]}
    # a word-piece tokenizer splits "circle" into circ + ##le
    wp = _wordpiece_tokenizer()
    assert word_token_positions(wp, "a red circle moves left", ["circle", "left", "</s>"], subtokens="all") == {
        "circle": [2, 3], "left": [5], "</s>": [6]}
    # no offsets (slow tokenizer): positions from growing prefixes
    slow = _SlowChunkTokenizer()
    assert word_token_positions(slow, "a triangle moves", ["triangle", "moves"], subtokens="all") == {
        "triangle": [1, 2, 3], "moves": [4, 5]}
    with pytest.raises(ValueError, match="its words are: a, red, circle, moves, up-left"):
        word_token_positions(tok, prompt, ["square"])
    with pytest.raises(ValueError, match="empty"):
        word_token_positions(tok, "  ", ["circle"])
    with pytest.raises(ValueError, match="truncated"):
        word_token_positions(tok, prompt, ["moves"], max_slots=3)


def test_default_caption_words():
    assert default_caption_words("a red circle moves left") == ["circle", "moves"]
    assert default_caption_words("a blue square stays still and a red circle moves up") == ["square", "stays"]
    assert default_caption_words("a green triangle starts moving up quickly then stops") == ["triangle", "moving"]
    assert default_caption_words("the ocean at dawn") == ["ocean", "dawn"]


# ---------------------------------------------------------------------- entry points
def test_saliency_for_latents_on_tiny_wan_is_finite_and_seeded():
    pipe = tiny_wan_pipeline()
    latents = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    words = ["circle", "moves", "</s>"]
    kw = dict(profile_or_blocks=[0, 1], top_k=1, timestep=400, max_sequence_length=16)
    first = saliency_for_latents(pipe, latents, "a red circle moves left", words, seed=7, **kw)
    again = saliency_for_latents(pipe, latents, "a red circle moves left", words, seed=7, **kw)
    other = saliency_for_latents(pipe, latents, "a red circle moves left", words, seed=8, **kw)
    assert first.words == words and set(first.kinds) == {"imap", "gramcol", "cross_attention"}
    for kind, value in first.maps.items():
        assert value.shape == (3, 3, 4, 4) and torch.isfinite(value).all()
        assert torch.equal(value, again.maps[kind])
    assert not torch.equal(first.maps["imap"], other.maps["imap"])
    assert sorted(first.selected_heads) == [0, 1] and all(len(h) == 1 for h in first.selected_heads.values())
    assert first.get("circle").shape == (3, 4, 4)
    real = saliency_for_latents(pipe, latents, "a red circle moves left", words, seed=7, real_slots_only=True, **kw)
    assert not torch.equal(real.maps["imap"], first.maps["imap"])  # z-scored over 6 real slots, not 16
    assert all(type(b.attn2.processor).__name__ == "WanAttnProcessor" for b in pipe.transformer.blocks)


def test_saliency_for_latents_on_tiny_cogvideox_reads_text_keys_first_in_the_joint_sequence():
    pipe = tiny_cogvideox_pipeline(rotary=True)
    latents = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    prompt, words = "a red circle moves left", ["circle", "left"]
    maps = saliency_for_latents(pipe, latents, prompt, words, profile_or_blocks=[1], top_k=2, timestep=400,
                                seed=2, max_sequence_length=16)
    assert maps.maps["imap"].shape == (2, 3, 4, 4) and torch.isfinite(maps.maps["imap"]).all()
    again = saliency_for_latents(pipe, latents, prompt, words, profile_or_blocks=[1], top_k=2, timestep=400,
                                 seed=2, max_sequence_length=16)
    assert torch.equal(maps.maps["imap"], again.maps["imap"])

    # Reference from the raw joint tensors: text = the first text_len tokens, video = the rest.
    from motionguide.backbones import backbone_for

    backbone = backbone_for(pipe)
    embeds = backbone.encode_prompt([prompt], 16)
    noise = torch.randn((1, *latents.shape), generator=torch.Generator().manual_seed(2))
    noisy = backbone.add_noise(latents[None], noise, torch.tensor([400.0]))
    records = []
    with torch.no_grad(), AttentionController(backbone).capture(_recorder(records), blocks=[1], attention="text"):
        backbone.predict(noisy, torch.tensor([400.0]), embeds)
    (rec,) = records
    n = rec["text_len"]
    assert rec["attention"] == "joint" and n == 16
    q, k, out = rec["query"][0, :, n:], rec["key"][0, :, :n], rec["output"][0, :, n:]
    imap, _, chosen = reference_layer_maps(q, k, out, rec["grid"], [2, 4], top_k=2)
    assert sorted(maps.selected_heads[1]) == chosen
    torch.testing.assert_close(maps.maps["imap"], imap.float(), atol=1e-4, rtol=1e-4)
    cross = (q.double() @ k.double().transpose(1, 2)).mean(0)[:, [2, 4]].T.reshape(2, 3, 4, 4)  # raw logits
    torch.testing.assert_close(maps.maps["cross_attention"], cross.float(), atol=1e-4, rtol=1e-4)


def test_saliency_while_sampling_leaves_the_video_unchanged_and_averages_the_window():
    pipe = tiny_wan_pipeline()
    kw = dict(num_frames=9, height=32, width=32, num_inference_steps=4, max_sequence_length=16,
              output_type="latent")
    stock = pipe("a red circle moves left", generator=torch.Generator().manual_seed(0), **kw).frames
    maps, out = saliency_while_sampling(pipe, "a red circle moves left", ["circle", "moves"], blocks=[0, 1],
                                        top_k=1, steps_window=(0.5, 1.0), generator=torch.Generator().manual_seed(0),
                                        **kw)
    assert torch.equal(out.frames, stock)
    assert maps.steps == [2, 3] and maps.maps["imap"].shape == (2, 3, 2, 2)
    with pytest.raises(ValueError, match="steps_window"):
        saliency_while_sampling(pipe, "a red circle moves left", ["circle"], steps_window=(0.9, 0.95), **kw)


def test_defaults_follow_the_shipped_profiles_and_the_reference_renoise_levels():
    from diffusers import CogVideoXDDIMScheduler, UniPCMultistepScheduler

    from motionguide.backbones import backbone_for
    from motionguide.backbones.reference_configs import build_on_meta
    from motionguide.saliency.compute import default_renoise_timestep, resolve_imap_settings

    wan = backbone_for(build_on_meta("wan2.1-t2v-1.3b"), scheduler=UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0))
    blocks, k, section = resolve_imap_settings(wan)
    assert (blocks, k) == (list(range(5, 20)), 3)
    assert default_renoise_timestep(wan, section) == pytest.approx(818, abs=1)  # sigma ~ 0.818 at step 20 of 50
    cog = backbone_for(build_on_meta("cogvideox-2b"), scheduler=CogVideoXDDIMScheduler(timestep_spacing="trailing"))
    blocks, k, section = resolve_imap_settings(cog)
    assert blocks == [4, 6, 7, *range(10, 24)] and k == 5
    assert default_renoise_timestep(cog, section) == pytest.approx(399, abs=1)
    assert resolve_imap_settings(wan, "2-4,9", top_k=2)[:2] == ([2, 3, 4, 9], 2)
    assert resolve_imap_settings(wan, [0, "10-11"])[:2] == ([0, 10, 11], 3)  # k = heads // 4 without a profile
    tiny = backbone_for(tiny_wan_pipeline(num_layers=6))
    assert resolve_imap_settings(tiny)[:2] == ([1, 2, 3], 1)  # no shipped profile: the middle half of the blocks
    with pytest.raises(ValueError, match="top_k"):
        resolve_imap_settings(tiny, [0], top_k=3)


def test_heatmaps_and_entropy():
    flat, peak = np.zeros((2, 4, 4)), np.zeros((2, 4, 4))
    peak[:, 1, 2] = 5.0
    assert spatial_entropy(flat) == pytest.approx(1.0) and spatial_entropy(peak) == pytest.approx(0.0)
    image = heatmap_grid([np.random.default_rng(0).normal(size=(3, 4, 4))] * 2, cell=16)
    assert image.dtype == np.uint8 and image.shape == (16 * 2 + 2, 16 * 3 + 2 * 2, 3)


# ---------------------------------------------------------------------- the monitor in the training loop
@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return training_workspace(tmp_path_factory, "imap-monitor", num_clips=2, seed=1)


def _config(root: Path, out: str, **overrides):
    return train_config(root, out, dict(train_steps=3, train_batch_size=1, checkpointing_steps=0,
                                        report_to="tensorboard", logging_steps=1, rank=4, lora_alpha=8,
                                        max_sequence_length=16, learning_rate=1e-2, lr_scheduler="constant",
                                        caption_dropout=0.25), overrides)


def _event_tags(out_dir: Path) -> dict[str, set]:
    return tensorboard_tags(out_dir / "logs")


def test_imap_monitor_logs_maps_and_does_not_change_training(workspace):
    from motionguide.training.loop import Trainer

    plain = Trainer(_config(workspace, "plain")).run()
    monitored = Trainer(_config(workspace, "monitored", monitor=["imap"],
                                method_options={"imap": {"every": 1, "num_probes": 1}})).run()
    assert monitored["losses"] == plain["losses"]
    tags = _event_tags(workspace / "monitored")
    image_tags = {t for t in tags["images"] if t.startswith("saliency/")}
    assert len(image_tags) == 2, tags["images"]  # the probe caption's noun and motion verb
    assert {f"{t}/entropy" for t in image_tags} <= tags["scalars"]
    assert "saliency/head_stability" in tags["scalars"]
    # the same maps as PNGs plus the scalars as JSON, for reports that have no tracker
    saved = workspace / "monitored" / "imap"
    history = json.loads((saved / "history.json").read_text())
    steps = [entry["step"] for entry in history["history"]]
    assert steps == list(range(1, len(steps) + 1)) and len(history["probes"]) == 1
    for tag in image_tags:
        word = tag.split("/")[1]
        assert sorted(p.name for p in saved.glob(f"{word}_step*.png")) == [f"{word}_step{s:06d}.png" for s in steps]


def test_imap_monitor_scores_masks_and_checkpoints_its_history(workspace):
    from motionguide.training.loop import Trainer

    seen = []

    def masks_fn(clip_id):
        seen.append(clip_id)
        masks = np.zeros((5, 8, 8), bool)
        masks[:, 2:5, 2:5] = True
        return masks

    from motionguide.training.callbacks import TrainerCallback

    processors = []

    class ProcessorCheck(TrainerCallback):  # runs right after the monitor at every step
        def on_step_end(self, ctx, logs):
            processors.extend(type(m.processor).__name__ for m in ctx.transformer.modules() if hasattr(m, "processor"))

    monitor = IMAPMonitor(every=2, num_probes=2, words=["moves", "stays", "</s>"], masks_fn=masks_fn)
    Trainer(_config(workspace, "masked", train_steps=4, checkpointing_steps=3, gradient_checkpointing=True),
            callbacks=[monitor, ProcessorCheck()]).run()
    assert monitor.steps_logged == [2, 4] and len(set(seen)) == 2
    assert processors and set(processors) == {"WanAttnProcessor"}, "the probe must leave the stock processors"
    tags = _event_tags(workspace / "masked")
    assert {"saliency/eos/pointing_game", "saliency/eos/iou", "saliency/eos/entropy"} <= tags["scalars"]
    assert "saliency/eos" in tags["images"]
    state = json.loads((workspace / "masked" / "checkpoint-3" / "trainer_state.json").read_text())
    saved = state["callbacks"]["IMAPMonitor"]
    assert saved["steps_logged"] == [2] and saved["previous_heads"]
    resumed = IMAPMonitor()
    resumed.load_state_dict(saved)
    assert resumed.state_dict() == saved
    assert monitor.history[-1]["step"] == 4 and "saliency/head_stability" in monitor.history[-1]


def test_saliency_command_real_video_and_generated(workspace, tmp_path):
    import argparse

    from motionguide.saliency.cli import add_saliency_command

    parser = argparse.ArgumentParser()
    add_saliency_command(parser.add_subparsers(dest="command"))
    video = sorted((workspace / "data").rglob("*.mp4"))[0]
    common = ["saliency", "--model", str(workspace / "model"), "--prompt", "a red circle moves left",
              "--max_sequence_length", "16", "--num_frames", "9", "--height", "32", "--width", "32"]
    args = parser.parse_args(common + ["--video", str(video), "--words", "circle", "</s>", "--blocks", "0-1",
                                       "--out", str(tmp_path / "real")])
    assert args.func(args) == 0
    summary = json.loads((tmp_path / "real" / "saliency.json").read_text())
    assert summary["mode"] == "real_video" and summary["words"] == ["circle", "</s>"]
    assert summary["shape"] == [2, 3, 2, 2] and sorted(summary["pngs"]) == ["circle.png", "eos.png"]
    with np.load(tmp_path / "real" / "maps.npz") as saved:
        assert saved["imap"].shape == (2, 3, 2, 2) and list(saved["words"]) == ["circle", "</s>"]
    args = parser.parse_args(common + ["--steps", "2", "--window", "0.5", "1", "--out", str(tmp_path / "gen")])
    assert args.func(args) == 0
    summary = json.loads((tmp_path / "gen" / "saliency.json").read_text())
    assert summary["mode"] == "generated" and summary["words"] == ["circle", "moves"] and summary["steps"] == [1]
    with pytest.raises(SystemExit):
        parser.parse_args(common + ["--blocks", "x-y"])


def test_imap_monitor_reads_toy_ground_truth_from_the_config(workspace):
    """`method_options: {imap: {masks_fn: motionguide.toy.truth:clip_masks_fn}}` scores maps against the
    dataset's gt/ masks without code; the older `masks: toy` still works, with a deprecation warning, and gives
    the same scores."""
    from motionguide.training.loop import Trainer

    options = {"every": 1, "num_probes": 1, "words": ["</s>"]}
    Trainer(_config(workspace, "toy-masks", monitor=["imap"], report_to="none", method_options={
        "imap": {**options, "masks_fn": "motionguide.toy.truth:clip_masks_fn"}})).run()
    with pytest.warns(DeprecationWarning, match="masks: toy is deprecated"):
        Trainer(_config(workspace, "toy-masks-alias", monitor=["imap"],
                        method_options={"imap": {**options, "masks": "toy"}})).run()
    tags = _event_tags(workspace / "toy-masks-alias")
    assert {"saliency/eos/pointing_game", "saliency/eos/iou"} <= tags["scalars"]
    history = [json.loads((workspace / out / "imap" / "history.json").read_text())["history"]
               for out in ("toy-masks", "toy-masks-alias")]
    assert history[0] == history[1] and "saliency/eos/iou" in history[0][0]


def test_imap_monitor_rejects_an_unimportable_masks_factory():
    from motionguide.training import get_monitor

    with pytest.raises(ConfigError, match="method_options.imap: unknown key 'evry'. Did you mean 'every'"):
        get_monitor("imap", evry=5)
    with pytest.raises(ConfigError, match="masks_fn: cannot import"):
        IMAPMonitor(masks_fn="motionguide.toy.truth:no_such_function")
    with pytest.raises(ConfigError, match="masks: only the deprecated 'toy'"):
        IMAPMonitor(masks="gt")


def test_default_words_of_every_toy_clause_are_its_shape_and_verb():
    """The caption-word rule (morphology, no word list) names the subject and the verb of every toy clause."""
    from motionguide.toy.vocab import COLORS, MOTIONS, SHAPES

    for color in COLORS:
        for shape in SHAPES:
            assert default_caption_words(f"a {color} {shape} stays still") == [shape, "stays"]
            for motion in MOTIONS[:-1]:
                assert default_caption_words(f"a {color} {shape} moves {motion} quickly") == [shape, "moves"]
                assert default_caption_words(f"a {color} {shape} starts moving {motion} then stops") == \
                    [shape, "moving"]
    assert default_caption_words("A dog is running on the beach") == ["dog", "running"]
    assert default_caption_words("a glass of water on a table") == ["glass", "table"]


def test_imap_monitor_standalone_probes_any_transformer_and_logs_through_any_tracker():
    """Outside the Trainer: set_probes from tensors, probe at a step, log to a plain tracker and to a
    TensorBoard-like one (images there); probing twice is deterministic and gives head stability 1."""
    pipe = tiny_wan_pipeline()
    g = torch.Generator().manual_seed(0)
    latents, embeds = torch.randn(2, 16, 3, 8, 8, generator=g), torch.randn(2, 16, 32, generator=g)
    captions = ["a red circle moves left", "a blue square stays still"]
    monitor = IMAPMonitor(every=1, blocks=[0, 1], top_k=1)
    monitor.set_probes(pipe, latents, embeds, captions, ids=["c0", "c1"])
    assert [p.clip_id for p in monitor.probes] == ["c0", "c1"]
    first = monitor.probe(step=1)
    assert set(first.grids) == {"circle", "moves", "square", "stays"}
    assert all(len(maps) == 1 and maps[0].shape == (3, 4, 4) for maps in first.maps.values())
    assert "saliency/head_stability" not in first.scalars
    second = monitor.probe(pipe.transformer, step=2)
    assert second.scalars["saliency/head_stability"] == 1.0
    for tag in first.maps:
        np.testing.assert_array_equal(first.maps[tag][0], second.maps[tag][0])

    class Plain:
        def __init__(self):
            self.logged = []

        def log(self, values, step=None):
            self.logged.append((step, dict(values)))

    class Writer:
        def __init__(self):
            self.images = []

        def add_image(self, tag, image, step, dataformats):
            self.images.append((tag, step, image.shape, dataformats))

    class TensorBoardLike(Plain):
        name = "tensorboard"

        def __init__(self):
            super().__init__()
            self.writer = Writer()

    plain, board = Plain(), TensorBoardLike()
    monitor.log(plain)
    monitor.log(board, step=7)
    assert plain.logged == [(2, second.scalars)] and board.logged == [(7, second.scalars)]
    assert sorted(t for t, *_ in board.writer.images) == sorted(f"saliency/{w}" for w in second.grids)
    assert all(step == 7 and dataformats == "HWC" for _, step, _, dataformats in board.writer.images)
    with pytest.raises(ConfigError, match="one latent, one prompt embedding and one id per caption"):
        monitor.set_probes(pipe, latents, embeds, captions[:1])
