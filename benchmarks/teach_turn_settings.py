"""Which LoRA settings let the ORACLE arm (the pool's clean turn clips, from its truth table) learn turns?

The arms benchmark (`teach_turn.py`) is only worth running if its ceiling arm learns the new motion on the toy
model. This trains the oracle LoRA for each (steps, lr, rank) given and scores turn success on a few held-out turn
prompts, on ONE world seed (the selection seed; `teach_turn.py` reports on another). Evidence hygiene (issue 16,
item 8): the settings chosen here are chosen on --world_seed only.

    python benchmarks/teach_turn_settings.py --world_seed 0 --grid 400:5e-4:16,400:1e-4:16 --prompts 12 --seeds 1
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import _teach_turn as tt
import _toy_eval as ev
from _common import limit_threads

from motionguide.cli_args import ArgumentParser
from motionguide.toy.turn_pool import load_truth, make_turn_pool


def parse_args():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    ev.add_common_args(parser)
    parser.add_argument("--world_seed", type=int, default=0, help="seed of the turn pool the oracle is read from")
    parser.add_argument("--pool", type=int, default=600, help="clips in the turn pool")
    parser.add_argument("--grid", default="400:5e-4:16", help="comma-separated steps:lr:rank settings to try")
    parser.add_argument("--batch", type=int, default=4, help="training batch")
    parser.add_argument("--prompts", type=int, default=12, help="first N held-out turn prompts")
    parser.add_argument("--seeds", type=int, default=1, help="sampling seeds per prompt")
    parser.add_argument("--work", default="runs/teach-turn-settings", help="pools, caches and LoRAs (reused)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    limit_threads(args.threads)
    work = Path(args.work)
    pool = work / f"pool_seed{args.world_seed}"
    if not (pool / "truth.json").is_file():
        make_turn_pool(pool, num_clips=args.pool, seed=args.world_seed, fmt=("jsonl",), overwrite=True, progress=False)
    truth = load_truth(pool)
    oracle = [r["id"] for r in truth if r["clean_turn"]]
    data = tt.write_subset(pool, oracle, work / f"oracle_seed{args.world_seed}")
    prompts = tt.heldout_turn_prompts()[: args.prompts]
    settings = ev.sampling_settings(args.model, max_sequence_length=args.max_sequence_length)
    results_file = work / "settings_search.jsonl"
    from motionguide.sampling import load_pipeline

    for item in args.grid.split(","):
        steps, lr, rank = item.split(":")
        steps, lr, rank = int(steps), float(lr), int(rank)
        name = f"oracle_s{args.world_seed}_steps{steps}_lr{lr:g}_r{rank}_b{args.batch}"
        started = time.perf_counter()
        trained = tt.fine_tune_subset(args.model, data, work / name, work / "train-cache", steps=steps,
                                      batch=args.batch, lr=lr, rank=rank, seed=0)
        pipe = load_pipeline(args.model, lora=trained["lora"])
        pipe.set_progress_bar_config(disable=True)
        from motionguide.backbones import backbone_for

        rows = tt.evaluate_arm(pipe, prompts, [], range(args.seeds), settings, backbone_for(pipe).pixels_per_token)
        summary = tt.success_summary(rows["turn"])
        record = {"name": name, "steps": steps, "lr": lr, "rank": rank, "batch": args.batch,
                  "world_seed": args.world_seed, "oracle_clips": len(oracle), "prompts": len(prompts),
                  "seeds": args.seeds, "training": trained, "summary": summary,
                  "minutes": (time.perf_counter() - started) / 60}
        with results_file.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(f"{name}: turn success {summary['successes']}/{summary['videos']}, first leg {summary['first_leg_right']:.0%},"
              f" second leg {summary['second_leg_right']:.0%}, loss {trained['final_loss_mean_last_10pct']:.4f},"
              f" outcomes {summary['outcomes']}, {record['minutes']:.1f} min", flush=True)


if __name__ == "__main__":
    main()
