"""Training configs: every shipped YAML parses; bad keys and values are clear one-line errors raised before any
model load; overrides in both spellings, mappings and lists on the command line; old key names map to their new
places with a deprecation warning; and each config builds its model family through the loop's own code path
(from a tiny random model of that family)."""

import re
import warnings
from pathlib import Path

import pytest

from motionguide.errors import ConfigError
from motionguide.testing import (tiny_cogvideox_pipeline, tiny_hunyuan_video_pipeline, tiny_wan22_a14b_pipeline,
                                 tiny_wan22_i2v_a14b_pipeline, tiny_wan22_ti2v_pipeline, tiny_wan_i2v_pipeline,
                                 tiny_wan_pipeline)
from motionguide.toy import make_dataset
from motionguide.training import cli as train_cli
from motionguide.training.config import DEPRECATED_KEYS, TrainConfig
from motionguide.training.loop import Trainer

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ACCELERATE_CONFIGS = ["cpu_ddp_2ranks", "cpu_deepspeed_zero2_2ranks", "cpu_deepspeed_zero3_2ranks", "deepspeed_zero2",
                      "deepspeed_zero3", "fsdp", "multi_gpu", "single_gpu"]


@pytest.mark.parametrize("name", ["toy.yaml", "wan2.1-t2v-1.3b.yaml", "cogvideox-2b.yaml", "wan2.2-ti2v-5b.yaml",
                                  "wan2.2-t2v-a14b.yaml", "hunyuanvideo.yaml", "cogvideox-5b.yaml", "cogvideox-5b-i2v.yaml",
                                  "wan2.1-i2v-14b.yaml", "wan2.2-i2v-a14b.yaml"])
def test_shipped_configs_parse_without_deprecated_keys(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the shipped configs use the current names only
        cfg = TrainConfig.load(CONFIGS / name)
    assert cfg.training_type == "lora" and (cfg.num_frames - 1) % 4 == 0
    assert cfg.latent_cache_dir == "cache"


def test_toy_config_values_at_their_new_places():
    cfg = TrainConfig.load(CONFIGS / "toy.yaml")
    assert cfg.data_recipe == {"name": "toy", "num_clips": 200, "seed": 0, "defect_rate": 0.2}
    assert cfg.method_options["motive"]["fraction"] == 0.1 and cfg.curation == "none"


def test_accelerate_configs_load_into_accelerate():
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import DistributedType

    found = sorted(p.stem for p in (CONFIGS / "accelerate").glob("*.yaml"))
    assert found == ACCELERATE_CONFIGS
    for name in found:
        config = ClusterConfig.from_yaml_file(CONFIGS / "accelerate" / f"{name}.yaml")  # raises on unknown keys
        expected = {"cpu_ddp": DistributedType.MULTI_CPU, "deepspeed": DistributedType.DEEPSPEED,
                    "cpu_deepspeed": DistributedType.DEEPSPEED, "multi_gpu": DistributedType.MULTI_GPU,
                    "single_gpu": DistributedType.NO, "fsdp": DistributedType.FSDP}
        kind = next(v for k, v in expected.items() if name.startswith(k))
        assert config.distributed_type == kind, name
        assert config.num_processes == (1 if kind == DistributedType.NO else 2 if "2ranks" in name else 8), name
        if kind == DistributedType.DEEPSPEED:
            assert config.deepspeed_config["zero_stage"] == (3 if "zero3" in name else 2), name


def test_accelerate_rejects_what_the_check_above_relies_on(tmp_path):
    from accelerate.commands.config.config_args import ClusterConfig

    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "accelerate" / "single_gpu.yaml").read_text() + "num_procesess: 2\n")
    with pytest.raises(ValueError, match="num_procesess"):
        ClusterConfig.from_yaml_file(bad)


def test_unknown_key_names_file_and_closest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rat: 0.1\n")
    with pytest.raises(ConfigError) as err:
        TrainConfig.load(path)
    assert str(path) in str(err.value) and "'learning_rate'" in str(err.value)


def test_overrides_and_value_checks(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train_steps: 10\nmixed_precision: no\nlearning_rate: 5e-5\n")
    cfg = TrainConfig.load(path, ["--learning_rate", "2e-5", "--gradient_checkpointing", "--rank=8",
                                  "--validation_seeds", "0,3", "--monitor", "imap", "--checkpointing_limit", "none",
                                  "--target_modules", "to_q,to_v"])
    assert cfg.learning_rate == 2e-5 and cfg.gradient_checkpointing is True and cfg.rank == 8
    assert cfg.mixed_precision == "no" and cfg.train_steps == 10
    assert cfg.validation_seeds == [0, 3] and cfg.monitor == ["imap"] and cfg.checkpointing_limit is None
    assert cfg.target_modules == ["to_q", "to_v"]
    assert TrainConfig.load(path).learning_rate == 5e-5  # YAML 1.1 reads 5e-5 as a string: still a number
    assert TrainConfig.load(path, ["--target_modules", r".*attn1\.to_q"]).target_modules == r".*attn1\.to_q"
    assert TrainConfig.load(path, ["--gradient_checkpointing", "false"]).gradient_checkpointing is False
    with pytest.raises(ConfigError, match="command line.*'train_steps'"):
        TrainConfig.load(path, ["--train_step", "3"])
    with pytest.raises(ConfigError, match="num_frames.*4k\\+1"):
        TrainConfig.load(path, ["--num_frames", "16"])
    with pytest.raises(ConfigError, match="train_batch_size must be an integer"):
        TrainConfig.load(path, ["--train_batch_size", "two"])
    with pytest.raises(ConfigError, match="mixed_precision must be one of 'no', 'fp16', 'bf16'"):
        TrainConfig.load(path, ["--mixed_precision", "fp8"])


@pytest.mark.parametrize("flag,value,field,expected", [
    ("max_sequence_length", "7", "max_sequence_length", 7),
    ("gradient_accumulation_steps", "3", "gradient_accumulation_steps", 3),
    ("latent_cache_dir", "elsewhere", "latent_cache_dir", "elsewhere"),
    ("validation_guidance_scale", "3.5", "validation_guidance_scale", 3.5),
    ("pretrained_model_name_or_path", "m", "pretrained_model_name_or_path", "m"),
])
def test_both_spellings_of_a_training_flag(tmp_path, flag, value, field, expected):
    path = tmp_path / "c.yaml"
    path.write_text("train_steps: 1\n")
    snake = TrainConfig.load(path, [f"--{flag}", value])
    kebab = TrainConfig.load(path, [f"--{flag.replace('_', '-')}", value])
    assert getattr(snake, field) == getattr(kebab, field) == expected


def test_every_training_flag_has_both_spellings():
    parser = train_cli.build_help_parser()
    for name in TrainConfig.field_names() + list(DEPRECATED_KEYS):
        snake, kebab = f"--{name}", f"--{name.replace('_', '-')}"
        assert parser._option_string_actions[snake] is parser._option_string_actions[kebab], name


def test_method_options_from_the_command_line_is_a_mapping_merged_per_method():
    """The README's own `--method_options '{motive: {queries: DIR}}'` (it used to stay a string)."""
    cfg = TrainConfig.load(CONFIGS / "toy.yaml", ["--curation", "motive",
                                                  "--method_options", "{motive: {queries: /data/q}}"])
    assert cfg.method_options["motive"]["queries"] == "/data/q"
    assert cfg.method_options["motive"]["fraction"] == 0.1  # the file's other motive settings stay
    assert cfg.method_options["imap"] == {"every": 50, "num_probes": 4,
                                          "masks_fn": "motionguide.toy.truth:clip_masks_fn"}
    cfg = TrainConfig.load(CONFIGS / "toy.yaml", ["--method-options", '{"imap": {"every": 5}}'])
    assert cfg.method_options["imap"]["every"] == 5 and cfg.method_options["motive"]["queries"] == "data/toy-queries"
    with pytest.raises(ConfigError, match="method_options must be a mapping"):
        TrainConfig.load(CONFIGS / "toy.yaml", ["--method_options", "motive"])
    with pytest.raises(ConfigError, match="method_options.motive=.*must be a mapping"):
        TrainConfig.from_dict({"method_options": {"motive": "queries"}})


def test_validation_prompts_may_contain_commas(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text('validation_prompts: ["a dog, running", "a ball"]\n')
    assert TrainConfig.load(path).validation_prompts == ["a dog, running", "a ball"]
    listed = TrainConfig.load(path, ["--validation_prompts", '["a red circle, moving left", "a blue square"]'])
    assert listed.validation_prompts == ["a red circle, moving left", "a blue square"]
    repeated = TrainConfig.load(path, ["--validation_prompts", "a red circle, moving left",
                                       "--validation-prompts", "a blue square"])
    assert repeated.validation_prompts == ["a red circle, moving left", "a blue square"]
    appended = TrainConfig.load(path, ["--validation_prompts+", "a cat, sleeping"])
    assert appended.validation_prompts == ["a dog, running", "a ball", "a cat, sleeping"]
    assert TrainConfig.load(path, ["--validation_prompts", ""]).validation_prompts == []


# ---------------------------------------------------------------------- errors before any model load
@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if anything loads a pipeline (the checks must stop before that)."""
    from diffusers import DiffusionPipeline

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("a model was loaded before the config was checked")

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", refuse)
    return calls


@pytest.mark.parametrize("yaml_text,overrides,message", [
    ("train_steps: 3\nrank: [16\n", [], r"line \d+, column \d+: YAML syntax error"),
    ("train_steps: 3\n", ["--lr_scheduler", "cosine_warmup"], r"lr_scheduler='cosine_warmup' is not a diffusers "
                                                               r"scheduler.*Valid: linear, cosine"),
    ("train_steps: 3\n", ["--curation", "motiv"], r"--curation 'motiv': no such curation. Did you mean 'motive'\?"),
    ("train_steps: 3\n", ["--monitor", "imapp"], r"--monitor 'imapp': no such monitor"),
    ("train_steps: 3\n", ["--guidance", "corespondence"], r"--guidance 'corespondence': no such guidance"),
    ("data_recipe: {name: toys}\n", [], r"data_recipe 'toys': no such data recipe. Did you mean 'toy'\?"),
    ("lr_scheduler: linear\nlearning_rat: 1\n", [], r"unknown key 'learning_rat'"),
    ("train_steps: 3\n", ["--method_options", "{motive: {queries: D}"], r"method_options must be a mapping"),
])
def test_config_mistakes_are_one_line_errors_before_any_model_load(tmp_path, capsys, no_model_load, yaml_text,
                                                                   overrides, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    code = train_cli.main(["--config", str(path), "--output_dir", str(tmp_path / "out"), *overrides])
    err = capsys.readouterr().err
    assert code == 2 and not no_model_load
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert str(path) in lines[0] or lines[0].startswith("error: command line: ")
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()


def test_missing_config_and_help(capsys):
    assert train_cli.main([]) == 2
    assert capsys.readouterr().err.strip().startswith("error: give the training config: --config FILE")
    assert train_cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--config" in out and "--method_options" in out and "--latent-cache-dir" in out


# ---------------------------------------------------------------------- deprecated keys
def test_old_keys_in_yaml_map_to_their_new_places_with_a_warning(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("cache_dir: my-cache\ntoy_data: {num_clips: 3, seed: 4}\ncuration: random\n"
                    "curation_fraction: 0.5\ncuration_mode: reweight\n")
    with pytest.warns(FutureWarning) as record:
        cfg = TrainConfig.load(path)
    messages = " | ".join(str(w.message) for w in record)
    for old in DEPRECATED_KEYS:
        assert f"'{old}' is deprecated" in messages, old
    assert "method_options.random.fraction" in messages
    assert cfg.latent_cache_dir == "my-cache"
    assert cfg.data_recipe == {"name": "toy", "num_clips": 3, "seed": 4}
    assert cfg.method_options == {"random": {"fraction": 0.5, "mode": "reweight"}}
    assert set(cfg.to_dict()) == set(TrainConfig.field_names()) and "cache_dir" not in cfg.to_dict()


def test_old_keys_on_the_command_line_follow_the_final_curation(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("curation_fraction: 0.3\nmethod_options: {motive: {queries: q}}\n")
    with pytest.warns(FutureWarning):
        cfg = TrainConfig.load(path, ["--curation", "motive", "--curation-mode", "prune-negative",
                                      "--cache-dir", "c2"])
    assert cfg.method_options["motive"] == {"queries": "q", "fraction": 0.3, "mode": "prune-negative"}
    assert cfg.latent_cache_dir == "c2"
    with pytest.warns(FutureWarning):
        unused = TrainConfig.load(path)  # no curation: nothing reads the fraction
    assert unused.method_options == {"motive": {"queries": "q"}}


def test_old_keys_as_constructor_arguments_and_old_readers():
    with pytest.warns(FutureWarning):
        cfg = TrainConfig(cache_dir="c", toy_data={"num_clips": 2}, curation="random", curation_fraction=0.25)
    assert cfg.latent_cache_dir == "c" and cfg.data_recipe == {"name": "toy", "num_clips": 2}
    assert cfg.method_options == {"random": {"fraction": 0.25}}
    with pytest.warns(DeprecationWarning):
        assert (cfg.cache_dir, cfg.toy_data, cfg.curation_fraction, cfg.curation_mode) == ("c", {"num_clips": 2},
                                                                                            0.25, None)
    assert TrainConfig(**cfg.to_dict()) == cfg  # a saved config round-trips without old names


def test_old_and_new_places_that_disagree_are_an_error():
    with pytest.raises(ConfigError, match="curation_fraction=0.2 disagrees with method_options.motive.fraction=0.3"):
        with pytest.warns(FutureWarning):
            TrainConfig.from_dict({"curation": "motive", "curation_fraction": 0.2,
                                   "method_options": {"motive": {"fraction": 0.3}}})
    with pytest.raises(ConfigError, match="cache_dir='a' disagrees with latent_cache_dir='b'"):
        with pytest.warns(FutureWarning):
            TrainConfig.from_dict({"cache_dir": "a", "latent_cache_dir": "b"})


def test_old_keys_warn_in_one_line_each_from_the_script(tmp_path, capsys, no_model_load):
    path = tmp_path / "old.yaml"
    path.write_text("cache_dir: c\nlr_scheduler: nope\n")
    assert train_cli.main(["--config", str(path)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err[-1].startswith("error: ") and "lr_scheduler='nope'" in err[-1]
    path.write_text("cache_dir: c\n")
    assert train_cli._load_config(["--config", str(path)]).latent_cache_dir == "c"
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [f"warning: {path}: 'cache_dir' is deprecated; use latent_cache_dir (cache_dir is the hub "
                   "download cache in diffusers)"]


# ---------------------------------------------------------------------- each family through the loop
def _tiny_cogvideox_5b_i2v():
    """CogVideoX-5B-I2V's layout at tiny size: 3D RoPE and a stored position table (for 4 x 4 latents: 32 px)."""
    return tiny_cogvideox_pipeline(rotary=True, image_to_video=True, learned_positions=True)


@pytest.mark.parametrize("name,make_pipe,frames,size,text", [
    ("wan2.1-t2v-1.3b.yaml", tiny_wan_pipeline, 17, 32, 16),
    ("cogvideox-2b.yaml", tiny_cogvideox_pipeline, 9, 32, 16),
    ("wan2.2-ti2v-5b.yaml", tiny_wan22_ti2v_pipeline, 9, 64, 16),
    ("wan2.2-t2v-a14b.yaml", tiny_wan22_a14b_pipeline, 9, 32, 16),
    ("hunyuanvideo.yaml", tiny_hunyuan_video_pipeline, 9, 32, 16),
    ("cogvideox-5b.yaml", lambda: tiny_cogvideox_pipeline(rotary=True), 9, 32, 16),
    ("cogvideox-5b-i2v.yaml", _tiny_cogvideox_5b_i2v, 9, 32, 16),
    ("wan2.1-i2v-14b.yaml", tiny_wan_i2v_pipeline, 9, 32, 512),  # its attention needs 512 text tokens
    ("wan2.2-i2v-a14b.yaml", tiny_wan22_i2v_a14b_pipeline, 9, 32, 16),
])
def test_real_config_builds_its_family_through_the_loop(tmp_path, name, make_pipe, frames, size, text):
    make_pipe().save_pretrained(tmp_path / "model")
    make_dataset(tmp_path / "data", num_clips=2, seed=3, progress=False)
    cfg = TrainConfig.load(CONFIGS / name, [
        "--pretrained_model_name_or_path", str(tmp_path / "model"), "--output_dir", str(tmp_path / "out"),
        "--data_root", str(tmp_path / "data"), "--latent_cache_dir", str(tmp_path / "cache"),
        "--num_frames", str(frames), "--height", str(size), "--width", str(size), "--max_sequence_length", str(text),
        "--train_steps", "1", "--report_to", "none", "--validation_prompts", "", "--mixed_precision", "no",
        "--checkpointing_steps", "0", "--gradient_accumulation_steps", "1",
    ])
    summary = Trainer(cfg).run()
    assert summary["steps"] == 1 and Path(summary["lora"]).is_file()
    assert (tmp_path / "cache").is_dir()  # the latent cache went where latent_cache_dir said
    from safetensors.torch import load_file

    keys = load_file(summary["lora"])
    for module in cfg.target_modules:
        assert any(f".{module}.lora_A" in k for k in keys), f"{module} got no LoRA"


def test_the_hunyuanvideo_config_samples_as_the_family_does_and_passes_preflight_at_its_own_size(tmp_path):
    """Its clip and validation settings are the HunyuanVideo adapter's sampling defaults (49x480x720, 256 prompt
    tokens, 30 steps, embedded guidance 6), and the Trainer's preflight (method names, frame sizes against the
    model's VAE factor x patch size, 16 for HunyuanVideo as for the tiny copy) accepts them: no weights load."""
    from motionguide.backbones import HunyuanVideoBackbone

    tiny_hunyuan_video_pipeline().save_pretrained(tmp_path / "model")
    cfg = TrainConfig.load(CONFIGS / "hunyuanvideo.yaml", ["--pretrained_model_name_or_path", str(tmp_path / "model"),
                                                           "--output_dir", str(tmp_path / "out"),
                                                           "--data_root", str(tmp_path / "data")])
    own = HunyuanVideoBackbone.sampling_defaults
    assert (cfg.num_frames, cfg.height, cfg.width, cfg.max_sequence_length) == (
        own.num_frames, own.height, own.width, own.max_sequence_length)
    assert (cfg.validation_inference_steps, cfg.validation_guidance_scale) == (own.steps, own.cfg)
    Trainer(cfg)  # preflight only
    with pytest.raises(ConfigError, match="width=728 is not a multiple of 16"):
        Trainer(TrainConfig.load(CONFIGS / "hunyuanvideo.yaml", [
            "--pretrained_model_name_or_path", str(tmp_path / "model"), "--width", "728"]))


def test_the_image_to_video_configs_use_the_sizes_their_models_require():
    """CogVideoX-5B-I2V's stored position table fixes its frames to the released sample size (latents x 8 px);
    Wan2.1-I2V's attention splits the image tokens from the text at 512 text tokens; the Wan2.1-I2V 14B transformer
    patches 2x2 on an 8x VAE, so its frame sides divide by 16."""
    from motionguide.backbones.reference_configs import COGVIDEOX_5B_I2V
    from motionguide.backbones.wan.adapter import WAN_I2V_TEXT_LENGTH

    cog = TrainConfig.load(CONFIGS / "cogvideox-5b-i2v.yaml")
    assert (cog.height, cog.width) == (8 * COGVIDEOX_5B_I2V["sample_height"], 8 * COGVIDEOX_5B_I2V["sample_width"])
    assert cog.num_frames == COGVIDEOX_5B_I2V["sample_frames"]
    assert cog.max_sequence_length == COGVIDEOX_5B_I2V["max_text_seq_length"]
    wan = TrainConfig.load(CONFIGS / "wan2.1-i2v-14b.yaml")
    assert wan.max_sequence_length == WAN_I2V_TEXT_LENGTH
    assert wan.height % 16 == 0 and wan.width % 16 == 0
