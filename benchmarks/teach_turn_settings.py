"""Which LoRA settings let the ORACLE arm (the pool's clean turn clips, from its truth table) learn turns?

The arms benchmark (`teach_turn.py`) is only worth running if its ceiling arm learns the new motion on the toy
model. This trains the oracle LoRA for each (steps, lr, rank) given and scores turn success on a few held-out turn
prompts, on ONE world seed (the selection seed; `teach_turn.py` reports on another). Evidence hygiene (issue 16,
item 8): the settings chosen here are chosen on --world_seed only.

    python benchmarks/teach_turn_settings.py --world_seed 0 --grid 400:5e-4:16,400:1e-4:16 --prompts 12 --seeds 1
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import _teach_turn as tt
import _toy_eval as ev
from _common import limit_threads

from motionguide.cli_args import ArgumentParser
from motionguide.toy.turn_pool import load_truth, make_turn_pool
from motionguide.toy.turns import PAIR_SETS, pair_set


def parse_args():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    ev.add_common_args(parser)
    parser.add_argument("--world_seed", type=int, default=0, help="seed of the turn pool the oracle is read from")
    parser.add_argument("--pool", type=int, default=600, help="clips in the turn pool")
    parser.add_argument("--grid", default="400:5e-4:16",
                        help="comma-separated steps:lr:rank settings to try ('' = only rewrite the summary)")
    parser.add_argument("--training_type", default="lora", choices=["lora", "full"],
                        help="lora, or full (every transformer weight: a capacity check, rank unused)")
    parser.add_argument("--pairs", default="all", choices=sorted(PAIR_SETS),
                        help="direction pairs of the pool's turns and the held-out prompts: all 12 orders, or "
                             "one_order (one order per pair: what an order-blind text encoder can name)")
    parser.add_argument("--batch", type=int, default=4, help="training batch")
    parser.add_argument("--motion_loss_weight", type=float, default=1.0,
                        help="weight of the moving latent pixels in the loss (Motive's motion mask; 1: off)")
    parser.add_argument("--prompts", type=int, default=12, help="first N held-out turn prompts")
    parser.add_argument("--seeds", type=int, default=1, help="sampling seeds per prompt")
    parser.add_argument("--seen_prompts", type=int, default=0,
                        help="also score the first N oracle training captions (did it fit what it saw?)")
    parser.add_argument("--work", default="runs/teach-turn-settings", help="pools, caches and LoRAs (reused)")
    args = parser.parse_args()
    if not (math.isfinite(args.motion_loss_weight) and args.motion_loss_weight >= 1):
        parser.error(f"--motion_loss_weight {args.motion_loss_weight} must be a finite number >= 1 (1: off)")
    return args


def seen_prompt(row: dict) -> dict:
    """A training clip's caption as a prompt record (colour, shape and legs from its true caption)."""
    words = row["true_caption"].split()  # "a red circle moves right [quickly] then left [quickly]"
    first, second = row["true_motion"].split(" then ")
    return {"prompt": row["true_caption"], "color": words[1], "shape": words[2], "first": first, "second": second}


def main() -> None:
    args = parse_args()
    limit_threads(args.threads)
    work = Path(args.work)
    pairs = pair_set(args.pairs)
    tag = "" if args.pairs == "all" else f"_{args.pairs}"
    pool = work / f"pool_seed{args.world_seed}{tag}"
    if not (pool / "truth.json").is_file():
        make_turn_pool(pool, num_clips=args.pool, seed=args.world_seed, pairs=pairs, fmt=("jsonl",), overwrite=True,
                       progress=False)
    truth = load_truth(pool)
    oracle = [r["id"] for r in truth if r["clean_turn"]]
    data = tt.write_subset(pool, oracle, work / f"oracle_seed{args.world_seed}{tag}")
    prompts = tt.heldout_turn_prompts(pairs=pairs)[: args.prompts]
    seen_prompts = [seen_prompt(r) for r in truth if r["clean_turn"]][: args.seen_prompts]
    settings = ev.sampling_settings(args.model, max_sequence_length=args.max_sequence_length)
    results_file = work / "settings_search.jsonl"
    from motionguide.sampling import load_pipeline

    for item in [g for g in args.grid.split(",") if g]:
        steps, lr, rank = item.split(":")
        steps, lr, rank = int(steps), float(lr), int(rank)
        name = f"oracle_s{args.world_seed}_steps{steps}_lr{lr:g}_r{rank}_b{args.batch}"
        name += ("_full" if args.training_type == "full" else "") + tag
        name += f"_mw{args.motion_loss_weight:g}" if args.motion_loss_weight != 1.0 else ""
        started = time.perf_counter()
        trained = tt.fine_tune_subset(args.model, data, work / name, work / "train-cache", steps=steps,
                                      batch=args.batch, lr=lr, rank=rank, seed=0,
                                      training_type=args.training_type,
                                      motion_loss_weight=args.motion_loss_weight)
        if args.training_type == "full":  # the trained transformer replaces the shipped one
            pipe = load_pipeline(args.model)
            pipe.transformer = type(pipe.transformer).from_pretrained(Path(trained["lora"]) / "transformer")
        else:
            pipe = load_pipeline(args.model, lora=trained["lora"])
        pipe.set_progress_bar_config(disable=True)
        from motionguide.backbones import backbone_for

        rows = tt.evaluate_arm(pipe, prompts, [], range(args.seeds), settings, backbone_for(pipe).pixels_per_token)
        summary = tt.success_summary(rows["turn"])
        seen = None
        if seen_prompts:
            seen = tt.success_summary(tt.evaluate_arm(pipe, seen_prompts, [], range(args.seeds), settings,
                                                      backbone_for(pipe).pixels_per_token)["turn"])
        record = {"name": name, "training_type": args.training_type, "pairs": args.pairs, "steps": steps, "lr": lr,
                  "motion_loss_weight": args.motion_loss_weight,
                  "rank": rank,
                  "batch": args.batch,
                  "world_seed": args.world_seed, "oracle_clips": len(oracle), "prompts": len(prompts),
                  "seeds": args.seeds, "training": trained, "summary": summary, "seen_summary": seen,
                  "minutes": (time.perf_counter() - started) / 60}
        with results_file.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(f"{name}: turn success {summary['successes']}/{summary['videos']}, "
              f"first leg {summary['first_leg_right']:.0%},"
              f" second leg {summary['second_leg_right']:.0%}, loss {trained['final_loss_mean_last_10pct']:.4f},"
              f" outcomes {summary['outcomes']}, {record['minutes']:.1f} min"
              + (f"; seen captions {seen['successes']}/{seen['videos']}" if seen else ""), flush=True)


    summarize(results_file, args)


def summarize(results_file: Path, args) -> None:
    """Every setting tried so far in --work (one line each in settings_search.jsonl) as a results table."""
    latest = {}  # a setting scored again (e.g. with --seen_prompts) keeps its last record
    for line in results_file.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            latest.pop(record["name"], None)
            latest[record["name"]] = record
    records = list(latest.values())
    rows = [[r.get("pairs", "all"), r["steps"], f"{r['lr']:g}",
             r["rank"] if r.get("training_type", "lora") == "lora" else "full",
             r["batch"], f"{r.get('motion_loss_weight', 1.0):g}", r["world_seed"], r["oracle_clips"],
             f"{r['summary']['successes']}/{r['summary']['videos']}",
             f"[{r['summary']['wilson_95'][0]:.0%}, {r['summary']['wilson_95'][1]:.0%}]",
             f"{r['summary']['first_leg_right']:.0%}", f"{r['summary']['second_leg_right']:.0%}",
             f"{r['training']['final_loss_mean_last_10pct']:.3f}",
             f"{r['seen_summary']['successes']}/{r['seen_summary']['videos']}" if r.get("seen_summary") else "–",
             ", ".join(f"{k} {v}" for k, v in r["summary"]["outcomes"].items())] for r in records]
    md = "\n".join([
        "Oracle-arm settings search (the pool's clean turn clips only; chosen on world seed "
        f"{sorted({r['world_seed'] for r in records})}; first {records[0]['prompts'] if records else 0} held-out "
        f"turn prompts x {records[0]['seeds'] if records else 0} seed(s), the model's sampling defaults):", "",
        ev.markdown_table(["pairs", "steps", "lr", "rank", "batch", "motion weight", "world seed", "clips", "turn success", "Wilson 95%",
                           "1st leg", "2nd leg", "final loss", "seen captions", "outcomes"], rows)])
    ev.write("teach_turn_settings", {"records": records}, md, args.results_dir)


if __name__ == "__main__":
    main()
