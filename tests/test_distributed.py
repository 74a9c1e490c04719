"""Two-rank jobs on the CPU (gloo): DDP with the attention controller active; the fine-tuning loop under DeepSpeed
ZeRO-3 (weights sharded): LoRA saved gathered, validation, lean checkpoints, exact resume."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import torchrun_two_ranks

JOBS = Path(__file__).parent / "jobs"


def run_two_ranks(script: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    cmd = torchrun_two_ranks(script, *args)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_two_rank_ddp_with_capture_stays_in_sync(tmp_path):
    out = tmp_path / "result.json"
    proc = run_two_ranks(JOBS / "ddp_instrumented.py", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and "MULTI_CPU" in result["distributed_type"]
    assert result["max_weight_difference"] == 0.0
    assert result["captures_on_rank0"] == 3 and result["capture_shape"] == [1, 2, 48, 12]


# ---------------------------------------------------------------------- the fine-tuning loop with sharded weights
REPO = Path(__file__).resolve().parent.parent


def _launch(accelerate_config: str, config: dict, out: Path, *launch_args: str, timeout: int = 400,
            expect_success: bool = True):
    """`accelerate launch` the sharded fine-tuning job on two CPU ranks; its OUT.json (else the finished process)."""
    import sys

    import yaml

    config_path = out.with_suffix(".yaml")
    config_path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "configs" / "accelerate" / accelerate_config), "--main_process_port", str(_free_port()),
           *launch_args, str(JOBS / "finetune_sharded.py"), str(config_path), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    env.pop("ACCELERATE_USE_CPU", None)  # it would keep accelerate from initialising DeepSpeed
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if not expect_success:
        return proc
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return json.loads(out.read_text())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def toy_run_config(tmp_path_factory):
    from motionguide.testing import tiny_wan_pipeline
    from motionguide.toy import make_dataset
    from motionguide.training.config import TrainConfig

    root = tmp_path_factory.mktemp("sharded")
    tiny_wan_pipeline().save_pretrained(root / "model")
    make_dataset(root / "data", num_clips=4, seed=1, progress=False)

    def config(out: str, **overrides) -> dict:
        values = dict(pretrained_model_name_or_path=str(root / "model"), output_dir=str(root / out),
                      data_root=str(root / "data"), latent_cache_dir=str(root / "cache"), train_steps=3,
                      train_batch_size=1, checkpointing_steps=2, report_to="none", rank=4, lora_alpha=8,
                      max_sequence_length=16, learning_rate=1e-3, lr_scheduler="constant", caption_dropout=0.25,
                      validation_prompts=["a red circle moves left"], validation_inference_steps=2)
        values.update(overrides)
        return TrainConfig(**values).to_dict()

    config.root = root
    return config


@pytest.fixture(scope="module")
def zero3_run(toy_run_config):
    out = toy_run_config.root / "zero3.json"
    config = toy_run_config("zero3", monitor=["imap"], method_options={"imap": {"every": 1, "num_probes": 1}})
    return _launch("cpu_deepspeed_zero3_2ranks.yaml", config, out), toy_run_config.root / "zero3"


@pytest.mark.slow
def test_zero3_on_two_ranks_trains_and_saves_the_gathered_lora_that_the_stock_pipeline_loads(zero3_run):
    from diffusers import WanPipeline
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    result, output_dir = zero3_run
    assert result["world_size"] == 2 and "DEEPSPEED" in result["distributed_type"]
    assert result["max_rank_difference"] == 0.0 and result["changed_from_init"] > 0
    assert result["gathered_shapes"] == [[4, 24], [24, 4]]  # whole LoRA matrices, not rank shards
    gathered = load_file(str(output_dir.parent / "zero3.gathered.safetensors"))

    stock = WanPipeline.from_pretrained(output_dir.parent / "model")
    stock.load_lora_weights(output_dir)
    loaded = get_peft_model_state_dict(stock.transformer, adapter_name="default_0")
    assert set(loaded) == set(gathered) and len(gathered) == 32
    for name, weight in gathered.items():
        assert torch.equal(loaded[name], weight), name

    # validation and the IMAP probes ran (every rank ran the sharded transformer; the main process wrote)
    metrics = json.loads((output_dir / "validation" / "step-3" / "metrics.json").read_text())
    assert "validation/flicker_proxy" in metrics["summary"]
    probes = json.loads((output_dir / "imap" / "history.json").read_text())["history"]
    assert [entry["step"] for entry in probes] == [1, 2, 3]


@pytest.mark.slow
def test_a_zero3_checkpoint_holds_the_lora_and_optimizer_shards_but_no_frozen_weights(zero3_run):
    _, output_dir = zero3_run
    engine = output_dir / "checkpoint-2" / "pytorch_model"
    # DeepSpeed's own format is a pickle (it loads it with weights_only=False itself)
    model_states = torch.load(engine / "zero_pp_rank_0_mp_rank_00_model_states.pt", weights_only=False)
    assert len(model_states["module"]) == 32 and all("lora_" in k for k in model_states["module"])
    assert model_states["frozen_param_shapes"] is None
    assert sorted(p.name for p in engine.iterdir()) == [
        f"zero_pp_rank_{r}_mp_rank_00_{kind}_states.pt" for r in (0, 1) for kind in ("model", "optim")]


@pytest.mark.slow
def test_resuming_a_zero3_checkpoint_on_two_ranks_repeats_the_uninterrupted_losses(zero3_run, toy_run_config):
    result, output_dir = zero3_run
    resumed = _launch("cpu_deepspeed_zero3_2ranks.yaml",
                      toy_run_config("zero3-resumed", resume_from_checkpoint=str(output_dir / "checkpoint-2"),
                                     validation_prompts=[], monitor=["imap"],
                                     method_options={"imap": {"every": 1, "num_probes": 1}}),
                      toy_run_config.root / "zero3-resumed.json")
    assert resumed["summary"]["losses"]["3"] == result["summary"]["losses"]["3"]
    assert resumed["summary"]["losses"]["2"] == result["summary"]["losses"]["2"]  # restored from the checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_under_deepspeed_bf16_the_lora_is_saved_from_the_fp32_master_weights_not_the_bf16_copy(toy_run_config,
                                                                                                 stage):
    """DeepSpeed bf16 casts the module (LoRA included) to bf16 and updates fp32 master weights in the optimiser
    partitions; the saved LoRA must be those fp32 weights (checked against DeepSpeed's own consolidation of the
    checkpoint's optimiser files), not the rounded copy the module computes with."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from diffusers import WanPipeline
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    name = f"zero{stage}-bf16"
    result = _launch(f"cpu_deepspeed_zero{stage}_2ranks.yaml",
                     toy_run_config(name, mixed_precision="bf16", train_steps=2, checkpointing_steps=1,
                                    validation_prompts=[]),
                     toy_run_config.root / f"{name}.json", "--mixed_precision", "bf16")
    output_dir = toy_run_config.root / name
    assert result["world_size"] == 2 and result["trainable_dtypes"] == ["torch.bfloat16"]  # DeepSpeed's copy

    checkpoint = output_dir / "checkpoint-1"
    saved = load_file(str(checkpoint / "pytorch_lora_weights.safetensors"))
    masters = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), exclude_frozen_parameters=True)
    masters = {k: v for k, v in masters.items() if "lora_" in k}
    assert len(saved) == len(masters) == 32
    for key, weight in masters.items():
        peft_name = "transformer." + key.replace(".default.", ".")
        assert saved[peft_name].dtype == torch.float32 and torch.equal(saved[peft_name], weight), peft_name

    final = load_file(str(output_dir / "pytorch_lora_weights.safetensors"))
    module_copy = load_file(str(output_dir.parent / f"{name}.gathered.safetensors"))  # the module's, at the end
    assert all(t.dtype == torch.float32 for t in final.values())
    assert any(not torch.equal(t.bfloat16().float(), t) for t in final.values())  # not an upcast bf16 copy
    for key, weight in module_copy.items():
        assert torch.equal(final["transformer." + key].bfloat16(), weight), key  # the copy is the rounded master

    stock = WanPipeline.from_pretrained(output_dir.parent / "model")
    stock.load_lora_weights(output_dir)
    loaded = get_peft_model_state_dict(stock.transformer, adapter_name="default_0")
    assert set("transformer." + k for k in loaded) == set(final)
    assert all(torch.equal(loaded[k], final["transformer." + k]) for k in loaded)

    if stage == 2:  # resuming restores the fp32 masters from the optimiser files: the same fp32 LoRA at the end
        resumed = _launch("cpu_deepspeed_zero2_2ranks.yaml",
                          toy_run_config(f"{name}-resumed", mixed_precision="bf16", train_steps=2,
                                         checkpointing_steps=1, validation_prompts=[],
                                         resume_from_checkpoint=str(checkpoint)),
                          toy_run_config.root / f"{name}-resumed.json", "--mixed_precision", "bf16")
        assert resumed["summary"]["losses"] == result["summary"]["losses"]
        again = load_file(str(toy_run_config.root / f"{name}-resumed" / "pytorch_lora_weights.safetensors"))
        assert set(again) == set(final) and all(torch.equal(again[k], final[k]) for k in final)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_a_full_fine_tune_under_deepspeed_bf16_saves_the_fp32_master_weights_not_the_bf16_copy(toy_run_config,
                                                                                              stage):
    """As for a LoRA: DeepSpeed bf16 trains a bf16 copy of every weight and updates fp32 masters in the
    optimiser partitions; the saved transformer must be those fp32 masters, equal to DeepSpeed's own
    consolidation of the final state's optimiser files."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from diffusers import WanTransformer3DModel
    from safetensors.torch import load_file

    name = f"zero{stage}-full-bf16"
    result = _launch(f"cpu_deepspeed_zero{stage}_2ranks.yaml",
                     toy_run_config(name, training_type="full", mixed_precision="bf16", train_steps=1,
                                    checkpointing_steps=0, validation_prompts=[]),
                     toy_run_config.root / f"{name}.json", "--mixed_precision", "bf16")
    assert result["world_size"] == 2 and result["trainable_dtypes"] == ["torch.bfloat16"]  # DeepSpeed's copy

    saved = load_file(str(toy_run_config.root / name / "transformer" / "diffusion_pytorch_model.safetensors"))
    masters = get_fp32_state_dict_from_zero_checkpoint(str(toy_run_config.root / f"{name}.final-state"))
    init = WanTransformer3DModel.from_pretrained(toy_run_config.root / "model", subfolder="transformer")
    parameters = dict(init.named_parameters())
    assert set(parameters) <= set(saved) and set(parameters) <= set(masters)
    for key in parameters:
        assert saved[key].dtype == torch.float32 and torch.equal(saved[key], masters[key]), key
    assert any(not torch.equal(saved[k].bfloat16().float(), saved[k]) for k in parameters)  # not an upcast copy
    assert any(not torch.equal(saved[k], p.detach()) for k, p in parameters.items())  # trained


@pytest.mark.slow
def test_the_fsdp_config_on_cpu_ranks_is_refused_before_training_unsynchronised_copies(toy_run_config):
    """accelerate applies FSDP on GPUs only; on CPU ranks it would leave each rank training alone."""
    proc = _launch("fsdp.yaml", toy_run_config("fsdp", validation_prompts=[]), toy_run_config.root / "fsdp.json",
                   "--num_processes", "2", "--mixed_precision", "no", expect_success=False)
    assert proc.returncode != 0
    assert "asks for FSDP, but accelerate applied DistributedType.NO on these cpu ranks" in proc.stdout + proc.stderr
    assert not (toy_run_config.root / "fsdp" / "train_summary.json").exists()


@pytest.mark.slow
def test_resuming_a_lean_zero2_checkpoint_on_two_ranks_repeats_the_uninterrupted_losses(toy_run_config):
    straight = _launch("cpu_deepspeed_zero2_2ranks.yaml", toy_run_config("zero2", validation_prompts=[]),
                       toy_run_config.root / "zero2.json")
    checkpoint = toy_run_config.root / "zero2" / "checkpoint-2"
    model_states = torch.load(checkpoint / "pytorch_model" / "mp_rank_00_model_states.pt", weights_only=False)
    assert len(model_states["module"]) == 32 and all("lora_" in k for k in model_states["module"])
    resumed = _launch("cpu_deepspeed_zero2_2ranks.yaml",
                      toy_run_config("zero2-resumed", resume_from_checkpoint=str(checkpoint), validation_prompts=[]),
                      toy_run_config.root / "zero2-resumed.json")
    assert resumed["summary"]["losses"] == straight["summary"]["losses"]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the thread names from /proc")
def test_releasing_the_process_group_leaves_no_gloo_thread_even_when_a_late_import_captured_the_group(tmp_path):
    import sys

    out = tmp_path / "threads.json"
    proc = subprocess.run([sys.executable, str(JOBS / "released_group_threads.py"), str(tmp_path / "store"), str(out)],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["gloo_threads_before"], "the group should run gloo threads while it is alive"
    assert result["gloo_threads_after"] == []


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the thread names from /proc")
def test_a_launched_rank_whose_group_outlives_its_release_exits_with_its_code_after_the_atexit_handlers(tmp_path):
    """What a DeepSpeed run meets (its engine keeps its gloo groups): the rank skips interpreter teardown, where the
    live gloo threads could abort it, but only after every earlier atexit handler ran, and with the command's code."""
    import sys

    marker = tmp_path / "marker.txt"
    proc = subprocess.run([sys.executable, str(JOBS / "lingering_group_exit.py"), str(tmp_path / "store"),
                           str(marker), "0"],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    assert "lingering: " in proc.stdout and "gloo" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stderr[-3000:]  # not the script's SystemExit(99): teardown was skipped
    assert marker.read_text() == "atexit handler ran"
