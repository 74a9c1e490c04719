"""`make demo`: the README's main job on the toy default, then the evidence report.

Two stories: "turn" (the default, `demo_turn`: teach the toy model a motion it lacks, issue 16) and "straight"
(below: Motive on the straight motions the model already has). The straight story runs, as separate commands
exactly as a user would type them (each printed before it runs):

1. `accelerate launch train/finetune.py --config configs/toy.yaml --curation motive --monitor imap`: the
   toy dataset (20% planted defects) and the Motive query clips (target motion "right") are generated on
   first use, the Motive pass scores every clip and keeps the top 10%, and a LoRA is fine-tuned on them
   with IMAP saliency maps logged during training;
2. `sample/generate.py` three times on the same prompts and seeds: the base model, the fine-tuned LoRA, and
   the fine-tuned LoRA with `--guidance correspondence`;
3. the report: `<out>/report.md` with the curation summary (top and bottom clips per query, votes, what the
   selection did to the planted defects), the IMAP maps over training, guided vs unguided frames and the
   offline motion metrics of every sample set.

`--quick` runs the same path at a reduced size (the test suite uses it).

The toy model (`assets/toy-model`), its config (`configs/toy.yaml`) and the two scripts live in the source
checkout, not in the installed package: the demo finds them next to the package when it runs from a checkout
(`pip install -e .` or `make demo`); from a plain install it needs `--model` and `--config` and runs the package's
entry modules instead of the scripts, and says so in one line before any work when they are missing.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .errors import ConfigError

#: where the demo looks for the source checkout (its scripts, toy model and configs): the package's parent folder
ROOT = Path(__file__).resolve().parent.parent
TOY_MODEL = Path("assets") / "toy-model"
TOY_CONFIG = Path("configs") / "toy.yaml"
TURN_CONFIG = Path("configs") / "toy-turn.yaml"
#: the demo's stories and their default configs: turn (issue 16: a motion the base model lacks, the default) and
#: straight (the first demo: Motive on the straight motions the model already has)
STORIES = {"turn": TURN_CONFIG, "straight": TOY_CONFIG}
FINETUNE_SCRIPT = Path("train") / "finetune.py"
SAMPLE_SCRIPT = Path("sample") / "generate.py"

#: Prompts sampled after fine-tuning: the queries' target motion, its opposite and a still object.
DEMO_PROMPTS = ("a red circle moves right", "a blue square moves right quickly", "a yellow triangle moves right",
                "a green circle moves left", "a blue triangle stays still")
SAMPLE_SETS = (("base", "base model", False, "none"), ("finetuned", "Motive-curated LoRA", True, "none"),
               ("guided", "Motive-curated LoRA + correspondence guidance", True, "correspondence"))


@dataclass(frozen=True)
class DemoInputs:
    """What the demo runs: the pipeline folder, the training config, the folder the commands run in, and how the
    fine-tune and the sampler are started (the checkout's scripts, else the installed package's modules)."""

    model: str
    config: Path
    workdir: Path
    finetune: tuple[str, ...]
    sample: tuple[str, ...]


def resolve_inputs(model: str | None = None, config: str | Path | None = None, story: str = "turn") -> DemoInputs:
    """The demo's inputs: given ones as they are, missing ones from the source checkout at `ROOT` (the story's
    config: `STORIES`); a ConfigError saying how to get them when neither is there (a plain `pip install` ships no
    toy model and no configs)."""
    if story not in STORIES:
        raise ConfigError(f"--story {story!r}: choose one of {', '.join(STORIES)}")
    story_config = STORIES[story]
    checkout = (ROOT / FINETUNE_SCRIPT).is_file() and (ROOT / SAMPLE_SCRIPT).is_file()
    if model is None and (ROOT / TOY_MODEL).is_dir():
        model = str(ROOT / TOY_MODEL)
    if config is None and (ROOT / story_config).is_file():
        config = ROOT / story_config
    missing = [name for name, value in (("--model (the toy model, assets/toy-model)", model),
                                        (f"--config ({story_config.as_posix()})", config)) if value is None]
    if missing:
        raise ConfigError(f"the demo found no source checkout at {ROOT} and was given no {' or '.join(missing)}: "
                          "clone the motionguide repository and run `make demo` (or `motionguide demo`) from it, "
                          "or pass --model PIPELINE_DIR --config CONFIG.yaml")
    config = Path(config)
    if not config.is_file():
        raise ConfigError(f"--config {config}: no such file")
    from .arg_checks import check_model_folder
    from .training.config import read_yaml_config

    check_model_folder(model, "--model")  # a typo: one line now, not a failed fine-tuning subprocess
    read_yaml_config(config)  # YAML errors, duplicate or unknown keys: one line naming the file, before any work
    if checkout:
        return DemoInputs(model, config.resolve(), ROOT, (str(FINETUNE_SCRIPT),), (str(SAMPLE_SCRIPT),))
    return DemoInputs(model, config.resolve(), Path.cwd(), ("-m", "motionguide.training.cli"),
                      ("-m", "motionguide.sampling.cli"))


def _quick_config(out: Path, base_config: Path) -> Path:
    """configs/toy.yaml at a reduced size, with its data, queries and cache inside `out`."""
    import yaml

    config = yaml.safe_load(base_config.read_text())
    config.update({
        "data_root": str(out / "data" / "toy-train"), "latent_cache_dir": str(out / "cache"),
        "data_recipe": {"name": "toy", "num_clips": 12, "seed": 0, "defect_rate": 0.25},
        "train_steps": 4, "train_batch_size": 2, "checkpointing_steps": 0, "logging_steps": 1,
    })
    config["method_options"]["motive"].update({"fraction": 0.25, "queries": str(out / "data" / "toy-queries"),
                                              "queries_recipe": {**config["method_options"]["motive"]["queries_recipe"],
                                                                 "num_clips": 2}})
    config["method_options"]["imap"].update({"every": 2, "num_probes": 2})
    path = out / "demo-config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _run(step: str, command: Sequence[str], log: list[dict[str, Any]], env: dict[str, str], cwd: Path) -> None:
    """Run one command of the main job with its output streaming through; stop the demo if it fails."""
    print(f"\n>> [{step}] {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    code = subprocess.call(list(command), cwd=cwd, env=env)
    seconds = time.perf_counter() - start
    log.append({"step": step, "command": shlex.join(command), "seconds": round(seconds, 1), "exit_code": code})
    if code != 0:
        raise SystemExit(f"demo step '{step}' failed with exit code {code}: {shlex.join(command)}")


def main_job(out: Path, quick: bool, inputs: DemoInputs) -> list[dict[str, Any]]:
    """The commands of the main job; returns their log (command, seconds)."""
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"), "HF_HUB_OFFLINE": "1"}
    model, config = inputs.model, inputs.config
    if quick:
        config = _quick_config(out, config)
    finetune = out / "finetune"
    log: list[dict[str, Any]] = []
    accelerate = Path(sys.executable).with_name("accelerate")  # the venv's console script: `accelerate launch`
    launch = [str(accelerate) if accelerate.is_file() else "accelerate", "launch", "--num_processes", "1",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    _run("fine-tune", [*launch, *inputs.finetune, "--config", str(config), "--curation", "motive",
                       "--monitor", "imap", "--output_dir", str(finetune), "--pretrained_model_name_or_path", model],
         log, env, inputs.workdir)
    prompts = DEMO_PROMPTS[:2] if quick else DEMO_PROMPTS
    seeds = ["0"] if quick else ["0", "1"]
    for name, _, with_lora, guidance in SAMPLE_SETS:
        # lossless: the report scores these files' pixels (toy adherence, flicker)
        command = [sys.executable, *inputs.sample, "--model", model, "--out", str(out / "samples" / name),
                   "--guidance", guidance, "--lossless"]
        for prompt in prompts:
            command += ["--prompt", prompt]
        for seed in seeds:
            command += ["--seed", seed]
        if with_lora:
            command += ["--lora", str(finetune)]
        if quick:
            command += ["--steps", "4"]
        _run(f"sample: {name}", command, log, env, inputs.workdir)
    return log


# ---------------------------------------------------------------------------------------------- the report
def _sample_metrics(folder: Path, token_px: float) -> dict[str, Any]:
    """Offline motion metrics of one sample set (mean over its videos) and its frames by video."""
    from .metrics import dynamic_degree_proxy, flow_warp_smoothness, temporal_flicker, toy_prompt_adherence
    from .video import read_video

    listing = json.loads((folder / "samples.json").read_text())
    rows, frames = [], []
    for entry in listing:
        video = read_video(folder / entry["file"])
        frames.append(video)
        adherence = toy_prompt_adherence(video, entry["prompt"], token_px=token_px)[0]
        rows.append({"prompt": entry["prompt"], "seed": entry["seed"], "presence": adherence.presence,
                     "direction": adherence.measured_direction, "direction_correct": bool(adherence.direction_correct),
                     "dynamic": bool(dynamic_degree_proxy(video).is_dynamic),
                     "smoothness": flow_warp_smoothness(video), "flicker": temporal_flicker(video)})
    summary = {"videos": len(rows),
               "direction_accuracy": float(np.mean([r["direction_correct"] for r in rows])),
               "presence": float(np.mean([r["presence"] for r in rows])),
               "dynamic_degree": float(np.mean([r["dynamic"] for r in rows])),
               "smoothness": float(np.mean([r["smoothness"] for r in rows])),
               "flicker": float(np.mean([r["flicker"] for r in rows]))}
    return {"summary": summary, "rows": rows, "frames": frames}


def _curation_section(finetune: Path, data_root: Path, target_motion: str = "right") -> tuple[list[str], dict]:
    """What the Motive selection did, checked against the toy world's labels (planted defects, motion)."""
    from .motive import load_selection
    from .motive.scoring import roc_auc

    motive = finetune / "motive"
    selection = load_selection(motive)
    rows = {json.loads(line)["id"]: json.loads(line)
            for line in (data_root / "metadata.jsonl").read_text().splitlines() if line.strip()}
    pool = [rows[i] for i in selection["train_ids"] if i in rows]
    kept = [rows[i] for i in selection["selected_ids"] if i in rows]

    def share(clips, test) -> float:
        return float(np.mean([test(c) for c in clips])) if clips else float("nan")

    def defect(c):
        return c.get("defect") not in (None, "", "none")

    def target(c):
        return not defect(c) and c.get("motion") == target_motion

    mean_score = np.asarray(selection["mean_score"])
    labels = np.asarray([target(rows[i]) for i in selection["train_ids"]])
    stats = {"pool": len(pool), "kept": len(kept), "queries": len(selection["query_ids"]),
             "defect_share_pool": share(pool, defect), "defect_share_kept": share(kept, defect),
             "target_share_pool": share(pool, target), "target_share_kept": share(kept, target),
             "target_roc_auc": (float(roc_auc(mean_score, labels)) if 0 < labels.sum() < len(labels) else None)}
    lines = [
        "## 1. Motive curation", "",
        f"The Motive pass scored {stats['pool']} training clips against {stats['queries']} query clips of the target "
        f"motion (\"{target_motion}\") and kept {stats['kept']}. The toy world knows the truth about every clip:", "",
        "| | pool | kept by Motive |", "|---|---|---|",
        f"| clips with a planted defect (static, jitter, teleport, reversed, camera pan) | "
        f"{stats['defect_share_pool']:.0%} | {stats['defect_share_kept']:.0%} |",
        f"| clean clips of the target motion | {stats['target_share_pool']:.0%} | {stats['target_share_kept']:.0%} |",
        "",
        (f"ROC-AUC of the mean query score for \"clean clip of the target motion\": {stats['target_roc_auc']:.2f}."
         if stats["target_roc_auc"] is not None else "ROC-AUC: not defined (one class only in this pool)."),
        "",
        "Full per-run report: [finetune/motive/report.md](finetune/motive/report.md).", "",
    ]
    if (motive / "report_top_bottom_q0.png").is_file():
        lines += ["Top and bottom training clips for the first query (score, caption):", "",
                  "![top and bottom clips](finetune/motive/report_top_bottom_q0.png)", ""]
    if (motive / "report_votes.png").is_file():
        lines += ["Votes per clip (dark bars are kept):", "", "![votes](finetune/motive/report_votes.png)", ""]
    return lines, stats


def _training_section(out: Path, finetune: Path) -> tuple[list[str], dict]:
    from .viz import line_chart, save_png

    summary = json.loads((finetune / "train_summary.json").read_text())
    losses = sorted((int(k), float(v)) for k, v in summary["losses"].items())
    save_png(line_chart({"train/loss": ([s for s, _ in losses], [v for _, v in losses])}, "training loss"),
             out / "report_loss.png")
    step_times = summary.get("step_times_s") or []
    stats = {"steps": summary["steps"], "clips": summary.get("clips"), "curation": summary.get("curation"),
             "median_step_s": float(np.median(step_times)) if step_times else None,
             "final_loss": losses[-1][1] if losses else None}
    lines = ["## 2. LoRA fine-tune with the IMAP monitor", "",
             f"{stats['steps']} optimiser steps on the {stats['clips']} kept clips"
             + (f", median step {stats['median_step_s']:.2f} s" if stats["median_step_s"] else "") + ".", "",
             "![loss](report_loss.png)", ""]
    history_file = finetune / "imap" / "history.json"
    if history_file.is_file():
        history = json.loads(history_file.read_text())
        logged = history["history"]
        probes = history["probes"]
        lines += [f"IMAP saliency maps of {len(probes)} fixed probe clips, one no-grad forward every "
                  f"{logged[1]['step'] - logged[0]['step'] if len(logged) > 1 else '-'} steps at blocks "
                  f"{history['blocks']} (top {history['top_k']} heads by Calinski-Harabasz). Probes: "
                  + "; ".join(f"`{p['clip_id']}` \"{p['caption']}\" (words: {', '.join(p['words'])})" for p in probes)
                  + ". Rows are probes, columns latent frames; brighter is more salient.", ""]
        tags = sorted({k.split("/")[1] for entry in logged for k in entry if k.startswith("saliency/")
                       and k.count("/") == 2})
        for tag in tags:
            images = sorted((finetune / "imap").glob(f"{tag}_step*.png"))
            if images:
                first, last = images[0], images[-1]
                lines += [f"**{tag}**: step {int(first.stem.split('step')[1])} then step {int(last.stem.split('step')[1])}", "",
                          f"![{tag} first](finetune/imap/{first.name}) ![{tag} last](finetune/imap/{last.name})", ""]
        keys = sorted({k for entry in logged for k in entry if k != "step"})
        if keys:
            lines += ["| step | " + " | ".join(k.replace("saliency/", "") for k in keys) + " |",
                      "|---|" + "---|" * len(keys)]
            for entry in logged:
                lines.append(f"| {entry['step']} | " + " | ".join(
                    f"{entry[k]:.3f}" if isinstance(entry.get(k), (int, float)) else "–" for k in keys) + " |")
            lines.append("")
        stats["imap_probes_logged"] = len(logged)
        stats["imap_last"] = logged[-1] if logged else None
    return lines, stats


def _samples_section(out: Path, token_px: float) -> tuple[list[str], dict]:
    from .viz import frame_grid, save_png

    results = {name: _sample_metrics(out / "samples" / name, token_px) for name, *_ in SAMPLE_SETS}
    lines = ["## 3. Samples: base, fine-tuned, fine-tuned + correspondence guidance", "",
             "Same prompts and seeds for every set; each video is scored offline (no downloaded weights): direction "
             "from the prompted object's centroid track, presence of the prompted colour, the dynamic-degree proxy "
             "(VBench's rule on OpenCV flow), flow-warp smoothness and temporal flicker.", "",
             "| samples | videos | direction correct | object present | dynamic (proxy) | smoothness | flicker |",
             "|---|---|---|---|---|---|---|"]
    for name, label, *_ in SAMPLE_SETS:
        s = results[name]["summary"]
        lines.append(f"| {label} | {s['videos']} | {s['direction_accuracy']:.0%} | {s['presence']:.0%} | "
                     f"{s['dynamic_degree']:.0%} | {s['smoothness']:.3f} | {s['flicker']:.3f} |")
    lines.append("")
    clips, captions = [], []
    base_rows = results["base"]["rows"]
    for index, row in enumerate(base_rows[: min(len(base_rows), 6)]):
        for name, label, *_ in SAMPLE_SETS:
            clips.append(results[name]["frames"][index])
            r = results[name]["rows"][index]
            captions.append(f"{name}: {r['prompt']} (seed {r['seed']}) -> {r['direction']}")
    save_png(frame_grid(clips, captions, frames_per_row=9), out / "report_samples.png")
    lines += ["Per prompt: base, fine-tuned, guided (the measured direction after the arrow):", "",
              "![samples](report_samples.png)", ""]
    return lines, {name: r["summary"] for name, r in results.items()}


def write_report(out: Path, log: Sequence[dict[str, Any]], model: str, data_root: Path,
                 started: float, workdir: Path = ROOT) -> Path:
    """report.md + report.json in `out` from the main job's outputs."""
    from .files import atomic_write_text

    finetune = out / "finetune"
    token_px = _token_px(model)
    curation_lines, curation = _curation_section(finetune, data_root)
    training_lines, training = _training_section(out, finetune)
    sample_lines, samples = _samples_section(out, token_px)
    total = time.perf_counter() - started
    lines = ["# motionguide demo: Motive-curated LoRA fine-tune, IMAP monitor, correspondence-guided samples", "",
             f"Model `{model}`; whole demo {total / 60:.1f} min on this machine. The commands that ran:", "",
             "| step | seconds | command |", "|---|---|---|"]
    lines += [f"| {e['step']} | {e['seconds']:.0f} | `{e['command'].replace(str(workdir) + '/', '')}` |" for e in log]
    lines += ["", *curation_lines, *training_lines, *sample_lines,
              "## Where the files are", "",
              f"- LoRA: `{finetune / 'pytorch_lora_weights.safetensors'}` (loads with the stock pipeline's "
              "`load_lora_weights`)",
              f"- Motive selection and scores: `{finetune / 'motive'}`",
              f"- IMAP maps and scalars: `{finetune / 'imap'}`, tensorboard logs in `{finetune / 'logs'}`",
              f"- samples (mp4 + grid): `{out / 'samples'}`", ""]
    atomic_write_text(out / "report.json", json.dumps(
        {"model": model, "minutes": total / 60, "commands": list(log), "curation": curation, "training": training,
         "samples": samples}, indent=2, default=str))
    return atomic_write_text(out / "report.md", "\n".join(lines))


def _token_px(model: str) -> float:
    from diffusers import DiffusionPipeline

    from .backbones import backbone_for

    return float(backbone_for(DiffusionPipeline.from_pretrained(model)).pixels_per_token)


def run_demo(out: str | Path = "demo-output", quick: bool = False, model: str | None = None,
             config: str | Path | None = None, story: str = "turn") -> int:
    """Run the main job and write the report; prints where the report is. story "turn" (the default) teaches
    the toy model a turn (`demo_turn`); "straight" is the first demo on the motions it already has."""
    import yaml

    started = time.perf_counter()
    inputs = resolve_inputs(model, config, story)  # before any work: says how to get the toy model and configs
    from .output_paths import check_output_folder

    check_output_folder(out, "--out")
    if quick and story != "turn":  # the quick run rewrites the Motive and IMAP options of the config
        options = yaml.safe_load(inputs.config.read_text()).get("method_options") or {}
        if not isinstance(options.get("motive"), dict) or "queries_recipe" not in options["motive"] \
                or not isinstance(options.get("imap"), dict):
            raise ConfigError(f"--config {inputs.config}: the demo needs method_options.motive (with a "
                              "queries_recipe) and method_options.imap, as in configs/toy.yaml")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if story == "turn":
        from .demo_turn import main_job as turn_job, write_turn_report

        log, used_config, data_root = turn_job(out, quick, inputs, _run)
        report = write_turn_report(out, log, inputs.model, data_root, used_config, started, inputs.workdir)
        print(f"\nreport: {report}\n(whole demo {(time.perf_counter() - started) / 60:.1f} min)")
        return 0
    log = main_job(out, quick, inputs)
    settings = yaml.safe_load((out / "demo-config.yaml" if quick else inputs.config).read_text())
    data_root = Path(settings["data_root"])
    data_root = data_root if data_root.is_absolute() else inputs.workdir / data_root
    report = write_report(out, log, inputs.model, data_root, started, inputs.workdir)
    print(f"\nreport: {report}\n(whole demo {(time.perf_counter() - started) / 60:.1f} min)")
    return 0
