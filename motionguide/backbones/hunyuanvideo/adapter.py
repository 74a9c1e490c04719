"""HunyuanVideo transformers (`HunyuanVideoTransformer3DModel`): dual-stream then single-stream blocks, one list.

What differs from Wan and CogVideoX, and how the adapter says it:

- Blocks: 20 dual-stream blocks (`transformer_blocks`: video and text keep their own weights and meet in one joint
  attention) followed by 40 single-stream blocks (`single_transformer_blocks`: one weight set over [video; text]).
  DiffTrack and IMAP index them as one list (dual 0..19, then single as 20..59), and so does `blocks` here, so a
  profile's block 16 is dual block 16 (DiffTrack's tracking layer) and block 20 the first single block.
- Text placement (`text_layout = "joint_last"`): every block's attention runs over [video; text], the prompt tokens
  AFTER the video tokens, RoPE on video only. Padded prompt slots are masked out of the keys by the model itself.
- Guidance (`cfg_layout = "embedded"`): the released model is guidance-distilled; the guidance scale is an input of
  the transformer (`guidance = scale * 1000`) and the stock pipeline runs one conditional pass per step (cache
  context "cond"), plus an "uncond" pass only under true CFG (`true_cfg_scale > 1` with a negative prompt). No
  call ever batches [uncond; cond].
- Latents: [B, C, F, H, W] (the VAE layout), scaled by the VAE's `scaling_factor` (0.476986); the model is a
  flow-matching velocity predictor, x_t = (1 - s) x0 + s eps, target eps - x0, s = t / 1000.
- Text conditioning is three tensors (Llama token embeddings, their mask, CLIP's pooled embedding). The library
  moves one prompt tensor per clip (caches, batches, the Motive pass), so :meth:`encode_prompt` packs the three
  into one tensor and :meth:`predict` unpacks it (:func:`pack_prompt` / :func:`unpack_prompt`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..base import FlowMatchingTargets, SamplingDefaults, ScaledLatents, VideoBackbone


class PipelineSchedule:
    """The pipeline's scheduler, except that `set_timesteps(n)` gives `HunyuanVideoPipeline`'s own n-step schedule:
    sigmas linspace(1, 0, n + 1)[:-1], shifted by the scheduler (shift 7 in the release).

    The methods place a profile's step on a schedule by calling `set_timesteps(n)` on a copy of the backbone's
    scheduler; the flow-match scheduler alone would space its sigmas differently (step 20 of 30: sigma 0.763 instead
    of the pipeline's and IMAP's 0.778; the last of 30 steps: t = 47 instead of DiffTrack's 194). Everything else
    is the wrapped scheduler's.
    """

    def __init__(self, scheduler: Any):
        self.inner = scheduler

    def set_timesteps(self, num_inference_steps: int | None = None, device: Any = None, sigmas: Any = None,
                      **kwargs: Any) -> None:
        """As the pipeline calls it: explicit sigmas, linspace(1, 0, n + 1)[:-1] unless given."""
        if sigmas is None and num_inference_steps is not None and kwargs.get("timesteps") is None:
            sigmas = np.linspace(1.0, 0.0, int(num_inference_steps) + 1)[:-1]
            num_inference_steps = None
        self.inner.set_timesteps(num_inference_steps=num_inference_steps, device=device, sigmas=sigmas, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (copying): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


def pack_prompt(embeds: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """[B, L, D] token embeddings, [B, L] mask and [B, P] pooled embedding -> one [B, L + k, D] tensor.

    The k = ceil((L + P) / D) extra rows hold the mask (as 0/1) and then the pooled embedding, zero-padded. 0 and 1
    are exact in every float dtype, so casting the packed tensor keeps the mask.
    """
    b, length, width = embeds.shape
    tail = torch.cat([mask.to(embeds.dtype), pooled.to(embeds.dtype)], dim=1)  # [B, L + P]
    rows = math.ceil(tail.shape[1] / width)
    tail = torch.nn.functional.pad(tail, (0, rows * width - tail.shape[1]))
    return torch.cat([embeds, tail.view(b, rows, width)], dim=1)


def unpack_prompt(packed: torch.Tensor, pooled_dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_prompt` given the pooled width P: (embeds [B, L, D], mask [B, L] long, pooled [B, P])."""
    b, total, width = packed.shape
    # L + ceil((L + P) / D) grows strictly with L: the one L that gives `total` rows
    length = next((n for n in range(total, -1, -1) if n + math.ceil((n + pooled_dim) / width) == total), None)
    if length is None:
        raise ValueError(f"a packed HunyuanVideo prompt of {total} rows x {width} does not hold a pooled embedding "
                         f"of {pooled_dim}: build it with HunyuanVideoBackbone.encode_prompt")
    tail = packed[:, length:].reshape(b, -1)
    return packed[:, :length], tail[:, :length].round().long(), tail[:, length:length + pooled_dim]


def default_prompt_template() -> dict[str, Any]:
    """diffusers' HunyuanVideo Llama template (system text, then the prompt; its first 95 Llama-3 tokens cropped)."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

    return DEFAULT_PROMPT_TEMPLATE


class PromptSlotTokenizer:
    """The pipeline's Llama tokenizer read the way a prompt lands in HunyuanVideo's prompt embeddings.

    The pipeline wraps the prompt in its template and crops the template's tokens (`crop_start`, BOS included)
    from the embeddings, so slot i of the embeddings is not token i of `tokenizer(prompt)` (Llama adds a BOS; T5
    does not). Called on one prompt, this returns the ids of the templated prompt after the crop and, when asked,
    their character offsets in the bare prompt: what word-to-slot alignment (IMAP's word maps) needs. Everything
    else is the wrapped tokenizer's.
    """

    def __init__(self, tokenizer: Any, template: Callable[[], dict[str, Any]]):
        self.inner = tokenizer
        self._template = template

    def _crop_start(self, template: dict[str, Any]) -> int:
        crop = template.get("crop_start")
        if crop is None:  # as the pipeline computes it
            crop = len(self.inner(template["template"], padding="max_length")["input_ids"]) - 2
        return int(crop)

    def __call__(self, text: str, add_special_tokens: bool = True, return_offsets_mapping: bool = False,
                 **kwargs: Any) -> dict[str, list]:
        """{"input_ids": ids of `text` in embedding-slot order[, "offset_mapping": spans in `text`]}."""
        if not isinstance(text, str):
            raise TypeError("PromptSlotTokenizer reads one prompt (a str) at a time")
        template = self._template()
        start = template["template"].index("{}")
        encoded = self.inner(template["template"].format(text), add_special_tokens=True,
                             return_offsets_mapping=return_offsets_mapping, **kwargs)
        crop = self._crop_start(template)
        out: dict[str, list] = {"input_ids": list(encoded["input_ids"])[crop:]}
        if return_offsets_mapping:
            end = start + len(text)
            out["offset_mapping"] = [(a - start, b - start) if start <= a < b <= end else (0, 0)
                                     for a, b in list(encoded["offset_mapping"])[crop:]]
        return out

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (copying): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


class HunyuanVideoBackbone(ScaledLatents, FlowMatchingTargets, VideoBackbone):
    """HunyuanVideo: joint attention over [video; text] in every block, dual-stream blocks then single-stream ones."""

    family = "hunyuanvideo"
    transformer_class_names = ("HunyuanVideoTransformer3DModel",)
    text_layout = "joint_last"
    cfg_layout = "embedded"
    display_name = "HunyuanVideo"
    attention_names = ("attn", "attn")  # joint: one attention over [video; text] in every block
    vae_scale_keys = ("spatial_compression_ratio", "temporal_compression_ratio")
    latent_layout = "BCFHW"
    #: HunyuanVideo as DiffTrack and IMAP sample it: 49 frames of 480x720 (the model card's 720p/129 frames is far
    #: larger), 30 flow-matching steps, embedded guidance 6.0, 256 prompt tokens; 15 fps as diffusers' example
    #: exports it
    sampling_defaults = SamplingDefaults(num_frames=49, height=480, width=720, steps=30, cfg=6.0, fps=15,
                                         max_sequence_length=256)
    #: the embedded guidance scale used for training-time predictions (fine-tuning, the Motive pass): 1.0, i.e.
    #: the distilled model's unguided prediction, as diffusers-based HunyuanVideo LoRA trainers pass it
    training_guidance: float = 1.0

    def __init__(self, transformer: torch.nn.Module, vae: Any = None, text_encoder: Any = None, tokenizer: Any = None,
                 scheduler: Any = None, pipeline: Any = None):
        if tokenizer is not None and not isinstance(tokenizer, PromptSlotTokenizer):
            tokenizer = PromptSlotTokenizer(tokenizer, self.prompt_template)
        super().__init__(transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                         scheduler=PipelineSchedule(scheduler) if scheduler is not None else None, pipeline=pipeline)

    def prompt_template(self) -> dict[str, Any]:
        """The Llama prompt template: the pipeline's own `prompt_template` attribute when it carries one (a
        tokenizer that is not Llama-3's needs its own), else diffusers' default."""
        return getattr(self._pipeline, "prompt_template", None) or default_prompt_template()

    @property
    def blocks(self) -> Sequence[torch.nn.Module]:
        """Dual-stream blocks, then single-stream blocks: one index list as the papers use."""
        return [*self.transformer.transformer_blocks, *self.transformer.single_transformer_blocks]

    @property
    def num_dual_blocks(self) -> int:
        """Dual-stream blocks (the first `num_dual_blocks` indices of `blocks`)."""
        return len(self.transformer.transformer_blocks)

    @property
    def patch_size(self) -> tuple[int, int, int]:
        """(patch_size_t, patch_size, patch_size) from the config."""
        p = int(self.config.patch_size)
        return int(self.config.patch_size_t), p, p

    @classmethod
    def pixel_multiple(cls, transformer_config: dict, vae_config: dict | None) -> int:
        """What frame height and width must divide by, from the config files alone (VAE x patch; 16 on
        HunyuanVideo, whose pipeline refuses other sizes): the training preflight checks it before any load."""
        spatial = int((vae_config or {}).get(cls.vae_scale_keys[0], cls.default_vae_scale_spatial))
        return spatial * int(transformer_config["patch_size"])

    def instrumented_processor(self, controller, original, block: int, attention: str):
        """:class:`InstrumentedHunyuanVideoProcessor` (loaded here: it builds on `motionguide.attention`)."""
        from .processor import InstrumentedHunyuanVideoProcessor

        return InstrumentedHunyuanVideoProcessor(controller, original, block, attention)

    def runs_classifier_free_guidance(self, step_index: int | None = None) -> bool | None:
        """False: no HunyuanVideo call batches [uncond; cond] (guidance is embedded; true CFG is a separate pass)."""
        return False if self._pipeline is not None else None

    # ------------------------------------------------------------------ predict (latents and targets: the mixins)
    def predict(self, latents, timesteps, prompt_embeds, model=None, guidance: float | None = None):
        """Call the transformer on a packed prompt (see :meth:`encode_prompt`) at `guidance` (default
        `training_guidance`), as the pipeline does: guidance scale x 1000, in the transformer's dtype."""
        model = model if model is not None else self.transformer
        embeds, mask, pooled = unpack_prompt(prompt_embeds, int(self.config.pooled_projection_dim))
        scale = self.training_guidance if guidance is None else guidance
        batch = latents.shape[0]
        guidance_input = None
        if self.config.guidance_embeds:
            guidance_input = torch.full((batch,), scale * 1000.0, device=latents.device, dtype=latents.dtype)
        return model(hidden_states=latents, timestep=timesteps.to(latents.dtype) if timesteps.is_floating_point()
                     else timesteps, encoder_hidden_states=embeds, encoder_attention_mask=mask,
                     pooled_projections=pooled, guidance=guidance_input, return_dict=False)[0]

    # ------------------------------------------------------------------ text
    @property
    def pipeline_class(self) -> type:
        """`diffusers.HunyuanVideoPipeline`."""
        from diffusers import HunyuanVideoPipeline

        return HunyuanVideoPipeline

    def pipeline(self) -> Any:
        """The stock `HunyuanVideoPipeline` over this backbone's components (its second text encoder, CLIP, is
        read from the pipeline this backbone was built from)."""
        if self._pipeline is None:
            raise ValueError("HunyuanVideo needs its pipeline (Llama and CLIP text encoders): build the backbone "
                             "with backbone_for(pipeline)")
        return self._pipeline

    def encode_prompt(self, prompts, max_sequence_length: int, device=None) -> torch.Tensor:
        """The pipeline's (Llama embeddings, mask, CLIP pooled) for `prompts`, packed into one tensor
        (:func:`pack_prompt`), so caches and batches carry one tensor per clip as for the other families.

        The pipeline's Llama prompt template is diffusers' default (Llama-3 system text, 95 tokens cropped) unless
        the pipeline object carries its own as `pipe.prompt_template` (for a tokenizer that is not Llama-3's)."""
        pipe = self.pipeline()
        if pipe.text_encoder is None or pipe.text_encoder_2 is None:
            raise ValueError("hunyuanvideo backbone has no text encoders attached (Llama and CLIP): load the full "
                             "pipeline, or pass prompt embeddings packed with pack_prompt")
        device = device if device is not None else pipe.text_encoder.device
        embeds, pooled, mask = pipe.encode_prompt(prompt=prompts, device=device, prompt_template=self.prompt_template(),
                                                  max_sequence_length=max_sequence_length)
        if not bool(mask.sum(dim=1).all()):
            raise ValueError("the HunyuanVideo prompt template's crop removed every prompt token (its crop_start "
                             "counts Llama-3 tokens): with another tokenizer set pipe.prompt_template = "
                             "{'template': '{}', 'crop_start': 0} or a template written for that tokenizer")
        return pack_prompt(embeds, mask, pooled)

    def check_components(self) -> None:
        """One-line `ConfigError` when the VAE's latent channels, the Llama encoder's width or CLIP's pooled width
        differ from what the transformer's config expects (e.g. a LoRA folder's base model from another family)."""
        from ...errors import ConfigError

        cfg = self.config
        pipe = self._pipeline
        checks = []
        if self.vae is not None:
            checks.append(("vae latent_channels", getattr(self.vae.config, "latent_channels", None),
                           "transformer in_channels", cfg.in_channels))
        if self.text_encoder is not None:
            checks.append(("text_encoder hidden_size", getattr(self.text_encoder.config, "hidden_size", None),
                           "transformer text_embed_dim", cfg.text_embed_dim))
        clip = getattr(pipe, "text_encoder_2", None)
        if clip is not None:
            checks.append(("text_encoder_2 hidden_size", getattr(clip.config, "hidden_size", None),
                           "transformer pooled_projection_dim", cfg.pooled_projection_dim))
        for name, value, expected_name, expected in checks:
            if value is not None and int(value) != int(expected):
                raise ConfigError(f"hunyuanvideo components do not fit: {name} is {value} but {expected_name} is "
                                  f"{expected}; load the VAE and text encoders released with this transformer")

    def describe(self) -> dict[str, Any]:
        """The base description plus the split between dual- and single-stream blocks."""
        return {**super().describe(), "dual_stream_blocks": self.num_dual_blocks}
