"""Wan2.1 / Wan2.2 text-to-video transformers (`WanTransformer3DModel`).

Wan2.2 brings two things the adapter must know (diffusers' `WanPipeline`):

- TI2V-5B: a VAE of 48 latent channels that compresses 16x16 spatially (Wan2.1's: 16 channels, 8x8), and
  `expand_timesteps`, a timestep per token so that an image-to-video first frame can stay clean (t = 0). For
  text-to-video every token's timestep is the step's t, which is the same model input as one t per sample (the
  transformer only broadcasts it), so training and the Motive pass pass one t per sample.
- T2V-A14B: two experts, `transformer` for t >= boundary_ratio x num_train_timesteps (high noise; 0.875 x 1000 =
  875 in the release) and `transformer_2` below it (low noise). Every single-timestep call uses the expert
  that owns its timestep (:meth:`for_timestep`): Motive's t = 751 < 875 runs on `transformer_2`. Fine-tuning
  trains a LoRA per expert, each sample on the expert of its timestep (`motionguide/training/experts.py`).

Image-to-video (`WanImageToVideoPipeline`), two ways the transformer reads the image:

- Wan2.1-I2V (and Wan2.2-I2V-A14B): `in_channels` 36 = 16 noisy latent channels + a 4-channel mask (ones on latent
  frame 0) + 16 channels of the VAE latents of [image, zeros...] (the whole clip length); Wan2.1-I2V also reads the
  image's CLIP embeddings (`image_dim`) through the added key / value projections of its cross-attention, which
  the stock processor splits from the text at 512 text tokens.
- Wan2.2-TI2V-5B (`expand_timesteps`): latent frame 0 is the image's latents, at timestep 0 on its tokens.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..base import FlowMatchingTargets, SamplingDefaults, VideoBackbone
from ..component_checks import config_value, is_image_to_video, require_equal, text_encoder_width

#: text tokens the stock Wan attention processor assumes when it splits image from text context (Wan2.1-I2V)
WAN_I2V_TEXT_LENGTH = 512

#: latent channels of the Wan2.2 VAE (TI2V-5B), which compresses 16x16 spatially; Wan2.1's has 16 and 8x8
WAN22_VAE_CHANNELS = 48
WAN22_VAE_SCALE_SPATIAL = 16


class WanBackbone(FlowMatchingTargets, VideoBackbone):
    """Wan: video self-attention `attn1` (3D RoPE), text only in the cross-attention `attn2`.

    Latents are normalised per channel with the VAE's `latents_mean` / `latents_std`; the model is a
    rectified-flow velocity predictor: x_t = (1 - s) x0 + s eps, target eps - x0, s = t / 1000.
    """

    family = "wan"
    transformer_class_names = ("WanTransformer3DModel",)
    text_layout = "cross"
    cfg_layout = "separate"
    display_name = "Wan"
    attention_names = ("attn1", "attn2")
    vae_scale_keys = ("scale_factor_spatial", "scale_factor_temporal")
    latent_layout = "BCFHW"
    #: Wan2.1 T2V as its model card and `WanPipeline` sample it: 81 frames of 480x832 at 16 fps, 512 text tokens
    sampling_defaults = SamplingDefaults(num_frames=81, height=480, width=832, steps=50, cfg=5.0, fps=16,
                                         max_sequence_length=512)

    @property
    def blocks(self) -> Sequence[torch.nn.Module]:
        """The transformer's `blocks`."""
        return self.transformer.blocks

    @property
    def patch_size(self) -> tuple[int, int, int]:
        """The config's (time, height, width) patch size."""
        p = self.config.patch_size
        return int(p[0]), int(p[1]), int(p[2])

    @property
    def vae_scale_spatial(self) -> int:
        """The VAE's `scale_factor_spatial` when a VAE is attached; else 16 for a transformer that outputs the
        Wan2.2 VAE's 48 channels (TI2V-5B), 8 otherwise."""
        if self.vae is None:
            return _default_spatial_scale(self.config.out_channels)
        return super().vae_scale_spatial

    def instrumented_processor(self, controller, original, block: int, attention: str):
        """:class:`InstrumentedWanProcessor` (loaded here: the processor module builds on `motionguide.attention`)."""
        from .processor import InstrumentedWanProcessor

        return InstrumentedWanProcessor(controller, original, block, attention)

    def _latent_stats(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.vae is None:
            raise ValueError("Wan latent normalisation needs the VAE (its config holds latents_mean / latents_std)")
        cfg = self.vae.config
        shape = (1, int(cfg.z_dim), 1, 1, 1)
        mean = torch.tensor(cfg.latents_mean, dtype=torch.float32).view(shape)
        std = torch.tensor(cfg.latents_std, dtype=torch.float32).view(shape)
        return mean.to(latents.device, latents.dtype), std.to(latents.device, latents.dtype)

    def normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(latents - latents_mean) / latents_std, per channel, from the VAE config."""
        mean, std = self._latent_stats(latents)
        return (latents - mean) / std

    def denormalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """latents * latents_std + latents_mean, per channel, from the VAE config."""
        mean, std = self._latent_stats(latents)
        return latents * std + mean

    def predict(self, latents, timesteps, prompt_embeds, model=None, condition=None):
        """Call the transformer on VAE-layout latents (Wan needs no layout change). Image-to-video: `condition`
        (see :meth:`encode_condition`) joins the input as the stock `WanImageToVideoPipeline` joins it."""
        model = model if model is not None else self.transformer
        condition = self.check_condition(condition)
        if not condition:
            return model(hidden_states=latents, timestep=timesteps, encoder_hidden_states=prompt_embeds,
                         return_dict=False)[0]
        extra = {}
        if self.image_conditioning == "first_frame":  # TI2V: frame 0 is the image, its tokens at t = 0
            image = condition["image_latents"].to(latents.device, latents.dtype)
            hidden = torch.cat([image.expand(latents.shape[0], -1, -1, -1, -1), latents[:, :, 1:]], dim=2)
            timesteps = self._first_frame_timesteps(hidden, timesteps)
            out = model(hidden_states=hidden, timestep=timesteps, encoder_hidden_states=prompt_embeds,
                        return_dict=False)[0]
            return out
        video = condition["condition_latents"].to(latents.device, latents.dtype)
        if video.shape[2:] != latents.shape[2:]:
            raise ValueError(f"Wan image-to-video: the condition's latent grid {tuple(video.shape[2:])} differs from "
                             f"the latents' {tuple(latents.shape[2:])}; encode it for this clip's size and length "
                             "(encode_condition(first_frame, num_frames))")
        mask = torch.zeros_like(video[:, :self.vae_scale_temporal])
        mask[:, :, 0] = 1.0  # the latent frame that holds the image
        hidden = torch.cat([latents, torch.cat([mask, video], dim=1).expand(latents.shape[0], -1, -1, -1, -1)],
                           dim=1)
        if "image_embeds" in condition:
            if prompt_embeds.shape[1] != WAN_I2V_TEXT_LENGTH:
                raise ValueError(f"Wan image-to-video: the stock attention splits image and text context at "
                                 f"{WAN_I2V_TEXT_LENGTH} text tokens; encode prompts with max_sequence_length="
                                 f"{WAN_I2V_TEXT_LENGTH} (got {prompt_embeds.shape[1]})")
            embeds = condition["image_embeds"].to(latents.device, prompt_embeds.dtype)
            extra["encoder_hidden_states_image"] = embeds.expand(latents.shape[0], -1, -1)
        return model(hidden_states=hidden, timestep=timesteps, encoder_hidden_states=prompt_embeds,
                     return_dict=False, **extra)[0]

    def conditioned_latent_frames(self, condition) -> int:
        """1 under "first_frame" conditioning (TI2V: latent frame 0 is the image, not denoised), else 0."""
        return 1 if condition and self.image_conditioning == "first_frame" else 0

    def _first_frame_timesteps(self, hidden: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """[B, tokens]: each token's timestep as `expand_timesteps` gives it, 0 on latent frame 0's tokens."""
        grid = self.token_grid(hidden.shape)
        t = timesteps.reshape(-1, 1).to(hidden.device).expand(hidden.shape[0], grid.num_tokens).clone()
        t[:, :grid.tokens_per_frame] = 0
        return t

    # ------------------------------------------------------------------ image-to-video
    @property
    def image_conditioning(self) -> str | None:
        """How the transformer reads a conditioning image: "channels" (Wan2.1-I2V, Wan2.2-I2V-A14B: more input
        channels than output), "first_frame" (an image-to-video pipeline with `expand_timesteps`, Wan2.2-TI2V-5B),
        or None (text-to-video)."""
        if int(self.config.in_channels) != int(self.config.out_channels):
            return "channels"
        pipe = self._pipeline
        if is_image_to_video(pipe) and getattr(getattr(pipe, "config", None), "expand_timesteps", False):
            return "first_frame"
        return None

    @property
    def conditions_on_image(self) -> bool:
        """Whether the transformer reads a conditioning image (see :attr:`image_conditioning`)."""
        return self.image_conditioning is not None

    def encode_condition(self, image, num_frames, generator=None):
        """What `WanImageToVideoPipeline` computes from its image (`generator` is unused: it takes the posterior's
        mode, "argmax"): "channels": {"condition_latents": the VAE latents of [image, zeros x (num_frames - 1)],
        normalised as the pipeline does, and "image_embeds": the CLIP image encoder's penultimate hidden states when
        the transformer has `image_dim`}; "first_frame": {"image_latents": the image alone through the VAE,
        normalised}."""
        mode = self.image_conditioning
        if mode is None:
            return {}
        if self.vae is None:
            raise ValueError("Wan image-to-video conditioning needs the VAE: build the backbone from the pipeline")
        x = image.to(self.vae.device, torch.float32).unsqueeze(2)  # [B, 3, 1, H, W]
        if mode == "channels":
            x = torch.cat([x, x.new_zeros(x.shape[0], x.shape[1], num_frames - 1, *x.shape[3:])], dim=2)
        latents = self.vae.encode(x.to(self.vae.dtype)).latent_dist.mode().float()
        cfg = self.vae.config
        mean = torch.tensor(cfg.latents_mean).view(1, int(cfg.z_dim), 1, 1, 1).to(latents.device, latents.dtype)
        inverse_std = 1.0 / torch.tensor(cfg.latents_std).view(1, int(cfg.z_dim), 1, 1, 1).to(latents.device,
                                                                                             latents.dtype)
        latents = (latents - mean) * inverse_std  # the pipeline's operations (a product, not a division)
        if mode == "first_frame":
            return {"image_latents": latents}
        condition = {"condition_latents": latents}
        if self.config.image_dim is not None:
            condition["image_embeds"] = self._clip_image_embeds(image)
        return condition

    def _clip_image_embeds(self, image: torch.Tensor) -> torch.Tensor:
        """The pipeline's `encode_image`: the image processor on the uint8 images, then the image encoder's
        penultimate hidden states."""
        from PIL import Image

        pipe = self._pipeline
        encoder = getattr(pipe, "image_encoder", None)
        processor = getattr(pipe, "image_processor", None)
        if encoder is None or processor is None:
            raise ValueError("Wan2.1 image-to-video conditioning needs the pipeline's image_encoder and "
                             "image_processor (CLIP): build the backbone from the WanImageToVideoPipeline")
        pixels = ((image.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        pil = [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pixels]
        inputs = processor(images=pil, return_tensors="pt").to(next(encoder.parameters()).device)
        return encoder(**inputs, output_hidden_states=True).hidden_states[-2].float()

    # ------------------------------------------------------------------ Wan2.2 A14B: two experts
    _expert_set: tuple[torch.nn.Module, ...] | None = None

    @property
    def experts(self) -> tuple[torch.nn.Module, ...]:
        """(`transformer`, `transformer_2`) for a two-expert pipeline (Wan2.2 A14B), else (`transformer`,)."""
        if self._expert_set is not None:  # a view made by for_expert: its parent's experts
            return self._expert_set
        second = getattr(self._pipeline, "transformer_2", None)
        return (self.transformer,) if second is None else (self.transformer, second)

    @property
    def boundary_timestep(self) -> float | None:
        """`boundary_ratio x num_train_timesteps` of a two-expert pipeline (875 for Wan2.2-T2V-A14B), else None."""
        if len(self.experts) < 2:
            return None
        ratio = getattr(getattr(self._pipeline, "config", None), "boundary_ratio", None)
        if ratio is None:
            return None
        scheduler = self.scheduler if self.scheduler is not None else getattr(self._pipeline, "scheduler", None)
        train_steps = int(getattr(getattr(scheduler, "config", None), "num_train_timesteps", 1000))
        return float(ratio) * train_steps

    def expert_index(self, timestep: float) -> int:
        """0 (`transformer`, high noise) when t >= the boundary or there is none, 1 (`transformer_2`) below it:
        the stock `WanPipeline`'s rule."""
        boundary = self.boundary_timestep
        if isinstance(timestep, torch.Tensor):
            timestep = float(timestep.flatten()[0])
        return 0 if boundary is None or float(timestep) >= boundary else 1

    @property
    def expert_names(self) -> tuple[str, ...]:
        """("transformer", "transformer_2") for a two-expert pipeline, else ("transformer",)."""
        return ("transformer", "transformer_2")[:len(self.experts)]

    def for_expert(self, index: int) -> "WanBackbone":
        """This adapter over expert `index` (the same components, pipeline and scheduler)."""
        if index == self.expert:
            return self
        experts = self.experts
        if not 0 <= index < len(experts):
            raise IndexError(f"this Wan pipeline has {len(experts)} transformer(s); expert {index} does not exist")
        view = type(self)(experts[index], vae=self.vae, text_encoder=self.text_encoder,
                          tokenizer=self.tokenizer, scheduler=self.scheduler, pipeline=self._pipeline)
        view.expert, view._expert_set = index, experts
        return view

    def cfg_scale(self) -> float:
        """`guidance_scale_2` of the current call for the low-noise expert of a two-expert pipeline (the stock
        pipeline defaults it to `guidance_scale`), else `guidance_scale`."""
        second = getattr(self._pipeline, "_guidance_scale_2", None)
        if self.expert == 1 and second is not None:
            return float(second)
        return super().cfg_scale()

    def default_profile(self):
        """The shipped Wan2.2-T2V-A14B profile for a two-expert pipeline (its experts share Wan2.1-14B's shape,
        not its layer choices), else the profile matching the transformer's shape."""
        if len(self.experts) > 1:
            from ..profiles import load_profile

            return load_profile("wan2.2-t2v-a14b")
        return super().default_profile()

    def check_components(self) -> None:
        """The VAE's `z_dim` must equal the transformer's `out_channels` (and `in_channels` for text-to-video;
        Wan image-to-video transformers take extra conditioning channels), and the text encoder's `d_model`
        the transformer's `text_dim`."""
        for index, expert in enumerate(self.experts[1:], start=2):
            for key in ("in_channels", "out_channels", "text_dim"):
                require_equal((f"transformer.config.{key}", config_value(self.transformer, key)),
                              (f"transformer_{index}.config.{key}", config_value(expert, key)),
                              "load both experts of the same model (one pipeline folder)")
        latent = ("vae.config.z_dim", config_value(self.vae, "z_dim")) if self.vae is not None else ("vae", None)
        same_model = "load the VAE and transformer of the same model (one pipeline folder)"
        if not is_image_to_video(self._pipeline):
            require_equal(latent, ("transformer.config.in_channels", config_value(self.transformer, "in_channels")),
                          f"{same_model}; text-to-video needs in_channels = z_dim")
        require_equal(latent, ("transformer.config.out_channels", config_value(self.transformer, "out_channels")),
                      same_model)
        field, width = text_encoder_width(self.text_encoder)
        require_equal((f"text_encoder.config.{field}", width),
                      ("transformer.config.text_dim", config_value(self.transformer, "text_dim")),
                      "load the text encoder the transformer was trained with (Wan2.1, Wan2.2: UMT5-XXL, d_model 4096)")

    @property
    def pipeline_class(self) -> type:
        """`diffusers.WanPipeline`, or `WanImageToVideoPipeline` for an image-to-video model."""
        from diffusers import WanImageToVideoPipeline, WanPipeline

        return WanImageToVideoPipeline if self.conditions_on_image else WanPipeline

    @classmethod
    def pixel_multiple(cls, transformer_config: dict, vae_config: dict | None) -> int:
        """What frame height and width must divide by, from the config files alone (VAE x patch; 16 on Wan2.1,
        32 on Wan2.2-TI2V-5B)."""
        default = _default_spatial_scale(transformer_config.get("out_channels", 16))
        spatial = int((vae_config or {}).get(cls.vae_scale_keys[0], default))
        return spatial * int(transformer_config["patch_size"][1])


def _default_spatial_scale(out_channels) -> int:
    """The VAE factor a Wan transformer implies without its VAE: its latent channels name the VAE."""
    if int(out_channels) == WAN22_VAE_CHANNELS:
        return WAN22_VAE_SCALE_SPATIAL
    return WanBackbone.default_vae_scale_spatial
