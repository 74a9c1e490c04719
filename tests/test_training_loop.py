"""The fine-tuning loop on a tiny Wan pipeline: LoRA interop, exact resume after SIGKILL, logging, validation."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import torchrun_two_ranks, train_config, training_workspace

from motionguide.errors import ConfigError
from motionguide.training import get_curation
from motionguide.training.config import TrainConfig
from motionguide.training.loop import Trainer

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return training_workspace(tmp_path_factory, "loop", num_clips=6, seed=1)


def base_config(root: Path, out: str, **overrides) -> TrainConfig:
    return train_config(root, out, dict(train_steps=4, train_batch_size=2, checkpointing_steps=0, report_to="none",
                                        rank=4, lora_alpha=8, max_sequence_length=16, learning_rate=1e-2,
                                        lr_scheduler="constant", caption_dropout=0.25), overrides)


def test_lora_loads_in_the_stock_pipeline_and_reproduces_the_trained_model(workspace):
    from diffusers import WanPipeline

    trainer = Trainer(base_config(workspace, "lora-run", train_steps=3))
    summary = trainer.run()
    assert Path(summary["lora"]).name == "pytorch_lora_weights.safetensors"

    # The trained model: base weights plus the LoRA, as the loop left them.
    from safetensors.torch import load_file
    state = load_file(summary["lora"])
    assert any("lora_A" in k for k in state) and all(k.startswith("transformer.") for k in state)

    stock = WanPipeline.from_pretrained(workspace / "model")
    reference = WanPipeline.from_pretrained(workspace / "model")
    stock.load_lora_weights(workspace / "lora-run")
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(1, 16, 3, 8, 8, generator=g), torch.randn(1, 16, 32, generator=g)
    with torch.no_grad():
        with_lora = stock.transformer(hidden_states=x, timestep=torch.tensor([400]), encoder_hidden_states=text,
                                      return_dict=False)[0]
        base = reference.transformer(hidden_states=x, timestep=torch.tensor([400]), encoder_hidden_states=text,
                                     return_dict=False)[0]
    assert not torch.allclose(with_lora, base), "the LoRA should change the model"

    # Recompute the trained model independently: base weights + (alpha / r) * B @ A on every targeted layer.
    manual = WanPipeline.from_pretrained(workspace / "model").transformer
    scale = 8 / 4
    with torch.no_grad():
        for key in [k for k in state if k.endswith("lora_A.weight")]:
            module_name = key[len("transformer."):-len(".lora_A.weight")]
            layer = manual.get_submodule(module_name)
            layer.weight += scale * state[key.replace("lora_A", "lora_B")] @ state[key]
        merged = manual(hidden_states=x, timestep=torch.tensor([400]), encoder_hidden_states=text, return_dict=False)[0]
    torch.testing.assert_close(with_lora, merged, atol=1e-5, rtol=1e-5)


def test_trained_transformer_equals_stock_pipeline_with_loaded_lora(workspace):
    """Exact interop: the transformer at the end of training vs the stock pipeline after load_lora_weights."""
    from diffusers import WanPipeline

    captured = {}

    from motionguide.training.callbacks import TrainerCallback

    class GrabCallback(TrainerCallback):
        def on_train_end(self, ctx):
            captured["model"] = ctx.transformer

    Trainer(base_config(workspace, "lora-exact", train_steps=2), callbacks=[GrabCallback()]).run()
    stock = WanPipeline.from_pretrained(workspace / "model")
    stock.load_lora_weights(workspace / "lora-exact")
    g = torch.Generator().manual_seed(1)
    x, text = torch.randn(1, 16, 3, 8, 8, generator=g), torch.randn(1, 16, 32, generator=g)
    trained = captured["model"].eval()
    with torch.no_grad():
        a = trained(hidden_states=x, timestep=torch.tensor([700]), encoder_hidden_states=text, return_dict=False)[0]
        b = stock.transformer(hidden_states=x, timestep=torch.tensor([700]), encoder_hidden_states=text,
                              return_dict=False)[0]
    assert torch.equal(a, b)


def test_tensorboard_logs_validation_videos_and_checkpoints(workspace):
    cfg = base_config(workspace, "logged", train_steps=4, checkpointing_steps=2, checkpointing_limit=1,
                      report_to="tensorboard", logging_steps=1, validation_prompts=["a red circle moves left"],
                      validation_inference_steps=2)
    Trainer(cfg).run()
    out = workspace / "logged"
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    videos = list((out / "validation" / "step-4").glob("*.mp4"))
    assert videos and (out / "validation" / "step-4" / "grid.png").is_file()
    metrics = json.loads((out / "validation" / "step-4" / "metrics.json").read_text())
    assert "validation/flicker_proxy" in metrics["summary"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images = set()
    for path in (out / "logs").rglob("events.out.tfevents.*"):
        events = EventAccumulator(str(path), size_guidance={"images": 0})
        events.Reload()
        images |= set(events.Tags()["images"])
    assert {"validation/samples", "validation/video_000"} <= images  # the grid, and the video as an animation
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]  # step 4 is the end, limit 1
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["curation"]["method"] == "none"


def test_random_curation_trains_on_the_selected_fraction(workspace):
    summary = Trainer(base_config(workspace, "curated", train_steps=2, curation="random",
                                  method_options={"random": {"fraction": 0.5}})).run()
    assert summary["clips"] == 3
    selection = json.loads((workspace / "curated" / "curation.json").read_text())
    assert len(selection["indices"]) == 3


def test_curation_settings_are_method_options_and_its_fingerprint_guards_resume(workspace):
    """`method_options.random.fraction` is the curation's own setting (the same selection as the older
    `curation_fraction`); the checkpoint keeps the curation's fingerprint and a resume asking for another
    fraction is refused."""
    cfg = base_config(workspace, "curated-options", train_steps=2, checkpointing_steps=1, curation="random",
                      method_options={"random": {"fraction": 0.5}})
    summary = Trainer(cfg).run()
    selection = json.loads((workspace / "curated-options" / "curation.json").read_text())
    expected = sorted(int(i) for i in np.random.default_rng(0).choice(6, size=3, replace=False))  # seed 0
    assert summary["clips"] == 3 and selection["indices"] == expected
    # the same fingerprint the older curation_fraction wrote, so checkpoints from before still resume
    assert selection["settings"] == {"curation": "random", "fraction": 0.5, "mode": None}
    state = json.loads((workspace / "curated-options" / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["curation"]["settings"] == selection["settings"]

    other = base_config(workspace, "curated-options", train_steps=3, curation="random",
                        resume_from_checkpoint="latest", method_options={"random": {"fraction": 0.25}})
    with pytest.raises(ConfigError, match="'fraction': 0.5.*'fraction': 0.25"):
        Trainer(other).run()
    with pytest.raises(ConfigError, match="--curation 'randm': no such curation. Did you mean 'random'"):
        Trainer(base_config(workspace, "never-made", curation="randm"))  # before any model load
    assert not (workspace / "never-made").exists()
    with pytest.raises(ConfigError, match="--monitor 'imapp'"):
        Trainer(base_config(workspace, "never-made", monitor=["imapp"]))
    with pytest.raises(ConfigError, match="method_options.random: unknown key 'fractoin'"):
        get_curation("random", fractoin=0.5)
    with pytest.raises(ConfigError, match="method_options.random.fraction"):
        get_curation("random", fraction=1.5)


def test_dataloader_workers_load_the_same_batches(workspace):
    """`dataloader_num_workers` reads the cached clips in worker processes; the losses do not change."""
    in_process = Trainer(base_config(workspace, "workers-0", train_steps=3)).run()
    workers = Trainer(base_config(workspace, "workers-2", train_steps=3, dataloader_num_workers=2)).run()
    assert workers["losses"] == in_process["losses"]


def test_data_recipe_and_latent_cache_dir_are_the_fields_the_loop_reads(workspace, tmp_path):
    """`data_recipe: {name: toy, ...}` creates a missing data_root through the registry; the latent cache goes
    to `latent_cache_dir`."""
    cfg = base_config(workspace, "recipe-run", train_steps=1, data_root=str(tmp_path / "made"),
                      data_recipe={"name": "toy", "num_clips": 2, "seed": 4, "progress": False},
                      latent_cache_dir=str(tmp_path / "latents"))
    summary = Trainer(cfg).run()
    assert summary["clips"] == 2 and (tmp_path / "made" / "metadata.jsonl").is_file()
    made = [m.parent.name for m in (tmp_path / "latents").glob("*/manifest.json")]
    assert len(made) == 1 and not (workspace / "cache" / made[0]).exists()

    bad = base_config(workspace, "recipe-bad", data_root=str(tmp_path / "never"),
                      data_recipe={"name": "toy", "num_clips": 2, "seed": 4, "clips": 3})
    with pytest.raises(ConfigError, match="data_recipe \\(toy\\): unknown key 'clips'"):
        Trainer(bad).run()


def _write_yaml(path: Path, cfg: TrainConfig) -> Path:
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def _run(args, env=None, **kw):
    return subprocess.Popen([sys.executable, str(REPO / "train" / "finetune.py"), *args], cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_sigkill_then_resume_latest_repeats_the_uninterrupted_losses(workspace):
    common = dict(checkpointing_steps=3, learning_rate=1e-3, checkpointing_limit=None)
    killed_cfg = base_config(workspace, "killed", **{**common, "train_steps": 100000})
    config_path = _write_yaml(workspace / "killed.yaml", killed_cfg)
    proc = _run(["--config", str(config_path)])
    deadline = time.time() + 240
    while not (workspace / "killed" / "checkpoint-3" / "trainer_state.json").exists():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    latest = max(int(p.name.split("-")[1]) for p in (workspace / "killed").glob("checkpoint-*")
                 if (p / "trainer_state.json").exists())
    total = latest + 3

    resumed = _run(["--config", str(config_path), "--train_steps", str(total), "--resume_from_checkpoint", "latest"])
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output[-3000:]
    assert f"at step {latest}" in output
    summary = json.loads((workspace / "killed" / "train_summary.json").read_text())
    assert summary["steps"] == total

    full = Trainer(base_config(workspace, "uninterrupted", **{**common, "train_steps": total})).run()
    for step in range(latest + 1, total + 1):
        assert summary["losses"][str(step)] == full["losses"][step], f"step {step} differs after resume"
    for step in range(1, latest + 1):  # the steps before the kill, restored from the checkpoint
        assert summary["losses"][str(step)] == full["losses"][step]


def test_bad_resume_path_is_a_clear_error(workspace):
    from motionguide.errors import ConfigError

    with pytest.raises(ConfigError, match="not a checkpoint folder"):
        Trainer(base_config(workspace, "bad-resume", resume_from_checkpoint=str(workspace / "nowhere"))).run()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["ddp", "deepspeed_zero2"])
def test_two_ranks_stay_in_sync(workspace, backend):
    cfg = base_config(workspace, f"two-ranks-{backend}", train_steps=3, train_batch_size=1, learning_rate=1e-3)
    config_path = _write_yaml(workspace / f"{backend}.yaml", cfg)
    out = workspace / f"{backend}.json"
    job = REPO / "tests" / "jobs" / "finetune_sync.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    if backend == "ddp":
        cmd = torchrun_two_ranks(job, config_path, out)
        env["ACCELERATE_USE_CPU"] = "1"
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "configs" / "accelerate" / "cpu_deepspeed_zero2_2ranks.yaml"), "--main_process_port",
               str(_free_port()), str(job), str(config_path), str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2
    assert ("DEEPSPEED" in result["distributed_type"]) == (backend == "deepspeed_zero2")
    assert result["max_rank_difference"] == 0.0 and result["changed_from_init"] > 0


def test_wandb_offline_and_generated_toy_data_recipe(workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = base_config(workspace, "wandb-run", train_steps=2, report_to="wandb", logging_steps=1,
                      data_root=str(tmp_path / "generated"),
                      data_recipe={"name": "toy", "num_clips": 3, "seed": 4, "progress": False})
    summary = Trainer(cfg).run()
    assert summary["steps"] == 2 and (tmp_path / "generated" / "metadata.jsonl").is_file()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs, "no offline wandb run was written"

