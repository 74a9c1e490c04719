"""Wan2.2: what differs from Wan2.1, checked against the stock pipeline and the configs' own numbers.

TI2V-5B: the 48-channel VAE that compresses 16x16 spatially, and per-token timesteps (`expand_timesteps`).
T2V-A14B: two experts, `transformer` for t >= boundary_ratio x 1000 and `transformer_2` below; every method runs
on the expert that owns its timestep. The shared method tests (guidance, saliency, Motive, LoRA, tracking) run on
both in tests/test_family_matrix.py; this file holds what only Wan2.2 has.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from helpers import MatrixProjector, train_config, training_workspace

from motionguide.attention import AttentionController
from motionguide.backbones import ProvisionalProfileWarning, backbone_for
from motionguide.backbones.reference_configs import build_on_meta
from motionguide.backbones.wan import WanBackbone
from motionguide.errors import ConfigError
from motionguide.testing import tiny_wan22_a14b_pipeline, tiny_wan22_ti2v_pipeline, tiny_wan22_vae, tiny_wan_pipeline

PIPE_KW = dict(num_frames=9, height=16, width=16, num_inference_steps=3, max_sequence_length=16,
               output_type="latent")


@pytest.fixture(scope="module")
def a14b():
    return tiny_wan22_a14b_pipeline()


@pytest.fixture(scope="module")
def ti2v():
    return tiny_wan22_ti2v_pipeline()


def _record_attn1_inputs(pipe, block=1):
    """(attention module, hidden states) of every call of `block`'s attn1 in either expert, in call order."""
    calls, handles = [], []
    for expert in (pipe.transformer, pipe.transformer_2):
        module = expert.blocks[block].attn1
        handles.append(module.register_forward_pre_hook(
            lambda mod, args, kwargs: calls.append((mod, kwargs.get("hidden_states", args[0] if args else None))),
            with_kwargs=True))
    return calls, handles


# ---------------------------------------------------------------------------------------------- T2V-A14B
def test_the_boundary_is_ratio_times_train_steps_and_751_belongs_to_the_low_noise_expert(a14b):
    backbone = backbone_for(a14b)
    assert backbone.boundary_timestep == pytest.approx(875.0)
    assert [backbone.expert_index(t) for t in (1000.0, 875.0, 874.9, 751.0, 0.0)] == [0, 0, 1, 1, 1]
    low = backbone.for_timestep(751.0)
    assert low.transformer is a14b.transformer_2 and low.expert == 1 and low.vae is a14b.vae
    assert backbone.for_timestep(900.0) is backbone
    assert backbone_for(tiny_wan_pipeline()).boundary_timestep is None  # Wan2.1: one transformer, no boundary


def test_the_motive_pass_differentiates_the_expert_that_owns_t_fix_and_records_it(a14b):
    from motionguide.motive.featurizer import CommonRandomness, GradientFeaturizer, select_parameters

    backbone = backbone_for(a14b)
    projector = lambda sizes: SimpleNamespace(describe=lambda: {"name": "none"})  # noqa: E731 (nothing projected)
    low = GradientFeaturizer(backbone, projector, CommonRandomness(timestep=751.0), scope="all")
    high = GradientFeaturizer(backbone, projector, CommonRandomness(timestep=900.0), scope="all")
    owned = {id(p) for _, p in select_parameters(a14b.transformer_2, "all", None)}
    assert {id(p) for _, p in low.named} == owned and low.describe()["expert"] == 1
    assert not owned & {id(p) for _, p in high.named} and "expert" not in high.describe()


@torch.no_grad()
def test_the_adapter_picks_the_expert_the_stock_pipeline_runs_at_each_step(a14b):
    backbone = backbone_for(a14b)
    ran = []
    handles = [expert.register_forward_pre_hook(
        lambda mod, args, kwargs: ran.append((mod, float(kwargs["timestep"].flatten()[0]))), with_kwargs=True)
        for expert in backbone.experts]
    try:
        a14b("a red circle moves left", generator=torch.Generator().manual_seed(0), guidance_scale=5.0, **PIPE_KW)
    finally:
        for handle in handles:
            handle.remove()
    assert {id(module) for module, _ in ran} == {id(e) for e in backbone.experts}  # the steps straddle 875
    for module, t in ran:
        assert module is backbone.experts[backbone.expert_index(t)]


@torch.no_grad()
def test_a_capture_during_sampling_reads_whichever_expert_runs_each_step(a14b):
    """One capture per step (conditional pass only), each holding q of the expert that ran: recomputed here from
    that expert's own attn1 weights and the input it received."""
    backbone = backbone_for(a14b)
    events = []
    calls, handles = _record_attn1_inputs(a14b)
    try:
        with AttentionController(a14b).capture(events.append, blocks=[1], pre_rope=True):
            a14b("a red circle moves left", generator=torch.Generator().manual_seed(0), guidance_scale=5.0,
                 **PIPE_KW)
    finally:
        for handle in handles:
            handle.remove()
    assert len(events) == PIPE_KW["num_inference_steps"] and len(calls) == 2 * len(events)  # cond + uncond
    experts_seen = set()
    for step, event in enumerate(events):
        attn, hidden = calls[2 * step]  # the conditional call of this step
        expert = backbone.experts[backbone.expert_index(event.info.timestep)]
        assert attn is expert.blocks[1].attn1
        experts_seen.add(backbone.expert_index(event.info.timestep))
        q = attn.norm_q(attn.to_q(hidden)).unflatten(-1, (attn.heads, -1)).transpose(1, 2)
        torch.testing.assert_close(event.query_pre_rope, q, atol=1e-6, rtol=1e-5)
    assert experts_seen == {0, 1}
    stock = type(a14b.transformer.blocks[0].attn1.processor).__name__
    assert all(type(b.attn1.processor).__name__ == stock for e in backbone.experts for b in e.blocks)


# ---------------------------------------------------------------------------------------------- A14B fine-tuning
@pytest.fixture(scope="module")
def a14b_workspace(tmp_path_factory):
    return training_workspace(tmp_path_factory, "a14b-train", num_clips=4, seed=3, pipeline=tiny_wan22_a14b_pipeline)


def _a14b_config(root, out, **overrides):
    return train_config(root, out, dict(num_frames=9, height=16, width=16, max_sequence_length=16, train_steps=3,
                                        train_batch_size=2, checkpointing_steps=0, report_to="none", rank=2,
                                        lora_alpha=4, learning_rate=1e-2, lr_scheduler="constant",
                                        timestep_shift=8.0, caption_dropout=0.0), overrides)


class _ExpertProbe:
    """A callback that records, at the end of training, each expert's prediction on fixed inputs (t = 950 on the
    high-noise expert, 400 on the low-noise one) and the timesteps every micro-batch was routed by."""

    def __init__(self):
        from motionguide.training.callbacks import TrainerCallback

        probe = self

        class Callback(TrainerCallback):
            def on_train_end(self, ctx):
                probe.outputs = _expert_outputs(ctx.transformer.experts)
                pipe = ctx.extras["pipeline"]  # what validation samples with
                probe.pipeline_experts_are_the_trained_ones = (
                    pipe.transformer is ctx.transformer.experts[0] and pipe.transformer_2 is ctx.transformer.experts[1])

        self.callback, self.outputs = Callback(), None


def _probe_inputs():
    g = torch.Generator().manual_seed(7)
    return torch.randn(1, 16, 3, 2, 2, generator=g), torch.randn(1, 16, 32, generator=g)


@torch.no_grad()
def _expert_outputs(experts):
    x, text = _probe_inputs()
    return [expert(hidden_states=x, timestep=torch.tensor([t]), encoder_hidden_states=text, return_dict=False)[0]
            for expert, t in zip(experts, (950.0, 400.0))]


def test_two_experts_train_a_lora_each_that_the_stock_pipeline_reloads_exactly(a14b_workspace):
    """Each expert's LoRA lands where the stock loader takes it (`load_lora_weights(out)` for `transformer`,
    `load_lora_weights(out / "transformer_2", load_into_transformer_2=True)`), and the reloaded pipeline predicts
    exactly what the trained experts predicted; both experts moved (the batches straddled the boundary)."""
    from diffusers import WanPipeline

    from motionguide.training.loop import Trainer

    probe = _ExpertProbe()
    # the IMAP monitor probes (t = 400: transformer_2) and validation samples with both LoRAs through the pipeline
    imap = {"every": 1, "num_probes": 1, "top_k": 1, "blocks": [0, 1]}
    config = _a14b_config(a14b_workspace, "both", monitor=["imap"], method_options={"imap": imap},
                          validation_prompts=["a red circle moves left"], validation_inference_steps=3,
                          report_to="tensorboard")
    summary = Trainer(config, callbacks=[probe.callback]).run()
    out = a14b_workspace / "both"
    assert probe.pipeline_experts_are_the_trained_ones
    assert list((out / "validation" / "step-3").glob("*.mp4")) and (out / "logs").is_dir()
    assert summary["expert_loras"] == {"transformer": str(out), "transformer_2": str(out / "transformer_2")}
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    assert (out / "transformer_2" / "pytorch_lora_weights.safetensors").is_file()
    stock = WanPipeline.from_pretrained(a14b_workspace / "model")
    base = _expert_outputs([stock.transformer, stock.transformer_2])
    stock.load_lora_weights(out)
    stock.load_lora_weights(out / "transformer_2", load_into_transformer_2=True)
    reloaded = _expert_outputs([stock.transformer, stock.transformer_2])
    for trained, again, before in zip(probe.outputs, reloaded, base):
        assert not torch.allclose(trained, before)  # this expert's LoRA was trained ...
        assert torch.equal(again, trained)  # ... and the stock loader reproduces it exactly

    from motionguide.loading import load_lora_into_pipeline

    both = WanPipeline.from_pretrained(a14b_workspace / "model")
    assert load_lora_into_pipeline(both, out) == ["transformer", "transformer_2"]  # what generate / curate use
    assert all(torch.equal(a, b) for a, b in zip(_expert_outputs([both.transformer, both.transformer_2]),
                                                   probe.outputs))


def test_the_routed_loss_gives_each_lora_exactly_the_gradient_of_its_own_samples():
    """One batch mixing both experts: the router's mean loss and its LoRA gradients equal a float64 reference
    that calls the expert owning each sample's timestep on that sample alone."""
    from motionguide.training.experts import ExpertRouter
    from motionguide.training.lora import add_lora

    pipe = tiny_wan22_a14b_pipeline()
    experts = [pipe.transformer.double(), pipe.transformer_2.double()]
    for expert in experts:
        add_lora(expert, rank=2, alpha=4, target_modules=["to_q", "to_v"])
        for name, p in expert.named_parameters():
            if "lora_B" in name:  # non-zero B, so every LoRA factor has a gradient
                torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(len(name)))
    router = ExpertRouter(experts, 875.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 16, 3, 2, 2, generator=g, dtype=torch.float64)
    text = torch.randn(3, 5, 32, generator=g, dtype=torch.float64)
    target = torch.randn(3, 16, 3, 2, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([900.0, 400.0, 875.0])
    assert router.route(t).tolist() == [0, 1, 0]
    params = [p for p in router.parameters() if p.requires_grad]
    loss = (router(hidden_states=x, timestep=t, encoder_hidden_states=text)[0] - target).square().mean()
    grads = torch.autograd.grad(loss, params)
    per_sample = []
    for i, index in enumerate([0, 1, 0]):
        pred = experts[index](hidden_states=x[i:i + 1], timestep=t[i:i + 1], encoder_hidden_states=text[i:i + 1],
                              return_dict=False)[0]
        per_sample.append((pred - target[i:i + 1]).square().mean())
    reference = torch.stack(per_sample).mean()
    expected = torch.autograd.grad(reference, params)
    # float64 weights; diffusers keeps the timestep embedding and RoPE in float32, hence 1e-7 rather than 1e-15
    torch.testing.assert_close(loss, reference, atol=1e-8, rtol=1e-7)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, atol=1e-8, rtol=1e-6)
    assert all(float(g.abs().sum()) > 0 for g in grads)


def test_two_expert_checkpoints_hold_both_loras_and_resume_exactly(a14b_workspace):
    from safetensors.torch import load_file

    from motionguide.training.distributed import TRAINABLE_WEIGHTS_NAME
    from motionguide.training.loop import Trainer

    straight = Trainer(_a14b_config(a14b_workspace, "straight", train_steps=4, checkpointing_steps=2)).run()
    folder = a14b_workspace / "straight" / "checkpoint-2"
    stored = load_file(str(folder / TRAINABLE_WEIGHTS_NAME))
    assert {n.split(".")[1] for n in stored} == {"0", "1"} and all("lora_" in n for n in stored)
    assert (folder / "transformer_2" / "pytorch_lora_weights.safetensors").is_file()
    resumed = Trainer(_a14b_config(a14b_workspace, "resumed", train_steps=4,
                                   resume_from_checkpoint=str(folder))).run()
    assert [resumed["losses"][s] for s in (3, 4)] == [straight["losses"][s] for s in (3, 4)]


def test_training_one_expert_draws_its_timesteps_and_saves_its_lora_only(a14b_workspace):
    from safetensors.torch import load_file

    from motionguide.training.experts import sample_sigmas_between
    from motionguide.training.loop import Trainer

    summary = Trainer(_a14b_config(a14b_workspace, "low", experts="low_noise", train_steps=1)).run()
    out = a14b_workspace / "low"
    assert not (out / "pytorch_lora_weights.safetensors").exists()
    assert summary["expert_loras"] == {"transformer_2": str(out / "transformer_2")}
    assert all(k.startswith("transformer.") for k in load_file(str(out / "transformer_2" /
                                                                    "pytorch_lora_weights.safetensors")))
    # the conditioned draw: inside the range, and distributed as the unconditioned one restricted to it
    from motionguide.training.loop import sample_sigmas

    for mode in ("logit_normal", "uniform"):
        low = sample_sigmas_between(20000, torch.Generator().manual_seed(0), mode, 8.0, 0.0, 0.875)
        high = sample_sigmas_between(20000, torch.Generator().manual_seed(0), mode, 8.0, 0.875, 1.0)
        assert float(low.max()) * 1000 < 875.0 <= float(high.min()) * 1000
        free = sample_sigmas(200000, torch.Generator().manual_seed(1), mode, 8.0)
        for part, inside in ((low, free[free < 0.875]), (high, free[free >= 0.875])):
            assert abs(float(part.mean()) - float(inside.mean())) < 0.01


def test_an_expert_without_a_sample_in_a_step_is_left_exactly_as_it_was(a14b_workspace):
    """One clip per step: one expert runs, and AdamW (weight decay included) must not touch the other's LoRA."""
    from motionguide.training.callbacks import TrainerCallback
    from motionguide.training.loop import Trainer

    seen = {}

    def lora_of(router):
        return [{n: p.detach().clone() for n, p in e.named_parameters() if p.requires_grad} for e in router.experts]

    class Watch(TrainerCallback):
        def on_train_start(self, ctx):
            seen["before"] = lora_of(ctx.transformer)

        def on_train_end(self, ctx):
            seen["after"] = lora_of(ctx.transformer)

    Trainer(_a14b_config(a14b_workspace, "one-sample", train_steps=1, train_batch_size=1,
                         adam_weight_decay=0.1), callbacks=[Watch()]).run()
    unchanged = [all(torch.equal(before[n], after[n]) for n in before)
                 for before, after in zip(seen["before"], seen["after"])]
    assert sorted(unchanged) == [False, True]


def test_a_two_expert_lora_on_a_one_transformer_model_is_refused_naming_transformer_2(tmp_path):
    from motionguide.loading import load_lora_into_pipeline
    from motionguide.training.lora import add_lora, save_expert_loras

    trained = tiny_wan22_a14b_pipeline()
    for expert in (trained.transformer, trained.transformer_2):
        add_lora(expert, rank=2, alpha=4, target_modules=["to_q"])
    save_expert_loras(type(trained), [("transformer_2", trained.transformer_2)], tmp_path / "low")
    assert not (tmp_path / "low" / "pytorch_lora_weights.safetensors").exists()
    with pytest.raises(ValueError, match="holds a LoRA for transformer_2, which WanPipeline does not have"):
        load_lora_into_pipeline(tiny_wan_pipeline(), tmp_path / "low")
    pipe = tiny_wan22_a14b_pipeline()
    assert load_lora_into_pipeline(pipe, tmp_path / "low") == ["transformer_2"]  # never into the wrong expert
    assert pipe.get_list_adapters() == {"transformer_2": ["default_0"]}


@pytest.mark.slow
def test_two_ranks_of_ddp_keep_both_expert_loras_in_sync(a14b_workspace):
    """One clip per rank and micro-step, so a rank often holds samples of one expert only while the other rank
    holds the other's: DDP (find_unused_parameters) must still reduce both LoRAs alike on every rank."""
    import json
    import os
    import subprocess
    from pathlib import Path

    import yaml
    from helpers import torchrun_two_ranks

    repo = Path(__file__).resolve().parent.parent
    cfg = _a14b_config(a14b_workspace, "ddp", train_steps=3, train_batch_size=1, learning_rate=1e-3)
    config_path = a14b_workspace / "ddp.yaml"
    config_path.write_text(yaml.safe_dump(cfg.to_dict()))
    out = a14b_workspace / "ddp.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run(torchrun_two_ranks(repo / "tests" / "jobs" / "finetune_sync.py", config_path, out),
                          cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["max_rank_difference"] == 0.0 and result["changed_from_init"] > 0
    from safetensors.torch import load_file

    for folder in (a14b_workspace / "ddp", a14b_workspace / "ddp" / "transformer_2"):
        lora_b = [t for k, t in load_file(str(folder / "pytorch_lora_weights.safetensors")).items() if "lora_B" in k]
        assert any(float(t.abs().max()) > 0 for t in lora_b)  # both experts trained


def test_expert_options_the_model_cannot_train_are_refused_from_its_config_files_before_loading(
        a14b_workspace, ti2v, tmp_path):
    import json

    from motionguide.training.experts import trained_experts
    from motionguide.training.loop import Trainer

    one = tmp_path / "one-transformer"
    one.mkdir()
    (one / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline", "transformer": ["diffusers",
                                          "WanTransformer3DModel"], "transformer_2": [None, None]}))
    with pytest.raises(ConfigError, match="experts='low_noise': the model has one transformer.*Leave experts"):
        Trainer(_a14b_config(a14b_workspace, "x", pretrained_model_name_or_path=str(one), experts="low_noise"))
    with pytest.raises(ConfigError, match="training_type='full': a two-expert model .* LoRA per expert"):
        Trainer(_a14b_config(a14b_workspace, "full", training_type="full"))
    assert not (a14b_workspace / "full").exists()  # refused before the output folder, the model and the cache
    with pytest.raises(ConfigError, match="experts='low_noise'"):  # the same rule on a loaded pipeline
        trained_experts("low_noise", backbone_for(ti2v))
    assert trained_experts("both", backbone_for(ti2v)) == (0,)
    assert trained_experts("low_noise", backbone_for(tiny_wan22_a14b_pipeline())) == (1,)


def test_the_motive_pass_on_a_two_expert_lora_differentiates_the_lora_of_the_expert_owning_t_fix(tmp_path):
    """`--lora` of a two-expert fine-tune loads each expert's part; with `--params lora` at t_fix = 751 the
    feature is the projected autograd gradient of transformer_2's LoRA, selection.json names that expert, and
    leaving the pass unloads both parts."""
    from motionguide.motive import Motive, MotiveConfig
    from motionguide.motive.attributor import LORA_ADAPTER, ScoreTable
    from motionguide.training.lora import add_lora, save_expert_loras

    trained = tiny_wan22_a14b_pipeline()
    for index, expert in enumerate((trained.transformer, trained.transformer_2)):
        add_lora(expert, rank=2, alpha=4, target_modules=["to_q", "to_v"])
        for name, p in expert.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(index))
    save_expert_loras(type(trained), [("transformer", trained.transformer), ("transformer_2", trained.transformer_2)],
                      tmp_path / "lora")

    pipe = tiny_wan22_a14b_pipeline()
    config = MotiveConfig(model="tiny", data=str(tmp_path / "data"), queries=str(tmp_path / "queries"),
                          out=str(tmp_path / "out"), lora=str(tmp_path / "lora"), params="lora", timestep=751.0,
                          num_frames=9, height=16, width=16, max_sequence_length=16, report=False, device="cpu")
    motive = Motive(pipe, config, projector=lambda sizes: MatrixProjector(sizes, dim=6, seed=4, name="dense"), masker=False, progress=False)
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(16, 3, 2, 2, generator=g)
    embeds = torch.randn(5, 32, generator=g)
    def flags():
        return [p.requires_grad for expert in (pipe.transformer, pipe.transformer_2) for p in expert.parameters()]

    before = flags()
    with motive:
        loaded = pipe.get_list_adapters()
        featurizer = motive.featurizer
        lora_params = [p for n, p in pipe.transformer_2.named_parameters() if f".{LORA_ADAPTER}." in n]
        assert [id(p) for _, p in featurizer.named] == [id(p) for p in lora_params]
        result = featurizer.featurize(latents, embeds, None, num_pixel_frames=9)
        backbone = backbone_for(pipe).for_timestep(751.0)
        t = torch.tensor([751.0])
        noise = featurizer.randomness.noise_for(latents.shape)[None]
        pred = backbone.predict(backbone.add_noise(latents[None], noise, t), t, embeds[None])
        for p in lora_params:
            p.requires_grad_(True)
        loss = (pred - (noise - latents[None])).square().mean() / 9
        grads = torch.autograd.grad(loss, lora_params)
        reference = featurizer.projector.matrix @ torch.cat([gr.flatten() for gr in grads])
        torch.testing.assert_close(result.feature, reference / reference.norm(), atol=1e-5, rtol=1e-4)
        table = ScoreTable(torch.tensor([[0.3, -0.1]]), ["a", "b"], ["q"], [{}, {}], [{}])
        selection = motive.select(table, save=False)
    assert selection.details["timesteps"] == [{"timestep": 751.0, "expert": "transformer_2", "expert_index": 1}]
    assert loaded == {"transformer": [LORA_ADAPTER], "transformer_2": [LORA_ADAPTER]}
    assert not any(pipe.get_list_adapters().values())
    assert flags() == before  # every requires_grad as it was before the pass


def test_a14b_ships_its_own_provisional_profile_not_wan21_14b_of_the_same_shape():
    experts = build_on_meta("wan2.2-t2v-a14b"), build_on_meta("wan2.2-t2v-a14b")
    pipeline = SimpleNamespace(transformer=experts[0], transformer_2=experts[1],
                               config=SimpleNamespace(boundary_ratio=0.875))
    backbone = WanBackbone(experts[0], pipeline=pipeline)
    assert backbone.default_profile().name == "wan2.2-t2v-a14b"
    assert backbone_for(build_on_meta("wan2.2-t2v-a14b")).default_profile().name == "wan2.1-t2v-14b"  # one expert
    from motionguide.correspondence.settings import resolve_cag_settings

    with pytest.warns(ProvisionalProfileWarning, match="analyze-layers"):
        settings = resolve_cag_settings(backbone)
    assert tuple(settings.blocks) == (17, 23, 28)


# ---------------------------------------------------------------------------------------------- TI2V-5B
def test_the_ti2v_vae_compresses_16x_with_48_channels_and_its_own_statistics(ti2v):
    backbone = backbone_for(ti2v)
    assert (backbone.vae_scale_spatial, backbone.pixels_per_token) == (16, 32)
    assert backbone.latent_shape(81, 480, 832) == (21, 30, 52)  # Motive's setting (reference/motive.md)
    assert backbone.token_grid_for_video(81, 480, 832).as_tuple() == (21, 15, 26)
    real = backbone_for(build_on_meta("wan2.2-ti2v-5b"))  # no VAE attached: the 48 channels name the VAE
    assert real.latent_shape(81, 480, 832) == (21, 30, 52) and real.pixels_per_token == 32
    assert WanBackbone.pixel_multiple(dict(real.config), None) == 32
    with torch.no_grad():
        video = torch.rand(1, 3, 9, 64, 64) * 2 - 1
        latents = ti2v.vae.encode(video).latent_dist.mode()
    assert latents.shape == (1, 48, 3, 4, 4)
    mean = torch.tensor(ti2v.vae.config.latents_mean).view(1, 48, 1, 1, 1)
    std = torch.tensor(ti2v.vae.config.latents_std).view(1, 48, 1, 1, 1)
    torch.testing.assert_close(backbone.normalize_latents(latents), (latents - mean) / std)
    torch.testing.assert_close(backbone.denormalize_latents(backbone.normalize_latents(latents)), latents)


def test_a_wan21_vae_on_a_ti2v_transformer_is_refused_before_any_latent(ti2v):
    wan21_vae = tiny_wan_pipeline().vae
    backbone = WanBackbone(ti2v.transformer, vae=wan21_vae, text_encoder=ti2v.text_encoder, pipeline=ti2v)
    with pytest.raises(ConfigError, match="z_dim = 16 but transformer.config.in_channels = 48"):
        backbone.check_components()
    WanBackbone(ti2v.transformer, vae=tiny_wan22_vae(), text_encoder=ti2v.text_encoder).check_components()


@torch.no_grad()
def test_one_timestep_per_sample_predicts_what_the_pipelines_per_token_timesteps_give(ti2v):
    """Text-to-video TI2V-5B gives every token the step's t; training and the Motive pass pass one t per sample
    (a fraction of the memory), which the transformer only broadcasts."""
    backbone = backbone_for(ti2v)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 48, 3, 4, 4, generator=g)
    embeds = torch.randn(1, 6, ti2v.transformer.config.text_dim, generator=g)
    per_sample = backbone.predict(x, torch.tensor([751.0]), embeds)
    tokens = backbone.token_grid(x.shape).num_tokens
    per_token = ti2v.transformer(hidden_states=x, timestep=torch.full((1, tokens), 751.0),
                                 encoder_hidden_states=embeds, return_dict=False)[0]
    torch.testing.assert_close(per_sample, per_token, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- random-pipeline
@pytest.mark.slow
@pytest.mark.parametrize("like", ["wan2.2-ti2v-5b", "wan2.2-t2v-a14b", "wan2.2-i2v-a14b"])
def test_a_random_copy_of_the_released_architecture_loads_and_samples_on_the_expert_of_each_step(like, tmp_path):
    """One block per expert and one text layer (the VAE at released size); the stock pipeline samples with the
    released scheduler, and each expert runs exactly the steps the adapter assigns it (Wan2.2-I2V-A14B: from an
    image, its experts reading 36 channels with no CLIP branch)."""
    from motionguide.cli import main
    from motionguide.loading import PipelinePlacement, load_pipeline

    out = tmp_path / like
    assert main(["random-pipeline", "--like", like, "--out", str(out), "--num_layers", "1", "--text_layers", "1",
                 "--dtype", "bfloat16"]) == 0
    pipe = load_pipeline(str(out), PipelinePlacement(dtype=torch.bfloat16))  # checks the components fit
    pipe.set_progress_bar_config(disable=True)
    backbone = backbone_for(pipe)
    if like == "wan2.2-ti2v-5b":
        assert pipe.config.expand_timesteps and len(backbone.experts) == 1
        assert (backbone.vae_scale_spatial, backbone.pixels_per_token, pipe.vae.config.z_dim) == (16, 32, 48)
        assert pipe.vae.config.latents_std[:2] == [0.4765, 1.0364] and pipe.scheduler.config.flow_shift == 5.0
        size = 32
    else:
        boundary, shift = (900.0, 5.0) if like == "wan2.2-i2v-a14b" else (875.0, 12.0)
        assert backbone.boundary_timestep == boundary and pipe.scheduler.config.flow_shift == shift
        first, second = backbone.experts
        assert not torch.equal(first.blocks[0].attn1.to_q.weight, second.blocks[0].attn1.to_q.weight)
        size = 16
    image = {}
    if like == "wan2.2-i2v-a14b":
        from PIL import Image

        assert type(pipe).__name__ == "WanImageToVideoPipeline" and pipe.image_encoder is None
        assert backbone.image_conditioning == "channels" and backbone.config.image_dim is None
        assert all(expert.config.in_channels == 36 for expert in backbone.experts)
        image = {"image": Image.new("RGB", (size, size), (200, 40, 40))}
    ran = []
    handles = [expert.register_forward_pre_hook(
        lambda mod, args, kwargs: ran.append((mod, float(kwargs["timestep"].flatten()[0]))), with_kwargs=True)
        for expert in backbone.experts]
    try:
        video = pipe(prompt="a red ball moves left", **image, num_frames=5, height=size, width=size,
                     num_inference_steps=3, max_sequence_length=16, guidance_scale=4.0, output_type="pt",
                     generator=torch.Generator().manual_seed(0)).frames
    finally:
        for handle in handles:
            handle.remove()
    assert video.shape == (1, 5, 3, size, size) and torch.isfinite(video.float()).all()
    assert len(ran) == 6 and all(module is backbone.experts[backbone.expert_index(t)] for module, t in ran)
    assert {backbone.expert_index(t) for _, t in ran} == set(range(len(backbone.experts)))
