"""`ValidationSampler`: fixed-seed samples through the same code path as `sample/generate.py`, plus metrics.

Runs on the main process every `validation_steps` and at the end: videos (H.264 mp4 at the model's fps + frame
grid) under `output_dir/validation/step-N/`, the grid and each video to the trackers (a W&B video, a TensorBoard
animation), offline motion metrics as scalars (and toy prompt adherence when the prompts are toy captions), then
every callback's `on_validation` with the results. Steps, CFG scale and fps default to the model's own
(`validation_settings`).

The samples run on the pipeline's device in its dtypes (the Trainer loads it on `accelerator.device`). When the
text encoder leaves the accelerator after the latent cache (`text_encoder_after_cache`), the Trainer encodes the
prompts before it goes (`encode_validation_prompts`) and the pipeline samples from those embeddings
(`ctx.extras["validation_prompt_embeds"]`); otherwise the pipeline encodes the prompts itself, as before.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from ..files import atomic_write_text
from ..sampling import SamplingSettings, generate_videos, get_guidance, save_videos
from ..sampling.generate import to_uint8
from .callbacks import TrainContext, TrainerCallback
from .distributed import runs_on_every_rank


def validation_settings(config: Any, pipeline: Any = None) -> SamplingSettings:
    """The validation samples' settings: what the config sets, else the model's own (its family's, or its
    `sampling_defaults.json`: steps, CFG scale, fps), and the training clip size and text length unless the
    `validation_num_frames` / `_height` / `_width` fields say otherwise (a LoRA is judged at the size it learnt)."""
    model = config.pretrained_model_name_or_path
    return SamplingSettings.for_model(
        model, pipeline=pipeline,
        num_frames=_first_set(config.validation_num_frames, config.num_frames),
        height=_first_set(config.validation_height, config.height),
        width=_first_set(config.validation_width, config.width),
        steps=config.validation_inference_steps, cfg=config.validation_guidance_scale,
        max_sequence_length=config.max_sequence_length)


def encode_validation_prompts(backbone: Any, prompts: list[str], settings: SamplingSettings
                              ) -> dict[str, dict[str, torch.Tensor]]:
    """Each prompt's embeddings and the negative prompt's (`settings.negative_prompt`, else "" as the stock
    pipelines use), [1, T, D] on the CPU in the text encoder's output dtype, computed on its device at the
    validation text length: what the pipeline would compute itself, kept for when the text encoder is gone."""
    length = settings.max_sequence_length
    with torch.no_grad():
        negative = backbone.encode_prompt([settings.negative_prompt or ""], length).detach().cpu()
        return {prompt: {"prompt_embeds": backbone.encode_prompt([prompt], length).detach().cpu(),
                         "negative_prompt_embeds": negative} for prompt in dict.fromkeys(prompts)}


def generate_from_embeddings(pipe: Any, prompts: list[str], seeds: list[int], settings: SamplingSettings,
                             embeddings: dict[str, dict[str, torch.Tensor]], guidance: str = "none",
                             image: Any = None) -> list[dict[str, Any]]:
    """`generate_videos` with precomputed prompt embeddings (the text encoder offloaded or freed): the same
    call, seeds and output, with `prompt_embeds` / `negative_prompt_embeds` on the pipeline's device instead
    of the prompt."""
    guide = get_guidance(guidance)
    device = pipe._execution_device
    pipe.set_progress_bar_config(disable=True, leave=False)
    results = []
    for prompt in prompts:
        embeds = embeddings[prompt]
        for seed in seeds:
            call = dict(prompt_embeds=embeds["prompt_embeds"].to(device),
                        negative_prompt_embeds=embeds["negative_prompt_embeds"].to(device),
                        num_frames=settings.num_frames, height=settings.height, width=settings.width,
                        num_inference_steps=settings.steps, guidance_scale=settings.cfg, output_type="np",
                        generator=torch.Generator(device="cpu").manual_seed(int(seed)))
            if image is not None:  # image-to-video: the conditioning image
                call["image"] = image
            out = guide(pipe, **call)
            results.append({"prompt": prompt, "seed": int(seed), "frames": to_uint8(out.frames[0])})
    return results


def _first_set(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def video_metrics(frames: np.ndarray, prompt: str, token_px: float | None) -> dict[str, float]:
    """Weight-free motion metrics of one video, plus toy adherence when the prompt is a toy caption."""
    from ..metrics import dynamic_degree_proxy, flow_warp_smoothness, temporal_flicker, toy_prompt_adherence

    out = {
        "dynamic_degree_proxy": float(dynamic_degree_proxy(frames).is_dynamic),
        "warp_smoothness_proxy": flow_warp_smoothness(frames),
        "flicker_proxy": temporal_flicker(frames),
    }
    try:
        adherence = toy_prompt_adherence(frames, prompt, token_px=token_px)
    except ValueError:  # not a toy caption
        return out
    if adherence:
        out["toy_presence"] = float(np.mean([a.presence for a in adherence]))
        out["toy_direction_correct"] = float(np.mean([a.direction_correct for a in adherence]))
    return out


class ValidationSampler(TrainerCallback):
    """Callback that samples fixed prompts and seeds during training and logs videos and metrics."""

    name = "validation"

    def __init__(self, prompts: list[str], seeds: list[int], settings: SamplingSettings, every: int = 0,
                 guidance: str = "none"):
        self.prompts, self.seeds, self.settings = prompts, seeds, settings
        self.every, self.guidance = every, guidance
        self.history: list[dict[str, Any]] = []

    def on_step_end(self, ctx: TrainContext, logs: dict[str, float]) -> None:
        """Validate every `every` steps before the last one (the last is left to `on_train_end`)."""
        if self.every and ctx.step % self.every == 0 and ctx.step < ctx.config.train_steps:
            self.run(ctx)

    def on_train_end(self, ctx: TrainContext) -> None:
        """Validate at the final step unless that step was just validated."""
        if self.prompts and (not self.history or self.history[-1]["step"] != ctx.step):
            self.run(ctx)

    @torch.no_grad()
    def run(self, ctx: TrainContext) -> dict[str, Any] | None:
        """Sample, save and score the validation videos; returns the results on the main process, else None."""
        ctx.accelerator.wait_for_everyone()
        results = None
        # sharded weights (ZeRO-3, FSDP): every rank samples, so each layer's all-gather has all ranks
        if self.prompts and (ctx.is_main_process or runs_on_every_rank(ctx.accelerator)):
            pipe = ctx.extras["pipeline"]
            transformer = ctx.transformer
            was_training = transformer.training
            transformer.eval()
            embeddings = ctx.extras.get("validation_prompt_embeds")
            image = ctx.extras.get("validation_image")  # image-to-video: the first training clip's first frame
            if embeddings:
                videos = generate_from_embeddings(pipe, self.prompts, self.seeds, self.settings, embeddings,
                                                  guidance=self.guidance, image=image)
            else:
                videos = generate_videos(pipe, self.prompts, self.seeds, self.settings, guidance=self.guidance,
                                         progress=False, image=image)
            transformer.train(was_training)
        if ctx.is_main_process and self.prompts:
            folder = ctx.output_dir / "validation" / f"step-{ctx.step}"
            saved = save_videos(videos, folder, fps=self.settings.fps)
            backbone = ctx.backbone
            token_px = backbone.pixels_per_token
            per_video = [video_metrics(v["frames"], v["prompt"], token_px) for v in videos]
            keys = sorted(set().union(*per_video))
            summary = {f"validation/{k}": float(np.mean([m[k] for m in per_video if k in m])) for k in keys}
            ctx.log(summary, ctx.step)
            from PIL import Image

            ctx.log_images("validation/samples", np.asarray(Image.open(saved["grid"]).convert("RGB")), ctx.step)
            for index, (video, listed) in enumerate(zip(videos, saved["videos"])):
                ctx.log_videos(f"validation/video_{index:03d}", video["frames"], ctx.step, self.settings.fps,
                               mp4=folder / listed["file"], caption=f"{video['prompt']} (seed {video['seed']})")
            results = {"step": ctx.step, "folder": str(folder), "metrics": summary, "videos": saved["videos"]}
            atomic_write_text(folder / "metrics.json",
                              json.dumps({"summary": summary, "per_video": per_video}, indent=2))
            self.history.append({"step": ctx.step, **summary})
            for callback in ctx.extras.get("callbacks", []):
                if callback is not self:
                    callback.on_validation(ctx, results)
        ctx.accelerator.wait_for_everyone()
        return results

    def state_dict(self) -> dict[str, Any]:
        """The validation history, for checkpoints."""
        return {"history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the validation history."""
        self.history = list(state.get("history", []))
