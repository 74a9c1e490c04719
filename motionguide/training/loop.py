"""The fine-tuning loop: accelerate (single process, DDP, DeepSpeed), LoRA or full, exact resume, callbacks.

Everything random in a step (noise, timesteps, caption dropout, which clips) is a function of (seed, micro-step,
rank), so a run resumed from a checkpoint repeats the uninterrupted run's losses exactly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..backbones import backbone_for
from ..errors import ConfigError
from .batches import StepBatchPlan
from .callbacks import TrainContext, TrainerCallback, get_curation, get_monitor
from .config import TrainConfig
from .lora import add_lora, save_lora, trainable_parameters

STATE_FILE = "trainer_state.json"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
MAX_CONSECUTIVE_BAD_LOSSES = 5


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The highest-step `checkpoint-N` folder holding a trainer state, or None."""
    found = [(int(m.group(1)), p) for p in output_dir.glob("checkpoint-*") if (m := CHECKPOINT_RE.match(p.name))
             and (p / STATE_FILE).is_file()]
    return max(found)[1] if found else None


def sample_sigmas(n: int, generator: torch.Generator, mode: str, shift: float) -> torch.Tensor:
    """Noise levels in (0, 1): shifted logit-normal (as the toy recipe and Wan trainers use) or uniform."""
    u = torch.sigmoid(torch.randn(n, generator=generator)) if mode == "logit_normal" else torch.rand(n, generator=generator)
    return shift * u / (1 + (shift - 1) * u)


class Trainer:
    """`Trainer(config, callbacks).run()`; `train/finetune.py` is a thin wrapper around this."""

    def __init__(self, config: TrainConfig, callbacks: Sequence[TrainerCallback] = (), accelerator=None):
        self.config = config.validate()
        self.extra_callbacks = list(callbacks)
        self._accelerator = accelerator

    # ------------------------------------------------------------------ setup
    def _make_accelerator(self):
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        if self._accelerator is not None:
            return self._accelerator
        cfg = self.config
        log_with = None if cfg.report_to == "none" else cfg.report_to
        if cfg.report_to == "wandb":
            os.environ.setdefault("WANDB_MODE", "offline")
        handlers = []
        if int(os.environ.get("LOCAL_RANK", -1)) != -1 and not torch.cuda.is_available():
            # Launched on several CPU ranks: without CUDA accelerate picks no process-group backend for
            # DeepSpeed and every rank would believe it is rank 0 of 1. gloo works for DDP and DeepSpeed alike.
            from accelerate.utils import InitProcessGroupKwargs

            handlers.append(InitProcessGroupKwargs(backend="gloo"))
        return Accelerator(
            kwargs_handlers=handlers,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            mixed_precision=cfg.mixed_precision,
            log_with=log_with,
            project_config=ProjectConfiguration(project_dir=cfg.output_dir, logging_dir=str(Path(cfg.output_dir) / "logs")),
        )

    def _load_data(self, accelerator, backbone):
        from .cache import CachedLatentDataset, LatentCache
        from .data import VideoDataset

        cfg = self.config
        if cfg.toy_data is not None and not Path(cfg.data_root).exists():
            if accelerator.is_main_process:
                from ..toy import make_dataset

                print(f"{cfg.data_root} does not exist: generating the toy dataset {cfg.toy_data}", flush=True)
                make_dataset(cfg.data_root, **cfg.toy_data)
            accelerator.wait_for_everyone()
        dataset = VideoDataset(cfg.data_root, num_frames=cfg.num_frames, height=cfg.height, width=cfg.width,
                               frame_stride=cfg.frame_stride)
        cache = LatentCache.for_dataset(cfg.cache_dir, dataset, backbone, cfg.max_sequence_length)
        if accelerator.is_main_process:
            report = cache.build(dataset, backbone, cfg.max_sequence_length, progress=True)
            print(f"latent cache {cache.dir}: {report}", flush=True)
        accelerator.wait_for_everyone()
        cache = LatentCache.for_dataset(cfg.cache_dir, dataset, backbone, cfg.max_sequence_length)
        cached = set(cache.ids)
        ids = [e.clip_id for e in dataset.entries if e.clip_id in cached]  # this dataset's clips only
        return dataset, cache, CachedLatentDataset(cache, ids=sorted(ids))

    def _callbacks(self) -> list[TrainerCallback]:
        from ..sampling import SamplingSettings
        from .validation import ValidationSampler

        cfg = self.config
        callbacks = []
        for name in cfg.monitor:
            callbacks.append(get_monitor(name, **cfg.method_options.get(name, {})))
        if cfg.validation_prompts:
            settings = SamplingSettings.for_model(
                cfg.pretrained_model_name_or_path if Path(cfg.pretrained_model_name_or_path).is_dir() else None,
                num_frames=cfg.num_frames, height=cfg.height, width=cfg.width, steps=cfg.validation_inference_steps,
                cfg=cfg.validation_guidance_scale, max_sequence_length=cfg.max_sequence_length)
            callbacks.append(ValidationSampler(cfg.validation_prompts, cfg.validation_seeds, settings,
                                               every=cfg.validation_steps, guidance=cfg.guidance))
        return callbacks + self.extra_callbacks

    def _configure_deepspeed(self, accelerator) -> None:
        plugin = getattr(accelerator.state, "deepspeed_plugin", None)
        if plugin is None:
            return
        cfg, ds = self.config, plugin.deepspeed_config
        # No dataloader goes through accelerate.prepare, so DeepSpeed cannot infer "auto" batch sizes.
        ds["train_micro_batch_size_per_gpu"] = cfg.train_batch_size
        ds["gradient_accumulation_steps"] = cfg.gradient_accumulation_steps
        ds["train_batch_size"] = cfg.train_batch_size * cfg.gradient_accumulation_steps * accelerator.num_processes
        if ds.get("gradient_clipping") == "auto":
            ds["gradient_clipping"] = cfg.max_grad_norm

    # ------------------------------------------------------------------ logging
    def _image_logger(self, accelerator):
        def log_images(tag: str, image: np.ndarray, step: int) -> None:
            if not accelerator.is_main_process:
                return
            for tracker in accelerator.trackers:
                if tracker.name == "tensorboard":
                    tracker.writer.add_image(tag, image, step, dataformats="HWC")
                elif tracker.name == "wandb":
                    import wandb

                    tracker.log({tag: wandb.Image(image)}, step=step)
        return log_images

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, ctx: TrainContext, state: dict[str, Any], callbacks) -> Path:
        accelerator, cfg = ctx.accelerator, self.config
        final = ctx.output_dir / f"checkpoint-{ctx.step}"
        tmp = ctx.output_dir / f".tmp-checkpoint-{ctx.step}"
        uses_deepspeed = getattr(accelerator.state, "deepspeed_plugin", None) is not None
        if accelerator.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        if uses_deepspeed or accelerator.is_main_process:
            accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {**state, "callbacks": {type(c).__name__: c.state_dict() for c in callbacks}}
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
            if cfg.training_type == "lora":
                save_lora(ctx.backbone.pipeline_class, ctx.transformer, tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for callback in callbacks:
                callback.on_save(ctx, final)
            self._prune_checkpoints(ctx.output_dir)
        accelerator.wait_for_everyone()
        return final

    def _prune_checkpoints(self, output_dir: Path) -> None:
        limit = self.config.checkpointing_limit
        if not limit:
            return
        found = sorted((int(m.group(1)), p) for p in output_dir.glob("checkpoint-*") if (m := CHECKPOINT_RE.match(p.name)))
        for _, path in found[:-limit]:
            shutil.rmtree(path, ignore_errors=True)

    def _resume_path(self, output_dir: Path) -> Path | None:
        wanted = self.config.resume_from_checkpoint
        if not wanted:
            return None
        path = latest_checkpoint(output_dir) if wanted == "latest" else Path(wanted)
        if wanted == "latest" and path is None:
            print(f"--resume_from_checkpoint latest: no checkpoint in {output_dir}; starting from step 0", flush=True)
            return None
        if path is None or not (path / STATE_FILE).is_file():
            raise ConfigError(f"--resume_from_checkpoint {wanted}: {path} is not a checkpoint folder "
                              f"(no {STATE_FILE}); use 'latest' or a checkpoint-N folder under {output_dir}")
        return path

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        """Curate, fine-tune (resuming if asked), checkpoint and save the weights; returns the summary."""
        from accelerate.utils import set_seed
        from diffusers import DiffusionPipeline
        from diffusers.optimization import get_scheduler

        cfg = self.config
        accelerator = self._make_accelerator()
        output_dir = Path(cfg.output_dir)
        if accelerator.is_main_process:
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        set_seed(cfg.seed)

        pipe = DiffusionPipeline.from_pretrained(cfg.pretrained_model_name_or_path)
        pipe.set_progress_bar_config(disable=True)
        backbone = backbone_for(pipe)
        _, cache, dataset = self._load_data(accelerator, backbone)
        empty_embeds = cache.empty_prompt_embeds(backbone)

        resume = self._resume_path(output_dir)
        saved: dict[str, Any] = json.loads((resume / STATE_FILE).read_text()) if resume is not None else {}
        ctx = TrainContext(config=cfg, accelerator=accelerator, backbone=backbone, model=None, output_dir=output_dir,
                           dataset=dataset, log=lambda values, step: accelerator.log(values, step=step),
                           log_images=self._image_logger(accelerator), extras={"pipeline": pipe, "cache": cache})
        # Curation runs on the stock model, before LoRA and before any DDP / DeepSpeed wrapper: per-clip
        # gradients must not trigger a wrapper's all-reduce (Motive pitfall P7).
        curation = get_curation(cfg.curation, **cfg.method_options.get(cfg.curation, {}))
        settings: dict[str, Any] = {"curation": cfg.curation}
        if cfg.curation != "none":
            settings.update(fraction=cfg.curation_fraction, mode=cfg.curation_mode)
        if "curation" in saved:
            selection = saved["curation"]
            made_with = selection.get("settings", settings)
            if made_with != settings:
                raise ConfigError(
                    f"{resume} was trained on the clips a curation chose with {made_with}; this run asks for "
                    f"{settings}. Resume with the same --curation / --curation_fraction / --curation_mode, or "
                    "start a new --output_dir")
        elif curation is not None:
            result = curation.select(ctx)
            selection = {"method": cfg.curation, "indices": result.indices, "weights": result.weights,
                         "summary": result.summary, "settings": settings}
            if accelerator.is_main_process:
                (output_dir / "curation.json").write_text(json.dumps(selection, indent=2))
        else:
            selection = {"method": "none", "indices": list(range(len(dataset))), "weights": None, "settings": settings}

        transformer = pipe.transformer
        if cfg.training_type == "lora":
            add_lora(transformer, cfg.rank, cfg.lora_alpha, cfg.target_modules)
        else:
            transformer.requires_grad_(True)
        transformer.train()
        if cfg.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        params = trainable_parameters(transformer)
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.adam_weight_decay)
        scheduler = get_scheduler(cfg.lr_scheduler, optimizer,
                                  num_warmup_steps=cfg.lr_warmup_steps * accelerator.num_processes,
                                  num_training_steps=cfg.train_steps * accelerator.num_processes)
        self._configure_deepspeed(accelerator)
        model, optimizer, scheduler = accelerator.prepare(transformer, optimizer, scheduler)

        if cfg.report_to != "none":
            flat = {k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in cfg.to_dict().items()}
            accelerator.init_trackers(cfg.tracker_name, config={k: v for k, v in flat.items() if v is not None})
        callbacks = self._callbacks()
        ctx.model = model
        ctx.extras["callbacks"] = callbacks

        if resume is not None:
            accelerator.load_state(str(resume))
            for callback in callbacks:
                callback.load_state_dict(saved.get("callbacks", {}).get(type(callback).__name__, {}))
            print(f"resumed from {resume} at step {saved['step']}", flush=True)
        start_step = int(saved.get("step", 0))
        ctx.step = start_step

        indices = selection["indices"]
        all_labels = dataset.bucket_of_index
        labels = [all_labels[i] for i in indices]
        plan = StepBatchPlan(labels, cfg.train_batch_size * accelerator.num_processes, cfg.seed, selection["weights"])

        for callback in callbacks:
            callback.on_train_start(ctx)
        losses: dict[int, float] = {int(k): v for k, v in saved.get("losses", {}).items()}
        skipped: list[dict[str, Any]] = list(saved.get("skipped_steps", []))
        bad_in_a_row = 0
        step_times: list[float] = []
        bar = tqdm(total=cfg.train_steps, initial=start_step, desc="fine-tuning", disable=not accelerator.is_main_process)
        rank, world = accelerator.process_index, accelerator.num_processes
        device = accelerator.device
        for step in range(start_step, cfg.train_steps):
            t_step = time.perf_counter()
            data_time, step_losses, grad_norm = 0.0, [], float("nan")
            for micro in range(cfg.gradient_accumulation_steps):
                k = step * cfg.gradient_accumulation_steps + micro
                t_data = time.perf_counter()
                items = [dataset[indices[i]] for i in plan.rank_indices(k, rank, world)]
                latents = torch.stack([it["latents"] for it in items]).to(device)
                embeds = torch.stack([it["prompt_embeds"] for it in items]).to(device)
                g = torch.Generator().manual_seed(int(np.random.SeedSequence([cfg.seed, k, rank]).generate_state(1)[0]))
                drop = torch.rand(len(items), generator=g) < cfg.caption_dropout
                if drop.any():
                    embeds[drop] = empty_embeds.to(device, embeds.dtype)
                noise = torch.randn(latents.shape, generator=g).to(device)
                sigmas = sample_sigmas(len(items), g, cfg.timestep_sampling, cfg.timestep_shift).to(device)
                timesteps = sigmas * 1000.0
                data_time += time.perf_counter() - t_data
                with accelerator.accumulate(model):
                    noisy = backbone.add_noise(latents, noise, timesteps)
                    target = backbone.training_target(latents, noise, timesteps)
                    with accelerator.autocast():
                        pred = backbone.predict(noisy, timesteps, embeds, model=model)
                    loss = (pred.float() - target.float()).square().mean()
                    if not torch.isfinite(loss):
                        bad_in_a_row += 1
                        skipped.append({"step": step, "micro_step": k, "reason": f"non-finite loss {loss.item()}"})
                        optimizer.zero_grad(set_to_none=True)
                        if bad_in_a_row >= MAX_CONSECUTIVE_BAD_LOSSES:
                            raise FloatingPointError(
                                f"{bad_in_a_row} non-finite losses in a row (last at step {step}); lower "
                                "--learning_rate, use --mixed_precision bf16 instead of fp16, or check the data")
                        continue
                    bad_in_a_row = 0
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                        grad_norm = float(norm) if norm is not None else float("nan")
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                step_losses.append(loss.item())
            ctx.step = step + 1
            mean_loss = float(np.mean(step_losses)) if step_losses else float("nan")
            losses[ctx.step] = mean_loss
            logs = {"train/loss": mean_loss, "train/grad_norm": grad_norm, "train/lr": scheduler.get_last_lr()[0],
                    "timing/step_s": time.perf_counter() - t_step, "timing/data_s": data_time}
            if ctx.step % cfg.logging_steps == 0 or ctx.step == cfg.train_steps:
                accelerator.log(logs, step=ctx.step)
            bar.update(1)
            bar.set_postfix(loss=f"{mean_loss:.4f}")
            for callback in callbacks:
                callback.on_step_end(ctx, logs)
            step_times.append(time.perf_counter() - t_step)  # includes callbacks (monitors), not checkpoints
            if cfg.checkpointing_steps and ctx.step % cfg.checkpointing_steps == 0 and ctx.step < cfg.train_steps:
                self._save_checkpoint(ctx, {"step": ctx.step, "micro_step": ctx.step * cfg.gradient_accumulation_steps,
                                            "curation": selection, "losses": losses, "skipped_steps": skipped},
                                      callbacks)
        bar.close()
        for callback in callbacks:
            callback.on_train_end(ctx)
        accelerator.wait_for_everyone()
        summary = {"steps": ctx.step, "losses": losses, "skipped_steps": skipped, "curation": selection.get("summary"),
                   "clips": len(indices), "world_size": world, "step_times_s": step_times}
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            if cfg.training_type == "lora":
                summary["lora"] = str(save_lora(backbone.pipeline_class, unwrapped, output_dir))
            else:
                unwrapped.save_pretrained(output_dir / "transformer", safe_serialization=True)
                summary["transformer"] = str(output_dir / "transformer")
            (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
        accelerator.end_training()
        return summary
