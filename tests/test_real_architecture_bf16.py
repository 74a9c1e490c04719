"""The README's real-model commands, as written but smaller, on a random-weight pipeline with Wan2.1-T2V-1.3B's
architecture (2 of 30 blocks, 1 text-encoder layer of the real width) in bf16 on the CPU: the headline fine-tune
with `--curation motive --monitor imap`, `sample/generate.py --guidance correspondence` with its LoRA, and
`motionguide curate` with gradient checkpointing.

Each command runs as a user runs it (a subprocess of the script or the CLI; `python` instead of `accelerate
launch`, which on one CPU process is the same run), with the config's own settings except the size: 5x32x32
videos, 64 text tokens, 2 steps, a toy dataset of 4 clips and 1 query clip.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from motionguide.cli import main as motionguide_main
from motionguide.toy import make_dataset

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SIZE = ["--num_frames", "5", "--height", "32", "--width", "32", "--max_sequence_length", "64"]
#: a layer profile for the 2-block copy (the shipped Wan profile names blocks 5-21 of 30)
PROFILE = """\
name: wan-random-2-blocks
family: wan
num_blocks: 2
num_heads: 12
tracking: {block: 1, step: -1, num_inference_steps: 2}
guidance: {blocks: [1], window: [0.0, 1.0], scale: 1.0, renormalize: false}
imap: {blocks: [0, 1], top_k: 2, renoise_step: 1, num_inference_steps: 2}
version: 1
"""


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args[:2])} failed:\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("real-arch")
    assert motionguide_main(["random-pipeline", "--like", "wan2.1-t2v-1.3b", "--out", str(root / "model"),
                             "--num_layers", "2", "--text_layers", "1", "--dtype", "bfloat16"]) == 0
    make_dataset(root / "data", num_clips=4, seed=1, progress=False)
    make_dataset(root / "queries", num_clips=1, seed=2, progress=False)
    (root / "profile.yaml").write_text(PROFILE)
    yield root
    shutil.rmtree(root, ignore_errors=True)  # a GB-sized model and its caches


@pytest.fixture(scope="module")
def finetuned(workspace):
    """The headline command: configs/wan2.1-t2v-1.3b.yaml (mixed_precision bf16, LoRA r32, checkpointing) with
    Motive curation and the IMAP monitor, 2 steps."""
    out = workspace / "lora"
    method_options = {"motive": {"queries": str(workspace / "queries"), "fraction": 0.5},
                      "imap": {"every": 1, "num_probes": 1, "blocks": [0, 1], "top_k": 2}}
    run_script("train/finetune.py", "--config", "configs/wan2.1-t2v-1.3b.yaml",
               "--pretrained_model_name_or_path", str(workspace / "model"), "--data_root", str(workspace / "data"),
               "--output_dir", str(out), "--latent_cache_dir", str(workspace / "cache"), *SIZE,
               "--train_steps", "2", "--gradient_accumulation_steps", "1", "--checkpointing_steps", "0",
               "--validation_prompts", "[]", "--report_to", "none", "--mixed_precision", "bf16",
               "--curation", "motive", "--monitor", "imap", "--method_options", json.dumps(method_options))
    return out


def test_the_headline_fine_tune_runs_in_bf16_with_motive_curation_and_the_imap_monitor(finetuned):
    summary = json.loads((finetuned / "train_summary.json").read_text())
    assert summary["steps"] == 2
    assert all(v == v and abs(v) < 1e3 for v in summary["losses"].values())  # finite
    assert summary["curation"] == {"method": "motive", "mode": "filter", "kept": 2, "of": 4, "queries": 1}
    history = json.loads((finetuned / "imap" / "history.json").read_text())
    assert history["blocks"] == [0, 1] and len(history["history"]) == 2  # probed at both steps
    assert {p.name for p in (finetuned / "imap").glob("*.png")} >= {"circle_step000001.png", "moves_step000002.png"}
    with safe_open(str(finetuned / "pytorch_lora_weights.safetensors"), "pt") as lora:
        keys = list(lora.keys())
        assert keys and all(k.startswith("transformer.") and "lora_" in k for k in keys)
        # rank 32, the config's, on the 1536-wide blocks
        assert lora.get_slice(next(k for k in keys if "lora_A" in k)).get_shape()[0] == 32


def test_the_fine_tune_held_every_pipeline_module_in_bf16(finetuned):
    summary = json.loads((finetuned / "train_summary.json").read_text())
    # component_dtypes_of (motionguide.loading) names each module's majority dtype: the few modules diffusers
    # keeps in fp32 inside the transformer do not change it
    assert summary["component_dtypes"] == {"transformer": "torch.bfloat16", "vae": "torch.bfloat16",
                                           "text_encoder": "torch.bfloat16"}


def test_generate_samples_with_the_lora_and_correspondence_guidance_in_bf16(workspace, finetuned):
    out = workspace / "samples"
    run_script("sample/generate.py", "--model", str(workspace / "model"), "--lora", str(finetuned),
               "--prompt", "a red circle moves left", "--num_frames", "5", "--height", "32", "--width", "32",
               "--num_inference_steps", "2", "--guidance_scale", "5", "--guidance", "correspondence",
               "--correspondence_scale", "1.0", "--profile", str(workspace / "profile.yaml"),
               "--dtype", "bf16", "--device", "cpu", "--out", str(out))
    record = json.loads((out / "samples.json").read_text())
    assert record[0]["prompt"] == "a red circle moves left" and (out / record[0]["file"]).stat().st_size > 0


def test_curate_scores_the_clips_in_bf16_with_gradient_checkpointing(workspace):
    out = workspace / "curated"
    run_script("-m", "motionguide.cli", "curate", "--model", str(workspace / "model"),
               "--data", str(workspace / "data"), "--queries", str(workspace / "queries"), "--out", str(out),
               *SIZE, "--latent_cache_dir", str(workspace / "cache"), "--fraction", "0.5",
               "--dtype", "bf16", "--device", "cpu", "--gradient_checkpointing")
    selection = json.loads((out / "selection.json").read_text())
    assert len(selection["selected_ids"]) == 2  # half of the 4 clips
