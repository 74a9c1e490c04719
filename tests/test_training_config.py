"""Training configs: every shipped YAML parses; bad keys and values are clear errors; overrides; and each
config builds its model family through the loop's own code path (from a tiny random model of that family)."""

from pathlib import Path

import pytest
import yaml

from motionguide.errors import ConfigError
from motionguide.testing import tiny_cogvideox_pipeline, tiny_wan_pipeline
from motionguide.toy import make_dataset
from motionguide.training.config import TrainConfig
from motionguide.training.loop import Trainer

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("name", ["toy.yaml", "wan2.1-t2v-1.3b.yaml", "cogvideox-2b.yaml"])
def test_shipped_configs_parse(name):
    cfg = TrainConfig.load(CONFIGS / name)
    assert cfg.training_type == "lora" and (cfg.num_frames - 1) % 4 == 0


def test_accelerate_configs_are_valid_yaml():
    for path in (CONFIGS / "accelerate").glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        assert data["distributed_type"] in ("NO", "MULTI_GPU", "MULTI_CPU", "DEEPSPEED"), path


def test_unknown_key_names_file_and_closest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rat: 0.1\n")
    with pytest.raises(ConfigError) as err:
        TrainConfig.load(path)
    assert str(path) in str(err.value) and "'learning_rate'" in str(err.value)


def test_overrides_and_value_checks(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train_steps: 10\n")
    cfg = TrainConfig.load(path, ["--learning_rate", "5e-5", "--gradient_checkpointing", "--validation_prompts",
                                  "a red circle moves left,a blue square", "--rank=8"])
    assert cfg.learning_rate == 5e-5 and cfg.gradient_checkpointing is True and cfg.rank == 8
    assert cfg.validation_prompts == ["a red circle moves left", "a blue square"]
    with pytest.raises(ConfigError, match="command line.*'train_steps'"):
        TrainConfig.load(path, ["--train_step", "3"])
    with pytest.raises(ConfigError, match="num_frames.*4k\\+1"):
        TrainConfig.load(path, ["--num_frames", "16"])
    with pytest.raises(ConfigError, match="train_batch_size must be an integer"):
        TrainConfig.load(path, ["--train_batch_size", "two"])


@pytest.mark.parametrize("name,make_pipe,frames,size", [
    ("wan2.1-t2v-1.3b.yaml", tiny_wan_pipeline, 17, 32),
    ("cogvideox-2b.yaml", tiny_cogvideox_pipeline, 9, 32),
])
def test_real_config_builds_its_family_through_the_loop(tmp_path, name, make_pipe, frames, size):
    make_pipe().save_pretrained(tmp_path / "model")
    make_dataset(tmp_path / "data", num_clips=2, seed=3, progress=False)
    cfg = TrainConfig.load(CONFIGS / name, [
        "--pretrained_model_name_or_path", str(tmp_path / "model"), "--output_dir", str(tmp_path / "out"),
        "--data_root", str(tmp_path / "data"), "--cache_dir", str(tmp_path / "cache"), "--num_frames", str(frames),
        "--height", str(size), "--width", str(size), "--max_sequence_length", "16", "--train_steps", "1",
        "--report_to", "none", "--validation_prompts", "", "--mixed_precision", "no", "--checkpointing_steps", "0",
        "--gradient_accumulation_steps", "1",
    ])
    summary = Trainer(cfg).run()
    assert summary["steps"] == 1 and Path(summary["lora"]).is_file()
    from safetensors.torch import load_file

    keys = load_file(summary["lora"])
    for module in cfg.target_modules:
        assert any(f".{module}.lora_A" in k for k in keys), f"{module} got no LoRA"
