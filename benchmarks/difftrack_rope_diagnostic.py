"""Why q–k tracks stay put on the toy model: matching with and without the rotary position term.

For toy clips with a moving object, the object's centre token on latent frame 0 is matched (head-mean q·k)
against every token of the last latent frame, at every block, once with the captured q/k (after RoPE, DiffTrack's
descriptor) and once with RoPE undone (the inverse rotation with the transformer's own frequencies). The match
is scored against the object's true end position (hit = within one token). If the position term dominates,
post-RoPE matching returns the starting position (error = the zero-motion error).

    python benchmarks/difftrack_rope_diagnostic.py [--clips 12]
"""

from pathlib import Path

import numpy as np
import torch
from _common import limit_threads, machine, write_results

from motionguide.attention import AttentionController
from motionguide.backbones.wan.processor import wan_rotary
from motionguide.backbones import backbone_for
from motionguide.cli_args import ArgumentParser
from motionguide.toy.model_recipe import encode_pool
from motionguide.toy.world import render_clip, sample_clip_spec

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "assets" / "toy-model"))
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--timesteps", default="50,400")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--results_dir", default=None)
    args = parser.parse_args()
    limit_threads(args.threads)
    torch.set_grad_enabled(False)
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(args.model)
    backbone = backbone_for(pipe)
    rng = np.random.default_rng(7)
    clips = []
    while len(clips) < args.clips:  # plain background, whole-clip motion at normal or quick speed
        spec = sample_clip_spec(rng, partial_motion_rate=0.0, background="plain")
        if spec.objects[0].motion != "still" and spec.objects[0].speed != "slowly":
            clips.append(render_clip(spec))
    latents = encode_pool(pipe.vae, np.stack([c.frames for c in clips]))
    embeds = pipe.encode_prompt([""] * len(clips), do_classifier_free_guidance=False, max_sequence_length=16,
                                device="cpu")[0]
    frames_l, h, w = latents.shape[2:]
    px = backbone.pixels_per_token
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
    rows, data = [], []
    for t in (float(v) for v in args.timesteps.split(",")):
        timestep = torch.full((len(latents),), t)
        noisy = backbone.add_noise(latents, noise, timestep)
        cos, sin = pipe.transformer.rope(noisy)
        grid_w = w // backbone.patch_size[2]
        per_frame = (h // backbone.patch_size[1]) * grid_w
        for block in range(backbone.num_blocks):
            captured = []
            with AttentionController(backbone).capture(captured.append, blocks=[block], attention="self"):
                backbone.predict(noisy, timestep, embeds)
            q, k = captured[0].video_query().float(), captured[0].video_key().float()

            def unrotate(x):
                return wan_rotary(x.transpose(1, 2), cos, -sin).transpose(1, 2)

            result = {"timestep": t, "block": block}
            for name, (qq, kk) in {"with RoPE": (q, k), "RoPE removed": (unrotate(q), unrotate(k))}.items():
                errors, zero = [], []
                for b, clip in enumerate(clips):
                    start, end = clip.centers[0, 0], clip.centers[-1, 0]
                    col, row = int(start[0] // px), int(start[1] // px)
                    token = row * grid_w + col
                    last = kk[b, :, (frames_l - 1) * per_frame: frames_l * per_frame]
                    best = int(torch.einsum("hd,hsd->hs", qq[b, :, token], last).mean(0).argmax())
                    offset = start - (np.array([col, row]) + 0.5) * px
                    pred = (np.array([best % grid_w, best // grid_w]) + 0.5) * px + offset
                    errors.append(float(np.linalg.norm(pred - end)))
                    zero.append(float(np.linalg.norm(start - end)))
                result[name] = {"hit_within_1_token": float(np.mean(np.array(errors) < px)),
                                "mean_error_px": float(np.mean(errors)), "zero_motion_error_px": float(np.mean(zero))}
            data.append(result)
            rows.append(f"| {t:g} | {block} | {result['with RoPE']['hit_within_1_token']:.0%} / "
                        f"{result['with RoPE']['mean_error_px']:.1f} px | {result['RoPE removed']['hit_within_1_token']:.0%} / "
                        f"{result['RoPE removed']['mean_error_px']:.1f} px | {result['with RoPE']['zero_motion_error_px']:.1f} px |")
    md = ["| timestep | block | with RoPE: hit / error | RoPE removed: hit / error | zero-motion error |",
          "|---|---|---|---|---|", *rows, "",
          f"{len(clips)} toy clips (plain background, moving object at normal or quick speed); the object's frame-0 "
          "centre token matched against the last latent frame by head-mean q·k; hit = within one token "
          f"({px:g} px) of the true end position."]
    write_results("difftrack_rope_diagnostic", {"machine": machine(), "results": data, "settings": vars(args)},
                  "\n".join(md), args.results_dir)


if __name__ == "__main__":
    main()
