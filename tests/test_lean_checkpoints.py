"""Checkpoints hold what is trained (the LoRA), its optimiser state, the schedule and the RNG states: never the
frozen transformer. The process-group timeout reaches accelerate."""

import json
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from helpers import train_config, training_workspace
from safetensors.torch import load_file

from motionguide.errors import ConfigError
from motionguide.training.config import TrainConfig
from motionguide.training.distributed import TRAINABLE_WEIGHTS_NAME
from motionguide.training.loop import Trainer


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return training_workspace(tmp_path_factory, "lean", num_clips=4, seed=2)


def config(root: Path, out: str, **overrides) -> TrainConfig:
    return train_config(root, out, dict(train_steps=2, train_batch_size=1, checkpointing_steps=1, report_to="none",
                                        rank=4, lora_alpha=8, max_sequence_length=16, learning_rate=1e-3,
                                        lr_scheduler="constant"), overrides)


def test_a_lora_checkpoint_stores_the_lora_and_its_adam_state_but_not_the_transformer(workspace):
    captured = {}

    from motionguide.training.callbacks import TrainerCallback

    class Grab(TrainerCallback):
        def on_train_end(self, ctx):
            captured["model"] = ctx.transformer

    Trainer(config(workspace, "lora"), callbacks=[Grab()]).run()
    model = captured["model"]
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert lora and frozen and all("lora_" in n for n in lora)

    folder = workspace / "lora" / "checkpoint-1"
    assert not (folder / "model.safetensors").exists()
    stored = load_file(str(folder / TRAINABLE_WEIGHTS_NAME))
    assert set(stored) == set(lora)  # the trainable parameters by name, nothing frozen
    assert all(stored[n].shape == lora[n].shape and stored[n].dtype == torch.float32 for n in stored)

    optimizer = torch.load(folder / "optimizer.bin", weights_only=True)
    moments = [t for s in optimizer["state"].values() for k, t in s.items() if k in ("exp_avg", "exp_avg_sq")]
    assert sum(t.numel() for t in moments) == 2 * sum(p.numel() for p in lora.values())

    tensors_on_disk = sum(t.numel() for t in stored.values()) + sum(t.numel() for t in moments)
    lora_file = load_file(str(folder / "pytorch_lora_weights.safetensors"))
    tensors_on_disk += sum(t.numel() for t in lora_file.values())
    frozen_count = sum(p.numel() for n, p in model.named_parameters() if n in frozen)
    assert tensors_on_disk == 4 * sum(p.numel() for p in lora.values()) < frozen_count


def test_resuming_from_a_lean_checkpoint_repeats_the_uninterrupted_losses(workspace):
    full = Trainer(config(workspace, "straight", train_steps=3, checkpointing_steps=2)).run()
    resumed = Trainer(config(workspace, "resumed", train_steps=3, checkpointing_steps=2,
                             resume_from_checkpoint=str(workspace / "straight" / "checkpoint-2"))).run()
    assert resumed["losses"][3] == full["losses"][3]
    assert json.loads((workspace / "straight" / "checkpoint-2" / "trainer_state.json").read_text())["step"] == 2


def test_a_checkpoint_of_other_lora_settings_is_refused_with_the_fix(workspace):
    Trainer(config(workspace, "rank4", train_steps=2, checkpointing_steps=1)).run()
    other = config(workspace, "rank2", train_steps=2, rank=2,
                   resume_from_checkpoint=str(workspace / "rank4" / "checkpoint-1"))
    with pytest.raises(ConfigError, match="its LoRA has rank 4, this run asks rank=2; resume with the settings "
                                          "the checkpoint was trained with"):  # read from its header, before the load
        Trainer(other).run()


def test_the_process_group_timeout_reaches_accelerate_and_must_be_positive(workspace):
    accelerator = Trainer(config(workspace, "timeout", process_group_timeout_s=1234))._make_accelerator()
    assert accelerator.init_handler.timeout == timedelta(seconds=1234)
    assert TrainConfig().process_group_timeout_s == 1800
    with pytest.raises(ConfigError, match="process_group_timeout_s"):
        Trainer(config(workspace, "timeout", process_group_timeout_s=0))._make_accelerator()


def test_a_checkpoint_with_the_whole_transformer_from_before_still_resumes_exactly(workspace, monkeypatch):
    import motionguide.training.loop as loop

    full = Trainer(config(workspace, "lean-reference", train_steps=3, checkpointing_steps=2)).run()
    with monkeypatch.context() as patch:  # checkpoints as they were written before: accelerate's own model file
        patch.setattr(loop, "register_lean_checkpoint_hooks", lambda accelerator: [])
        Trainer(config(workspace, "old-format", train_steps=3, checkpointing_steps=2)).run()
    old = workspace / "old-format" / "checkpoint-2"
    assert (old / "model.safetensors").is_file() and not (old / TRAINABLE_WEIGHTS_NAME).exists()
    resumed = Trainer(config(workspace, "old-resumed", train_steps=3, resume_from_checkpoint=str(old))).run()
    assert resumed["losses"][3] == full["losses"][3]
