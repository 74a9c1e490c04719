"""What `--monitor imap` shows during a fine-tune: its logged maps and scalars, read back from tensorboard.

A short toy LoRA fine-tune with the IMAP monitor every `--every` steps on `--probes` probe clips, with the toy
world's ground-truth masks (object 0, as latent-frame footprints) so pointing game and IoU are logged next to
the maps' spatial entropy and head stability. Afterwards the tensorboard event file is read with
tensorboard's `EventAccumulator`: every logged heatmap grid (rows: probe clips, columns: latent frames) is
exported as PNG to results/imap_training_monitor/, and the scalars' history goes into a markdown table.

Run for real (toy model, CPU, a few minutes):
    python benchmarks/imap_training_monitor.py
Smoke (tiny pipeline saved with `motionguide.testing.tiny_wan_pipeline().save_pretrained(DIR)`):
    python benchmarks/imap_training_monitor.py --model DIR --steps 6 --every 3 --clips 4 --probes 2 --batch 2 \\
        --threads 1 --results-dir /tmp/results
Writes results/imap_training_monitor.{json,md} and results/imap_training_monitor/*.png.
"""

import shutil
import tempfile
from pathlib import Path

from _common import RESULTS, limit_threads, machine, write_results

from motionguide.cli_args import ArgumentParser
from motionguide.toy import make_dataset
from motionguide.training.config import TrainConfig
from motionguide.training.loop import Trainer

ROOT = Path(__file__).resolve().parent.parent
NAME = "imap_training_monitor"


def fine_tune(args, work: Path) -> tuple[dict, Path]:
    """The toy LoRA run with the monitor on; returns the train summary and the tensorboard log folder."""
    data = make_dataset(work / "data", num_clips=args.clips, seed=args.seed, progress=False)
    # the toy world's ground-truth masks for pointing game and IoU, named by the monitor's masks_fn factory
    imap = {"every": args.every, "num_probes": args.probes, "masks_fn": "motionguide.toy.truth:clip_masks_fn"}
    cfg = TrainConfig(pretrained_model_name_or_path=args.model, output_dir=str(work / "out"), data_root=str(data),
                      latent_cache_dir=str(work / "cache"), train_steps=args.steps, train_batch_size=args.batch,
                      learning_rate=args.learning_rate, checkpointing_steps=0, report_to="tensorboard",
                      logging_steps=args.every, max_sequence_length=args.max_sequence_length,
                      num_frames=args.num_frames, seed=args.seed, monitor=["imap"], method_options={"imap": imap})
    summary = Trainer(cfg).run()
    events = sorted((work / "out" / "logs").rglob("events.out.tfevents.*"))
    if not events:
        raise RuntimeError(f"no tensorboard event file under {work / 'out' / 'logs'}")
    return summary, events[-1].parent


def read_events(log_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, list[tuple[int, bytes]]]]:
    """({scalar tag: [(step, value)]}, {image tag: [(step, PNG bytes)]}) from a tensorboard log folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags.get("scalars", [])}
    images = {t: [(e.step, e.encoded_image_string) for e in acc.Images(t)] for t in tags.get("images", [])}
    return scalars, images


def export_images(images: dict[str, list[tuple[int, bytes]]], results: Path) -> dict[str, list[dict]]:
    """Write every logged image as <results>/<NAME>/<tag>_step<N>.png (old PNGs there are replaced)."""
    folder = results / NAME
    if folder.is_dir():
        for old in folder.glob("*.png"):
            old.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[dict]] = {}
    for tag, entries in sorted(images.items()):
        for step, png in entries:
            path = folder / f"{tag.replace('/', '_')}_step{step:05d}.png"
            path.write_bytes(png)  # tensorboard stores images PNG-encoded already
            files.setdefault(tag, []).append({"step": step, "file": f"benchmarks/results/{NAME}/{path.name}"})
    return files


def markdown(scalars: dict, files: dict, args) -> str:
    """Scalars over the probe steps (train/loss alongside), image links per step, the last grids inline."""
    shown = sorted(t for t in scalars if t.startswith("saliency/"))
    columns = [t for t in ("train/loss",) if t in scalars] + shown
    steps = sorted({s for t in shown for s, _ in scalars[t]} | {e["step"] for v in files.values() for e in v})
    lookup = {t: dict(scalars[t]) for t in columns}
    head = ["step", *[t.removeprefix("saliency/") for t in columns], "maps"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for step in steps:
        values = [f"{lookup[t][step]:.3f}" if step in lookup[t] else "" for t in columns]
        links = [f"[{tag.removeprefix('saliency/')}]({e['file']})" for tag, entries in files.items()
                 for e in entries if e["step"] == step]
        lines.append("| " + " | ".join([str(step), *values, " ".join(links)]) + " |")
    lines += ["", f"`{Path(args.model).name}`, LoRA fine-tune of {args.steps} steps (batch {args.batch}, "
                  f"{args.clips} toy clips), IMAP monitor every {args.every} steps on {args.probes} probe clips; "
                  "maps are rows = probe clips, columns = latent frames, normalised per clip. `head_stability`: "
                  "Jaccard overlap of the selected (block, head) pairs with the previous probe. Links are "
                  "relative to the repository root (the README embeds this table).", ""]
    for tag, entries in files.items():
        last = entries[-1]
        lines.append(f"![{tag} at step {last['step']}]({last['file']})")
    return "\n".join(lines)


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "assets" / "toy-model"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--every", type=int, default=10, help="monitor interval in steps")
    parser.add_argument("--probes", type=int, default=4, help="probe clips")
    parser.add_argument("--clips", type=int, default=32, help="toy clips in the fine-tuning set")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--num_frames", type=int, default=17)
    parser.add_argument("--max_sequence_length", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep_run", default=None, help="folder to keep the run (data, cache, logs) in")
    parser.add_argument("--threads", type=int, default=0, help="torch / OpenCV threads (0: their defaults)")
    parser.add_argument("--results_dir", default=None,
                        help="write the results here instead of benchmarks/results (smoke runs)")
    args = parser.parse_args()
    limit_threads(args.threads)
    work = Path(args.keep_run) if args.keep_run else Path(tempfile.mkdtemp(prefix="mg-imap-monitor-"))
    try:
        summary, log_dir = fine_tune(args, work)
        scalars, images = read_events(log_dir)
    finally:
        if not args.keep_run:
            shutil.rmtree(work, ignore_errors=True)
    if not images:
        raise RuntimeError("the monitor logged no images; is --every <= --steps?")
    files = export_images(images, Path(args.results_dir) if args.results_dir else RESULTS)
    data = {"machine": machine(), "settings": vars(args), "scalars": scalars, "images": files,
            "losses": summary["losses"]}
    write_results(NAME, data, markdown(scalars, files, args), results_dir=args.results_dir)


if __name__ == "__main__":
    main()
