"""The Trainer's dtypes and placement: frozen weights in the training precision (what diffusers keeps in fp32
stays fp32), LoRA weights in fp32, per-component overrides, the latent cache in the text encoder's output dtype,
the text encoder released after the cache, the model's own text length, and a latent cache built on two ranks
that equals the one-process cache."""

import json
import os
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import torchrun_two_ranks

from motionguide.backbones import backbone_for
from motionguide.data import LatentCache, VideoDataset
from motionguide.errors import ConfigError
from motionguide.loading import component_dtypes_of, load_pipeline
from motionguide.sampling import SamplingSettings, generate_videos
from motionguide.testing import tiny_cogvideox_pipeline, tiny_wan_pipeline
from motionguide.toy import make_dataset
from motionguide.training.callbacks import TrainerCallback
from motionguide.training.config import TrainConfig
from motionguide.training.loop import Trainer, model_max_sequence_length, pipeline_placement
from motionguide.training.validation import encode_validation_prompts, generate_from_embeddings

REPO = Path(__file__).resolve().parent.parent
PROMPT = "a red circle moves right"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    tiny_wan_pipeline().save_pretrained(root / "model")
    make_dataset(root / "data", num_clips=4, seed=1, num_frames=9, height=32, width=32, progress=False)
    return root


def config(root: Path, out: str, **overrides) -> TrainConfig:
    values = dict(pretrained_model_name_or_path=str(root / "model"), output_dir=str(root / out),
                  data_root=str(root / "data"), latent_cache_dir=str(root / "cache"), num_frames=9, height=32,
                  width=32, train_steps=2, train_batch_size=2, checkpointing_steps=0, report_to="none", rank=4,
                  lora_alpha=8, max_sequence_length=16, learning_rate=1e-3, lr_scheduler="constant")
    values.update(overrides)
    return TrainConfig(**values)


def kept_in_fp32(module: torch.nn.Module, name: str) -> bool:
    """Whether the module's library keeps parameter `name` in fp32 at a reduced dtype."""
    kept = getattr(module, "_keep_in_fp32_modules", None) or []
    return any(re.search(rf"(^|\.){re.escape(k)}(\.|$)", name) for k in kept)


def run_trainer(cfg: TrainConfig, callbacks=()) -> dict:
    """A Trainer run with accelerate's process-wide state reset around it (runs here differ in precision)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        return Trainer(cfg, callbacks=list(callbacks)).run()
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


class Inspect(TrainerCallback):
    """Records the pipeline's dtypes and placement when training starts."""

    def on_train_start(self, ctx):
        pipe = ctx.extras["pipeline"]
        self.unexpected_fp32 = {
            component: sorted(n for n, p in module.named_parameters()
                              if p.dtype == torch.float32 and not p.requires_grad and not kept_in_fp32(module, n))
            for component, module in pipe.components.items() if isinstance(module, torch.nn.Module)}
        self.kept_fp32 = sorted(n for n, p in pipe.transformer.named_parameters() if p.dtype == torch.float32
                                and not p.requires_grad)
        self.trainable_dtypes = {p.dtype for p in ctx.transformer.parameters() if p.requires_grad}
        self.component_dtypes = component_dtypes_of(pipe)
        self.text_encoder = pipe.text_encoder
        self.validation_embeds = ctx.extras.get("validation_prompt_embeds")
        self.cache = ctx.extras["cache"]


@pytest.fixture(scope="module")
def bf16_run(workspace):
    spy = Inspect()
    cfg = config(workspace, "bf16", mixed_precision="bf16", text_encoder_after_cache="free",
                 validation_prompts=[PROMPT], validation_inference_steps=2, monitor=["imap"],
                 method_options={"imap": {"every": 1, "num_probes": 2}})
    summary = run_trainer(cfg, [spy])
    return spy, summary, cfg


def test_bf16_run_loads_every_frozen_weight_in_bf16_except_what_diffusers_keeps_in_fp32(bf16_run):
    spy, _, _ = bf16_run
    assert spy.unexpected_fp32 == {"transformer": [], "vae": []}  # the text encoder was freed before the start
    assert spy.kept_fp32, "WanTransformer3DModel keeps its time embedder and norms in fp32"
    assert spy.component_dtypes == {"transformer": torch.bfloat16, "vae": torch.bfloat16}


def test_bf16_run_trains_lora_weights_in_fp32_with_finite_losses(bf16_run):
    spy, summary, _ = bf16_run
    assert spy.trainable_dtypes == {torch.float32}
    assert len(summary["losses"]) == 2 and all(np.isfinite(v) for v in summary["losses"].values())


def test_bf16_cache_stores_prompt_embeddings_in_the_text_encoders_dtype_and_latents_in_fp32(bf16_run, workspace):
    spy, _, _ = bf16_run
    cache = spy.cache
    tensors = cache.load(cache.ids[0])
    assert tensors["prompt_embeds"].dtype == torch.bfloat16 and tensors["latents"].dtype == torch.float32
    assert cache.empty_prompt_embeds().dtype == torch.bfloat16
    fp32_backbone = backbone_for(load_pipeline(workspace / "model"))
    dataset = VideoDataset(workspace / "data", num_frames=9, height=32, width=32)
    assert LatentCache.for_dataset(workspace / "cache", dataset, fp32_backbone, 16).key != cache.key


def test_freed_text_encoder_leaves_validation_sampling_from_precomputed_embeddings(bf16_run):
    spy, _, cfg = bf16_run
    assert spy.text_encoder is None
    assert set(spy.validation_embeds) == {PROMPT}
    assert spy.validation_embeds[PROMPT]["prompt_embeds"].dtype == torch.bfloat16
    step = Path(cfg.output_dir) / "validation" / "step-2"
    assert (step / "000_seed0.mp4").is_file() and json.loads((step / "metrics.json").read_text())["per_video"]
    probes = json.loads((Path(cfg.output_dir) / "imap" / "history.json").read_text())["history"]
    assert [entry["step"] for entry in probes] == [1, 2]  # the IMAP probes ran on the bf16 model
    assert all(np.isfinite(v) for entry in probes for k, v in entry.items() if isinstance(v, float))


def test_component_dtype_overrides_and_full_fine_tune_master_weights(workspace):
    cfg = config(workspace, "unused", mixed_precision="bf16", transformer_dtype="fp32", vae_dtype="fp32")
    pipe = load_pipeline(workspace / "model", pipeline_placement(cfg, "cpu"))
    assert component_dtypes_of(pipe) == {"transformer": torch.float32, "vae": torch.float32,
                                         "text_encoder": torch.bfloat16}
    encoder = pipe.text_encoder  # every weight in bf16 but what transformers keeps in fp32
    assert not [n for n, p in encoder.named_parameters() if p.dtype == torch.float32 and not kept_in_fp32(encoder, n)]
    full = config(workspace, "unused", mixed_precision="bf16", training_type="full")
    placement = pipeline_placement(full, "cpu")
    assert placement.dtype == torch.bfloat16 and placement.component_dtypes == {"transformer": torch.float32}
    with pytest.raises(ConfigError, match="transformer_dtype"):
        config(workspace, "unused", training_type="full", transformer_dtype="bf16").validate()
    with pytest.raises(ConfigError, match="vae_dtype"):
        config(workspace, "unused", vae_dtype="int8").validate()


def test_fp32_default_placement_is_fp32_on_the_accelerator_device(workspace):
    placement = pipeline_placement(config(workspace, "unused"), torch.device("cpu"))
    assert placement.dtype == torch.float32 and not placement.component_dtypes and placement.device == "cpu"
    assert not placement.vae_tiling and not placement.vae_slicing


def test_kept_text_encoder_stays_and_offload_on_a_cpu_run_moves_nothing(workspace):
    for option in ("keep", "offload"):
        spy = Inspect()
        run_trainer(config(workspace, f"te-{option}", train_steps=1, text_encoder_after_cache=option), [spy])
        assert spy.text_encoder is not None and spy.text_encoder.device.type == "cpu"
        assert spy.validation_embeds is None  # the pipeline still encodes prompts itself


def test_offloading_from_an_accelerator_encodes_validation_prompts_first(workspace):
    pipe = load_pipeline(workspace / "model")
    cfg = config(workspace, "unused", validation_prompts=[PROMPT, "a blue square"], text_encoder_after_cache="offload")
    extras = {}
    # an accelerator device other than the CPU (none here): the encoder goes to the CPU, the prompts are encoded
    run = SimpleNamespace(pipe=pipe, backbone=backbone_for(pipe), ctx=SimpleNamespace(extras=extras),
                          accelerator=SimpleNamespace(device=torch.device("cuda"), is_main_process=True))
    trainer = Trainer.__new__(Trainer)
    trainer.config = cfg
    trainer._release_text_encoder(run)
    assert pipe.text_encoder is not None and pipe.text_encoder.device.type == "cpu"
    embeds = extras["validation_prompt_embeds"]
    with torch.no_grad():  # as inside the pipeline's call (grad mode changes the encoder's kernels)
        expected, negative = pipe.encode_prompt(PROMPT, "", max_sequence_length=16, device="cpu")
    assert torch.equal(embeds[PROMPT]["prompt_embeds"], expected)
    assert torch.equal(embeds[PROMPT]["negative_prompt_embeds"], negative)


def test_sampling_from_precomputed_embeddings_equals_sampling_from_the_prompt(workspace):
    pipe = load_pipeline(workspace / "model")
    settings = SamplingSettings(num_frames=5, height=32, width=32, steps=2, cfg=5.0, max_sequence_length=16)
    embeds = encode_validation_prompts(backbone_for(pipe), [PROMPT], settings)
    from_prompt = generate_videos(pipe, [PROMPT], [3], settings, progress=False)
    from_embeds = generate_from_embeddings(pipe, [PROMPT], [3], settings, embeds)
    assert np.array_equal(from_prompt[0]["frames"], from_embeds[0]["frames"])


def test_unset_text_length_is_the_models_own(workspace, tmp_path):
    assert TrainConfig().max_sequence_length is None
    wan = load_pipeline(workspace / "model")
    assert model_max_sequence_length(workspace / "model", wan) == 512
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "model_index.json").write_text((workspace / "model" / "model_index.json").read_text())
    (tmp_path / "toy" / "sampling_defaults.json").write_text(json.dumps({"max_sequence_length": 16}))
    assert model_max_sequence_length(tmp_path / "toy", wan) == 16
    cogvideox = tiny_cogvideox_pipeline()  # its transformer is built for the text length it declares
    assert model_max_sequence_length("unused/cogvideox", cogvideox) == cogvideox.transformer.config.max_text_seq_length
    released = SimpleNamespace(transformer=SimpleNamespace(config=SimpleNamespace(max_text_seq_length=226)))
    assert model_max_sequence_length("THUDM/CogVideoX-2b", released) == 226


@pytest.mark.slow
def test_two_ranks_build_the_cache_each_half_and_equal_to_one_process(workspace, tmp_path):
    data = tmp_path / "data"
    make_dataset(data, num_clips=7, seed=2, num_frames=9, height=32, width=32, fmt=("jsonl",), progress=False)
    rows = [json.loads(line) for line in (data / "metadata.jsonl").read_text().splitlines()]
    (data / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    rows.insert(1, {**rows[0], "file_name": "noise.mp4", "id": "noise"})  # unreadable; rank 1 gets batch 1
    (data / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    out = tmp_path / "reports"
    out.mkdir()
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = torchrun_two_ranks(REPO / "tests" / "jobs" / "sharded_cache.py", workspace / "model", data,
                             tmp_path / "sharded", out)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]

    backbone = backbone_for(load_pipeline(workspace / "model"))
    dataset = VideoDataset(data, num_frames=9, height=32, width=32, validate=False)
    single = LatentCache.for_dataset(tmp_path / "single", dataset, backbone, 16)
    report = single.build(dataset, backbone, 16, progress=False)
    sharded = LatentCache.for_dataset(tmp_path / "sharded", dataset, backbone, 16)

    assert [len(r["encoded_here"]) for r in ranks] == [4, 3]  # batches 0, 2, 4, 6 and 1 (fails), 3, 5, 7
    assert set(ranks[1]["failed"]) == {"noise"} and not set(ranks[0]["encoded_here"]) & set(ranks[1]["encoded_here"])
    assert sorted(ranks[0]["encoded"]) == sorted(report.encoded) and len(report.encoded) == 7
    assert set(ranks[0]["failed"]) == set(report.failed) == {"noise"}
    assert sharded.key == single.key and sharded.ids == single.ids
    for clip_id in single.ids:
        a, b = single.load(clip_id), sharded.load(clip_id)
        assert all(torch.equal(a[k], b[k]) for k in ("latents", "prompt_embeds"))
    assert torch.equal(single.empty_prompt_embeds(), sharded.empty_prompt_embeds())
    assert sharded.manifest["clips"] == single.manifest["clips"]
    assert sharded.manifest["counts"] == single.manifest["counts"] == {"ok": 7, "failed": 1}
    assert not list(sharded.dir.glob("_failed.rank*.json"))


def test_training_a_hub_family_at_the_toy_clip_size_is_pointed_out(workspace, tmp_path, capsys):
    from motionguide.training.loop import _warn_if_toy_clip_size

    wan = load_pipeline(workspace / "model")
    _warn_if_toy_clip_size(TrainConfig(pretrained_model_name_or_path=str(workspace / "model")), wan)
    note = capsys.readouterr().out
    assert "17x64x64, the toy defaults" in note and "samples at 81x480x832" in note
    _warn_if_toy_clip_size(config(workspace, "unused"), wan)  # 9x32x32: set on purpose
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "sampling_defaults.json").write_text(json.dumps({"num_frames": 17, "height": 64, "width": 64}))
    _warn_if_toy_clip_size(TrainConfig(pretrained_model_name_or_path=str(tmp_path / "toy")), None)
    assert capsys.readouterr().out == ""
