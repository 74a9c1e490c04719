"""Do IMAP maps find the object a noun or a motion verb names, and when it moves? Toy world, ground truth.

Real-video mode (`saliency_for_latents`: VAE-encode, re-noise once to the profile's step or t = 400, one
conditional forward). Per map kind (IMAP, all-head GramCol, raw cross-attention, and a seeded random map as
chance level; spatially also the ground-truth mask pooled to the token grid, the ceiling at that resolution):

- spatial, on `--clips` clips whose object 0 moves for the whole clip ("a red circle moves left"; with
  `--objects 2` a second, still object is a distractor): pointing game and IoU for the noun (the shape word)
  and the verb ("moves") against object 0's mask. Maps are upsampled bilinearly to the 64x64 mask (as the
  training monitor does); a latent frame's mask is the object's footprint over its pixel frames (union);
  IoU binarises each frame's map at its mean and pools pixels over frames; PG is the share of latent frames
  whose peak falls on the object.
- temporal, on `--temporal-clips` clips built with `ObjectSpec(motion_start=k)`, k in 5..F-5 ("a red circle
  starts moving left"; verb "moving"): per clip Pearson r between the verb map's in-object energy per latent
  frame (coverage-weighted mean over the object's tokens; masks area-pooled DOWN to the token grid) and the
  ground-truth moving fraction per latent frame (latent 0 <- frame 0, latent k <- frames 4k-3..4k), averaged
  over clips. Latent 0 is always "static" and is encoded alone by the causal VAE, so r over all frames can
  ride on that alone; "r, f'>=1" drops it. The noun's r is a control (it should not track motion).

World seeds (`--seeds`): the clips of each seed are scored separately; the tables give the mean over seeds
with a 95% Student t interval over seeds, each seed's own figures, and the paired differences IMAP − GramCol
and IMAP − cross-attention (per seed and over seeds, t interval; plus a paired bootstrap over all clips). The
shipped profile's IMAP block was chosen on spatial clips 0-11 of world seed 0, so the default seeds leave 0 out.

Run for real (toy model, CPU, one thread: ~0.5 s per clip, ~5 minutes for the defaults):
    python benchmarks/imap_localization.py --threads 1
Smoke (tiny random pipeline saved with `motionguide.testing.tiny_wan_pipeline().save_pretrained(DIR)`):
    python benchmarks/imap_localization.py --model DIR --clips 4 --temporal-clips 3 --seeds 1,2 \\
        --max-sequence-length 16 --threads 1 --results-dir /tmp/results
Writes results/imap_localization.{json,md}.
"""

import dataclasses
from pathlib import Path

import _toy_eval as ev
import numpy as np
import torch
from _common import limit_threads, machine, write_results
from _imap_truth import (
    in_object_energy, latent_groups, latent_masks, mean_ci, moving_fraction, pearson, token_coverage,
)
from tqdm.auto import tqdm

from motionguide.backbones import backbone_for
from motionguide.cli_args import ArgumentParser
from motionguide.saliency import KINDS, encode_clip, resolve_imap_settings, saliency_for_latents
from motionguide.saliency.compute import default_renoise_timestep
from motionguide.saliency.render import mask_scores
from motionguide.saliency.words import default_caption_words
from motionguide.sampling.generate import SamplingSettings
from motionguide.toy import ObjectSpec, all_combinations, render_clip, sample_clip_spec

ROOT = Path(__file__).resolve().parent.parent
REPORTED = (*KINDS, "random")
#: spatial only: the ground-truth mask area-pooled to the token grid, the best a token-resolution map can do
ORACLE = "token_oracle"


# ---------------------------------------------------------------------- clips
def spatial_spec(seed: int, index: int, num_objects: int, num_frames: int):
    """Object 0 moves for the whole clip; any other object stays still and has another shape (so the noun and
    "moves" both name object 0 only)."""
    rng = np.random.default_rng([seed, 0, index])
    for _ in range(1000):
        spec = sample_clip_spec(rng, num_objects, partial_motion_rate=0.0, num_frames=num_frames)
        first, rest = spec.objects[0], spec.objects[1:]
        if first.motion != "still" and all(o.motion == "still" and o.shape != first.shape for o in rest):
            return spec
    raise RuntimeError("could not draw a clip with one moving object; lower --objects")


def temporal_spec(seed: int, index: int, num_frames: int):
    """One object that rests, then moves from frame k on (k in 5..F-5, so some latent frame >= 1 is still and
    some fully moving), built explicitly with ObjectSpec(motion_start=k) on a sampled placement."""
    rng = np.random.default_rng([seed, 1, index])
    moving = [c for c in all_combinations() if c[2] != "still"]
    spec = sample_clip_spec(rng, 1, combinations=moving, partial_motion_rate=0.0, num_frames=num_frames)
    base = spec.objects[0]
    start = int(rng.integers(5, num_frames - 4))
    late = ObjectSpec(base.shape, base.color, base.motion, base.speed, base.radius, base.start_xy, motion_start=start)
    return dataclasses.replace(spec, objects=(late,))  # a later start only shortens the path: still in frame


def clip_pixels(frames: np.ndarray) -> torch.Tensor:
    """uint8 [F, H, W, 3] -> float [3, F, H, W] in [-1, 1] (what encode_clip takes)."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0


# ---------------------------------------------------------------------- maps
def clip_maps(backbone, clip, index: int, args, seed: int) -> tuple[list[str], dict[str, dict[str, np.ndarray]]]:
    """(noun, verb) and {kind: {word: [F', h, w]}} for one clip, plus a seeded random map per word."""
    words = default_caption_words(clip.caption)
    if len(words) != 2 or words[0] != clip.spec.objects[0].shape:
        raise RuntimeError(f"unexpected caption words {words} for {clip.caption!r}")
    latents = encode_clip(backbone, clip_pixels(clip.frames))
    maps = saliency_for_latents(backbone, latents, clip.caption, words, args.blocks, args.top_k, args.timestep,
                                seed=index, max_sequence_length=args.max_sequence_length)
    out = {kind: {w: maps.get(w, kind).numpy() for w in words} for kind in KINDS}
    shape = out[KINDS[0]][words[0]].shape
    rng = np.random.default_rng([seed, 2, index])
    out["random"] = {w: rng.standard_normal(shape).astype(np.float32) for w in words}
    return words, out


def spatial_scores(backbone, clip, maps: dict[str, dict[str, np.ndarray]], words: list[str]) -> dict:
    """{kind: {noun_pg, noun_iou, verb_pg, verb_iou}} against object 0's latent-frame masks, plus the
    token-resolution ceiling (the mask itself pooled to tokens, scored like a map)."""
    masks = latent_masks(clip.masks[:, 0], latent_groups(backbone, clip.frames.shape[0]))
    oracle = token_coverage(masks, maps[KINDS[0]][words[0]].shape[1:])
    maps = {**maps, ORACLE: {w: oracle for w in words}}
    scores = {}
    for kind, per_word in maps.items():
        row = {}
        for role, word in zip(("noun", "verb"), words):
            result = mask_scores(per_word[word], masks)
            row[f"{role}_pg"], row[f"{role}_iou"] = result["pointing_game"], result["iou"]
        scores[kind] = row
    return scores


def temporal_scores(backbone, clip, maps: dict[str, dict[str, np.ndarray]], words: list[str]) -> dict:
    """{kind: {r, r_late, noun_r, energy}}: verb in-object energy per latent frame vs the moving fraction."""
    groups = latent_groups(backbone, clip.frames.shape[0])
    truth = moving_fraction(clip.moving[:, 0], groups)
    sample = maps[KINDS[0]][words[1]]
    coverage = token_coverage(latent_masks(clip.masks[:, 0], groups), sample.shape[1:])
    scores = {}
    for kind, per_word in maps.items():
        energy = in_object_energy(per_word[words[1]], coverage)
        noun = in_object_energy(per_word[words[0]], coverage)
        scores[kind] = {"r": pearson(energy, truth), "r_late": pearson(energy[1:], truth[1:]),
                        "noun_r": pearson(noun, truth), "energy": energy.tolist()}
    scores["truth"] = truth.tolist()
    return scores


# ---------------------------------------------------------------------- report
def summarise(rows: list[dict], keys: tuple[str, ...], kinds: tuple[str, ...]) -> dict:
    """{kind: {key: {mean, ci95, n}}} over clips."""
    out = {}
    for kind in kinds:
        out[kind] = {}
        for key in keys:
            mean, half, n = mean_ci([row[kind][key] for row in rows])
            out[kind][key] = {"mean": mean, "ci95": half, "n": n}
    return out


def cell(stat: dict) -> str:
    if not np.isfinite(stat["mean"]):
        return "n/a"
    return f"{stat['mean']:.2f}" + (f" ± {stat['ci95']:.2f}" if np.isfinite(stat["ci95"]) else "")


#: (metric key, table label, spatial or temporal): the figures compared between seeds and between map kinds
FIGURES = (("noun_pg", "noun PG", "spatial"), ("noun_iou", "noun IoU", "spatial"), ("verb_pg", "verb PG", "spatial"),
           ("verb_iou", "verb IoU", "spatial"), ("r", "temporal r", "temporal"),
           ("r_late", "temporal r, f'>=1", "temporal"), ("noun_r", "noun r (control)", "temporal"))
#: paired differences reported: IMAP against the two other attention maps
PAIRS = (("imap", "gramcol"), ("imap", "cross_attention"))


def over_seeds(per_seed: dict[int, dict], kind: str, key: str, part: str) -> dict:
    """Mean over seeds of the per-seed clip mean, with a t interval over seeds."""
    return ev.t_interval([stats[part][kind][key]["mean"] for stats in per_seed.values()
                          if kind in stats[part]])


def differences(spatial_by_seed: dict[int, list[dict]], temporal_by_seed: dict[int, list[dict]]) -> dict:
    """{"imap − cross_attention": {key: {per_seed, over_seeds, clips_bootstrap}}} for every figure."""
    out = {}
    for a, b in PAIRS:
        rows = {}
        for key, _, part in FIGURES:
            by_seed = spatial_by_seed if part == "spatial" else temporal_by_seed
            per_seed, xs, ys = {}, [], []
            for seed, clips in by_seed.items():
                x = np.array([c[a][key] for c in clips], np.float64)
                y = np.array([c[b][key] for c in clips], np.float64)
                ok = np.isfinite(x) & np.isfinite(y)
                per_seed[seed] = float((x[ok] - y[ok]).mean()) if ok.any() else float("nan")
                xs += x[ok].tolist()
                ys += y[ok].tolist()
            rows[key] = {"per_seed": per_seed, "over_seeds": ev.t_interval(list(per_seed.values())),
                         "clips_bootstrap": ev.paired_bootstrap(ys, xs)}
        out[f"{a} − {b}"] = rows
    return out


def markdown(per_seed: dict[int, dict], diffs: dict, settings: dict) -> str:
    seeds = list(per_seed)
    n = len(seeds)
    header = "| map | " + " | ".join(label for _, label, _ in FIGURES) + " |"
    rule = "|---" * (len(FIGURES) + 1) + "|"
    lines = [header, rule]
    for kind in (*REPORTED, ORACLE):
        cells = []
        for key, _, part in FIGURES:
            cells.append(ev.fmt_interval(over_seeds(per_seed, kind, key, part))
                         if kind in per_seed[seeds[0]][part] else "–")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines += ["", f"Paired differences on the same clips: mean over the {n} seeds [95% t interval over seeds]; "
              "below it, a paired bootstrap over all clips of all seeds (10000 resamples of clips).", "",
              header.replace("| map |", "| difference |"), rule]
    for name, rows in diffs.items():
        lines.append(f"| {name}, over seeds | " + " | ".join(
            ev.fmt_interval(rows[key]["over_seeds"], signed=True) for key, _, _ in FIGURES) + " |")
        lines.append(f"| {name}, over clips | " + " | ".join(
            ev.fmt_interval(rows[key]["clips_bootstrap"], signed=True) for key, _, _ in FIGURES) + " |")
    lines += ["", "Per world seed (mean over that seed's clips ± 95% normal half-width over clips):", "",
              "| seed | map | " + " | ".join(label for _, label, _ in FIGURES) + " |",
              "|---" * (len(FIGURES) + 2) + "|"]
    for seed, stats in per_seed.items():
        for kind in ("imap", "gramcol", "cross_attention"):
            lines.append(f"| {seed} | {kind} | " + " | ".join(
                cell(stats[part][kind][key]) for key, _, part in FIGURES) + " |")
    n_t = sum(stats["temporal"][KINDS[0]]["r"]["n"] for stats in per_seed.values())
    lines += [
        "",
        f"`{settings['model']}`, real-video mode at t = {settings['timestep']:.0f}, blocks {settings['blocks']}, "
        f"top-k {settings['top_k']}, {settings['max_sequence_length']} text slots; world seeds {seeds} (the IMAP "
        "block was chosen on spatial clips 0-11 of world seed 0). Per seed, spatial: "
        f"{settings['clips']} clips ({settings['objects']} object(s), object 0 moving), maps upsampled bilinearly "
        "to the mask, binarised at each frame's mean, latent-frame mask = union over its pixel frames. Temporal: "
        f"{settings['temporal_clips']} clips whose object starts moving at frame 5..F-5 (r defined for {n_t} in "
        "all), masks area-pooled to the token grid. `random` is a seeded Gaussian map (chance level); "
        f"`{ORACLE}` scores the ground-truth mask area-pooled to the token grid as if it were a map (the ceiling "
        "at token resolution; noun and verb name the same object, so its two columns agree).",
    ]
    return "\n".join(lines)


def run_seed(backbone, args, seed: int) -> tuple[list[dict], list[dict]]:
    """Spatial and temporal per-clip scores on one world seed's clips."""
    spatial_rows, temporal_rows = [], []
    for i in tqdm(range(args.clips), desc=f"seed {seed}: spatial clips"):
        clip = render_clip(spatial_spec(seed, i, args.objects, args.num_frames))
        words, maps = clip_maps(backbone, clip, i, args, seed)
        spatial_rows.append({"caption": clip.caption, "words": words,
                             **spatial_scores(backbone, clip, maps, words)})
    for i in tqdm(range(args.temporal_clips), desc=f"seed {seed}: temporal clips"):
        clip = render_clip(temporal_spec(seed, i, args.num_frames))
        words, maps = clip_maps(backbone, clip, args.clips + i, args, seed)
        temporal_rows.append({"caption": clip.caption, "words": words,
                              "motion_start": clip.spec.objects[0].motion_start,
                              **temporal_scores(backbone, clip, maps, words)})
    return spatial_rows, temporal_rows


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "assets" / "toy-model"))
    parser.add_argument("--clips", type=int, default=100,
                        help="spatial clips per world seed (object 0 moves all clip)")
    parser.add_argument("--temporal_clips", type=int, default=50, help="clips per seed whose motion starts mid-clip")
    parser.add_argument("--objects", type=int, default=1, help="objects per spatial clip (extra ones stay still)")
    parser.add_argument("--num_frames", type=int, default=17)
    parser.add_argument("--timestep", type=float, default=None, help="0..1000; default: the profile's or 400")
    parser.add_argument("--blocks", default=None, help="IMAP blocks, e.g. '2-4'; default: the model's profile")
    parser.add_argument("--top_k", type=int, default=None)
    parser.add_argument("--max_sequence_length", type=int, default=None,
                        help="text slots; default: the model's sampling_defaults.json, else the pipeline's")
    parser.add_argument("--seeds", default="1,2,3,4",
                        help="world seeds to report on, e.g. 1,2,3 (the profile's block was chosen on seed 0)")
    parser.add_argument("--clip_rows", action="store_true",
                        help="also store every clip's scores in the JSON (large: ~0.6 MB for the defaults)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch / OpenCV threads (0: their defaults)")
    parser.add_argument("--results_dir", default=None,
                        help="write the results here instead of benchmarks/results (smoke runs)")
    args = parser.parse_args()
    seeds = ev.parse_ints(args.seeds)
    if not seeds:
        raise SystemExit("--seeds: give at least one world seed, e.g. 1,2,3")
    limit_threads(args.threads)
    if args.num_frames < 17:
        raise SystemExit("--num-frames must be >= 17 so motion can start mid-clip after a still latent frame")
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(args.model).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    backbone = backbone_for(pipe)
    if args.max_sequence_length is None:
        args.max_sequence_length = SamplingSettings.for_model(args.model).max_sequence_length
    blocks, top_k, section = resolve_imap_settings(backbone, args.blocks, args.top_k)
    timestep = default_renoise_timestep(backbone, section) if args.timestep is None else args.timestep

    spatial_by_seed, temporal_by_seed, per_seed = {}, {}, {}
    for seed in seeds:
        spatial_by_seed[seed], temporal_by_seed[seed] = run_seed(backbone, args, seed)
        per_seed[seed] = {
            "spatial": summarise(spatial_by_seed[seed], ("noun_pg", "noun_iou", "verb_pg", "verb_iou"),
                                 (*REPORTED, ORACLE)),
            "temporal": summarise(temporal_by_seed[seed], ("r", "r_late", "noun_r"), REPORTED)}
    diffs = differences(spatial_by_seed, temporal_by_seed)
    over = {kind: {key: over_seeds(per_seed, kind, key, part) for key, _, part in FIGURES
                   if kind in per_seed[seeds[0]][part]} for kind in (*REPORTED, ORACLE)}
    settings = {**vars(args), "seeds": seeds, "timestep": float(timestep), "blocks": blocks, "top_k": top_k,
                "mask_resolution": "maps upsampled (bilinear) to the pixel masks for PG / IoU; masks area-pooled "
                                   "to the token grid for the temporal energy",
                "chosen_on": "profile IMAP block: spatial clips 0-11 of world seed 0"}
    write_results("imap_localization",
                  {"machine": machine(), "settings": settings, "over_seeds": over,
                   "interval": "over_seeds: 95% Student t interval over world seeds; per seed: normal "
                               "approximation over clips; differences also by a paired bootstrap over clips",
                   "per_seed": {str(k): v for k, v in per_seed.items()}, "differences": diffs,
                   **({"spatial_clips": {str(k): v for k, v in spatial_by_seed.items()},
                       "temporal_clips": {str(k): v for k, v in temporal_by_seed.items()}} if args.clip_rows else {})},
                  markdown(per_seed, diffs, settings), results_dir=args.results_dir)


if __name__ == "__main__":
    main()
