"""The main job end to end (`make demo`): its wall time per command, what curation did, and the samples.

Runs `motionguide demo` (a fresh output folder; the toy dataset, queries and latent cache under data/ and
cache/ are reused when present, as on a user's second run), then copies the report's key pictures to
results/demo/ and writes results/main_job.{json,md} for the README. `--fresh` deletes the generated toy data
and cache first, so the time includes generating and encoding them (a newcomer's first run).

    python benchmarks/main_job.py [--fresh]
"""

import json
import shutil
import time
from pathlib import Path

from _common import RESULTS, machine, write_results

from motionguide.cli_args import ArgumentParser

ROOT = Path(__file__).resolve().parent.parent
PICTURES = {"report_samples.png": "samples.png", "finetune/motive/report_top_bottom_q0.png": "motive_top_bottom.png",
            "finetune/motive/report_votes.png": "motive_votes.png", "report_loss.png": "loss.png"}


def markdown(report: dict, minutes: float, fresh: bool, words: list[str]) -> str:
    """The README table: time per command, what curation kept (toy truth), the three sample sets' metrics."""
    c, t, s = report["curation"], report["training"], report["samples"]
    md = [f"Whole main job: **{minutes:.1f} min** on this machine "
          f"({'fresh: toy data and latent cache generated' if fresh else 'toy data and latent cache reused'}).", "",
          "| step | seconds |", "|---|---|"]
    md += [f"| {e['step']} | {e['seconds']:.0f} |" for e in report["commands"]]
    md += ["", "| curation (toy ground truth) | pool | kept by Motive |", "|---|---|---|",
           f"| clips | {c['pool']} | {c['kept']} |",
           f"| with a planted defect | {c['defect_share_pool']:.0%} | {c['defect_share_kept']:.0%} |",
           f"| clean clips of the target motion (right) | {c['target_share_pool']:.0%} | {c['target_share_kept']:.0%} |",
           "", "| samples | direction correct | object present | dynamic (proxy) | smoothness | flicker |",
           "|---|---|---|---|---|---|"]
    labels = {"base": "base model", "finetuned": "Motive-curated LoRA", "guided": "LoRA + correspondence guidance"}
    for name, label in labels.items():
        m = s[name]
        md.append(f"| {label} | {m['direction_accuracy']:.0%} | {m['presence']:.0%} | {m['dynamic_degree']:.0%} | "
                  f"{m['smoothness']:.3f} | {m['flicker']:.3f} |")
    md += ["", f"LoRA: {t['steps']} steps on {t['clips']} clips, median step {t['median_step_s']:.2f} s; IMAP probed "
           f"{t.get('imap_probes_logged', 0)} times. Samples: per prompt, base / fine-tuned / guided (measured "
           "direction after the arrow).", "",
           "![samples: base, fine-tuned, guided](benchmarks/results/demo/samples.png)", "",
           "Motive's top and bottom training clips for one query (score, caption):", "",
           "![Motive: top and bottom clips for a query](benchmarks/results/demo/motive_top_bottom.png)", ""]
    for word in words[:2]:
        md += [f"IMAP map of `{word}` on the probe clips (rows) per latent frame, first and last probe of the run:", "",
               f"![first](benchmarks/results/demo/imap_{word}_first.png) "
               f"![last](benchmarks/results/demo/imap_{word}_last.png)", ""]
    return "\n".join(md)


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "main-job"))
    parser.add_argument("--fresh", action="store_true", help="regenerate the toy data and the latent cache too")
    args = parser.parse_args()
    from motionguide.demo import run_demo

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    if args.fresh:
        for folder in ("data/toy-train", "data/toy-queries", "cache"):
            shutil.rmtree(ROOT / folder, ignore_errors=True)
    start = time.perf_counter()
    run_demo(out)
    minutes = (time.perf_counter() - start) / 60
    report = json.loads((out / "report.json").read_text())
    pictures = RESULTS / "demo"
    pictures.mkdir(parents=True, exist_ok=True)
    for source, name in PICTURES.items():
        if (out / source).is_file():
            shutil.copyfile(out / source, pictures / name)
    imap = sorted((out / "finetune" / "imap").glob("*_step*.png"))
    words = sorted({p.name.split("_step")[0] for p in imap}, key=lambda w: (w not in ("circle", "moves"), w))
    for word in words:
        steps = sorted(p for p in imap if p.name.startswith(f"{word}_step"))
        shutil.copyfile(steps[0], pictures / f"imap_{word}_first.png")
        shutil.copyfile(steps[-1], pictures / f"imap_{word}_last.png")
    md = markdown(report, minutes, args.fresh, words)
    write_results("main_job", {"machine": machine(), "minutes": minutes, "fresh": args.fresh, "words": words,
                               "report": report}, md)


if __name__ == "__main__":
    main()
