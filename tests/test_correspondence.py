"""DiffTrack correspondences: matching costs vs a dense reference, tracks, CAG vs three separate passes."""

import json
import math

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from motionguide.attention import AttentionCapture, AttentionController, ForwardInfo, InstrumentError
from motionguide.backbones import GuidanceProfile, LayerProfile, TokenGrid, TrackingProfile, backbone_for
from motionguide.correspondence import (
    CorrespondenceAccumulator, CorrespondenceGuidance, correspondence_guided, latent_frame_times,
    latent_to_pixel_tracks, track_generation, track_video, tracks_from_costs,
)
from motionguide.errors import ConfigError
from motionguide.sampling import get_guidance
from motionguide.testing import tiny_cogvideox_pipeline, tiny_wan_pipeline, tiny_wan_transformer

from helpers import wan_inputs

PIPE_KW = dict(num_frames=9, height=16, width=16, num_inference_steps=2, max_sequence_length=16,
               output_type="latent")


# ---------------------------------------------------------------------- references written from the equations
def dense_pair_cost(q, k, grid, j, tau, direction="bidirectional"):
    """Full [H, S, S] logits (test only), then each direction's softmax restricted to the frame pair."""
    logits = (q.double() @ k.double().transpose(-1, -2)) / tau  # [H, S, S]
    p = grid.tokens_per_frame
    f0, fj = slice(0, p), slice(j * p, (j + 1) * p)
    fwd = logits[:, f0, fj].softmax(-1).mean(0)  # rows: frame-0 queries, softmax over frame-j keys
    bwd = logits[:, fj, f0].softmax(-1).mean(0).T  # rows: frame-j queries, softmax over frame-0 keys
    return {"forward": fwd, "backward": bwd, "bidirectional": (fwd + bwd) / 2}[direction].float()


def fake_capture(q, k, grid, block=0, out=None, step=None):
    info = ForwardInfo(forward_id=0, grid=grid, batch_size=q.shape[0], step_index=step)
    return AttentionCapture(block=block, attention="self", info=info, query=q, key=k,
                            output=out if out is not None else q, text_len=0)


# ---------------------------------------------------------------------- matching costs
@pytest.mark.parametrize("temperature", ["sqrt_dim", "sqrt_heads"])
@pytest.mark.parametrize("direction", ["bidirectional", "forward", "backward"])
def test_pair_cost_equals_dense_reference(temperature, direction):
    grid, heads, dim = TokenGrid(3, 2, 3), 4, 8
    q, k = torch.randn(1, heads, grid.num_tokens, dim), torch.randn(1, heads, grid.num_tokens, dim)
    acc = CorrespondenceAccumulator([0], direction=direction, temperature=temperature, chunk_elements=40)
    acc(fake_capture(q, k, grid))
    tau = math.sqrt(dim) if temperature == "sqrt_dim" else math.sqrt(heads)
    for j in (1, 2):
        torch.testing.assert_close(acc.cost(j), dense_pair_cost(q[0], k[0], grid, j, tau, direction),
                                   atol=1e-5, rtol=1e-5)


def test_aggregation_sums_logits_and_feature_baseline_is_a_plain_dot_product():
    grid, heads, dim = TokenGrid(2, 2, 2), 2, 4
    q1, k1, q2, k2 = (torch.randn(1, heads, grid.num_tokens, dim) for _ in range(4))
    acc = CorrespondenceAccumulator([3, 5])
    acc(fake_capture(q1, k1, grid, block=3))
    acc(fake_capture(q2, k2, grid, block=5))
    acc(fake_capture(q2, k2, grid, block=7))  # not one of the accumulator's blocks: ignored
    assert acc.count == 2
    # mean of the two blocks' logits == concatenated channels / count
    qc, kc = torch.cat([q1, q2], -1)[0], torch.cat([k1, k2], -1)[0]
    torch.testing.assert_close(acc.cost(1), dense_pair_cost(qc, kc, grid, 1, 2 * math.sqrt(dim)), atol=1e-5, rtol=1e-5)

    out = torch.randn(1, heads, grid.num_tokens, dim)
    feats = CorrespondenceAccumulator([0], descriptor="output")
    feats(fake_capture(q1, k1, grid, out=out))
    f = out[0].transpose(0, 1).flatten(1)  # [S, H*D] heads concatenated
    torch.testing.assert_close(feats.cost(1), f[:4] @ f[4:].T, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_cost_from_a_real_wan_capture_uses_video_self_attention_q_k():
    transformer = tiny_wan_transformer()
    events, acc = [], CorrespondenceAccumulator([1])
    with AttentionController(transformer).capture(lambda c: (events.append((c.video_query().clone(),
                                                                            c.video_key().clone())), acc(c)),
                                                  blocks=[1]):
        transformer(**wan_inputs(transformer))
    (q, k), = events
    grid = acc.grid
    assert grid.as_tuple() == (3, 4, 4)
    torch.testing.assert_close(acc.cost(2), dense_pair_cost(q[0], k[0], grid, 2, math.sqrt(12)), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_pre_rope_descriptor_matches_the_normalised_projections_without_rotation():
    """Reference: block 1's own `norm_q` / `norm_k` outputs (before Wan rotates them), read with forward hooks."""
    transformer = tiny_wan_transformer()
    attn = transformer.blocks[1].attn1
    seen = {}
    hooks = [attn.norm_q.register_forward_hook(lambda m, a, out: seen.__setitem__("q", out)),
             attn.norm_k.register_forward_hook(lambda m, a, out: seen.__setitem__("k", out))]
    acc, with_rope = CorrespondenceAccumulator([1], descriptor="qk_no_rope"), CorrespondenceAccumulator([1])
    controller = AttentionController(transformer)
    with acc.capturing(controller), controller.capture(with_rope, blocks=[1]):
        transformer(**wan_inputs(transformer))
    for hook in hooks:
        hook.remove()
    q = seen["q"].unflatten(-1, (attn.heads, -1)).transpose(1, 2)[0]  # [H, S, D]
    k = seen["k"].unflatten(-1, (attn.heads, -1)).transpose(1, 2)[0]
    torch.testing.assert_close(acc.cost(2), dense_pair_cost(q, k, acc.grid, 2, math.sqrt(12)), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(acc.cost(2), with_rope.cost(2), atol=1e-3)
    with pytest.raises(ValueError, match="descriptor must be one of"):
        CorrespondenceAccumulator([1], descriptor="qk_pre")


def test_mixed_descriptor_adds_weighted_pre_rope_logits():
    grid, heads, dim, weight = TokenGrid(2, 2, 3), 3, 8, 4.0
    q, k, q_pre, k_pre = (torch.randn(1, heads, grid.num_tokens, dim) for _ in range(4))
    capture = fake_capture(q, k, grid)
    capture.query_pre_rope, capture.key_pre_rope = q_pre, k_pre
    acc = CorrespondenceAccumulator([0], descriptor="qk_mixed", content_weight=weight)
    acc(capture)
    assert acc.count == 2 and acc.pre_rope
    # logits (q.k + w q~.k~) / (2 tau): the dense reference on channel-stacked descriptors gives exactly that
    stacked_q = torch.cat([q[0], q_pre[0] * weight ** 0.5], -1)
    stacked_k = torch.cat([k[0], k_pre[0] * weight ** 0.5], -1)
    torch.testing.assert_close(acc.cost(1), dense_pair_cost(stacked_q, stacked_k, grid, 1, 2 * math.sqrt(dim)),
                               atol=1e-5, rtol=1e-5)
    logits = (q[0] @ k[0].transpose(-1, -2) + weight * q_pre[0] @ k_pre[0].transpose(-1, -2)) / (2 * math.sqrt(dim))
    forward = logits[:, :6, 6:].softmax(-1).mean(0)
    backward = logits[:, 6:, :6].softmax(-1).mean(0).T
    torch.testing.assert_close(acc.cost(1), (forward + backward) / 2, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="content_weight must be a positive"):
        CorrespondenceAccumulator([0], descriptor="qk_mixed", content_weight=0)
    with pytest.raises(ValueError, match="pre_rope=True"):
        CorrespondenceAccumulator([0], descriptor="qk_mixed")(fake_capture(q, k, grid))


class MaxTensorSize(TorchDispatchMode):
    """Records the largest tensor any aten op allocates (views of existing storage excluded): every tensor the
    computation creates passes through here, so this is what it really holds, not what it claims to."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        existing = {a.untyped_storage().data_ptr() for a in [*args, *(kwargs or {}).values()]
                    if isinstance(a, torch.Tensor)}
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in existing:
                self.largest = max(self.largest, t.numel())
        return out


def test_costs_never_create_a_sequence_by_sequence_tensor():
    grid, heads, dim = TokenGrid(9, 8, 8), 4, 8  # S = 576 video tokens, P = 64 per frame
    p, s = grid.tokens_per_frame, grid.num_tokens
    acc = CorrespondenceAccumulator([0], chunk_elements=2 * p * p)  # one head per chunk
    acc(fake_capture(torch.randn(1, heads, s, dim), torch.randn(1, heads, s, dim), grid))
    with MaxTensorSize() as probe:
        for cost in acc.costs():
            assert cost.shape == (p, p)
    assert probe.largest <= p * p  # one head's frame-pair logits; S x S would be 81x larger (x heads)
    assert probe.largest < s * s


# ---------------------------------------------------------------------- tracks
def shift_cost(h, w, dx, dy, peak=1.0):
    """Each source token matches the token (dx, dy) away (clamped to the grid)."""
    cost = torch.full((h * w, h * w), 1e-3)
    for r in range(h):
        for c in range(w):
            rr, cc = min(max(r + dy, 0), h - 1), min(max(c + dx, 0), w - 1)
            cost[r * w + c, rr * w + cc] = peak
    return cost


def test_zero_motion_is_identity_and_a_token_shift_moves_by_that_many_tokens():
    grid, s = TokenGrid(3, 6, 8), 16
    queries = np.array([[0.0, 0.0], [127.0, 95.0], [37.3, 51.9], [8.0, 88.5]])  # borders and sub-token points
    still = tracks_from_costs([torch.eye(48), torch.eye(48)], queries, grid, s)
    assert still.shape == (4, 3, 2)
    torch.testing.assert_close(still, torch.tensor(queries, dtype=torch.float32).unsqueeze(1).expand(-1, 3, -1))

    inner = np.array([[20.0, 17.0], [55.5, 40.2], [70.0, 60.0]])  # all bilinear neighbours have a valid shift
    moved = tracks_from_costs([shift_cost(6, 8, 1, 0), shift_cost(6, 8, 2, 1)], inner, grid, s)
    expected = torch.tensor(inner, dtype=torch.float32)
    torch.testing.assert_close(moved[:, 1], expected + torch.tensor([16.0, 0.0]))
    torch.testing.assert_close(moved[:, 2], expected + torch.tensor([32.0, 16.0]))

    with pytest.raises(ValueError, match="latent frames"):
        tracks_from_costs([torch.eye(48)], queries, grid, s)


def test_token_centre_convention():
    # a query at the centre of token (r=2, c=3) with s=16 is pixel (3.5*16-0.5, 2.5*16-0.5); shift by (+1, -1)
    grid, s = TokenGrid(2, 5, 6), 16
    centre = np.array([[3.5 * s - 0.5, 2.5 * s - 0.5]])
    moved = tracks_from_costs([shift_cost(5, 6, 1, -1)], centre, grid, s)
    torch.testing.assert_close(moved[0, 1], torch.tensor([4.5 * s - 0.5, 1.5 * s - 0.5]))


def test_soft_argmax_matches_argmax_on_a_peaked_cost_and_interpolates_a_split_peak():
    grid, s = TokenGrid(2, 6, 8), 16
    queries = np.array([[40.0, 40.0], [70.0, 30.0]])
    peaked = shift_cost(6, 8, 1, 1, peak=50.0)
    hard = tracks_from_costs([peaked], queries, grid, s)
    soft = tracks_from_costs([peaked], queries, grid, s, method="soft_argmax")
    torch.testing.assert_close(soft, hard, atol=0.2, rtol=0)
    split = torch.zeros(48, 48)  # every token's mass split evenly between itself and its right neighbour
    for p in range(48):
        split[p, p] = split[p, p + 1 if (p % 8) < 7 else p] = 0.5
    soft = tracks_from_costs([split], np.array([[40.0, 40.0]]), grid, s, method="soft_argmax")
    assert abs(float(soft[0, 1, 0]) - (40.0 + 8.0)) < 1e-4  # half a token to the right


def test_latent_to_pixel_interpolation_follows_the_causal_vae_map():
    backbone = backbone_for(tiny_wan_transformer())
    times = latent_frame_times(5, 4)
    assert times.tolist() == [0.0, 2.5, 6.5, 10.5, 14.5]  # latent k >= 1 sits at the centre of 4k-3..4k
    for k in range(1, 5):
        frames = list(backbone.pixel_frames_of_latent(k))
        assert min(frames) <= times[k] <= max(frames)
    x = lambda t: 10.0 + 2.0 * t  # noqa: E731 - a point moving 2 px per frame
    latent = torch.stack([torch.stack([x(t), 5.0 + 0 * t]) for t in times]).unsqueeze(0)  # [1, 5, 2]
    pixel = latent_to_pixel_tracks(latent, temporal_stride=4)
    assert pixel.shape == (1, 17, 2)
    assert float(pixel[0, 0, 0]) == float(latent[0, 0, 0])  # frame 0 is latent 0
    exact = torch.tensor([x(float(t)) for t in range(15)])
    torch.testing.assert_close(pixel[0, :15, 0], exact)  # linear motion recovered up to the last latent centre
    assert pixel[0, 15:, 0].tolist() == [float(latent[0, 4, 0])] * 2  # held after it
    # changing latent k moves exactly the frames interpolated from it: its own 4k-3..4k among them
    bumped = latent.clone()
    bumped[0, 2, 0] += 100
    changed = (latent_to_pixel_tracks(bumped) != pixel)[0, :, 0].nonzero().flatten().tolist()
    assert set(backbone.pixel_frames_of_latent(2)) <= set(changed) and changed == list(range(3, 11))  # (2.5, 10.5)


# ---------------------------------------------------------------------- CAG on the classic pipelines
@pytest.fixture(scope="module")
def wan_pipe():
    return tiny_wan_pipeline()


@pytest.fixture(scope="module")
def cog_pipe():
    return tiny_cogvideox_pipeline(rotary=True)


def record_scheduler_inputs(pipe):
    """Wrap the scheduler's step on the instance (test only) to record (model_output, t, sample)."""
    seen, step = [], pipe.scheduler.step

    def recording(model_output, timestep, sample, *args, **kwargs):
        seen.append((model_output.clone(), timestep, sample.clone()))
        return step(model_output, timestep, sample, *args, **kwargs)

    pipe.scheduler.step = recording
    return seen


def embeds(pipe, prompt, max_len):
    backbone = backbone_for(pipe)
    return backbone.encode_prompt([prompt], max_sequence_length=max_len)


def three_pass_reference(pipe, latents, t, cond, uncond, w, s, blocks, renormalize, in_window):
    """v_u + w (v_c - v_u) + s (v_c - v_ptb) from separate transformer calls (pipeline latent layout)."""
    backbone = backbone_for(pipe)
    x = backbone.from_transformer_layout(latents)
    tt = t.reshape(1)
    with torch.no_grad():
        v_c = backbone.predict(x, tt, cond)
        v = v_c
        if w > 1:
            v_u = backbone.predict(x, tt, uncond)
            v = v_u + w * (v_c - v_u)
        if in_window:
            with AttentionController(pipe).frame_local(blocks=blocks, renormalize=renormalize):
                v_ptb = backbone.predict(x, tt, cond)
            v = v + s * (v_c - v_ptb)
    return backbone.to_transformer_layout(v)


def stock_state(pipe):
    backbone = backbone_for(pipe)
    procs = [backbone.video_self_attention(i).processor for i in range(backbone.num_blocks)]
    return pipe.transformer, procs, dict(pipe.config)


@pytest.mark.parametrize("which,w,renormalize,blocks", [
    ("wan", 5.0, False, [0, 1]), ("wan", 1.0, False, [0, 1]), ("cog", 6.0, True, [0, 1]),
    ("wan", 5.0, False, [1]), ("cog", 6.0, False, [1]),  # block 0 is a prefix the perturbed pass reuses
    ("wan", 1.0, False, [1]), ("cog", 1.0, True, [1]),  # ... also without CFG (conditional-only calls)
])
def test_cag_equals_three_separate_passes_inside_the_window_and_cfg_outside(which, w, renormalize, blocks, wan_pipe,
                                                                           cog_pipe):
    pipe = wan_pipe if which == "wan" else cog_pipe
    max_len = 16
    cond, uncond = embeds(pipe, "a red circle moves left", max_len), embeds(pipe, "", max_len)
    before = stock_state(pipe)
    seen = record_scheduler_inputs(pipe)
    try:
        with correspondence_guided(pipe, scale=0.7, blocks=blocks, window=(0.5, 1.0), renormalize=renormalize) as proxy:
            pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, guidance_scale=w,
                 generator=torch.Generator().manual_seed(0), **{k: v for k, v in PIPE_KW.items()
                                                                 if k != "max_sequence_length"})
    finally:
        del pipe.scheduler.step
    assert proxy.perturbed_calls == 1  # two steps; the window [0.5, 1) holds only step 1
    assert len(seen) == 2
    for i, (guided, t, latents) in enumerate(seen):
        ref = three_pass_reference(pipe, latents, t, cond, uncond, w, 0.7, blocks, renormalize, in_window=i == 1)
        torch.testing.assert_close(guided.float(), ref.float(), atol=1e-5, rtol=1e-5)
    after = stock_state(pipe)
    assert after[0] is before[0] and all(a is b for a, b in zip(after[1], before[1])) and after[2] == before[2]


def test_guided_pipelines_run_end_to_end_and_leave_the_stock_pipeline_unchanged(wan_pipe, cog_pipe):
    for pipe in (wan_pipe, cog_pipe):
        transformer, procs, config = stock_state(pipe)
        stock = pipe("a red circle", generator=torch.Generator().manual_seed(0), **PIPE_KW).frames
        guide = get_guidance("correspondence", scale=1.0, blocks=[1])
        guided = guide(pipe, prompt="a red circle", generator=torch.Generator().manual_seed(0), **PIPE_KW).frames
        assert torch.isfinite(guided).all() and not torch.equal(guided, stock)
        assert pipe.transformer is transformer and type(pipe.transformer).__name__.endswith("Model")
        assert [backbone_for(pipe).video_self_attention(i).processor for i in range(2)] == procs
        assert dict(pipe.config) == config
        for module in [transformer, *backbone_for(pipe).blocks]:  # prefix-reuse hooks on block 0 are gone
            assert not getattr(module, "_diffusers_hook", None) or not module._diffusers_hook.hooks
        again = pipe("a red circle", generator=torch.Generator().manual_seed(0), **PIPE_KW).frames
        assert torch.equal(again, stock)


@pytest.mark.parametrize("which", ["wan", "cog"])
def test_prefix_reuse_skips_the_blocks_before_the_first_guidance_block_and_changes_nothing(which, wan_pipe, cog_pipe):
    pipe = wan_pipe if which == "wan" else cog_pipe
    calls = []
    hook = backbone_for(pipe).video_self_attention(0).register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        outputs = {}
        for reuse in (True, False):
            calls.clear()
            guide = get_guidance("correspondence", scale=1.0, blocks=[1], reuse_prefix=reuse)
            outputs[reuse] = guide(pipe, prompt="a red circle", generator=torch.Generator().manual_seed(0),
                                   guidance_scale=5.0, **PIPE_KW).frames
            outputs[f"calls{reuse}"] = len(calls)
    finally:
        hook.remove()
    # Wan: cond + uncond + perturbed passes per step, 2 steps; CogVideoX: one batched CFG pass + perturbed
    passes = 3 if which == "wan" else 2
    assert outputs["callsFalse"] == 2 * passes and outputs["callsTrue"] == 2 * (passes - 1)
    if which == "wan":  # the same computation on the same rows: bit-identical
        assert torch.equal(outputs[True], outputs[False])
    else:  # the prefix ran on the [uncond; cond] batch, not the conditional row alone: equal up to rounding
        torch.testing.assert_close(outputs[True], outputs[False], atol=1e-5, rtol=1e-5)


def test_prefix_reuse_steps_aside_for_other_diffusers_hooks(wan_pipe):
    from diffusers.hooks import HookRegistry, ModelHook

    block = backbone_for(wan_pipe).blocks[0]
    registry = HookRegistry.check_if_exists_or_initialize(block)
    registry.register_hook(ModelHook(), "someone_elses_cache")
    calls = []
    hook = backbone_for(wan_pipe).video_self_attention(0).register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        guide = get_guidance("correspondence", scale=1.0, blocks=[1])
        guide(wan_pipe, prompt="a red circle", generator=torch.Generator().manual_seed(0), guidance_scale=5.0,
              **PIPE_KW)
    finally:
        hook.remove()
        registry.remove_hook("someone_elses_cache", recurse=False)
    assert len(calls) == 2 * 3  # block 0 ran in the perturbed pass too: its hooks saw every pass


def test_guidance_needs_a_profile_when_none_ships_and_refuses_other_backends(wan_pipe):
    with pytest.raises(ConfigError, match="analyze-layers"):
        with correspondence_guided(wan_pipe, scale=1.0):
            pass
    processor = wan_pipe.transformer.blocks[1].attn1.processor
    processor._attention_backend = "flash"
    try:
        with pytest.raises(InstrumentError, match="native"):
            with correspondence_guided(wan_pipe, blocks=[1]):
                pass
    finally:
        processor._attention_backend = None
    assert wan_pipe.transformer.blocks[1].attn1.processor is processor


def tiny_profile(path, num_blocks=2, heads=2):
    return LayerProfile(name="tiny-wan", family="wan", num_blocks=num_blocks, num_heads=heads,
                        tracking=TrackingProfile(block=1, step=-1, num_inference_steps=2),
                        guidance=GuidanceProfile(blocks=[0, 1], window=(0.0, 1.0), scale=1.0)).save(path)


@pytest.fixture(scope="module")
def wan_dir(wan_pipe, tmp_path_factory):
    path = tmp_path_factory.mktemp("corr") / "model"
    wan_pipe.save_pretrained(path)
    return path


def test_generate_script_with_correspondence_guidance_writes_videos(wan_dir, tmp_path, capsys):
    from motionguide.sampling.cli import main

    profile = tiny_profile(tmp_path / "tiny.yaml")
    args = ["--model", str(wan_dir), "--prompt", "a red circle moves left", "--num_frames", "9",
            "--height", "16", "--width", "16", "--steps", "2", "--max_sequence_length", "16",
            "--guidance", "correspondence"]
    assert main([*args, "--out", str(tmp_path / "none")]) == 2
    assert "analyze-layers" in capsys.readouterr().err
    assert main([*args, "--profile", str(profile), "--correspondence_scale", "1.5", "--out", str(tmp_path / "s")]) == 0
    listing = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert len(listing) == 1 and (tmp_path / "s" / listing[0]["file"]).is_file()


# ---------------------------------------------------------------------- the modular guider
def test_guider_forward_applies_the_formula_in_and_out_of_its_window():
    g = CorrespondenceGuidance(guidance_scale=4.0, correspondence_scale=0.5, correspondence_blocks=[0],
                               correspondence_start=0.5, correspondence_stop=1.0)
    v_c, v_u, v_p = torch.randn(3, 2, 5).unbind(0)
    g.set_state(step=3, num_inference_steps=4, timestep=torch.tensor(10))
    assert g.num_conditions == 3
    torch.testing.assert_close(g.forward(v_c, v_u, v_p).pred, v_u + 4 * (v_c - v_u) + 0.5 * (v_c - v_p))
    g.set_state(step=1, num_inference_steps=4, timestep=torch.tensor(10))
    assert g.num_conditions == 2
    torch.testing.assert_close(g.forward(v_c, v_u).pred, v_u + 4 * (v_c - v_u))
    with pytest.raises(ValueError, match="correspondence_blocks"):
        CorrespondenceGuidance()


def test_modular_wan_with_the_guider_matches_the_classic_adapter(wan_pipe):
    from diffusers.guiders import ClassifierFreeGuidance
    from diffusers.modular_pipelines import WanBlocks

    pipe = wan_pipe
    modular = WanBlocks().init_pipeline()
    modular.update_components(transformer=pipe.transformer, vae=pipe.vae, text_encoder=pipe.text_encoder,
                              tokenizer=pipe.tokenizer, scheduler=pipe.scheduler)
    kw = dict(prompt="a red circle moves left", negative_prompt="", num_frames=9, height=16, width=16,
              num_inference_steps=2, max_sequence_length=16)
    procs = stock_state(pipe)[1]

    def run_modular(guider):
        modular.update_components(guider=guider)
        return modular(generator=torch.Generator().manual_seed(0), output="latents", **kw)

    guider = CorrespondenceGuidance.from_profile(LayerProfile.from_dict(tiny_profile_dict()), pipe.transformer,
                                                 guidance_scale=5.0, scale=0.8)
    assert guider.correspondence_blocks == [0, 1]
    guided = run_modular(guider)
    assert stock_state(pipe)[1] == procs  # frame-local switched off again after the perturbed branch
    with correspondence_guided(pipe, scale=0.8, blocks=[0, 1]):
        classic = pipe(generator=torch.Generator().manual_seed(0), guidance_scale=5.0, output_type="latent",
                       **kw).frames
    torch.testing.assert_close(guided, classic, atol=1e-5, rtol=1e-5)
    plain = run_modular(ClassifierFreeGuidance(guidance_scale=5.0))
    off = run_modular(CorrespondenceGuidance(guidance_scale=5.0, correspondence_scale=0.0, correspondence_blocks=[0]))
    assert torch.equal(off, plain) and not torch.equal(guided, plain)


def tiny_profile_dict():
    return {"name": "tiny-wan", "family": "wan", "num_blocks": 2, "num_heads": 2,
            "tracking": {"block": 1, "step": -1, "num_inference_steps": 50},
            "guidance": {"blocks": [0, 1], "window": [0.0, 1.0], "scale": 1.0}}


# ---------------------------------------------------------------------- zero-shot tracking
def test_track_video_returns_finite_tracks_for_every_frame(wan_pipe, cog_pipe):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(7, 64, 64, 3), dtype=np.uint8)  # 4x4 tokens per frame
    queries = np.array([[4.0, 4.0], [20.5, 11.0], [63.0, 63.0]])
    tracks = track_video(wan_pipe, frames, queries, block=1, timestep=50.0, chunk_size=4, max_sequence_length=16)
    assert tracks.shape == (3, 7, 2) and np.isfinite(tracks).all()
    np.testing.assert_array_equal(tracks[:, 0], queries.astype(np.float32))
    assert tracks.min() >= -0.5 and tracks.max() <= 63.5  # matches stay inside the frame
    with pytest.raises(ConfigError, match="analyze-layers"):
        track_video(wan_pipe, frames, queries, max_sequence_length=16)  # no block/timestep and no shipped profile
    cog = track_video(cog_pipe, frames[:5], queries, block=1, timestep=50.0, chunk_size=2)  # joint text+video
    assert cog.shape == (3, 5, 2) and np.isfinite(cog).all()


def test_tracking_refuses_points_off_the_frame_and_one_frame_videos(wan_pipe):
    frames = np.zeros((5, 64, 64, 3), np.uint8)
    kw = dict(block=1, timestep=50.0, max_sequence_length=16)
    with pytest.raises(ValueError, match=r"query point 1 \(x=64, y=3\) is outside the 64x64 frame; valid: "
                                         r"-0.5 <= x <= 63.5"):
        track_video(wan_pipe, frames, [[3.0, 3.0], [64.0, 3.0]], **kw)
    with pytest.raises(ValueError, match="outside"):
        track_video(wan_pipe, frames, [[3.0, float("nan")]], **kw)
    with pytest.raises(ValueError, match="at least 2 frames; this one has 1"):
        track_video(wan_pipe, frames[:1], [[3.0, 3.0]], **kw)
    with pytest.raises(ValueError, match=r"outside the 16x16 frame"):
        track_generation(wan_pipe, [[20.0, 1.0]], block=1, step=-1, prompt="a red circle", **PIPE_KW)


def test_track_generation_reads_the_requested_step_and_covers_every_frame(wan_pipe):
    queries = np.array([[8.0, 8.0], [30.0, 41.0]])
    kw = dict(PIPE_KW, prompt="a red circle", height=64, width=64)  # 4x4 tokens per latent frame
    results = {}
    for step in (0, -1):
        tracks, out = track_generation(wan_pipe, queries, block=1, step=step, method="soft_argmax",
                                       generator=torch.Generator().manual_seed(0), **kw)
        assert tracks.shape == (2, 9, 2) and np.isfinite(tracks).all()
        # the same sample, captured with the controller's own step filter (Wan reports step indices)
        acc = CorrespondenceAccumulator([1])
        with acc.capturing(AttentionController(wan_pipe), steps={step % 2}):
            again = wan_pipe(generator=torch.Generator().manual_seed(0), **kw).frames
        assert torch.equal(again, out.frames) and acc.seen == [(1, step % 2)]
        expected = latent_to_pixel_tracks(acc.tracks(queries, 16, method="soft_argmax")).numpy()
        np.testing.assert_allclose(tracks, expected, atol=1e-5)
        results[step] = tracks
    assert not np.allclose(results[0], results[-1])  # the two steps really give different matches
    from_profile, _ = track_generation(wan_pipe, queries, profile=LayerProfile.from_dict(tiny_profile_dict()),
                                       method="soft_argmax", generator=torch.Generator().manual_seed(0), **kw)
    np.testing.assert_allclose(from_profile, results[-1])  # the profile's tracking block 1 at its last step


def test_track_command_writes_tracks_and_scores_them_against_ground_truth(wan_dir, tmp_path, capsys):
    import argparse

    from motionguide.correspondence.cli import add_correspondence_commands, parse_points
    from motionguide.video import write_video

    parser = argparse.ArgumentParser()
    add_correspondence_commands(parser.add_subparsers(dest="command"))
    rng = np.random.default_rng(0)
    write_video(tmp_path / "clip.mp4", rng.integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8))
    gt = np.tile(np.array([[[4.0, 4.0]], [[20.0, 11.0]]], np.float32), (1, 5, 1))
    np.savez(tmp_path / "gt.npz", tracks=gt, visibility=np.ones((2, 5), bool))
    common = ["track", "--model", str(wan_dir), "--video", str(tmp_path / "clip.mp4"), "--block", "1",
              "--timestep", "50", "--chunk-size", "2", "--max-sequence-length", "16"]
    args = parser.parse_args([*common, "--gt", str(tmp_path / "gt.npz"), "--out", str(tmp_path / "t.json")])
    assert args.func(args) == 0
    result = json.loads((tmp_path / "t.json").read_text())
    tracks = np.asarray(result["tracks"])
    assert tracks.shape == (2, 5, 2)
    error = np.linalg.norm(tracks - gt, axis=-1)  # every point is visible in every frame
    token_px = 16  # the tiny Wan: 8x VAE downsampling, 2x2 patches
    assert result["metrics"]["pck@1tok"] == pytest.approx(100 * np.mean(error <= token_px))
    assert result["metrics"]["pck@0.5tok"] == pytest.approx(100 * np.mean(error <= token_px / 2))
    tap_vid = [100 * np.mean(error <= t) for t in (1, 2, 4, 8, 16)]  # TAP-Vid thresholds, in pixels at scale 1
    assert result["metrics"]["delta_avg"] == pytest.approx(np.mean(tap_vid))
    args = parser.parse_args([*common, "--points", "3,3;9,9;30,2", "--out", str(tmp_path / "p.json")])
    assert args.func(args) == 0 and np.asarray(json.loads((tmp_path / "p.json").read_text())["tracks"]).shape[0] == 3
    args = parser.parse_args([*common, "--points", "3,3;9,9", "--descriptor", "qk_no_rope",
                              "--out", str(tmp_path / "t.npz"), "--viz", str(tmp_path / "t.mp4")])
    assert args.func(args) == 0
    with np.load(tmp_path / "t.npz") as saved:
        assert saved["tracks"].shape == (2, 5, 2) and saved["queries"].tolist() == [[3, 3], [9, 9]]
        assert json.loads(str(saved["info"]))["settings"]["descriptor"] == "qk_no_rope"
    from motionguide.video import read_video

    assert read_video(tmp_path / "t.mp4").shape[0] == 5
    with pytest.raises(ValueError, match="x,y pairs"):
        parse_points("3;4")
