"""The Motive pass on N ranks vs one: wall time per stage, the speedup, and whether the features are the same.

Issue goal: the pass on N ranks takes ~1/N of one rank's time. Each rank featurises every N-th clip and the
latent cache is built sharded, so the featurisation stage should scale; loading the pipeline (every rank loads
it), the projector's random state (every rank generates it once, on its first clip) and merging / scoring (the
main process) do not.

The same pass (same pool, queries, seed, projector) runs once per entry of `--ranks`, each in a fresh process
group (`torchrun --nproc_per_node N`, gloo on CPU ranks, `ACCELERATE_USE_CPU=1`, one thread per rank) with its
own output and latent cache, so every run encodes its cache itself. A worker (this script with `--worker`)
runs the pass stage by stage as `run_attribution` does and times each stage with a barrier after it (the
slowest rank's time). Reported per rank count: the launch's wall time, each stage's time, the speedup over
the first entry, and whether the stored features (every split), the scores and the selection equal the first
entry's bit for bit.

The ranks share the machine's cores: the speedup can only approach N when at least N cores are free (the
project's CI machine has 2). Time it alone.

Run for real (toy model, 48 pool clips + 8 queries, 1 vs 2 ranks; about 3 minutes on the 2-core CPU, alone):
    python benchmarks/motive_ranks.py
Smoke run (seconds of featurisation):
    python benchmarks/motive_ranks.py --pool 3 --queries 2 --results_dir /tmp/motive-ranks-smoke
The random real-architecture pipeline instead (memory: every rank loads the whole pipeline; not run yet):
    motionguide random-pipeline --like wan2.1-t2v-1.3b --num_layers 4 --text_layers 1 --out /tmp/wan-random
    python benchmarks/motive_ranks.py --model /tmp/wan-random --dtype bf16 --num_frames 9 --height 128 \
        --width 128 --max_sequence_length 32 --pool 8 --queries 2 --name motive_ranks_real_arch
(checked at --num_layers 1 --text_layers 1, 5x32x32, 16 text tokens, 2 + 1 clips: identical features.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import machine, write_results
from _motive import DEFAULT_MODEL, make_pool, make_queries, pass_features, work_folder

from motionguide.cli_args import ArgumentParser

HERE = Path(__file__).resolve().parent
STAGES = ("load", "cache", "featurize", "merge_and_select")


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="pipeline folder (default: the toy model)")
    parser.add_argument("--pool", type=int, default=48, help="training clips featurised")
    parser.add_argument("--queries", type=int, default=8, help="query clips featurised")
    parser.add_argument("--ranks", default="1,2", help="rank counts to compare, the first is the reference")
    parser.add_argument("--seed", type=int, default=1, help="pool seed (queries: seed + 1000)")
    parser.add_argument("--motion", default="right", help="the queries' motion")
    parser.add_argument("--num_frames", type=int, default=17)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--max_sequence_length", type=int, default=None, help="text tokens (none: the model's)")
    parser.add_argument("--dtype", default=None, help="bf16|fp16|fp32 for the frozen weights (none: as stored)")
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument("--projector_cache_mb", default="auto", help="per rank (auto: a share of free memory)")
    parser.add_argument("--work", default=None, help="folder for the pool, queries and passes (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the passes' folders under --work")
    parser.add_argument("--name", default="motive_ranks", help="results name (benchmarks/results/NAME.*)")
    parser.add_argument("--results_dir", default=None, help="write results here instead (smoke runs)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: JSON of the pass settings
    return parser.parse_args(argv)


# ---------------------------------------------------------------------- one launch (every rank runs this)
def worker(settings_file: str) -> None:
    """Run the pass of `settings_file` stage by stage; the main process writes the stage times next to it."""
    import torch

    from _common import limit_threads
    from motionguide.motive import MotiveConfig
    from motionguide.motive.attributor import SPLITS, Motive, pass_datasets

    limit_threads(1)
    settings = json.loads(Path(settings_file).read_text())
    cfg = MotiveConfig(**settings)
    cfg.check()
    datasets = pass_datasets(cfg)
    dist = torch.distributed
    times: dict[str, float] = {}

    def timed(stage: str, fn) -> None:
        start = time.perf_counter()
        fn()
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # the stage ends when its slowest rank is done
        times[stage] = time.perf_counter() - start

    holder = {}
    timed("load", lambda: holder.setdefault("motive", Motive(cfg.model, cfg, progress=False)))
    motive = holder["motive"]
    with motive:
        timed("cache", lambda: [motive.prepare(split, datasets[split]) for split in SPLITS])
        timed("featurize", lambda: [motive.featurize(split, datasets[split]) for split in SPLITS])

        def merge_and_select() -> None:
            for split in SPLITS:
                motive.finalize(split)
            if motive.rank == 0:
                motive.select()

        timed("merge_and_select", merge_and_select)
    if motive.rank == 0:
        Path(settings_file).with_suffix(".times.json").write_text(
            json.dumps({"world_size": motive.world_size, "stages_s": times}))
    from motionguide.cli_args import release_process_group

    release_process_group()


# ---------------------------------------------------------------------- the comparison
def launch(settings: dict, ranks: int, folder: Path) -> dict:
    """One pass on `ranks` CPU ranks; its stage times and the launch's wall time."""
    folder.mkdir(parents=True, exist_ok=True)
    settings_file = folder / "settings.json"
    settings_file.write_text(json.dumps(settings))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "WANDB_MODE": "offline",
           "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    script = [str(HERE / "motive_ranks.py"), "--worker", str(settings_file)]
    if ranks == 1:
        env.pop("WORLD_SIZE", None)
        cmd = [sys.executable, *script]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", *script]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=HERE, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"the {ranks}-rank pass failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    times = json.loads(settings_file.with_suffix(".times.json").read_text())
    assert times["world_size"] == ranks, times
    return {"ranks": ranks, "wall_s": wall, "stages_s": times["stages_s"]}


def same_outputs(reference: Path, other: Path) -> dict:
    """Whether two passes stored the same features (every split, same ids in the same order), scores and
    selection; the largest feature difference if not."""
    result = {}
    for split in ("train", "query"):
        ids_a, feats_a, _ = pass_features(reference, split)
        ids_b, feats_b, _ = pass_features(other, split)
        order = {clip: i for i, clip in enumerate(ids_b)}
        same_ids = sorted(ids_a) == sorted(ids_b)
        diff = float(np.abs(feats_a - feats_b[[order[c] for c in ids_a]]).max()) if same_ids else float("inf")
        result[f"{split}_features_max_abs_diff"] = diff
    sel_a, sel_b = (json.loads(Path(p, "selection.json").read_text()) for p in (reference, other))
    result["same_selection"] = sel_a["selected_ids"] == sel_b["selected_ids"]
    result["same_scores"] = bool(np.array_equal(np.load(Path(reference, "scores.npy")),
                                                np.load(Path(other, "scores.npy"))))
    result["identical"] = (result["same_selection"] and result["same_scores"]
                           and all(v == 0.0 for k, v in result.items() if k.endswith("_diff")))
    return result


def markdown(data: dict) -> str:
    runs, s = data["runs"], data["settings"]
    base = runs[0]
    lines = [
        "| ranks | launch wall (s) | load (s) | latent cache (s) | featurize (s) | merge + select (s) | "
        "featurize speedup | wall speedup | features, scores, selection |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        st = run["stages_s"]
        same = "reference" if run is base else ("identical" if run["same"]["identical"] else
                                                 f"differ (max feature diff {max(v for k, v in run['same'].items() if k.endswith('_diff')):.2g})")
        lines.append(f"| {run['ranks']} | {run['wall_s']:.1f} | {st['load']:.1f} | {st['cache']:.1f} | "
                     f"{st['featurize']:.1f} | {st['merge_and_select']:.1f} | "
                     f"{base['stages_s']['featurize'] / st['featurize']:.2f}x | {base['wall_s'] / run['wall_s']:.2f}x | "
                     f"{same} |")
    lines += ["", f"Model {s['model']}, {s['pool']} pool clips + {s['queries']} queries at "
              f"{s['num_frames']}x{s['height']}x{s['width']}, dtype {s['dtype'] or 'as stored'}, "
              f"projector cache {s['projector_cache_mb']} MiB per rank; CPU ranks over gloo, one thread each, "
              f"{data['machine']['cpus']} cores on the machine. Stage times end at a barrier (the slowest rank); "
              "the launch's wall time includes starting Python and importing torch on every rank. Each run "
              "encodes its own latent cache; every rank generates the projector's random state once (inside "
              "featurize: a cost that does not split). Features, scores and selection compared bit for bit "
              "with the first row's."]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    ranks = [int(r) for r in str(args.ranks).split(",")]
    work, temporary = work_folder(args.work, "motive-ranks-")
    try:
        pool = make_pool(work / "pool", args.pool, args.seed, 0.25)
        queries = make_queries(work / "queries", args.queries, args.seed + 1000, args.motion)
        settings = dict(model=str(Path(args.model).resolve()) if Path(args.model).exists() else args.model,
                        data=str(pool), queries=str(queries), num_frames=args.num_frames, height=args.height,
                        width=args.width, max_sequence_length=args.max_sequence_length, dtype=args.dtype,
                        gradient_checkpointing=args.gradient_checkpointing, seed=args.seed, report=False,
                        projector_cache_mb=args.projector_cache_mb, device="cpu")
        runs = []
        for n in ranks:
            folder = work / f"ranks-{n}"
            if folder.exists():
                shutil.rmtree(folder)
            run = launch({**settings, "out": str(folder / "out"), "latent_cache_dir": str(folder / "cache")},
                         n, folder)
            if runs:
                run["same"] = same_outputs(work / f"ranks-{ranks[0]}" / "out", folder / "out")
            runs.append(run)
            print(f"{n} rank(s): wall {run['wall_s']:.1f} s, stages "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in run["stages_s"].items()), flush=True)
        model_label = "the toy model" if Path(args.model).resolve() == Path(DEFAULT_MODEL).resolve() else \
            Path(args.model).name
        data = {"machine": {**machine(), "cpus": os.cpu_count()},
                "settings": {"model": model_label, "pool": args.pool, "queries": args.queries,
                             "num_frames": args.num_frames, "height": args.height, "width": args.width,
                             "dtype": args.dtype, "gradient_checkpointing": args.gradient_checkpointing,
                             "max_sequence_length": args.max_sequence_length,
                             "projector_cache_mb": args.projector_cache_mb, "seed": args.seed},
                "runs": runs}
        write_results(args.name, data, markdown(data), args.results_dir)
        failed = [run["ranks"] for run in runs[1:] if not run["same"]["identical"]]
        if failed:
            sys.exit(f"the passes on {failed} ranks stored other features than on {ranks[0]}: {runs[1:]}")
    finally:
        if temporary and not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.worker:
        worker(arguments.worker)
    else:
        main(arguments)
