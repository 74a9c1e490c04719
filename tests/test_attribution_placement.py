"""The Motive pass placed as a GPU user runs it: gradient checkpointing (same features), the weights' dtype,
the device options, the projector-state budget (never changes a feature), and the process group's backend,
timeout and collective device. Everything here runs on the CPU; the CUDA branches are checked through the
values they compute (the devices and the backend chosen), not by running on a GPU."""

import json
from types import SimpleNamespace

import pytest
import torch

from motionguide.backbones import WanBackbone
from motionguide.errors import ConfigError
from motionguide.motive import MotiveConfig
from motionguide.motive import attributor
from motionguide.motive.cli import config_from_args
from motionguide.motive.config import projector_cache_bytes
from motionguide.motive.curation import placement_from_training
from motionguide.motive.featurizer import CommonRandomness, GradientFeaturizer
from motionguide.motive.projectors import DEFAULT_CACHE_BYTES, BlockwiseFastfood, auto_cache_bytes, make_projector
from motionguide.testing import tiny_wan_pipeline, tiny_wan_transformer


def _featurize(backbone, latents, embeds, mask, checkpointing: bool, monkeypatch, **kw):
    """The feature with or without checkpointing, and how many block calls went through torch's checkpoint."""
    calls = []
    plain = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return plain(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    featurizer = GradientFeaturizer(backbone, lambda sizes: make_projector("fastfood_blockwise", sizes, dim=64),
                                    CommonRandomness(seed=3), gradient_checkpointing=checkpointing, **kw)
    result = featurizer.featurize(latents, embeds, mask, num_pixel_frames=9)
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", plain)
    return result, len(calls)


def test_gradient_checkpointing_gives_bitwise_equal_features_on_the_toy_model(monkeypatch):
    backbone = WanBackbone(tiny_wan_transformer())
    g = torch.Generator().manual_seed(0)
    latents, embeds, mask = torch.randn(16, 3, 8, 8, generator=g), torch.randn(6, 32, generator=g), torch.rand(3, 8, 8)
    plain, plain_calls = _featurize(backbone, latents, embeds, mask, False, monkeypatch)
    checked, checked_calls = _featurize(backbone, latents, embeds, mask, True, monkeypatch)
    assert plain_calls == 0 and checked_calls == backbone.num_blocks  # every block recomputed, in eval mode
    assert torch.equal(plain.feature, checked.feature) and plain.grad_norm == checked.grad_norm
    assert plain.loss == checked.loss
    # the transformer is left as it was: checkpointing off again, no gradients kept
    assert not backbone.transformer.gradient_checkpointing
    assert all(p.grad is None for p in backbone.transformer.parameters())


def test_gradient_checkpointing_gives_bitwise_equal_bf16_features_at_the_real_wan_architecture(monkeypatch):
    from motionguide.backbones.random_pipeline import reference_pipeline
    from motionguide.backbones.random_weights import build_in_dtype

    # Wan2.1-T2V-1.3B's transformer (1536 wide, 12 heads, 8960 FFN), two blocks, random bf16 weights
    transformer = build_in_dtype(reference_pipeline("wan2.1-t2v-1.3b").transformer, torch.bfloat16, seed=0,
                                 num_layers=2)
    backbone = WanBackbone(transformer)
    g = torch.Generator().manual_seed(1)
    latents, embeds = torch.randn(16, 2, 4, 4, generator=g), torch.randn(8, 4096, generator=g)
    kw = dict(scope="blocks", blocks=[0])  # block 0's gradient flows back through block 1
    plain, plain_calls = _featurize(backbone, latents, embeds, None, False, monkeypatch, **kw)
    checked, checked_calls = _featurize(backbone, latents, embeds, None, True, monkeypatch, **kw)
    assert plain_calls == 0 and checked_calls == 2
    assert plain.feature.dtype == torch.float32 and torch.isfinite(plain.feature).all() and not plain.flags
    assert torch.equal(plain.feature, checked.feature) and plain.grad_norm == checked.grad_norm


def test_a_model_without_checkpointing_support_is_a_config_error():
    backbone = WanBackbone(tiny_wan_transformer())
    backbone.transformer._supports_gradient_checkpointing = False
    with pytest.raises(ConfigError, match="does not support diffusers' gradient checkpointing"):
        GradientFeaturizer(backbone, lambda sizes: make_projector("sparse_jl", sizes, dim=8), CommonRandomness(),
                           gradient_checkpointing=True)


def test_the_projector_state_budget_never_changes_a_feature():
    sizes = [3 * 2**10, 40, 2**12 + 5, 7]
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(n, generator=g) for n in sizes]
    outputs = []
    for budget in (0, DEFAULT_CACHE_BYTES, projector_cache_bytes("auto")):
        projector = BlockwiseFastfood(sizes, dim=64, seed=1, block_size=2**11, cache_bytes=budget)
        for _ in range(2):  # the second pass reads kept state where the budget allowed
            outputs.append(sum(projector.project_parameter(i, x) for i, x in enumerate(grads)))
            outputs.append(projector.project_many(list(enumerate(grads))))
        assert projector._cache.used <= budget
    assert all(torch.equal(outputs[0], out) for out in outputs[0::2])
    assert all(torch.equal(outputs[1], out) for out in outputs[1::2])


def test_auto_state_budget_is_a_share_of_the_available_host_memory(monkeypatch):
    from motionguide.motive import projectors

    monkeypatch.setattr(projectors, "_available_host_bytes", lambda: 16 * 2**30)
    assert auto_cache_bytes("cpu") == 4 * 2**30  # 25% of 16 GiB
    monkeypatch.setattr(projectors, "_available_host_bytes", lambda: 0)
    assert auto_cache_bytes(None) == DEFAULT_CACHE_BYTES  # never below the fixed default
    assert projectors._available_host_bytes.__module__  # the real reader exists too
    assert projector_cache_bytes("512") == 512 * 2**20 and projector_cache_bytes(0) == 0
    with pytest.raises(ConfigError, match="projector_cache_mb must be 'auto' or a number of MiB >= 0"):
        projector_cache_bytes("-1")


def _config(**kw) -> MotiveConfig:
    return MotiveConfig(model="m", data="d", queries="q", out="o", **kw)


@pytest.mark.parametrize("settings, message", [
    ({"dtype": "bf17"}, "dtype 'bf17': not a dtype"),
    ({"device": "cuda:0"} if not torch.cuda.is_available() else {"device": "nonsense"}, "--device"),
    ({"device": "cpu", "enable_model_cpu_offload": True}, "enable_model_cpu_offload .* needs device cuda"),
    ({"projector_cache_mb": "lots"}, "projector_cache_mb must be"),
    ({"process_group_timeout_s": 0}, "process_group_timeout_s must be > 0"),
])
def test_placement_settings_are_checked_before_any_model_loads(settings, message):
    with pytest.raises(ConfigError, match=message):
        _config(**settings).check()


def test_curate_flags_reach_the_config():
    import argparse

    from motionguide.motive.cli import add_curate_command

    parser = argparse.ArgumentParser()
    add_curate_command(parser.add_subparsers())
    base = ["curate", "--model", "m", "--data", "d", "--queries", "q", "--out", "o"]
    cfg = config_from_args(parser.parse_args(base + [
        "--dtype", "bf16", "--device", "cpu", "--gradient_checkpointing", "--vae-tiling", "--projector_cache_mb",
        "2048", "--process-group-timeout-s", "60", "--projector_rng", "cpu"]))
    assert (cfg.dtype, cfg.device, cfg.gradient_checkpointing, cfg.vae_tiling) == ("bf16", "cpu", True, True)
    assert (cfg.projector_cache_mb, cfg.process_group_timeout_s, cfg.enable_model_cpu_offload) == ("2048", 60.0,
                                                                                                   False)
    defaults = config_from_args(parser.parse_args(base))
    assert (defaults.device, defaults.dtype, defaults.gradient_checkpointing, defaults.projector_cache_mb,
            defaults.process_group_timeout_s) == ("auto", None, False, "auto", 1800.0)
    assert (cfg.projector_rng, defaults.projector_rng) == ("cpu", "auto")
    placement = cfg.placement()
    assert placement.dtype == torch.bfloat16 and placement.device == "cpu" and placement.vae_tiling


def test_inside_the_trainer_the_pass_takes_the_runs_device_dtype_and_checkpointing():
    run = SimpleNamespace(gradient_checkpointing=True, mixed_precision="bf16")
    ctx = SimpleNamespace(config=run, accelerator=SimpleNamespace(device=torch.device("cpu")))
    assert placement_from_training(ctx) == {"device": "cpu", "dtype": "bf16", "gradient_checkpointing": True}
    run.transformer_dtype = "fp16"  # the per-component override wins over mixed_precision
    run.gradient_checkpointing = False
    assert placement_from_training(ctx) == {"device": "cpu", "dtype": "fp16", "gradient_checkpointing": False}
    plain = SimpleNamespace(config=SimpleNamespace(mixed_precision="no"), accelerator=SimpleNamespace(device="cpu"))
    assert placement_from_training(plain) == {"device": "cpu", "gradient_checkpointing": False}  # dtype as stored


class _FakeGroup:
    """Records what the pass asks of torch.distributed (no real group: the CUDA branches run on a CPU)."""

    def __init__(self, monkeypatch, backend: str):
        self.initialised, self.calls, self.backend = False, [], backend
        dist = torch.distributed
        monkeypatch.setattr(dist, "is_initialized", lambda: self.initialised)
        monkeypatch.setattr(dist, "init_process_group", self.init)
        monkeypatch.setattr(dist, "get_backend", lambda *a: self.backend)
        monkeypatch.setattr(dist, "get_rank", lambda *a: 1)
        monkeypatch.setattr(dist, "get_world_size", lambda *a: 2)
        monkeypatch.setattr(dist, "all_reduce", lambda t, *a, **k: self.calls.append(("all_reduce", t.device)))
        monkeypatch.setattr(dist, "barrier", lambda *a, **k: self.calls.append(("barrier", k.get("device_ids"))))

    def init(self, backend, timeout=None, **kw):
        self.initialised, self.backend = True, backend
        self.calls.append(("init", backend, timeout.total_seconds()))


def test_the_pass_creates_a_gloo_group_with_its_timeout_on_the_cpu(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    group = _FakeGroup(monkeypatch, "gloo")
    assert attributor._dist_info(torch.device("cpu"), timeout_s=90) == (1, 2)
    attributor._barrier()
    assert attributor._sum_over_ranks({"featurised": 3}) == {"featurised": 3}
    assert group.calls == [("init", "gloo", 90.0), ("barrier", None), ("all_reduce", torch.device("cpu"))]
    assert attributor._dist_info(torch.device("cpu"), timeout_s=5) == (1, 2)  # an existing group is joined
    assert len([c for c in group.calls if c[0] == "init"]) == 1


def test_on_cuda_the_group_is_nccl_and_collectives_use_this_ranks_gpu(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    group = _FakeGroup(monkeypatch, "nccl")
    device = attributor.pass_device(_config(device="cuda"))
    assert device == torch.device("cuda", 1)  # each rank its LOCAL_RANK's GPU, not all on cuda:0
    attributor._dist_info(device, timeout_s=1800)
    assert chosen == [1] and group.calls[0] == ("init", "nccl", 1800.0)
    assert attributor._collective_device() == torch.device("cuda", 1)
    attributor._barrier()
    assert group.calls[-1] == ("barrier", [1])


def test_curate_runs_in_bf16_with_checkpointing_on_the_cpu(tmp_path):
    from motionguide.motive.store import FeatureStore
    from motionguide.toy import make_dataset

    tiny_wan_pipeline().save_pretrained(tmp_path / "model")
    make_dataset(tmp_path / "data", num_clips=3, seed=2, progress=False)
    make_dataset(tmp_path / "queries", num_clips=1, seed=9, progress=False)
    from motionguide.cli import main

    args = ["curate", "--model", tmp_path / "model", "--data", tmp_path / "data", "--queries", tmp_path / "queries",
            "--out", tmp_path / "out", "--dtype", "bf16", "--device", "cpu", "--gradient_checkpointing",
            "--dim", "32", "--fraction", "0.34", "--projector_cache_mb", "64"]
    assert main([str(a) for a in args]) == 0
    selection = json.loads((tmp_path / "out" / "selection.json").read_text())
    assert len(selection["selected_ids"]) == 1 and selection["counts"]["train"]["featurised"] == 3
    (store,) = sorted((tmp_path / "out" / "features").glob("*/config.json"))
    saved = json.loads(store.read_text())
    ids, feats, _ = FeatureStore(tmp_path / "out" / "features", saved["config"], dim=saved["dim"]).load()
    assert feats.dtype == torch.float32 and torch.isfinite(feats).all() and len(ids) == 3
    # the same clips in fp32 go to another store: features of bf16 weights never mix with fp32 ones
    fp32 = [str(a) for a in args[:7]] + ["--out", str(tmp_path / "fp32"), "--dtype", "fp32", *map(str, args[14:])]
    assert main(fp32) == 0
    (other,) = sorted((tmp_path / "fp32" / "features").glob("*/config.json"))
    assert other.parent.name != store.parent.name


class _FakeCache:
    """Records how the pass builds the latent cache (a sharded build takes rank, world_size and a barrier)."""

    calls: list = []

    def __init__(self, sharded: bool):
        self.sharded = sharded

    @classmethod
    def for_dataset(cls, root, dataset, backbone, max_sequence_length):
        return cls(True)

    def build(self, dataset, backbone, max_sequence_length, progress=True, rank=0, world_size=1, barrier=None):
        _FakeCache.calls.append((rank, world_size, barrier is not None))


class _FakeUnshardedCache(_FakeCache):
    def build(self, dataset, backbone, max_sequence_length, progress=True):
        _FakeCache.calls.append(("whole",))


@pytest.mark.parametrize("cache, rank, expected", [
    (_FakeCache, 1, [(1, 2, True)]),  # every rank encodes its share
    (_FakeUnshardedCache, 0, [("whole",)]),  # a cache without sharding: the main process encodes it all
    (_FakeUnshardedCache, 1, []),  # ... while the others wait
])
def test_every_rank_shares_the_latent_cache_build_when_the_cache_can_be_sharded(monkeypatch, cache, rank, expected):
    import motionguide.data

    monkeypatch.setattr(motionguide.data, "LatentCache", cache)
    monkeypatch.setattr(attributor, "_barrier", lambda: None)
    _FakeCache.calls = []
    motive = attributor.Motive.__new__(attributor.Motive)
    motive.config, motive.rank, motive.world_size = _config(), rank, 2
    motive._backbone, motive.progress, motive._caches = object(), False, {}
    motive.prepare("train", object())
    assert _FakeCache.calls == expected


def test_the_curations_pass_config_carries_the_runs_placement_and_options_override_it(tmp_path):
    from motionguide.motive.curation import MotiveCuration
    from motionguide.training.config import TrainConfig

    run = TrainConfig(output_dir=str(tmp_path / "run"), pretrained_model_name_or_path="m", data_root="d",
                      mixed_precision="bf16", gradient_checkpointing=True)
    ctx = SimpleNamespace(config=run, accelerator=SimpleNamespace(device=torch.device("cpu")), output_dir=tmp_path)
    cfg = MotiveCuration(queries="q").config_for(ctx)
    assert (cfg.device, cfg.dtype, cfg.gradient_checkpointing) == ("cpu", "bf16", True)
    cfg = MotiveCuration(queries="q", gradient_checkpointing=False, projector_cache_mb=128).config_for(ctx)
    assert (cfg.gradient_checkpointing, cfg.projector_cache_mb) == (False, 128)


# ---------------------------------------------------------------------- where the projector's random state is made
RNG_VARIANTS = {"fastfood_blockwise": {}, "fastfood_blockwise/feistel": {"permutation": "feistel"},
                "fastfood": {}, "fastfood/feistel": {"permutation": "feistel"}, "sparse_jl": {}, "dense_gaussian": {}}


@pytest.mark.parametrize("variant", list(RNG_VARIANTS))
def test_state_generated_through_the_device_path_on_the_cpu_is_todays_state(variant):
    """`rng_device` runs every draw through the device-generic code; on the CPU that is the stream the default
    (and every earlier version) uses: the same features and the same description, so stores keep their hash."""
    from motionguide.motive.projectors import CPU_RNG

    name = variant.split("/")[0]
    sizes = [5, 300, 1500, 40]
    x = torch.randn(2, sum(sizes), generator=torch.Generator().manual_seed(0))
    default = make_projector(name, sizes, dim=64, seed=3, **RNG_VARIANTS[variant])
    for rng_device in ("cpu", torch.device("cpu")):
        through = make_projector(name, sizes, dim=64, seed=3, rng_device=rng_device, **RNG_VARIANTS[variant])
        assert torch.equal(through.project_full(x), default.project_full(x))
        assert through.describe() == default.describe() and default.describe()["rng"] == CPU_RNG


def test_every_random_draw_of_the_projectors_is_made_on_the_generators_device():
    """A draw without `device=` would run on the CPU with a GPU generator (a crash on the GPU only): every call
    that takes a generator in projectors.py also names the device."""
    import ast
    import inspect

    from motionguide.motive import projectors

    calls = [node for node in ast.walk(ast.parse(inspect.getsource(projectors))) if isinstance(node, ast.Call)
             and any(k.arg == "generator" for k in node.keywords)]
    assert len(calls) >= 12
    missing = [node.lineno for node in calls if not any(k.arg == "device" for k in node.keywords)]
    assert missing == [], f"draws without device= at projectors.py lines {missing}"


def test_projector_rng_auto_generates_on_an_accelerator_and_on_the_cpu_otherwise():
    from motionguide.motive.config import projector_rng_device

    assert projector_rng_device("auto", "cuda:1") == torch.device("cuda:1")
    assert projector_rng_device("auto", torch.device("mps")) == torch.device("mps")
    for setting, device in (("auto", "cpu"), ("auto", None), ("auto", "meta"), ("cpu", "cuda:0")):
        assert projector_rng_device(setting, device) is None  # the CPU stream: today's projector
    cpu_factory = MotiveConfig(model="m", data="d", queries="q", out="o", dim=32).make_projector_factory("cpu")
    assert cpu_factory([10, 20]).describe() == make_projector("fastfood_blockwise", [10, 20], dim=32).describe()


def test_a_bad_projector_rng_or_rng_device_is_one_line_naming_it():
    with pytest.raises(ConfigError, match="projector_rng must be one of auto, cpu, got 'gpu'"):
        MotiveConfig(model="m", data="d", queries="q", out="o", projector_rng="gpu").check()
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="rng_device 'cuda': no random generator there"):
            make_projector("fastfood_blockwise", [10], dim=8, rng_device="cuda")
