"""The main job end to end (`make demo`): its wall time per command, what curation did, and the samples.

Runs `motionguide demo` (a fresh output folder; the toy data, queries and latent cache under data/ and
cache/ are reused when present, as on a user's second run), then copies the report's key pictures to
results/demo/ and writes results/main_job.{json,md} for the README. `--fresh` deletes the generated toy data
and cache first, so the time includes generating and encoding them (a newcomer's first run). `--story`: turn
(the default: teach the toy model a turn, issue 16) or straight (the first demo).

    python benchmarks/main_job.py [--fresh] [--story turn|straight]
"""

import json
import shutil
import time
from pathlib import Path

from _common import RESULTS, machine, write_results

from motionguide.cli_args import ArgumentParser

ROOT = Path(__file__).resolve().parent.parent
PICTURES = {"report_samples.png": "samples.png", "finetune/motive/report_top_bottom_q0.png": "motive_top_bottom.png",
            "finetune/motive/report_votes.png": "motive_votes.png", "report_loss.png": "loss.png",
            "report_trajectories.png": "trajectories.png"}
#: what --fresh deletes per story (generated data and latent caches)
GENERATED = {"straight": ("data/toy-train", "data/toy-queries", "cache"),
             "turn": ("data/toy-turn-pool", "data/toy-turn-queries", "cache/toy-turn")}


def pct(value) -> str:
    return "–" if value is None or value != value else f"{value:.0%}"


def turn_markdown(report: dict, minutes: float, fresh: bool, imap_pictures: list[str]) -> str:
    """The README section of the turn story: time per command, selections against the truth table, the sample
    sets' turn success, the pictures; every number from the run's report.json."""
    pool, samples = report["pool"], report["samples"]
    n = samples["base"]["videos"]
    md = [f"Whole main job: **{minutes:.1f} min** on this machine "
          f"({'fresh: turn pool and latent cache generated' if fresh else 'turn pool and latent cache reused'}); "
          f"{len(report['prompts'])} held-out turn prompts x {len(report['seeds'])} seed(s) = {n} videos per sample "
          f"set, {report['training']['steps']} LoRA steps.", "", "| step | seconds |", "|---|---|"]
    md += [f"| {e['step']} | {e['seconds']:.0f} |" for e in report["commands"]]
    md += ["", f"Pool: {pool['clips']} clips, {pool['turn_share']:.0%} turns, {pool['clean_turns']} clean turns.", "",
           "| selection (against the truth table) | clips | clean turns | precision | recall |", "|---|---|---|---|---|"]
    md += [f"| {name} | {q['selected']} | {q['clean_turns']} | {pct(q['precision'])} | {pct(q['recall'])} |"
           for name, q in report["selection"].items()]
    labels = {"base": "base model", "random": "random-10% LoRA", "curated": "Motive-curated LoRA",
              "guided": "curated LoRA + correspondence guidance"}
    md += ["", "| samples | turn success [Wilson 95%] | 1st leg right | 2nd leg right | jerk at the turn | colour drift |",
           "|---|---|---|---|---|---|"]
    for name, label in labels.items():
        s = samples[name]
        md.append(f"| {label} | {s['successes']}/{s['videos']} [{pct(s['wilson_95'][0])}, {pct(s['wilson_95'][1])}] | "
                  f"{pct(s['first_leg_right'])} | {pct(s['second_leg_right'])} | "
                  f"{s['jerk_at_turn']:.2f} | {s['colour_drift']:.1f} |")
    md += ["", "![samples: base, random LoRA, curated LoRA, guided](benchmarks/results/demo/samples.png)", "",
           "![trajectories](benchmarks/results/demo/trajectories.png)", ""]
    for name in imap_pictures:
        md += [f"![IMAP overlay]({'benchmarks/results/demo/' + name})", ""]
    return "\n".join(md)


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
    parser.add_argument("--story", default="turn", choices=["turn", "straight"], help="which demo story to run")
    parser.add_argument("--report_only", action="store_true",
                        help="no run: write the results from the demo already in --out (its own measured minutes; "
                             "say with --fresh whether that run generated its data)")
    args = parser.parse_args()
    from motionguide.demo import run_demo

    out = Path(args.out)
    if args.report_only:
        minutes = json.loads((out / "report.json").read_text())["minutes"]
    else:
        shutil.rmtree(out, ignore_errors=True)
        if args.fresh:
            for folder in GENERATED[args.story]:
                shutil.rmtree(ROOT / folder, ignore_errors=True)
        start = time.perf_counter()
        run_demo(out, story=args.story)
        minutes = (time.perf_counter() - start) / 60
    report = json.loads((out / "report.json").read_text())
    pictures = RESULTS / "demo"
    pictures.mkdir(parents=True, exist_ok=True)
    for source, name in PICTURES.items():
        if (out / source).is_file():
            shutil.copyfile(out / source, pictures / name)
    if args.story == "turn":
        imap = []
        for source in sorted(out.glob("report_imap_*.png")):
            name = source.name.replace("report_", "")
            shutil.copyfile(source, pictures / name)
            imap.append(name)
        write_results("main_job", {"machine": machine(), "minutes": minutes, "fresh": args.fresh, "story": "turn",
                                   "report": report}, turn_markdown(report, minutes, args.fresh, imap))
        return
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
