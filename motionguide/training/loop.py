"""The fine-tuning loop: accelerate (single process, DDP, DeepSpeed), LoRA or full, exact resume, callbacks.

Everything random in a step (noise, timesteps, caption dropout, which clips) is a function of (seed, micro-step,
rank), so a run resumed from a checkpoint repeats the uninterrupted run's losses exactly.

`Trainer.run` is a sequence of named stages, each a method: start the output folder, read the resume state
(checking the checkpoint's files against their recorded hashes), load the pipeline, load the data (+ latent
cache), curate, prepare the model, start trackers and callbacks, resume, train the steps (validation and
monitors are callbacks there), finish (save the weights and summary, then the callbacks' end of run).
Methods join through `motionguide.registry` by name (curation, monitors, validation guidance, data recipe);
the loop imports none of them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..backbones import backbone_for, condition_kwargs, move_condition
from ..data.batches import StepBatchPlan
from ..errors import ConfigError, MotionGuideError
from ..files import atomic_write_text
from ..loading import PipelinePlacement, component_dtypes_of
from ..sampling.generate import model_max_sequence_length
from ..registry import CURATIONS, DATA_RECIPES, GUIDANCES, MONITORS
from .callbacks import Curation, TrainContext, TrainerCallback, get_curation, get_monitor
from .checkpoint_files import FILES_KEY, STATE_FILE, checkpoint_problem, file_hashes
from .config import TrainConfig
from .distributed import (check_checkpoint_fits, check_launch_took_effect, deepspeed_plugin,
                          frozen_components_unpartitioned, full_transformer_state_dict, gathered_lora_state_dict,
                          load_state_options, register_lean_checkpoint_hooks, save_state_options,
                          uses_fsdp)
from .experts import (ExpertRouter, drop_unvisited_expert_grads, sample_sigmas_between, shift_sigmas, sigma_range,
                      trained_experts)
from .lora import add_lora, check_target_modules, save_expert_loras, save_lora, trainable_parameters
from .preflight import check_data_root, check_experts, check_frame_sizes, check_output_dir
from .trackers import log_curation_summary, log_image, log_video, wandb_init_kwargs

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
MAX_CONSECUTIVE_BAD_LOSSES = 5


def checkpoints_newest_first(output_dir: Path) -> list[Path]:
    """The `checkpoint-N` folders holding a trainer state, highest step first."""
    found = [(int(m.group(1)), p) for p in output_dir.glob("checkpoint-*") if (m := CHECKPOINT_RE.match(p.name))
             and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The highest-step `checkpoint-N` folder holding a trainer state, or None."""
    found = checkpoints_newest_first(output_dir)
    return found[0] if found else None


def _check_option_names(factory: Any, options: dict[str, Any], where: str) -> None:
    """Every key of `options` is a keyword argument of `factory` (any key when it takes **kwargs)."""
    import inspect

    from ..errors import unknown_key_message

    parameters = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    for key in options:
        if key not in parameters:
            raise ConfigError(unknown_key_message(key, parameters, where))


def sample_sigmas(n: int, generator: torch.Generator, mode: str, shift: float) -> torch.Tensor:
    """Noise levels in (0, 1): shifted logit-normal (as the toy recipe and Wan trainers use) or uniform."""
    u = torch.sigmoid(torch.randn(n, generator=generator)) if mode == "logit_normal" else torch.rand(n, generator=generator)
    return shift_sigmas(u, shift)


class Trainer:
    """`Trainer(config, callbacks).run()`; `train/finetune.py` is a thin wrapper around this."""

    def __init__(self, config: TrainConfig, callbacks: Sequence[TrainerCallback] = (), accelerator=None):
        self.config = config.validate()
        self.extra_callbacks = list(callbacks)
        self._accelerator = accelerator
        self._check_method_names()
        check_frame_sizes(self.config)  # from the model's config files: no weights load
        check_experts(self.config)

    def _check_method_names(self) -> None:
        """Every method the config names is registered: a typo fails here, before any model loads (checking a
        name imports nothing)."""
        cfg = self.config
        CURATIONS.check(cfg.curation)
        for name in cfg.monitor:
            MONITORS.check(name)
        GUIDANCES.check(cfg.guidance)
        if isinstance(cfg.data_recipe, dict) and cfg.data_recipe.get("name"):
            DATA_RECIPES.check(cfg.data_recipe["name"])
            if not Path(cfg.data_root).exists():  # the recipe runs after the model load: its options now
                from ..registry import check_recipe_options

                check_recipe_options(cfg.data_recipe, "data_recipe")
        # the methods' option names too (importing a method's module, loading no model): a misspelt option of a
        # monitor or curation is named with the valid ones now, not after the model load and the latent cache
        for name in cfg.monitor:
            _check_option_names(MONITORS.get(name), cfg.method_options.get(name) or {}, f"method_options.{name}")
            get_monitor(name, **(cfg.method_options.get(name) or {}))  # its values too (it computes nothing yet)
        curation = build_curation(cfg)  # checks its options when built (it computes nothing until select)
        if curation is not None and hasattr(curation, "preflight"):
            curation.preflight()  # what it needs on disk (Motive: the query folder), before the model loads

    # ------------------------------------------------------------------ setup
    def _make_accelerator(self):
        from datetime import timedelta

        from accelerate import Accelerator
        from accelerate.utils import InitProcessGroupKwargs, ProjectConfiguration

        if self._accelerator is not None:
            return self._accelerator
        cfg = self.config
        log_with = None if cfg.report_to == "none" else cfg.report_to
        if not cfg.process_group_timeout_s > 0:
            raise ConfigError(f"process_group_timeout_s={cfg.process_group_timeout_s!r} must be > 0 (seconds)")
        # The first latent cache of a large dataset can keep ranks apart far longer than accelerate's default.
        group = {"timeout": timedelta(seconds=cfg.process_group_timeout_s)}
        if int(os.environ.get("LOCAL_RANK", -1)) != -1 and not torch.cuda.is_available():
            # Launched on several CPU ranks: without CUDA accelerate picks no process-group backend for
            # DeepSpeed and every rank would believe it is rank 0 of 1. gloo works for DDP and DeepSpeed alike.
            group["backend"] = "gloo"
        accelerator = Accelerator(
            kwargs_handlers=[InitProcessGroupKwargs(**group)],
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            mixed_precision=cfg.mixed_precision,
            log_with=log_with,
            project_config=ProjectConfiguration(project_dir=cfg.output_dir, logging_dir=str(Path(cfg.output_dir) / "logs")),
        )
        check_launch_took_effect(accelerator)
        return accelerator

    def _callbacks(self, pipeline: Any = None) -> list[TrainerCallback]:
        from .validation import ValidationSampler, validation_settings

        cfg = self.config
        callbacks = []
        for name in cfg.monitor:
            callbacks.append(get_monitor(name, **cfg.method_options.get(name, {})))
        if cfg.validation_prompts:
            settings = validation_settings(cfg, pipeline)
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
            if accelerator.is_main_process:
                log_image(accelerator, tag, image, step)
        return log_images

    def _video_logger(self, accelerator):
        def log_videos(tag: str, frames: np.ndarray, step: int, fps: float, **kwargs: Any) -> None:
            if accelerator.is_main_process:
                log_video(accelerator, tag, frames, step, fps, **kwargs)
        return log_videos

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
            # only the trainable weights, the optimiser, the schedule and the RNG states (no frozen transformer)
            accelerator.save_state(str(tmp), **save_state_options(accelerator))
        lora = None
        if cfg.training_type == "lora":
            lora = self._gathered_loras(accelerator, ctx.model, ctx.transformer)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if lora is not None:
                self._save_loras(ctx.backbone, ctx.transformer, tmp, lora)
            # last: the state records the hash of every file written above (every rank's, under DeepSpeed),
            # so resuming can refuse a checkpoint whose files changed since (see checkpoint_files)
            state = {**state, "callbacks": {type(c).__name__: c.state_dict() for c in callbacks},
                     FILES_KEY: file_hashes(tmp)}
            atomic_write_text(tmp / STATE_FILE, json.dumps(state, indent=2))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for callback in callbacks:
                callback.on_save(ctx, final)
            self._prune_checkpoints(ctx.output_dir)
        accelerator.wait_for_everyone()
        return final

    def _gathered_loras(self, accelerator, model, unwrapped) -> Any:
        """The LoRA weights, whole: one state dict for one transformer, {pipeline name: state dict} for the
        trained experts of an `ExpertRouter` (every rank calls this; see `gathered_lora_state_dict`)."""
        if not isinstance(unwrapped, ExpertRouter):
            return gathered_lora_state_dict(accelerator, model, unwrapped)
        names = self._expert_names
        return {names[i]: gathered_lora_state_dict(accelerator, model, unwrapped.experts[i])
                for i in self._trained_experts}

    def _save_loras(self, backbone, unwrapped, folder: Path, lora: Any) -> Path:
        """Write the LoRA(s) where the stock loader finds them; returns the first trained expert's file (the
        `transformer`'s for one transformer or both experts)."""
        if not isinstance(unwrapped, ExpertRouter):
            return save_lora(backbone.pipeline_class, unwrapped, folder, state_dict=lora)
        names = self._expert_names
        files = save_expert_loras(backbone.pipeline_class, [(names[i], unwrapped.experts[i])
                                                            for i in self._trained_experts], folder, lora)
        return files[names[self._trained_experts[0]]]

    def _prune_checkpoints(self, output_dir: Path) -> None:
        limit = self.config.checkpointing_limit
        if not limit:
            return
        found = sorted((int(m.group(1)), p) for p in output_dir.glob("checkpoint-*") if (m := CHECKPOINT_RE.match(p.name)))
        for _, path in found[:-limit]:
            shutil.rmtree(path, ignore_errors=True)

    def _resume_path(self, output_dir: Path, is_main_process: bool = True) -> Path | None:
        """The checkpoint to resume from: `latest` skips damaged ones (one warning line each, naming the file)
        and falls back to the previous complete one; a named checkpoint must be complete."""
        wanted = self.config.resume_from_checkpoint
        if not wanted:
            return None
        if wanted == "latest":
            found = checkpoints_newest_first(output_dir)
            if not found:
                print(f"--resume_from_checkpoint latest: no checkpoint in {output_dir}; starting from step 0",
                      flush=True)
                return None
            for path in found:
                problem = checkpoint_problem(path)
                if problem is None:
                    return path
                if is_main_process:
                    print(f"warning: --resume_from_checkpoint latest: skipping {path.name}: {problem}",
                          file=sys.stderr, flush=True)
            raise ConfigError(f"--resume_from_checkpoint latest: no complete checkpoint in {output_dir} "
                              f"(the oldest, {found[-1].name}: {checkpoint_problem(found[-1])}); restore the file, "
                              f"or move the checkpoint-N folders away to start from step 0")
        path = Path(wanted)
        if not (path / STATE_FILE).is_file():
            raise ConfigError(f"--resume_from_checkpoint {wanted}: {path} is not a checkpoint folder "
                              f"(no {STATE_FILE}); use 'latest' or a checkpoint-N folder under {output_dir}")
        problem = checkpoint_problem(path)
        if problem is not None:
            raise ConfigError(f"--resume_from_checkpoint {wanted}: {problem}; resume from an earlier checkpoint-N "
                              f"or 'latest' (which skips damaged checkpoints)")
        return path

    # ------------------------------------------------------------------ the stages
    def run(self) -> dict[str, Any]:
        """Curate, fine-tune (resuming if asked), checkpoint and save the weights; returns the summary.

        The stages run in this order (which is also the order of every use of the random number generators,
        so a refactor of one stage must not move a draw into another)."""
        from accelerate.utils import set_seed

        cfg = self.config
        accelerator = self._make_accelerator()
        output_dir = self._start_output(accelerator)
        set_seed(cfg.seed)
        run = _RunState(accelerator=accelerator, output_dir=output_dir)
        self._read_resume_state(run)  # before the model loads: a damaged checkpoint costs one line, no load
        with frozen_components_unpartitioned(accelerator):  # ZeRO-3 partitions only the prepared transformer
            self._load_pipeline(run)
        self._load_data(run)
        run.ctx = TrainContext(config=cfg, accelerator=accelerator, backbone=run.backbone, model=None,
                               output_dir=output_dir, dataset=run.dataset,
                               log=lambda values, step: accelerator.log(values, step=step),
                               log_images=self._image_logger(accelerator),
                               log_videos=self._video_logger(accelerator),
                               extras={"pipeline": run.pipe, "cache": run.cache,
                                       "validation_image": run.validation_image})
        self._curate(run)
        self._prepare_model(run)
        self._start_trackers(run)
        self._resume(run)
        self._train_steps(run)
        return self._finish(run)

    def _start_output(self, accelerator) -> Path:
        """Stage 0: the output folder and the config it ran with (`train_config.json`), on the main process."""
        cfg = self.config
        # before any model loads: a file in the way, a folder that cannot be written, a dataset folder missing
        output_dir = check_output_dir(cfg.output_dir, create=accelerator.is_main_process)
        check_output_dir(cfg.latent_cache_dir, key="latent_cache_dir")  # written after the load: checked now
        from ..arg_checks import check_model_folder

        check_model_folder(cfg.pretrained_model_name_or_path, "pretrained_model_name_or_path")
        check_data_root(cfg)
        if accelerator.is_main_process:
            atomic_write_text(output_dir / "train_config.json", json.dumps(cfg.to_dict(), indent=2))
        return output_dir

    def _load_pipeline(self, run: "_RunState") -> None:
        """Stage 1: the stock diffusers pipeline on `accelerator.device`, its frozen weights in the training
        precision (`mixed_precision`, per-component `*_dtype` overrides; the modules diffusers keeps in fp32
        stay fp32), and the backbone adapter that knows its family. An unset `max_sequence_length` becomes the
        model's own here (Wan 512, CogVideoX 226, a folder's `sampling_defaults.json`), before anything reads it."""
        from ..loading import load_pipeline

        cfg = self.config
        run.pipe = load_pipeline(cfg.pretrained_model_name_or_path, pipeline_placement(cfg, run.accelerator.device))
        run.pipe.set_progress_bar_config(disable=True)
        run.backbone = backbone_for(run.pipe)
        run.backbone.check_trainable()  # what the adapter cannot fine-tune, before any latent is cached
        self._check_experts(run)
        if cfg.training_type == "lora":  # a misspelt module, right after the load: before the cache and curation
            experts = list(run.backbone.experts)
            for index in self._trained_experts:
                check_target_modules(experts[index], cfg.target_modules)
        # as loaded: each module's majority dtype (the few modules diffusers keeps in fp32 do not change it)
        run.component_dtypes = {name: str(dtype) for name, dtype in component_dtypes_of(run.pipe).items()}
        if cfg.max_sequence_length is None:
            cfg.max_sequence_length = model_max_sequence_length(cfg.pretrained_model_name_or_path, run.pipe)
            if run.accelerator.is_main_process:  # the config the run used, with the length it resolved to
                atomic_write_text(run.output_dir / "train_config.json", json.dumps(cfg.to_dict(), indent=2))
        if run.accelerator.is_main_process:
            _warn_if_toy_clip_size(cfg, run.pipe)

    def _check_experts(self, run: "_RunState") -> None:
        """Which experts of the model get a LoRA (`experts`; one transformer: itself), refusing what the
        two-expert loop does not support, before any latent is cached: a full fine-tune (two 14B transformers
        of trainable weights) and sharded training (DeepSpeed, FSDP: the router is tested with DDP only)."""
        cfg, backbone, accelerator = self.config, run.backbone, run.accelerator
        self._trained_experts = trained_experts(cfg.experts, backbone, cfg.training_type)
        self._expert_names = backbone.expert_names
        if len(backbone.experts) == 1:
            return
        if deepspeed_plugin(accelerator) is not None or uses_fsdp(accelerator):
            raise ConfigError("a two-expert model (Wan2.2-T2V-A14B) trains in one process or under DDP; DeepSpeed "
                              "and FSDP are not supported for it yet: launch with a DDP accelerate config (e.g. "
                              "configs/accelerate/cpu_ddp_2ranks.yaml, or multi_gpu without deepspeed_config)")

    def _load_data(self, run: "_RunState") -> None:
        """Stage 2: the dataset (created by `data_recipe` when missing), its latent cache (each rank encodes
        its share of the missing clips on its device, the main process then writes one manifest), the
        cached-latent dataset the steps sample from (this dataset's clips only) and the empty prompt's
        embeddings (caption dropout)."""
        from ..data import CachedLatentDataset, LatentCache, VideoDataset
        from ..data.dataset import dataset_options

        cfg, accelerator, backbone = self.config, run.accelerator, run.backbone
        if cfg.data_recipe is not None and not Path(cfg.data_root).exists():
            if accelerator.is_main_process:
                create_with_data_recipe(cfg.data_recipe, cfg.data_root)
            accelerator.wait_for_everyone()
        dataset = VideoDataset(cfg.data_root, **dataset_options(cfg))
        masker, mask_key = motion_masker(cfg)  # motion_loss_weight: masks cached beside the latents (own key)
        cache = LatentCache.for_dataset(cfg.latent_cache_dir, dataset, backbone, cfg.max_sequence_length, **mask_key)
        report = cache.build(dataset, backbone, cfg.max_sequence_length, progress=accelerator.is_main_process,
                             rank=accelerator.process_index, world_size=accelerator.num_processes,
                             barrier=accelerator.wait_for_everyone, masker=masker)
        if accelerator.is_main_process:
            print(f"latent cache {cache.dir}: {report}", flush=True)
        accelerator.wait_for_everyone()
        cache = LatentCache.for_dataset(cfg.latent_cache_dir, dataset, backbone, cfg.max_sequence_length, **mask_key)
        cached = set(cache.ids)
        ids = [e.clip_id for e in dataset.entries if e.clip_id in cached]  # this dataset's clips only
        run.data_report = write_skipped_clips(run.output_dir, dataset, cache, accelerator.is_main_process)
        run.cache, run.dataset = cache, CachedLatentDataset(cache, ids=sorted(ids))
        run.empty_embeds = cache.empty_prompt_embeds(backbone)
        if backbone.conditions_on_image and cfg.validation_prompts:
            # image-to-video: validation samples start from the first frame of the first training clip
            from PIL import Image

            first = dataset[dataset.ids.index(run.dataset.ids[0])]["pixels"][:, 0]  # [3, H, W] in [-1, 1]
            pixels = ((first.permute(1, 2, 0).float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
            run.validation_image = Image.fromarray(pixels.numpy())

    def _read_resume_state(self, run: "_RunState") -> None:
        """Stage 3, run before stage 1 (so a damaged checkpoint costs no model load): which checkpoint to resume
        from (if any; its files checked against their recorded hashes) and its trainer state (step, selection,
        losses)."""
        run.resume = self._resume_path(run.output_dir, run.accelerator.is_main_process)
        run.saved = json.loads((run.resume / STATE_FILE).read_text()) if run.resume is not None else {}
        if run.resume is not None:  # a different rank, target_modules or training_type: one line, before the load
            cfg = self.config
            check_checkpoint_fits(run.resume, cfg.training_type, cfg.rank, cfg.target_modules)

    def _curate(self, run: "_RunState") -> None:
        """Stage 4: the clips to train on. A resumed run keeps the checkpoint's selection (refusing a different
        curation fingerprint); otherwise the curation selects now and `curation.json` records it.

        Curation runs on the stock model, before LoRA and before any DDP / DeepSpeed wrapper: per-clip
        gradients must not trigger a wrapper's all-reduce (Motive pitfall P7)."""
        cfg = self.config
        curation = build_curation(cfg)
        fingerprint = curation_fingerprint(cfg, curation)
        if "curation" in run.saved:
            selection = run.saved["curation"]
            made_with = selection.get("settings", fingerprint)
            if made_with != fingerprint:
                raise ConfigError(
                    f"{run.resume} was trained on the clips a curation chose with {made_with}; this run asks for "
                    f"{fingerprint}. Resume with the same --curation and method_options.{cfg.curation}, or "
                    "start a new --output_dir")
        elif curation is not None:
            result = curation.select(run.ctx)
            selection = {"method": cfg.curation, "indices": result.indices, "weights": result.weights,
                         "summary": result.summary, "settings": fingerprint}
            if run.accelerator.is_main_process:
                atomic_write_text(run.output_dir / "curation.json", json.dumps(selection, indent=2))
        else:
            selection = {"method": "none", "indices": list(range(len(run.dataset))), "weights": None,
                         "settings": fingerprint}
        run.selection = selection

    def _prepare_model(self, run: "_RunState") -> None:
        """Stage 5: LoRA (or all weights) made trainable, the optimiser and LR schedule, `accelerator.prepare`."""
        from diffusers.optimization import get_scheduler

        cfg, accelerator = self.config, run.accelerator
        self._release_text_encoder(run)
        transformer = run.pipe.transformer
        run.compute_dtype = transformer.dtype  # the frozen weights' dtype: inputs are cast to it
        experts = list(run.backbone.experts)
        for index in self._trained_experts:  # one transformer: itself; Wan2.2-T2V-A14B: a LoRA per expert
            expert = experts[index]
            if cfg.training_type == "lora":
                add_lora(expert, cfg.rank, cfg.lora_alpha, cfg.target_modules)  # LoRA weights in fp32
            else:
                expert.requires_grad_(True)
            expert.train()
            if cfg.gradient_checkpointing:
                expert.enable_gradient_checkpointing()
        if len(experts) > 1:
            # each sample on the expert owning its timestep (see training/experts.py for why the batch is split)
            boundary = run.backbone.boundary_timestep
            transformer = run.router = ExpertRouter(experts, boundary)
            run.sigma_range = sigma_range(self._trained_experts, boundary, len(experts))
            if accelerator.num_processes > 1:  # a rank's micro-batch may hold no sample of an expert
                from accelerate.utils import DistributedDataParallelKwargs

                accelerator.ddp_handler = DistributedDataParallelKwargs(find_unused_parameters=True)
        params = trainable_parameters(transformer)
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.adam_weight_decay)
        scheduler = get_scheduler(cfg.lr_scheduler, optimizer,
                                  num_warmup_steps=cfg.lr_warmup_steps * accelerator.num_processes,
                                  num_training_steps=cfg.train_steps * accelerator.num_processes)
        self._configure_deepspeed(accelerator)
        run.model, run.optimizer, run.scheduler = accelerator.prepare(transformer, optimizer, scheduler)
        run.ctx.model = run.model
        if deepspeed_plugin(accelerator) is not None:
            # DeepSpeed bf16 / fp16 casts the whole module (a full fine-tune's fp32 weights too) and keeps fp32
            # masters in the optimiser: the inputs follow the module's dtype
            run.compute_dtype = next(p.dtype for p in transformer.parameters() if p.requires_grad)

    def _release_text_encoder(self, run: "_RunState") -> None:
        """Once every cache is complete (the training clips', and a curation's query clips'), the text encoder
        is no longer needed for training: `text_encoder_after_cache` offloads it to the CPU, frees it, or keeps
        it. Before it leaves the device the validation prompts are encoded, so validation samples from
        precomputed embeddings (`ctx.extras["validation_prompt_embeds"]`)."""
        cfg, pipe, backbone = self.config, run.pipe, run.backbone
        text_encoder = getattr(pipe, "text_encoder", None)
        if text_encoder is None or cfg.text_encoder_after_cache == "keep":
            return
        device = torch.device(run.accelerator.device)
        if cfg.text_encoder_after_cache == "offload" and device.type == "cpu":
            return  # already on the CPU: the pipeline keeps encoding prompts itself
        if cfg.validation_prompts and run.accelerator.is_main_process:
            from .validation import encode_validation_prompts, validation_settings

            run.ctx.extras["validation_prompt_embeds"] = encode_validation_prompts(
                backbone, cfg.validation_prompts, validation_settings(cfg, pipe))
        if cfg.text_encoder_after_cache == "offload":
            text_encoder.to("cpu")
        else:
            pipe.text_encoder = None
            backbone.text_encoder = None
            del text_encoder
        import gc

        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    def _start_trackers(self, run: "_RunState") -> None:
        """Stage 6: the accelerate trackers (flat config as hyper-parameters) and the callbacks."""
        cfg = self.config
        if cfg.report_to != "none":
            flat = {k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in cfg.to_dict().items()}
            init_kwargs = {"wandb": wandb_init_kwargs()} if cfg.report_to == "wandb" else {}
            if cfg.report_to == "tensorboard" and run.saved.get("step"):
                # a resumed run redoes the steps after its checkpoint: TensorBoard hides what the interrupted
                # run logged from there on, so no step is shown twice
                init_kwargs = {"tensorboard": {"purge_step": int(run.saved["step"]) + 1}}
            run.accelerator.init_trackers(cfg.tracker_name, config={k: v for k, v in flat.items() if v is not None},
                                          init_kwargs=init_kwargs)
            summary = run.selection.get("summary")
            if summary and run.accelerator.is_main_process:
                # at the step the run starts from (a resumed run's tracker gets the checkpoint's selection)
                log_curation_summary(run.accelerator, summary, int(run.saved.get("step", 0)))
        run.callbacks = self._callbacks(run.pipe)
        run.ctx.extras["callbacks"] = run.callbacks

    def _resume(self, run: "_RunState") -> None:
        """Stage 7: model, optimiser, scheduler and callback states from the checkpoint; the start step.

        From here on checkpoints store the trainable weights only (and read them back)."""
        self._checkpoint_hooks = register_lean_checkpoint_hooks(run.accelerator)
        if run.resume is not None:
            run.accelerator.load_state(str(run.resume), **load_state_options(run.accelerator))
            for callback in run.callbacks:
                callback.load_state_dict(run.saved.get("callbacks", {}).get(type(callback).__name__, {}))
            print(f"resumed from {run.resume} at step {run.saved['step']}", flush=True)
        run.start_step = int(run.saved.get("step", 0))
        run.ctx.step = run.start_step
        run.losses = {int(k): v for k, v in run.saved.get("losses", {}).items()}
        run.skipped = list(run.saved.get("skipped_steps", []))

    def _batches(self, run: "_RunState", plan: StepBatchPlan) -> Iterator[dict[str, torch.Tensor]]:
        """This rank's micro-batches from the resume point on, in micro-step order, loaded by a DataLoader
        (`dataloader_num_workers` processes read the cached tensors ahead; 0 reads them in this process)."""
        cfg, accelerator = self.config, run.accelerator
        indices = run.selection["indices"]
        first = run.start_step * cfg.gradient_accumulation_steps
        last = cfg.train_steps * cfg.gradient_accumulation_steps
        rank, world = accelerator.process_index, accelerator.num_processes
        batch_sampler = _PlanBatches(plan, indices, range(first, last), rank, world)
        workers = int(getattr(cfg, "dataloader_num_workers", 0) or 0)
        loader = torch.utils.data.DataLoader(
            run.dataset, batch_sampler=batch_sampler, collate_fn=_stack_cached_clips, num_workers=workers,
            # its own generator: building the loader's iterator must not draw from the global torch RNG
            generator=torch.Generator().manual_seed(cfg.seed))
        return iter(loader)

    def _train_steps(self, run: "_RunState") -> None:
        """Stage 8: the optimiser steps, each followed by logging, the callbacks and (maybe) a checkpoint."""
        cfg, accelerator, ctx = self.config, run.accelerator, run.ctx
        indices = run.selection["indices"]
        all_labels = run.dataset.bucket_of_index
        labels = [all_labels[i] for i in indices]
        plan = StepBatchPlan(labels, cfg.train_batch_size * accelerator.num_processes, cfg.seed,
                             run.selection["weights"])
        for callback in run.callbacks:
            callback.on_train_start(ctx)
        batches = self._batches(run, plan)
        run.bad_in_a_row = 0
        bar = tqdm(total=cfg.train_steps, initial=run.start_step, desc="fine-tuning",
                   disable=not accelerator.is_main_process)
        for step in range(run.start_step, cfg.train_steps):
            t_step = time.perf_counter()
            mean_loss, grad_norm, data_time = self._optimizer_step(run, step, batches)
            ctx.step = step + 1
            run.losses[ctx.step] = mean_loss
            logs = {"train/loss": mean_loss, "train/grad_norm": grad_norm,
                    "train/lr": run.scheduler.get_last_lr()[0],
                    "timing/step_s": time.perf_counter() - t_step, "timing/data_s": data_time}
            if ctx.step % cfg.logging_steps == 0 or ctx.step == cfg.train_steps:
                accelerator.log(logs, step=ctx.step)
            bar.update(1)
            bar.set_postfix(loss=f"{mean_loss:.4f}")
            for callback in run.callbacks:
                callback.on_step_end(ctx, logs)
            run.step_times.append(time.perf_counter() - t_step)  # includes callbacks (monitors), not checkpoints
            if cfg.checkpointing_steps and ctx.step % cfg.checkpointing_steps == 0 and ctx.step < cfg.train_steps:
                self._save_checkpoint(ctx, {"step": ctx.step,
                                            "micro_step": ctx.step * cfg.gradient_accumulation_steps,
                                            "curation": run.selection, "losses": run.losses,
                                            "skipped_steps": run.skipped},
                                      run.callbacks)
        bar.close()

    def _optimizer_step(self, run: "_RunState", step: int,
                        batches: Iterator[dict[str, torch.Tensor]]) -> tuple[float, float, float]:
        """One optimiser step over `gradient_accumulation_steps` micro-batches: (mean loss, grad norm, data s).

        Noise, timesteps and caption dropout come from a generator keyed by (seed, micro-step, rank)."""
        cfg, accelerator, backbone, model = self.config, run.accelerator, run.backbone, run.model
        device, rank, compute_dtype = accelerator.device, accelerator.process_index, run.compute_dtype
        data_time, step_losses, grad_norm = 0.0, [], float("nan")
        for micro in range(cfg.gradient_accumulation_steps):
            k = step * cfg.gradient_accumulation_steps + micro
            t_data = time.perf_counter()
            batch = next(batches)
            latents = batch["latents"].to(device)
            embeds = batch["prompt_embeds"].to(device)
            condition = move_condition(batch.get("condition"), device, compute_dtype)  # image-to-video: first frame
            size = latents.shape[0]
            g = torch.Generator().manual_seed(int(np.random.SeedSequence([cfg.seed, k, rank]).generate_state(1)[0]))
            drop = torch.rand(size, generator=g) < cfg.caption_dropout
            if drop.any():
                embeds[drop] = run.empty_embeds.to(device, embeds.dtype)
            noise = torch.randn(latents.shape, generator=g).to(device)
            if run.sigma_range is None:
                sigmas = sample_sigmas(size, g, cfg.timestep_sampling, cfg.timestep_shift).to(device)
            else:  # one expert of two trained: its own timestep range
                sigmas = sample_sigmas_between(size, g, cfg.timestep_sampling, cfg.timestep_shift,
                                               *run.sigma_range).to(device)
            timesteps = sigmas * 1000.0
            data_time += time.perf_counter() - t_data
            with accelerator.accumulate(model):
                noisy = backbone.add_noise(latents, noise, timesteps)
                target = backbone.training_target(latents, noise, timesteps)
                with accelerator.autocast():
                    # in the frozen weights' dtype (a no-op in fp32); timesteps stay fp32 for the embedders
                    pred = backbone.predict(noisy.to(compute_dtype), timesteps, embeds.to(compute_dtype), model=model,
                                            **condition_kwargs(condition))
                skip = backbone.conditioned_latent_frames(condition)  # TI2V image-to-video: frame 0 is given
                if skip:
                    pred, target = pred[:, :, skip:], target[:, :, skip:]
                if cfg.motion_loss_weight == 1.0:
                    loss = (pred.float() - target.float()).square().mean()
                else:
                    loss = motion_weighted_loss(pred, target, batch["motion_mask"][:, skip:].to(device),
                                                cfg.motion_loss_weight)
                if not torch.isfinite(loss):
                    run.bad_in_a_row += 1
                    run.skipped.append({"step": step, "micro_step": k, "reason": f"non-finite loss {loss.item()}"})
                    run.optimizer.zero_grad(set_to_none=True)
                    run.expert_counts = None
                    if run.bad_in_a_row >= MAX_CONSECUTIVE_BAD_LOSSES:
                        raise FloatingPointError(
                            f"{run.bad_in_a_row} non-finite losses in a row (last at step {step}); lower "
                            "--learning_rate, use --mixed_precision bf16 instead of fp16, or check the data")
                    continue
                run.bad_in_a_row = 0
                accelerator.backward(loss)
                if run.router is not None:
                    self._count_expert_samples(run, timesteps, size)
                if accelerator.sync_gradients:
                    if run.router is not None:
                        counts = run.expert_counts.to(device)
                        if accelerator.num_processes > 1:
                            counts = accelerator.reduce(counts, reduction="sum")
                        drop_unvisited_expert_grads(run.router, counts)
                        run.expert_counts = None
                    norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    grad_norm = float(norm) if norm is not None else float("nan")
                run.optimizer.step()
                run.scheduler.step()
                run.optimizer.zero_grad(set_to_none=True)
            step_losses.append(loss.item())
        mean_loss = float(np.mean(step_losses)) if step_losses else float("nan")
        return mean_loss, grad_norm, data_time

    @staticmethod
    def _count_expert_samples(run: "_RunState", timesteps: torch.Tensor, size: int) -> None:
        """Add this micro-batch's samples per expert to the optimiser step's counts."""
        route = run.router.route(timesteps, size).cpu()
        counts = torch.bincount(route, minlength=len(run.router.experts))
        run.expert_counts = counts if run.expert_counts is None else run.expert_counts + counts

    def _finish(self, run: "_RunState") -> dict[str, Any]:
        """Stage 9: the trained weights (LoRA or full transformer) and the summary, then the callbacks' end
        (the end-of-run validation): what was trained is on disk before anything that can still fail."""
        cfg, accelerator, ctx = self.config, run.accelerator, run.ctx
        accelerator.wait_for_everyone()
        summary = {"steps": ctx.step, "losses": run.losses, "skipped_steps": run.skipped, "data": run.data_report,
                   "component_dtypes": run.component_dtypes,
                   "curation": run.selection.get("summary"), "clips": len(run.selection["indices"]),
                   "world_size": accelerator.num_processes, "step_times_s": run.step_times}
        unwrapped = accelerator.unwrap_model(run.model)
        lora = self._gathered_loras(accelerator, run.model, unwrapped) if cfg.training_type == "lora" else None
        # full fine-tuning under DeepSpeed 16-bit (the fp32 masters) or sharded (ZeRO-3, FSDP): every rank joins
        full = full_transformer_state_dict(accelerator, run.model, unwrapped) if lora is None else None
        if accelerator.is_main_process:
            if lora is not None:
                summary["lora"] = str(self._save_loras(run.backbone, unwrapped, run.output_dir, lora))
                if isinstance(unwrapped, ExpertRouter):  # where each expert's LoRA is, by pipeline name
                    from ..loading import expert_lora_folder

                    summary["expert_loras"] = {
                        self._expert_names[i]: str(expert_lora_folder(run.output_dir, self._expert_names[i]))
                        for i in self._trained_experts}
            elif full is not None:
                _save_gathered_transformer(unwrapped, full, run.output_dir / "transformer")
                summary["transformer"] = str(run.output_dir / "transformer")
            else:
                unwrapped.save_pretrained(run.output_dir / "transformer", safe_serialization=True)
                summary["transformer"] = str(run.output_dir / "transformer")
            atomic_write_text(run.output_dir / "train_summary.json", json.dumps(summary, indent=2))
        accelerator.wait_for_everyone()
        try:
            for callback in run.callbacks:
                callback.on_train_end(ctx)
        except Exception as exc:
            saved = summary.get("lora") or summary.get("transformer") or run.output_dir
            raise EndOfRunError(f"{type(exc).__name__} in {type(callback).__name__}.on_train_end after the last "
                                f"step: {str(exc).splitlines()[0] if str(exc) else exc!r}; the trained weights "
                                f"({saved}) and train_summary.json are saved") from exc
        for handle in getattr(self, "_checkpoint_hooks", []):
            handle.remove()
        accelerator.end_training()
        return summary


class EndOfRunError(MotionGuideError):
    """A callback failed at the end of the run (e.g. the final validation) after the weights were saved: one
    line for the user, who keeps the trained weights and summary."""


@dataclass
class _RunState:
    """What the stages of one `Trainer.run` hand each other."""

    accelerator: Any
    output_dir: Path
    pipe: Any = None
    backbone: Any = None
    cache: Any = None
    dataset: Any = None
    empty_embeds: torch.Tensor | None = None
    resume: Path | None = None
    saved: dict[str, Any] = field(default_factory=dict)
    ctx: TrainContext | None = None
    selection: dict[str, Any] = field(default_factory=dict)
    model: Any = None
    optimizer: Any = None
    scheduler: Any = None
    callbacks: list[TrainerCallback] = field(default_factory=list)
    start_step: int = 0
    losses: dict[int, float] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    data_report: dict[str, Any] = field(default_factory=dict)  # clips kept / skipped (see write_skipped_clips)
    component_dtypes: dict[str, str] = field(default_factory=dict)  # pipeline module -> dtype, as loaded
    bad_in_a_row: int = 0
    compute_dtype: torch.dtype = torch.float32
    router: Any = None  # an ExpertRouter over a two-expert model's transformers (None: one transformer)
    sigma_range: tuple[float, float] | None = None  # noise levels drawn when one expert of two is trained
    expert_counts: torch.Tensor | None = None  # samples per expert in the current optimiser step
    validation_image: Any = None  # image-to-video: the validation samples' conditioning image (PIL)


class _PlanBatches:
    """The batch plan as a DataLoader batch sampler: this rank's dataset indices for each micro-step, lazily
    (a run of 100k steps must not compute every batch up front)."""

    def __init__(self, plan: StepBatchPlan, indices: Sequence[int], micro_steps: range, rank: int, world: int):
        self.plan, self.indices, self.micro_steps, self.rank, self.world = plan, indices, micro_steps, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for k in self.micro_steps:
            yield [self.indices[i] for i in self.plan.rank_indices(k, self.rank, self.world)]

    def __len__(self) -> int:
        return len(self.micro_steps)


def motion_masker(cfg: Any) -> tuple[Any, dict[str, Any]]:
    """(Motive's motion masker, the extra latent-cache key field) with `motion_loss_weight` on, else (None, {}):
    an off run keeps its old cache key, so existing caches stay valid."""
    if cfg.motion_loss_weight == 1.0:
        return None, {}
    from ..data.cache import MOTION_MASK_FIELD
    from ..motive.masks import MotionMasker

    masker = MotionMasker()  # Motive's defaults: DIS flow, consecutive frames, change gate, mean over time
    return masker, {MOTION_MASK_FIELD: masker.describe()}


def motion_weighted_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weight: float) -> torch.Tensor:
    """Mean squared error [B, C, F', h, w] with each element weighted 1 + (weight - 1) * mask [B, F', h, w].

    Each clip's weighted sum is divided by its weight map's sum (over the same elements), so a uniform error
    gives the plain loss (learning rates and logged losses stay comparable) and every clip keeps its equal share
    of the batch (a static clip trains exactly as before), while moving pixels get `weight` x a static one's pull.
    """
    if mask.shape[0] != pred.shape[0] or mask.shape[1:] != pred.shape[2:]:
        raise ValueError(f"motion mask {tuple(mask.shape)} does not match the latents {tuple(pred.shape)}")
    weights = (1.0 + (weight - 1.0) * mask.float()).unsqueeze(1).expand_as(pred)
    error = (pred.float() - target.float()).square()
    per_clip = (weights * error).flatten(1).sum(1) / weights.flatten(1).sum(1)
    return per_clip.mean()


def _stack_cached_clips(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate cached clips (one bucket per batch, so shapes agree) into latents and prompt embeddings, and an
    image-to-video model's conditioning tensors (`condition`, stacked per name) when the cache holds them."""
    batch: dict[str, Any] = {"latents": torch.stack([it["latents"] for it in items]),
                             "prompt_embeds": torch.stack([it["prompt_embeds"] for it in items])}
    if "motion_mask" in items[0]:  # motion_loss_weight: [B, F', h, w]
        batch["motion_mask"] = torch.stack([it["motion_mask"] for it in items])
    if "condition" in items[0]:
        batch["condition"] = {k: torch.stack([it["condition"][k] for it in items]) for k in items[0]["condition"]}
    return batch


def _save_gathered_transformer(transformer: torch.nn.Module, state_dict: dict[str, torch.Tensor], folder: Path) -> None:
    """A transformer folder `from_pretrained` reads, from weights gathered outside the module (ZeRO-3)."""
    from huggingface_hub import save_torch_state_dict

    transformer.save_config(folder)
    save_torch_state_dict(state_dict, folder, filename_pattern="diffusion_pytorch_model{suffix}.safetensors")


# ---------------------------------------------------------------------- config fields the loop reads
def pipeline_placement(cfg: Any, device: Any) -> "PipelinePlacement":
    """Where and in which dtypes the Trainer loads the pipeline: every component on `device`, frozen weights in
    `mixed_precision`'s dtype (fp32 for "no") unless `transformer_dtype` / `vae_dtype` / `text_encoder_dtype`
    says otherwise; a full fine-tune's transformer in fp32 (its weights are the optimiser's master weights)."""
    from ..loading import dtype_of_mixed_precision, parse_dtype

    overrides = {"transformer": torch.float32} if cfg.training_type == "full" else {}
    for component in ("transformer", "vae", "text_encoder"):
        value = getattr(cfg, f"{component}_dtype", None)
        if value is not None:
            overrides[component] = parse_dtype(value, f"{component}_dtype")
    return PipelinePlacement(dtype=dtype_of_mixed_precision(cfg.mixed_precision), component_dtypes=overrides,
                             device=str(device), vae_tiling=bool(getattr(cfg, "vae_tiling", False)),
                             vae_slicing=bool(getattr(cfg, "vae_slicing", False)))


def _warn_if_toy_clip_size(cfg: Any, pipeline: Any) -> None:
    """The clip size fields default to the toy's 17x64x64; a model made for another size (Wan 81x480x832)
    trained at it without a word is almost always a forgotten setting, so say so (once, not an error: a
    small size can be what one wants)."""
    from ..sampling import SamplingSettings

    fields = TrainConfig.__dataclass_fields__
    toy = tuple(fields[k].default for k in ("num_frames", "height", "width"))
    model = SamplingSettings.for_model(cfg.pretrained_model_name_or_path, pipeline=pipeline)
    own = (model.num_frames, model.height, model.width)
    if (cfg.num_frames, cfg.height, cfg.width) == toy and own != toy and not cfg.buckets:
        print(f"note: training at num_frames x height x width = {'x'.join(map(str, toy))}, the toy defaults; "
              f"{cfg.pretrained_model_name_or_path} samples at {'x'.join(map(str, own))}. Set num_frames / height "
              "/ width (or buckets) in the config if that was not meant", flush=True)


def create_with_data_recipe(spec: dict[str, Any], folder: str | os.PathLike) -> None:
    """Create `folder` with the registered data recipe `spec["name"]`, the other keys as its options."""
    if not isinstance(spec, dict) or not spec.get("name"):
        raise ConfigError(f"data_recipe: expected {{name: <recipe>, ...options}} with name one of "
                          f"{', '.join(DATA_RECIPES.names())}; got {spec!r}")
    options = {k: v for k, v in spec.items() if k != "name"}
    print(f"{folder} does not exist: creating it with the data recipe {spec['name']!r} {options}", flush=True)
    DATA_RECIPES.get(spec["name"])(folder, **options)


def build_curation(cfg: Any) -> Curation | None:
    """The `--curation` built from `method_options.<name>` (None for "none"); the curation checks them."""
    if cfg.curation in (None, "", "none"):
        return None
    return get_curation(cfg.curation, **cfg.method_options.get(cfg.curation, {}))


def curation_fingerprint(cfg: Any, curation: Curation | None) -> dict[str, Any]:
    """What a checkpoint records about the selection, compared on resume: the curation's name and its own
    fingerprint (`{"curation": "random", "fraction": 0.1, "mode": None}`, the form checkpoints always had)."""
    if curation is None:
        return {"curation": "none"}
    return {"curation": cfg.curation, **curation.fingerprint()}


SKIPPED_CLIPS_FILE = "skipped_clips.json"


def write_skipped_clips(output_dir: Path, dataset: Any, cache: Any, write: bool = True) -> dict[str, Any]:
    """Which clips of the dataset the run leaves out and why, in `<output_dir>/skipped_clips.json`: the dataset's
    skips (unreadable, too short, no caption, a bad metadata row) and the latent cache's failures (a clip that
    failed to encode); returns the counts for the run summary. Written on every run, so a fixed dataset
    leaves an empty list rather than an old one."""
    from collections import Counter

    skipped = [{"clip_id": s.clip_id, "path": s.path, "category": s.category, "reason": s.reason, "stage": "dataset"}
               for s in dataset.skipped]
    cached = set(cache.ids)
    for entry in dataset.entries:
        if entry.clip_id in cached:
            continue
        try:
            record = cache.clip_record(entry.clip_id)
        except KeyError:
            record = {}
        skipped.append({"clip_id": entry.clip_id, "path": str(entry.path), "category": "encode_failed",
                        "reason": record.get("reason", "not in the latent cache"), "stage": "latent_cache"})
    kept = sum(1 for entry in dataset.entries if entry.clip_id in cached)
    report = {"listed": len(dataset.entries) + len(dataset.skipped), "kept": kept, "skipped": len(skipped),
        "skipped_by_category": dict(sorted(Counter(s["category"] for s in skipped).items())),
        "skipped_file": SKIPPED_CLIPS_FILE}
    if write:
        atomic_write_text(Path(output_dir) / SKIPPED_CLIPS_FILE,
                          json.dumps({**{k: v for k, v in report.items() if k != "skipped_file"},
                                      "data_root": str(dataset.root), "clips": skipped}, indent=2))
    return report
