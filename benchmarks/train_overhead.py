"""Our fine-tuning loop's step time / a bare accelerate loop's, same model and batch, measured in one run.

The bare loop holds the same cached latents and embeddings in memory and does only noise, forward, backward,
clip, step. Ours adds everything a real run does per step (reading the latent cache, per-step seeded
randomness, caption dropout, logging, progress). Target: <= 1.10 with no callbacks. Also peak RSS.
"""

import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import machine, write_results

from motionguide.backbones import backbone_for
from motionguide.cli_args import ArgumentParser
from motionguide.toy import make_dataset
from motionguide.training.config import TrainConfig
from motionguide.training.lora import add_lora, trainable_parameters
from motionguide.training.loop import Trainer, sample_sigmas

ROOT = Path(__file__).resolve().parent.parent


def bare_loop(model_dir: str, cache, steps: int, batch: int, cfg: TrainConfig) -> list[float]:
    from accelerate import Accelerator
    from diffusers import DiffusionPipeline

    from motionguide.data.cache import CachedLatentDataset

    accelerator = Accelerator()
    pipe = DiffusionPipeline.from_pretrained(model_dir)
    backbone = backbone_for(pipe)
    transformer = pipe.transformer
    add_lora(transformer, cfg.rank, cfg.lora_alpha, cfg.target_modules)
    transformer.train()
    opt = torch.optim.AdamW(trainable_parameters(transformer), lr=cfg.learning_rate)
    model, opt = accelerator.prepare(transformer, opt)
    data = CachedLatentDataset(cache)
    items = [data[i % len(data)] for i in range(batch)]
    latents = torch.stack([it["latents"] for it in items])
    embeds = torch.stack([it["prompt_embeds"] for it in items])
    g = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        noise = torch.randn(latents.shape, generator=g)
        t = sample_sigmas(batch, g, "logit_normal", 3.0) * 1000
        pred = backbone.predict(backbone.add_noise(latents, noise, t), t, embeds, model=model)
        loss = (pred - backbone.training_target(latents, noise, t)).square().mean()
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = ArgumentParser()
    parser.add_argument("--model", default=str(ROOT / "assets" / "toy-model"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mg-overhead-"))
    try:
        make_dataset(work / "data", num_clips=16, seed=0, progress=False)
        cfg = TrainConfig(pretrained_model_name_or_path=args.model, output_dir=str(work / "out"),
                          data_root=str(work / "data"), latent_cache_dir=str(work / "cache"), train_steps=args.steps,
                          train_batch_size=args.batch, checkpointing_steps=0, report_to="none", caption_dropout=0.1,
                          logging_steps=10)
        ours = Trainer(cfg).run()["step_times_s"]
        from motionguide.data.cache import LatentCache
        from motionguide.data.dataset import VideoDataset
        from diffusers import DiffusionPipeline

        dataset = VideoDataset(cfg.data_root, num_frames=cfg.num_frames, height=cfg.height, width=cfg.width)
        cache = LatentCache.for_dataset(cfg.latent_cache_dir, dataset, backbone_for(DiffusionPipeline.from_pretrained(args.model)),
                                        cfg.max_sequence_length)
        bare = bare_loop(args.model, cache, args.steps, args.batch, cfg)
        warm = 3  # drop warm-up steps from both
        ours_med, bare_med = statistics.median(ours[warm:]), statistics.median(bare[warm:])
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        data = {"machine": machine(), "model": args.model, "batch": args.batch, "steps": args.steps,
                "ours_median_s": ours_med, "bare_median_s": bare_med, "ratio": ours_med / bare_med,
                "peak_rss_gb": peak_gb}
        md = "\n".join([
            "| loop | median step (s) | ratio |",
            "|---|---|---|",
            f"| bare accelerate loop | {bare_med:.3f} | 1.00 |",
            f"| motionguide Trainer (no callbacks) | {ours_med:.3f} | {ours_med / bare_med:.2f} |",
            "",
            f"LoRA r=16 on `{Path(args.model).name}`, batch {args.batch}, {args.steps} steps each (first {warm} "
            f"dropped), CPU ({machine()['threads']} threads); peak RSS of the whole run {peak_gb:.1f} GB.",
        ])
        write_results("train_overhead", data, md)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
