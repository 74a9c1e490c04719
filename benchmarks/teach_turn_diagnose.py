"""Why does even the oracle fine-tune not teach the toy model turns? Three measurements (issue 16).

  order  the frozen random text encoder and Wan's cross-attention: is "right then up" a different input from
         "up then right"? (per-token cosines; the transformer's velocity for both orders, for the two direction
         word vectors swapped, and for the diagonal; the same cosines for a random encoder with a scaled-up
         relative position bias, the recipe change that would make it order-aware)
  vae    can 5 latent frames carry a turn? the turn metric on VAE round trips of rendered turns, per turn frame
  fit    can the transformer fit N clean turn clips of a pool? a plain full fine-tune (the toy recipe's
         object-weighted loss, constant lr), loss at fixed noise draws over all and over object pixels before
         and after, then the turn metric on samples of the training captions and of held-out turn prompts

Each part appends one record to --work/diagnose.jsonl; every record so far becomes the results table.

    python benchmarks/teach_turn_diagnose.py --part order --threads 1
    python benchmarks/teach_turn_diagnose.py --part fit --clips 8 --steps 300 --lr 1e-4 --pairs one_order --threads 1
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import _teach_turn as tt
import _toy_eval as ev
from _common import limit_threads

from motionguide.cli_args import ArgumentParser

ORDERS = ("a red circle moves right then up", "a red circle moves up then right")
DIAGONAL = "a red circle moves up-right"


def parse_args():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    ev.add_common_args(parser)
    parser.add_argument("--part", required=True, choices=["order", "vae", "fit"], help="what to measure")
    parser.add_argument("--work", default="runs/teach-turn-diagnose", help="pools and the records file")
    parser.add_argument("--world_seed", type=int, default=0, help="turn pool seed (fit)")
    parser.add_argument("--pairs", default="one_order", help="direction-pair set of the pool (fit): all or one_order")
    parser.add_argument("--clips", type=int, default=8, help="first N clean turn clips of the pool (fit)")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps (fit)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate, constant (fit)")
    parser.add_argument("--batch", type=int, default=4, help="clips per step (fit)")
    parser.add_argument("--object_weight", type=float, default=5.0,
                        help="loss weight of latent pixels an object covers (fit; the toy recipe's: 5)")
    parser.add_argument("--modules", default="all", help="parameter-name regex to train, or all (fit)")
    parser.add_argument("--seen_prompts", type=int, default=4, help="training captions sampled (fit)")
    parser.add_argument("--prompts", type=int, default=0, help="held-out turn prompts sampled (fit)")
    parser.add_argument("--vae_clips", type=int, default=48, help="rendered turns (vae)")
    return parser.parse_args()


def order_part(pipe) -> dict:
    import torch

    from transformers import UMT5Config, UMT5EncoderModel

    from motionguide.toy.model_recipe import TOY_TEXT_CONFIG

    cos = torch.nn.functional.cosine_similarity

    def embed(prompt):
        return pipe.encode_prompt([prompt], do_classifier_free_guidance=False, max_sequence_length=16)[0]

    with torch.no_grad():
        a, b, diag = embed(ORDERS[0]), embed(ORDERS[1]), embed(DIAGONAL)
        swapped = a.clone()
        swapped[:, [4, 6]] = swapped[:, [6, 4]]
        x = torch.randn(4, 8, 5, 16, 16, generator=torch.Generator().manual_seed(0))
        velocity = {}
        for t in (900.0, 500.0, 100.0):
            ts = torch.full((4,), t)
            out = {k: pipe.transformer(x, ts, e.expand(4, -1, -1), return_dict=False)[0]
                   for k, e in (("a", a), ("b", b), ("swapped", swapped), ("diag", diag))}
            rel = lambda k: float((out[k] - out["a"]).norm() / out["a"].norm())  # noqa: E731
            velocity[str(int(t))] = {"other_order": rel("b"), "swapped_word_vectors": rel("swapped"),
                                     "diagonal": rel("diag")}
        record = {"word_same_place_cos": float(cos(a[0, 4], b[0, 6], dim=0)),
                  "two_words_one_place_cos": float(cos(a[0, 4], b[0, 4], dim=0)),
                  "velocity_relative_difference": velocity, "relative_bias_scaled": {}}
        ids = lambda p: pipe.tokenizer([p], padding="max_length", max_length=16, truncation=True,  # noqa: E731
                                       return_tensors="pt")
        for scale in (1.0, 10.0, 30.0):  # a fresh encoder as the recipe builds it (seed 0), bias scaled
            torch.manual_seed(0)
            enc = UMT5EncoderModel(UMT5Config(vocab_size=len(pipe.tokenizer), **TOY_TEXT_CONFIG)).eval()
            for block in enc.encoder.block:
                block.layer[0].SelfAttention.relative_attention_bias.weight.mul_(scale)
            ea, eb = (enc(t.input_ids, attention_mask=t.attention_mask).last_hidden_state[0]
                      for t in (ids(ORDERS[0]), ids(ORDERS[1])))
            record["relative_bias_scaled"][f"{scale:g}"] = {
                "word_same_place_cos": float(cos(ea[4], eb[6], dim=0)),
                "two_words_one_place_cos": float(cos(ea[4], eb[4], dim=0))}
    return record


def vae_part(pipe, clips: int) -> dict:
    import torch

    from motionguide.metrics.turns import toy_turn_adherence
    from motionguide.toy.captions import caption_for
    from motionguide.toy.render import render_clip
    from motionguide.toy.sampling import all_turn_combinations, sample_clip_spec
    from motionguide.toy.vae_recipe import to_tensor

    rng = np.random.default_rng(0)
    combos = all_turn_combinations()
    per_frame: dict[str, list[int]] = {}
    for _ in range(clips):
        spec = sample_clip_spec(rng, turns=[combos[int(rng.integers(len(combos)))]])
        clip, caption = render_clip(spec), caption_for(spec)
        with torch.no_grad():
            decoded = pipe.vae.decode(pipe.vae.encode(to_tensor(clip.frames[None])).latent_dist.mode()).sample
        frames = ((decoded[0].permute(1, 2, 3, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
        row = per_frame.setdefault(str(spec.objects[0].turn_frame), [0, 0, 0])
        row[0] += 1
        row[1] += toy_turn_adherence(clip.frames, caption)[0].success
        row[2] += toy_turn_adherence(frames, caption)[0].success
    return {"per_turn_frame": {k: {"clips": v[0], "on_clip": v[1], "on_round_trip": v[2]}
                               for k, v in sorted(per_frame.items(), key=lambda kv: int(kv[0]))}}


def fit_part(pipe, args, work: Path) -> dict:
    """A plain loop (not the library Trainer) so the loss can carry the toy recipe's object weights."""
    import torch

    from motionguide.backbones import WanBackbone, backbone_for
    from motionguide.toy.dataset import load_ground_truth
    from motionguide.toy.model_recipe import encode_pool, object_weight_maps, sample_sigmas
    from motionguide.toy.truth import latent_groups
    from motionguide.toy.turn_pool import load_truth, make_turn_pool
    from motionguide.toy.turns import pair_set
    from motionguide.video import read_video

    pairs = pair_set(args.pairs)
    pool = work / f"pool_seed{args.world_seed}_{args.pairs}"
    if not (pool / "truth.json").is_file():
        make_turn_pool(pool, num_clips=600, seed=args.world_seed, pairs=pairs, fmt=("jsonl",), overwrite=True,
                       progress=False)
    truth = [r for r in load_truth(pool) if r["clean_turn"]][: args.clips]
    meta = {row["id"]: row for row in map(json.loads, (pool / "metadata.jsonl").read_text().splitlines())}
    frames = np.stack([read_video(pool / meta[r["id"]]["file_name"]) for r in truth])
    masks = [load_ground_truth(pool / meta[r["id"]]["gt_file"])["masks"] for r in truth]
    latents = encode_pool(pipe.vae, frames)
    groups = latent_groups(WanBackbone(torch.nn.Identity(), vae=pipe.vae), frames.shape[1])
    weights = object_weight_maps(masks, tuple(latents.shape), args.object_weight, groups)
    on_object = object_weight_maps(masks, tuple(latents.shape), 2.0, groups) > 1
    captions = [r["caption"] for r in truth]
    with torch.no_grad():
        table = pipe.encode_prompt(captions + [""], do_classifier_free_guidance=False, max_sequence_length=16,
                                   device="cpu")[0]
    model = pipe.transformer.requires_grad_(False)
    params = [p for n, p in model.named_parameters() if args.modules == "all" or re.search(args.modules, n)]
    for p in params:
        p.requires_grad_(True)

    draws = 16  # fixed noise draws over noise levels 0.1-0.95, the same before and after
    g_eval = torch.Generator().manual_seed(123)
    e_idx = torch.arange(draws) % len(truth)
    e_noise = torch.randn((draws,) + tuple(latents.shape[1:]), generator=g_eval)
    e_sigma = torch.linspace(0.1, 0.95, draws).view(-1, 1, 1, 1, 1)

    def fixed_loss() -> dict:
        model.eval()
        with torch.no_grad():
            x0 = latents[e_idx]
            pred = model(hidden_states=(1 - e_sigma) * x0 + e_sigma * e_noise, timestep=e_sigma.flatten() * 1000,
                         encoder_hidden_states=table[e_idx], return_dict=False)[0]
            err = (pred - (e_noise - x0)).square()
            mask = on_object[e_idx].expand_as(err)
            return {"all": float(err.mean()), "object": float(err[mask].mean())}

    before = fixed_loss()
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    started, losses = time.perf_counter(), []
    model.train()
    for _ in range(args.steps):
        idx = torch.randint(0, len(truth), (args.batch,), generator=g)
        x0 = latents[idx]
        text = idx.clone()
        text[torch.rand(args.batch, generator=g) < 0.1] = len(captions)  # caption dropout, as the recipe
        noise = torch.randn(x0.shape, generator=g)
        sigma = sample_sigmas(args.batch, g).view(-1, 1, 1, 1, 1)
        pred = model(hidden_states=(1 - sigma) * x0 + sigma * noise, timestep=sigma.flatten() * 1000,
                     encoder_hidden_states=table[text], return_dict=False)[0]
        w = weights[idx]
        loss = ((pred - (noise - x0)).square() * w).mean() / w.mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    after = fixed_loss()
    settings = ev.sampling_settings(args.model, max_sequence_length=args.max_sequence_length)
    px = backbone_for(pipe).pixels_per_token
    seen = [{"prompt": r["caption"], "color": r["caption"].split()[1], "shape": r["caption"].split()[2],
             "first": r["true_motion"].split(" then ")[0], "second": r["true_motion"].split(" then ")[1]}
            for r in truth][: args.seen_prompts]
    seen_rows = tt.evaluate_arm(pipe, seen, [], [0], settings, px)["turn"]
    held = tt.heldout_turn_prompts(pairs=pairs)[: args.prompts]
    held_rows = tt.evaluate_arm(pipe, held, [], [0], settings, px)["turn"] if held else []
    return {"pairs": args.pairs, "clips": len(truth), "steps": args.steps, "lr": args.lr, "batch": args.batch,
            "object_weight": args.object_weight, "modules": args.modules, "fixed_loss_before": before,
            "fixed_loss_after": after, "train_loss_last_50": float(np.mean(losses[-50:])),
            "seen": tt.success_summary(seen_rows) if seen_rows else None,
            "heldout": tt.success_summary(held_rows) if held_rows else None,
            "train_minutes": (time.perf_counter() - started) / 60}


def markdown(records: list[dict]) -> str:
    lines = []
    for r in (r for r in records if r["part"] == "order"):
        v = r["velocity_relative_difference"]
        lines += ["Word order (shipped toy model; " + " vs ".join(f'"{o}"' for o in ORDERS) + "):", "",
                  ev.markdown_table(["measure", "value"], [
                      ["cosine of 'right' at place 4 (1st order) and place 6 (2nd order)",
                       f"{r['word_same_place_cos']:.3f}"],
                      ["cosine of 'right' and 'up' at place 4", f"{r['two_words_one_place_cos']:.3f}"],
                      *[[f"transformer velocity, t={t}: other order / swapped word vectors / diagonal caption",
                         f"{d['other_order']:.4f} / {d['swapped_word_vectors']:.4f} / {d['diagonal']:.4f}"]
                        for t, d in v.items()],
                      *[[f"fresh random encoder, relative position bias x{s}: same word / two words cosine",
                         f"{d['word_same_place_cos']:.3f} / {d['two_words_one_place_cos']:.3f}"]
                        for s, d in r["relative_bias_scaled"].items()]]), ""]
    for r in (r for r in records if r["part"] == "vae"):
        lines += ["Turns through the toy VAE (17 frames -> 5 latent frames), turn metric per turn frame:", "",
                  ev.markdown_table(["turn frame", "clips", "metric on the clip", "on its VAE round trip"],
                                    [[k, v["clips"], v["on_clip"], v["on_round_trip"]]
                                     for k, v in r["per_turn_frame"].items()]), ""]
    fits = [r for r in records if r["part"] == "fit"]
    if fits:
        fmt = lambda s: f"{s['successes']}/{s['videos']}" if s else "–"  # noqa: E731
        lines += ["Fitting clean turn clips (full fine-tune, object-weighted loss, seed 0 samples):", "",
                  ev.markdown_table(
                      ["pairs", "clips", "steps", "lr", "object weight", "loss before -> after (all)",
                       "object pixels", "training captions", "held-out prompts", "minutes"],
                      [[r["pairs"], r["clips"], r["steps"], f"{r['lr']:g}", f"{r['object_weight']:g}",
                        f"{r['fixed_loss_before']['all']:.3f} -> {r['fixed_loss_after']['all']:.3f}",
                        f"{r['fixed_loss_before']['object']:.2f} -> {r['fixed_loss_after']['object']:.2f}",
                        fmt(r["seen"]), fmt(r["heldout"]), f"{r['train_minutes']:.1f}"] for r in fits]), ""]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    limit_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    from motionguide.sampling import load_pipeline

    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    if args.part == "order":
        record = order_part(pipe)
    elif args.part == "vae":
        record = vae_part(pipe, args.vae_clips)
    else:
        record = fit_part(pipe, args, work)
    records_file = work / "diagnose.jsonl"
    with records_file.open("a") as handle:
        handle.write(json.dumps({"part": args.part, **record}) + "\n")
    records = [json.loads(line) for line in records_file.read_text().splitlines() if line.strip()]
    ev.write("teach_turn_diagnose", {"records": records}, markdown(records), args.results_dir)


if __name__ == "__main__":
    main()
