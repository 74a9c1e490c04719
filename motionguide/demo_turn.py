"""`make demo`'s story (issue 16): teach the toy model a motion it does not have, a turn.

The shipped toy model knows "moves right" and "moves down" but never saw "moves right then down": it draws one
diagonal (README, "Teaching a new motion"). The demo runs, as commands a user would type (each printed first):

1. `motionguide toy make-turn-pool`: a pool like real data (10% turns, captions that miss or invent turns, planted
   defects) with its truth table, skipped when the pool is already there;
2. `sample/generate.py` with the base model on held-out turn prompts: the "before";
3. `accelerate launch train/finetune.py --config configs/toy-turn.yaml --curation motive --monitor imap`: Motive
   scores every clip against clean turn query clips and keeps the top 10%, and a LoRA trains on them while the
   IMAP monitor maps "then" and the second direction on probe clips of the pool;
4. the same fine-tune with `--curation random` (a random 10%: the same budget, no curation);
5. `sample/generate.py` with each LoRA, and with the curated LoRA under `--guidance correspondence`;
6. the report: the base model's turn success, Motive's selection precision / recall against the truth table beside
   the caption-keyword filter's and random's, the two LoRAs' turn success, guided vs unguided, side-by-side frames,
   trajectory plots and the IMAP maps overlaid on the probe clips' frames.

Every number is measured in this run (the report says how few videos it rests on); the comparison with confidence
intervals is `benchmarks/teach_turn.py`. A rerun of the same `--out` after an interruption (even SIGKILL) reuses
every finished step and resumes an interrupted fine-tune from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: the story's LoRA sample sets: (name, label, LoRA folder under out or None, guidance)
TURN_SAMPLE_SETS = (("base", "base model", None, "none"),
                    ("random", "random-10% LoRA", "finetune-random", "none"),
                    ("curated", "Motive-curated LoRA", "finetune", "none"),
                    ("guided", "Motive-curated LoRA + correspondence guidance", "finetune", "correspondence"))
#: the quick (test) size: a tiny pool, a few steps, two prompts, short sampling
QUICK = {"pool": 40, "queries": 2, "steps": 4, "batch": 2, "prompts": 2, "seeds": [0], "sample_steps": 4,
         "imap_every": 2}
#: the full demo's prompts and seeds: one held-out turn per direction pair, two seeds
PROMPTS, SEEDS = 6, [0, 1]
PROBES = 2  # IMAP probe clips


def demo_turn_prompts(pairs: Sequence[Sequence[str]], count: int) -> list[dict[str, Any]]:
    """One held-out turn prompt per direction pair (the first of each pair in the held-out set's order), up to
    `count`: turns no pool or query set contains."""
    from .toy.turns import heldout_turn_combinations, turn_prompts

    chosen, seen = [], set()
    for combo in heldout_turn_combinations(pairs=pairs):
        pair = (combo[2], combo[3])
        if pair not in seen:
            seen.add(pair)
            chosen.append(combo)
    chosen = chosen[:count]
    return [{"prompt": p, "color": c[0], "shape": c[1], "first": c[2], "second": c[3]}
            for p, c in zip(turn_prompts(chosen), chosen)]


def _story_config(out: Path, base_config: Path, quick: bool, probes: list[str], words: list[str],
                  data_root: Path) -> Path:
    """The story's training config with the IMAP probes chosen from the pool's truth table (and, quick, at the
    reduced size with data and cache inside `out`), written to `out/demo-config.yaml`."""
    import yaml

    config = yaml.safe_load(base_config.read_text())
    config["data_root"] = str(data_root)
    config["method_options"]["imap"].update({"probe_ids": probes, "words": words, "num_probes": len(probes)})
    if quick:
        config.update({"latent_cache_dir": str(out / "cache"), "train_steps": QUICK["steps"],
                       "train_batch_size": QUICK["batch"], "checkpointing_steps": 0, "logging_steps": 1,
                       "lr_warmup_steps": 0})
        config["data_recipe"]["num_clips"] = QUICK["pool"]
        motive = config["method_options"]["motive"]
        motive.update({"queries": str(out / "data" / "toy-turn-queries"),
                       "queries_recipe": {**motive["queries_recipe"], "num_clips": QUICK["queries"]}})
        config["method_options"]["imap"]["every"] = QUICK["imap_every"]
    path = out / "demo-config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _resolve(path: str | Path, workdir: Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else workdir / path


def _finished_fine_tune(folder: Path, steps: int) -> bool:
    summary = folder / "train_summary.json"
    return summary.is_file() and json.loads(summary.read_text()).get("steps") == steps


def _finished_samples(folder: Path, count: int) -> bool:
    listing = folder / "samples.json"
    return listing.is_file() and len(json.loads(listing.read_text())) == count


def main_job(out: Path, quick: bool, inputs: Any, run: Any) -> tuple[list[dict[str, Any]], Path, Path]:
    """The story's commands (`run(step, command, log, env, cwd)` runs one); finished steps of an earlier run in
    the same `out` are reused (logged as skipped). Returns the log, the config used and the pool folder."""
    import yaml

    from .toy.turn_pool import load_truth
    from .toy.turns import turn_monitor_probes

    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"), "HF_HUB_OFFLINE": "1"}
    settings = yaml.safe_load(inputs.config.read_text())
    recipe = dict(settings["data_recipe"])
    if recipe.get("name") != "toy_turn_pool":
        raise SystemExit(f"the turn demo needs a config whose data_recipe is toy_turn_pool; {inputs.config} has "
                         f"{recipe.get('name')!r} (use --story straight for the straight-motion demo)")
    data_root = out / "data" / "toy-turn-pool" if quick else _resolve(settings["data_root"], inputs.workdir)
    num_clips = QUICK["pool"] if quick else int(recipe["num_clips"])
    log: list[dict[str, Any]] = []
    pairs = [tuple(p) for p in recipe["pairs"]]
    if (data_root / "truth.json").is_file() and len(load_truth(data_root)) == num_clips:
        log.append({"step": "turn pool", "command": "(reused)", "seconds": 0.0, "exit_code": 0, "skipped": True})
    else:
        run("turn pool", [sys.executable, "-m", "motionguide.toy.cli", "make-turn-pool", "--out", str(data_root),
                          "--num_clips", str(num_clips), "--seed", str(recipe["seed"]), "--pairs",
                          ",".join(f"{a}:{b}" for a, b in pairs), "--overwrite", "--no_progress"],
            log, env, inputs.workdir)
    probes, words = turn_monitor_probes(load_truth(data_root), num_probes=PROBES)
    if not probes:
        raise SystemExit(f"the turn pool {data_root} holds no clip captioned with a turn; make a larger pool")
    config = _story_config(out, inputs.config, quick, probes, words, data_root)
    steps = QUICK["steps"] if quick else int(settings["train_steps"])
    prompts = demo_turn_prompts(pairs, QUICK["prompts"] if quick else PROMPTS)
    seeds = QUICK["seeds"] if quick else SEEDS

    accelerate = Path(sys.executable).with_name("accelerate")
    launch = [str(accelerate) if accelerate.is_file() else "accelerate", "launch", "--num_processes", "1",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]

    def sample(name: str, lora: str | None, guidance: str) -> None:
        folder = out / "samples" / name
        if _finished_samples(folder, len(prompts) * len(seeds)):
            log.append({"step": f"sample: {name}", "command": "(reused)", "seconds": 0.0, "exit_code": 0,
                        "skipped": True})
            return
        command = [sys.executable, *inputs.sample, "--model", inputs.model, "--out", str(folder),
                   "--guidance", guidance, "--lossless"]
        for p in prompts:
            command += ["--prompt", p["prompt"]]
        for seed in seeds:
            command += ["--seed", str(seed)]
        if lora:
            command += ["--lora", str(out / lora)]
        if quick:
            command += ["--steps", str(QUICK["sample_steps"])]
        run(f"sample: {name}", command, log, env, inputs.workdir)

    def fine_tune(name: str, folder: str, curation: str, monitor: bool) -> None:
        target = out / folder
        if _finished_fine_tune(target, steps):
            log.append({"step": name, "command": "(reused)", "seconds": 0.0, "exit_code": 0, "skipped": True})
            return
        command = [*launch, *inputs.finetune, "--config", str(config), "--curation", curation,
                   "--output_dir", str(target), "--pretrained_model_name_or_path", inputs.model,
                   "--resume_from_checkpoint", "latest"]
        if monitor:
            command[command.index("--curation"):command.index("--curation")] = ["--monitor", "imap"]
        run(name, command, log, env, inputs.workdir)

    sample("base", None, "none")
    fine_tune("fine-tune: Motive top 10%", "finetune", "motive", True)
    fine_tune("fine-tune: random 10%", "finetune-random", "random", False)
    for name, _, lora, guidance in TURN_SAMPLE_SETS[1:]:
        sample(name, lora, guidance)
    (out / "demo-prompts.json").write_text(json.dumps({"prompts": prompts, "seeds": seeds}, indent=1))
    return log, config, data_root


# ---------------------------------------------------------------------------------------------- the report
def score_turn_samples(folder: Path, prompts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Turn success and what the object did, per video of a sample set (read from its lossless mp4s)."""
    from .metrics.object_consistency import object_consistency
    from .metrics.turns import jerk_at_turn, toy_turn_adherence
    from .video import read_video

    by_prompt = {p["prompt"]: p for p in prompts}
    rows = []
    for entry in json.loads((folder / "samples.json").read_text()):
        frames = read_video(folder / entry["file"])
        result = toy_turn_adherence(frames, entry["prompt"])[0]
        reading = result.reading
        consistency = object_consistency(frames, entry["prompt"])
        prompt = by_prompt[entry["prompt"]]
        rows.append({"prompt": entry["prompt"], "seed": int(entry["seed"]), "file": entry["file"],
                     "success": bool(result.success), "presence": result.presence,
                     "first_leg": reading.first_direction, "second_leg": reading.second_direction,
                     "first_leg_right": reading.first_direction == prompt["first"],
                     "second_leg_right": reading.second_direction == prompt["second"],
                     "jerk_at_turn": jerk_at_turn(result.trajectory, reading.turn_frame),
                     "colour_drift": consistency["colour_drift"],
                     "shape_consistency": consistency["shape_consistency"],
                     "trajectory": result.trajectory.tolist()})
    return rows


def _wilson(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval (sensible at 0 and 1 successes)."""
    if not trials:
        return float("nan"), float("nan")
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def _mean(values) -> float:
    values = [float(v) for v in values if v is not None and np.isfinite(float(v))]
    return float(np.mean(values)) if values else float("nan")


def set_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    hits = sum(r["success"] for r in rows)
    return {"videos": len(rows), "successes": hits, "success_rate": hits / len(rows) if rows else float("nan"),
            "wilson_95": list(_wilson(hits, len(rows))),
            "first_leg_right": _mean(r["first_leg_right"] for r in rows),
            "second_leg_right": _mean(r["second_leg_right"] for r in rows),
            "presence": _mean(r["presence"] for r in rows), "jerk_at_turn": _mean(r["jerk_at_turn"] for r in rows),
            "colour_drift": _mean(r["colour_drift"] for r in rows),
            "shape_consistency": _mean(r["shape_consistency"] for r in rows)}


def selection_table(truth: Sequence[dict[str, Any]], selections: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Per selection: clips, clean turns (turn shown, captioned right, no defect: the truth table's clean_turn),
    precision and recall of them."""
    clean = {r["id"] for r in truth if r["clean_turn"]}
    by_id = {r["id"]: r for r in truth}
    table = {}
    for name, ids in selections.items():
        hits = len(set(ids) & clean)
        table[name] = {"selected": len(ids), "clean_turns": hits,
                       "precision": hits / len(ids) if ids else float("nan"),
                       "recall": hits / len(clean) if clean else float("nan"),
                       "turn_videos": sum(" then " in by_id[i]["true_motion"] for i in ids),
                       "with_defect": sum(by_id[i]["defect"] != "none" for i in ids)}
    return table


def _pct(value: float) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.0%}"


def _num(value: float, digits: int = 2) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


SET_COLOURS = {"base": (128, 128, 128), "random": (230, 120, 20), "curated": (31, 119, 180), "guided": (44, 160, 44)}


def trajectory_plot(tracks: dict[str, np.ndarray], title: str, size: int = 64, scale: int = 4):
    """The prompted object's centroid per frame for each sample set, on the frame's own coordinates (y down):
    a line per set in its colour, a hollow dot where it starts and a filled one where it ends."""
    from PIL import Image, ImageDraw

    side = size * scale
    image = Image.new("RGB", (side, side + 20 + 12 * len(tracks)), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((2, 1), title, fill=(0, 0, 0))
    top = 14
    draw.rectangle([0, top, side - 1, top + side - 1], outline=(180, 180, 180))
    for index, (name, track) in enumerate(tracks.items()):
        colour = SET_COLOURS.get(name, (0, 0, 0))
        points = [((x + 0.5) * scale, top + (y + 0.5) * scale) for x, y in np.asarray(track, np.float64)
                  if np.isfinite(x) and np.isfinite(y)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        if points:
            (x0, y0), (x1, y1) = points[0], points[-1]
            draw.ellipse([x0 - 4, y0 - 4, x0 + 4, y0 + 4], outline=colour, width=2)
            draw.ellipse([x1 - 4, y1 - 4, x1 + 4, y1 + 4], fill=colour)
        draw.text((4, top + side + 2 + 12 * index), name, fill=colour)
    return image


def _hstack(images, gap: int = 6):
    from PIL import Image

    width = sum(i.width for i in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, max(i.height for i in images)), (255, 255, 255))
    x = 0
    for image in images:
        canvas.paste(image, (x, 0))
        x += image.width + gap
    return canvas


def imap_overlay(frames: np.ndarray, maps: np.ndarray, groups: Sequence[range], caption: str, scale: int = 2,
                 alpha: float = 0.55):
    """One row: per latent frame, the last pixel frame it encodes with the word's map (normalised over the clip,
    bilinear up to the frame size, inferno colours) blended over it."""
    import cv2
    from PIL import Image, ImageDraw

    maps = np.asarray(maps, np.float32)
    low, high = float(maps.min()), float(maps.max())
    scaled = (maps - low) / (high - low) if high > low else np.zeros_like(maps)
    height, width = frames.shape[1:3]
    tiles = []
    for k, group in enumerate(groups):
        frame = frames[list(group)[-1]].astype(np.float32)
        heat = cv2.resize(scaled[k], (width, height), interpolation=cv2.INTER_LINEAR)
        colour = cv2.cvtColor(cv2.applyColorMap(np.round(heat * 255).astype(np.uint8), cv2.COLORMAP_INFERNO),
                              cv2.COLOR_BGR2RGB).astype(np.float32)
        blended = np.clip((1 - alpha) * frame + alpha * colour, 0, 255).astype(np.uint8)
        tiles.append(Image.fromarray(blended).resize((width * scale, height * scale), Image.NEAREST))
    row = _hstack(tiles, gap=2)
    canvas = Image.new("RGB", (row.width, row.height + 14), (255, 255, 255))
    ImageDraw.Draw(canvas).text((2, 1), caption, fill=(0, 0, 0))
    canvas.paste(row, (0, 14))
    return canvas


def _vstack(images, gap: int = 4):
    from PIL import Image

    canvas = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images) + gap * (len(images) - 1)),
                       (255, 255, 255))
    y = 0
    for image in images:
        canvas.paste(image, (0, y))
        y += image.height + gap
    return canvas


def _imap_section(out: Path, data_root: Path, backbone: Any, num_frames: int) -> tuple[list[str], dict]:
    """The monitor's scalars over training and its maps of the first and last probe overlaid on the probe clips."""
    from .toy.truth import latent_groups
    from .video import read_video
    from .viz import save_png

    folder = out / "finetune" / "imap"
    history_file = folder / "history.json"
    if not history_file.is_file():
        return ["## 5. IMAP monitor", "", "No IMAP history was written.", ""], {}
    history = json.loads(history_file.read_text())
    probes, logged = history["probes"], history["history"]
    words = sorted({w for p in probes for w in p["words"]}, key=lambda w: (w != "then", w))
    keys = [f"saliency/{w}/{m}" for w in words for m in ("pointing_game", "iou")]
    lines = ["## 5. What the curated LoRA attends to for the new words (IMAP monitor)", "",
             f"During the curated fine-tune the IMAP monitor mapped {', '.join(f'`{w}`' for w in words)} (the words "
             f"that carry the turn) on {len(probes)} fixed probe clips of the pool, read from its truth table "
             "(clean turns captioned with the turn, one second direction) ("
             + "; ".join(f"`{p['clip_id']}` \"{p['caption']}\"" for p in probes)
             + f"), every {logged[1]['step'] - logged[0]['step'] if len(logged) > 1 else '-'} steps, at blocks "
             f"{history['blocks']}. Localisation against the toy world's object masks per latent frame (pointing "
             "game: the map's peak lies on the object; IoU of the map's top region with the object):", "",
             "| step | " + " | ".join(k.replace("saliency/", "") for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for entry in logged:
        lines.append(f"| {entry['step']} | " + " | ".join(_num(entry.get(k, float("nan")), 2) for k in keys) + " |")
    lines.append("")
    maps_files = sorted(folder.glob("maps_step*.npz"))
    stats = {"words": words, "probes": probes, "history": logged}
    if maps_files:
        groups = latent_groups(backbone, num_frames)
        first, last = maps_files[0], maps_files[-1]
        step_of = {f: int(f.stem.split("step")[1]) for f in (first, last)}
        loaded = {f: np.load(f) for f in (first, last)}
        for word in words:
            rows = []
            for index, probe in enumerate(probes):
                frames = read_video(data_root / "videos" / f"{probe['clip_id']}.mp4")
                for f in (first, last):
                    data = loaded[f]
                    if word not in data.files:
                        continue
                    where = list(data[f"{word}.probes"]).index(index) if index in data[f"{word}.probes"] else None
                    if where is None:
                        continue
                    rows.append(imap_overlay(frames, data[word][where], groups,
                                             f"'{word}' step {step_of[f]}: {probe['caption']}"))
            if rows:
                name = f"report_imap_{word}.png"
                save_png(_vstack(rows), out / name)
                lines += [f"IMAP map of `{word}` over the probe clips' frames (one tile per latent frame; first probe "
                          f"step above the last, per probe clip; brighter = more salient):", "", f"![{word}]({name})",
                          ""]
    return lines, stats


def write_turn_report(out: Path, log: Sequence[dict[str, Any]], model: str, data_root: Path, config: Path,
                      started: float, workdir: Path) -> Path:
    """report.md + report.json of the turn story, every number from this run's files."""
    import time

    import yaml
    from diffusers import DiffusionPipeline

    from .backbones import backbone_for
    from .files import atomic_write_text
    from .toy.turn_pool import load_truth, pool_summary
    from .toy.turns import mentions_turn
    from .video import read_video
    from .viz import frame_grid, line_chart, save_png

    settings = yaml.safe_load(config.read_text())
    story = json.loads((out / "demo-prompts.json").read_text())
    prompts, seeds = story["prompts"], story["seeds"]
    truth = load_truth(data_root)
    summary = pool_summary(truth)
    backbone = backbone_for(DiffusionPipeline.from_pretrained(model))

    # --- samples
    rows = {name: score_turn_samples(out / "samples" / name, prompts) for name, *_ in TURN_SAMPLE_SETS}
    sets = {name: set_summary(r) for name, r in rows.items()}

    # --- selections (against the truth table)
    motive = json.loads((out / "finetune" / "motive" / "selection.json").read_text())
    random_file = json.loads((out / "finetune-random" / "curation.json").read_text())
    order = sorted(motive["train_ids"])  # the Trainer's dataset order (sorted cached ids), what random indexed
    selections = {"Motive top 10%": list(motive["selected_ids"]),
                  "caption-keyword filter": [r["id"] for r in truth if mentions_turn(r["caption"])],
                  "random 10%": [order[i] for i in random_file["indices"]]}
    quality = selection_table(truth, selections)

    # --- training
    losses = {}
    for name, folder in (("curated", "finetune"), ("random", "finetune-random")):
        summary_file = json.loads((out / folder / "train_summary.json").read_text())
        losses[name] = sorted((int(k), float(v)) for k, v in summary_file["losses"].items())
    save_png(line_chart({f"{n} LoRA": ([s for s, _ in v], [x for _, x in v]) for n, v in losses.items()},
                        "training loss"), out / "report_loss.png")

    # --- pictures: side-by-side frames and trajectory plots per (prompt, seed 0)
    shown = [i for i, r in enumerate(rows["base"]) if r["seed"] == seeds[0]][:6]
    clips, captions = [], []
    for i in shown:
        for name, label, *_ in TURN_SAMPLE_SETS:
            r = rows[name][i]
            clips.append(read_video(out / "samples" / name / r["file"]))
            captions.append(f"{name}: {r['prompt']} -> {r['first_leg']} then {r['second_leg']}"
                            + (" (turn)" if r["success"] else ""))
    save_png(frame_grid(clips, captions, frames_per_row=9), out / "report_samples.png")
    by_prompt = {p["prompt"]: p for p in prompts}
    plots = [trajectory_plot({name: np.asarray(rows[name][i]["trajectory"], np.float64) for name, *_ in
                              TURN_SAMPLE_SETS},
                             "{first} then {second}".format(**by_prompt[rows["base"][i]["prompt"]]))
             for i in shown]
    save_png(_hstack(plots), out / "report_trajectories.png")

    imap_lines, imap_stats = _imap_section(out, data_root, backbone, int(settings["num_frames"]))
    total = time.perf_counter() - started
    n = sets["base"]["videos"]

    def count(name: str) -> str:
        s = sets[name]
        return f"{s['successes']}/{s['videos']} ({_pct(s['success_rate'])}, Wilson 95% [{_pct(s['wilson_95'][0])}, " \
               f"{_pct(s['wilson_95'][1])}])"

    mp, kp, rp = (quality[k]["precision"] for k in ("Motive top 10%", "caption-keyword filter", "random 10%"))
    compare = ("above" if mp > kp else "below" if mp < kp else "equal to")
    cur, ran = sets["curated"], sets["random"]
    overlap = not (cur["wilson_95"][0] > ran["wilson_95"][1] or ran["wilson_95"][0] > cur["wilson_95"][1])
    if cur["successes"] == 0 and ran["successes"] == 0:
        verdict = (f"Neither LoRA turned in any of the {n} videos: in this budget ({settings['train_steps']} steps) "
                   "the fine-tune did not teach the turn, curated or not.")
    elif cur["successes"] > ran["successes"]:
        verdict = (f"The curated LoRA turned in more videos than the random one; with {n} videos each the 95% "
                   + ("intervals overlap, so this run alone does not show a difference." if overlap
                      else "intervals do not overlap."))
    elif cur["successes"] < ran["successes"]:
        verdict = (f"The random LoRA turned in more videos than the curated one in this run; with {n} videos each the "
                   f"95% intervals {'overlap' if overlap else 'do not overlap'}.")
    else:
        verdict = "Both LoRAs turned in the same number of videos."
    lines = [
        "# motionguide demo: teaching the toy model a new motion (a turn)", "",
        f"Model `{model}`; whole demo {total / 60:.1f} min on this machine. Every number below was measured in this "
        f"run on {n} videos per sample set ({len(prompts)} held-out turn prompts x {len(seeds)} seed(s)); the full "
        "comparison with confidence intervals is `benchmarks/teach_turn.py`. The commands that ran:", "",
        "| step | seconds | command |", "|---|---|---|"]
    lines += [f"| {e['step']} | {e['seconds']:.0f} | `{e['command'].replace(str(workdir) + '/', '')}` |" for e in log]
    lines += [
        "", "## 1. The base model fails the turn", "",
        f"Held-out turn prompts (no pool or query clip shows these colour x shape x direction pairs): "
        + "; ".join(f"\"{p['prompt']}\"" for p in prompts) + ".", "",
        f"Base model turn success: **{count('base')}** (turn success: the prompted object's track splits into two "
        f"straight legs reading the prompted directions; first leg right {_pct(sets['base']['first_leg_right'])}, "
        f"second leg right {_pct(sets['base']['second_leg_right'])}).", "",
        "## 2. Motive picks the pool's clips", "",
        f"The pool: {summary['clips']} clips, {summary['turn_share']:.0%} turns, {summary['clean_turns']} clean turns "
        "(turn shown, captioned right, no planted defect; the truth table `truth.json` beside the pool). Captions are "
        "unreliable as automatic ones are: some turns are captioned with their first direction only, some straight "
        "clips are captioned with a turn. Each selection against the truth table:", "",
        "| selection | clips | clean turns | precision | recall | clips that turn (any caption) | with a defect |",
        "|---|---|---|---|---|---|---|"]
    for name, q in quality.items():
        lines.append(f"| {name} | {q['selected']} | {q['clean_turns']} | {_pct(q['precision'])} | "
                     f"{_pct(q['recall'])} | {q['turn_videos']} | {q['with_defect']} |")
    lines += ["", f"Motive's precision ({_pct(mp)}) is {compare} the caption-keyword filter's ({_pct(kp)}); random: "
              f"{_pct(rp)}.", ""]
    if (out / "finetune" / "motive" / "report_top_bottom_q0.png").is_file():
        lines += ["Motive's top and bottom pool clips for the first query clip:", "",
                  "![top and bottom](finetune/motive/report_top_bottom_q0.png)", ""]
    lines += [
        "## 3. The curated LoRA beside a random-10% LoRA", "",
        f"Both LoRAs: rank {settings['rank']}, lr {settings['learning_rate']:g}, {settings['train_steps']} steps x "
        f"batch {settings['train_batch_size']}, motion-weighted loss "
        f"(weight {settings.get('motion_loss_weight', 1.0):g})"
        "; the only difference is which clips they train on.", "",
        "| samples | turn success | 1st leg right | 2nd leg right | presence | jerk at the turn | colour drift "
        "| shape consistency |",
        "|---|---|---|---|---|---|---|---|"]
    for name, label, *_ in TURN_SAMPLE_SETS:
        s = sets[name]
        lines.append(f"| {label} | {s['successes']}/{s['videos']} "
                     f"[{_pct(s['wilson_95'][0])}, {_pct(s['wilson_95'][1])}] "
                     f"| {_pct(s['first_leg_right'])} | {_pct(s['second_leg_right'])} | {_pct(s['presence'])} | "
                     f"{_num(s['jerk_at_turn'])} | {_num(s['colour_drift'], 1)} | {_num(s['shape_consistency'])} |")
    lines += ["", f"Curated LoRA {count('curated')}; random LoRA {count('random')}; base {count('base')}. {verdict}",
              "", "![loss](report_loss.png)", "",
              "## 4. Samples side by side, and guided", "",
              "Per prompt (seed 0): base, random LoRA, curated LoRA, curated LoRA + correspondence guidance; after the "
              "arrow, the two legs the metric read:", "", "![samples](report_samples.png)", "",
              "The prompted object's track per sample set (hollow dot: first frame, filled: last; image coordinates, "
              "y down):", "", "![trajectories](report_trajectories.png)", "",
              f"Guidance on the curated LoRA: turn success {sets['guided']['successes']}/{n} vs "
              f"{sets['curated']['successes']}/{n} unguided; jerk at the turn "
              f"{_num(sets['guided']['jerk_at_turn'])} vs {_num(sets['curated']['jerk_at_turn'])} px/frame²; colour "
              f"drift {_num(sets['guided']['colour_drift'], 1)} "
              f"vs {_num(sets['curated']['colour_drift'], 1)}; shape consistency "
              f"{_num(sets['guided']['shape_consistency'])} vs {_num(sets['curated']['shape_consistency'])}.", "",
              *imap_lines]
    atomic_write_text(out / "report.json", json.dumps(
        {"story": "turn", "model": model, "minutes": total / 60, "commands": list(log), "pool": summary,
         "selection": quality, "selections": selections, "samples": sets, "rows": rows,
         "training": {"steps": settings["train_steps"], "losses": {k: dict(v) for k, v in losses.items()}},
         "imap": imap_stats, "prompts": prompts, "seeds": seeds}, indent=1, default=str))
    return atomic_write_text(out / "report.md", "\n".join(lines))
