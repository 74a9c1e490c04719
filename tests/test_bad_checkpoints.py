"""Bad input never loses work (issue 18), checkpoints and the end of a run: a damaged checkpoint is named and
skipped (or refused), and what was trained is on disk before the end-of-run validation can fail."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from motionguide.errors import ConfigError
from motionguide.testing import tiny_wan_pipeline
from motionguide.toy import make_dataset
from motionguide.training.callbacks import TrainerCallback
from motionguide.training.config import TrainConfig
from motionguide.training.loop import EndOfRunError, Trainer


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, dict]:
    """An uninterrupted 3-step run that checkpointed at steps 1 and 2, and its summary."""
    root = tmp_path_factory.mktemp("ckpt")
    tiny_wan_pipeline().save_pretrained(root / "model")
    make_dataset(root / "data", num_clips=2, seed=1, progress=False, num_frames=9)
    summary = Trainer(config(root, root / "out")).run()
    return root, summary


def config(root: Path, out: Path, **overrides) -> TrainConfig:
    values = dict(pretrained_model_name_or_path=str(root / "model"), output_dir=str(out), data_root=str(root / "data"),
                  latent_cache_dir=str(root / "cache"), train_steps=3, train_batch_size=1, num_frames=9, height=32,
                  width=32, checkpointing_steps=1, checkpointing_limit=None, report_to="none", rank=2, lora_alpha=2,
                  max_sequence_length=16, learning_rate=1e-2, lr_scheduler="constant")
    values.update(overrides)
    return TrainConfig(**values)


def copy_of_run(finished, tmp_path: Path) -> Path:
    root, _ = finished
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    for name in ("pytorch_lora_weights.safetensors", "train_summary.json"):
        (out / name).unlink()
    return out


@pytest.fixture
def no_model_load(monkeypatch):
    import motionguide.loading

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(motionguide.loading, "load_pipeline", refuse)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "truncated weights": ("trainable_weights.safetensors", truncate),
    "corrupt weights": ("trainable_weights.safetensors",
                        lambda p: p.write_bytes(p.read_bytes()[:-8] + b"\x00" * 8)),
    "missing optimizer": ("optimizer.bin", Path.unlink),
    "unparsable trainer state": ("trainer_state.json", lambda p: p.write_bytes(b'{"step": 2, "loss\xff')),
}


def test_the_trainer_state_records_the_sha256_of_every_file_the_run_wrote_into_the_checkpoint(finished):
    root, _ = finished
    folder = root / "out" / "checkpoint-2"
    recorded = json.loads((folder / "trainer_state.json").read_text())["files"]
    on_disk = {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in folder.rglob("*") if p.is_file() and p.name != "trainer_state.json"}
    assert recorded == on_disk
    assert {"trainable_weights.safetensors", "optimizer.bin", "pytorch_lora_weights.safetensors"} <= set(recorded)


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_latest_skips_a_damaged_checkpoint_naming_the_file_and_resumes_exactly_from_the_previous(
        finished, tmp_path, capsys, damage):
    _, uninterrupted = finished
    out = copy_of_run(finished, tmp_path)
    name, spoil = DAMAGE[damage]
    spoil(out / "checkpoint-2" / name)
    resumed = Trainer(config(finished[0], out, resume_from_checkpoint="latest")).run()
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning: --resume_from_checkpoint")]
    assert len(warnings) == 1 and f"checkpoint-2/{name}" in warnings[0], err[-2000:]
    assert resumed["losses"] == uninterrupted["losses"]  # steps 2 and 3 redone from checkpoint-1, bit for bit
    assert (out / "pytorch_lora_weights.safetensors").is_file()


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_checkpoint_named_explicitly_is_one_line_naming_the_file_before_any_model_loads(
        finished, tmp_path, no_model_load, damage):
    out = copy_of_run(finished, tmp_path)
    name, spoil = DAMAGE[damage]
    spoil(out / "checkpoint-2" / name)
    with pytest.raises(ConfigError) as caught:
        Trainer(config(finished[0], out, resume_from_checkpoint=str(out / "checkpoint-2"))).run()
    message = str(caught.value)
    assert "\n" not in message and str(out / "checkpoint-2" / name) in message and "earlier checkpoint" in message


def test_latest_with_every_checkpoint_damaged_is_one_line_naming_a_file_before_any_model_loads(
        finished, tmp_path, no_model_load):
    out = copy_of_run(finished, tmp_path)
    for step in (1, 2):
        truncate(out / f"checkpoint-{step}" / "trainable_weights.safetensors")
    with pytest.raises(ConfigError) as caught:
        Trainer(config(finished[0], out, resume_from_checkpoint="latest")).run()
    message = str(caught.value)
    assert "\n" not in message and str(out / "checkpoint-1" / "trainable_weights.safetensors") in message
    assert "restore the file" in message


class FailingValidation(TrainerCallback):
    """An end-of-run validation that raises (e.g. diffusers refusing a frame size)."""

    def on_train_end(self, ctx):
        raise ValueError("`height` and `width` have to be divisible by 16 but are 50 and 32.")


def test_a_failing_end_of_run_validation_leaves_the_lora_and_summary_on_disk_and_is_one_line(
        finished, tmp_path, capsys):
    from motionguide.cli_args import run_command

    root, uninterrupted = finished
    out = tmp_path / "out"
    cfg = config(root, out, checkpointing_steps=0)
    code = run_command(lambda: Trainer(cfg, callbacks=[FailingValidation()]).run())
    err = capsys.readouterr().err  # progress bars go to stderr too: exactly one error line, no traceback
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("error: ValueError in FailingValidation.on_train_end") and "divisible by 16" in lines[0]
    assert "pytorch_lora_weights.safetensors" in lines[0]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 3 and (out / "pytorch_lora_weights.safetensors").is_file()
    assert {int(k): v for k, v in summary["losses"].items()} == uninterrupted["losses"]
    with pytest.raises(EndOfRunError):
        Trainer(config(root, tmp_path / "again", checkpointing_steps=0), callbacks=[FailingValidation()]).run()


@pytest.mark.parametrize("change,message", [
    ({"rank": 4}, "its LoRA has rank 2, this run asks rank=4"),
    ({"target_modules": ["to_q"]}, "its LoRA sits on blocks.0.attn1.to_k, which target_modules does not name"),
    ({"target_modules": ["to_q", "to_k", "to_v", "to_out.0", "proj_out"]},
     "target_modules names 'proj_out', which has no LoRA in it"),
    ({"training_type": "full"}, "it holds a LoRA, this run asks training_type=full"),
])
def test_resuming_with_another_rank_target_modules_or_training_type_is_one_line_before_any_model_loads(
        finished, tmp_path, no_model_load, change, message):
    """Read from the checkpoint's safetensors header: loading its weights would find the mismatch only after the
    model load, the latent cache and the curation (and as a traceback)."""
    out = copy_of_run(finished, tmp_path)
    with pytest.raises(ConfigError, match=f"--resume_from_checkpoint .*checkpoint-2: {message}; resume with the "
                                          "settings the checkpoint was trained with"):
        Trainer(config(finished[0], out, resume_from_checkpoint="latest", **change)).run()
