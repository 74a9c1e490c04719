"""Correspondence guidance at the analysed blocks vs the other blocks, and a sweep of the scale s.

Runs `cag_quality.py` for each arm (same prompts, seeds and pairing; results cag_quality_<arm>.json): the shipped
profile as is, the three blocks the analysis did not choose, s = 0.5 and 2, and the guidance window over all
steps and over the later half; writes one table of the paired differences guided − unguided with their 95%
bootstrap intervals.

    python benchmarks/cag_sweep.py [--seeds 2 --threads 1]
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from _common import RESULTS, machine, write_results

from motionguide.cli_args import ArgumentParser

HERE = Path(__file__).parent
_TOY_CONFIG = HERE.parent / "assets" / "toy-model" / "transformer" / "config.json"
_NUM_BLOCKS = json.loads(_TOY_CONFIG.read_text())["num_layers"] if _TOY_CONFIG.is_file() else 6
#: three blocks drawn at random (seeded), whatever the analysis chose
RANDOM_BLOCKS = sorted(int(b) for b in np.random.default_rng(0).choice(_NUM_BLOCKS, 3, replace=False))
ARMS = {  # name: extra cag_quality flags
    "profile": [],
    "other_blocks": ["--blocks", "0,1,5"],
    "random_blocks": ["--blocks", ",".join(map(str, RANDOM_BLOCKS))],
    "s0.5": ["--scale", "0.5"],
    "s2": ["--scale", "2"],
    "all_steps": ["--window", "0,1"],
    "late_half": ["--window", "0.5,1"],
}
METRICS = (("smoothness", "smoothness", "{:+.4f}"), ("trajectory_jerk", "trajectory jerk", "{:+.3f}"),
           ("flicker", "flicker score", "{:+.4f}"), ("motion_px", "motion px/frame", "{:+.3f}"),
           ("direction", "direction correct", "{:+.1%}"))


def cell(summary: dict, key: str, fmt: str) -> str:
    d = summary[key]["difference"]
    return f"{fmt.format(d['mean'])} [{fmt.format(d['low'])}, {fmt.format(d['high'])}]"


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=0, help="first N prompts of cag_quality's list (0 = all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reuse", action="store_true", help="only tabulate the arms' existing results")
    parser.add_argument("--arms", default=None, help="run only these arms (comma separated), tabulate all")
    args = parser.parse_args()
    if not args.reuse:
        wanted = set(args.arms.split(",")) if args.arms else set(ARMS)
        for name, flags in ((n, f) for n, f in ARMS.items() if n in wanted):
            subprocess.run([sys.executable, str(HERE / "cag_quality.py"), "--seeds", str(args.seeds), "--threads",
                            str(args.threads), "--prompts", str(args.prompts), "--name", f"cag_quality_{name}",
                            *flags], check=True, cwd=HERE)
    files = {name: RESULTS / f"cag_quality_{name}.json" for name in ARMS}
    rows, data = [], {}
    for label, path in files.items():
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        cag, summary = result["cag"], result["summary"]
        data[label] = {"cag": cag, "summary": summary}
        ratio = summary["cost"]["ratio"]
        window = "all steps" if list(cag["window"]) == [0.0, 1.0] else f"{cag['window'][0]:g}–{cag['window'][1]:g}"
        rows.append(f"| {label} | {cag['blocks']} | {cag['scale']:g} | {window} | "
                    + " | ".join(cell(summary, key, fmt) for key, _, fmt in METRICS) + f" | {ratio:.2f} |")
    md = ["| arm | blocks | s | window | " + " | ".join(title for _, title, _ in METRICS) + " | time ÷ unguided |",
          "|---|---|---|---|" + "---|" * (len(METRICS) + 1), *rows, "",
          "Paired differences guided − unguided (mean [95% bootstrap interval]) on the same held-out prompt-seed pairs "
          "(each arm samples its own unguided videos with the same seeds); 'other_blocks' guides at the three blocks "
          f"the analysis did not choose, 'random_blocks' at three drawn at random (seed 0: {RANDOM_BLOCKS}). "
          "Time ÷ unguided is indicative only (arms may share the machine with other jobs); guidance_cost.py "
          "measures cost."]
    write_results("cag_sweep", {"machine": machine(), "arms": data}, "\n".join(md))


if __name__ == "__main__":
    main()
