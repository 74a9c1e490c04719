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
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..base import SamplingDefaults, TokenGrid, VideoBackbone
from ..component_checks import config_value, is_image_to_video, require_equal, text_encoder_width

#: latent channels of the Wan2.2 VAE (TI2V-5B), which compresses 16x16 spatially; Wan2.1's has 16 and 8x8
WAN22_VAE_CHANNELS = 48
WAN22_VAE_SCALE_SPATIAL = 16


class WanBackbone(VideoBackbone):
    """Wan: video self-attention `attn1` (3D RoPE), text only in the cross-attention `attn2`.

    Latents are normalised per channel with the VAE's `latents_mean` / `latents_std`; the model is a
    rectified-flow velocity predictor: x_t = (1 - s) x0 + s eps, target eps - x0, s = t / 1000.
    """

    family = "wan"
    transformer_class_names = ("WanTransformer3DModel",)
    text_layout = "cross"
    cfg_layout = "separate"
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
        if self.vae is not None:
            return int(self.vae.config.scale_factor_spatial)
        return _default_spatial_scale(self.config.out_channels)

    @property
    def vae_scale_temporal(self) -> int:
        """The VAE's `scale_factor_temporal` when a VAE is attached, else the default."""
        if self.vae is not None:
            return int(self.vae.config.scale_factor_temporal)
        return self.default_vae_scale_temporal

    def instrumented_processor(self, controller, original, block: int, attention: str):
        """:class:`InstrumentedWanProcessor` (loaded here: the processor module builds on `motionguide.attention`)."""
        from .processor import InstrumentedWanProcessor

        return InstrumentedWanProcessor(controller, original, block, attention)

    def video_self_attention(self, index: int) -> torch.nn.Module:
        """The self-attention `attn1` of block `index`."""
        return self.blocks[self.check_block(index)].attn1

    def text_attention(self, index: int) -> torch.nn.Module:
        """The cross-attention `attn2` of block `index`."""
        return self.blocks[self.check_block(index)].attn2

    def token_grid(self, latent_shape: Sequence[int]) -> TokenGrid:
        """Token grid of a [B, C, F, H, W] latent shape after patching."""
        if len(latent_shape) != 5:
            raise ValueError(f"Wan latents are [B, C, F, H, W]; got shape {tuple(latent_shape)}")
        _, _, f, h, w = latent_shape
        pt, ph, pw = self.patch_size
        return TokenGrid(f // pt, h // ph, w // pw)

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

    def to_transformer_layout(self, latents: torch.Tensor) -> torch.Tensor:
        """Unchanged: Wan consumes the VAE layout [B, C, F, H, W]."""
        return latents

    def from_transformer_layout(self, latents: torch.Tensor) -> torch.Tensor:
        """Unchanged: Wan outputs the VAE layout [B, C, F, H, W]."""
        return latents

    @staticmethod
    def _sigma(timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        sigma = timesteps.to(like.device, torch.float32) / 1000.0
        return sigma.view(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """(1 - s) x0 + s eps with s = t / 1000."""
        sigma = self._sigma(timesteps, latents)
        return ((1.0 - sigma) * latents.float() + sigma * noise.float()).to(latents.dtype)

    def training_target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The flow velocity eps - x0."""
        return noise - latents

    def predict(self, latents, timesteps, prompt_embeds, model=None):
        """Call the transformer on VAE-layout latents (Wan needs no layout change)."""
        model = model if model is not None else self.transformer
        return model(hidden_states=latents, timestep=timesteps, encoder_hidden_states=prompt_embeds,
                     return_dict=False)[0]

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
        """`diffusers.WanPipeline`."""
        from diffusers import WanPipeline

        return WanPipeline

    @classmethod
    def pixel_multiple(cls, transformer_config: dict, vae_config: dict | None) -> int:
        """What frame height and width must divide by, from the config files alone (VAE x patch; 16 on Wan2.1,
        32 on Wan2.2-TI2V-5B)."""
        default = _default_spatial_scale(transformer_config.get("out_channels", 16))
        spatial = int((vae_config or {}).get("scale_factor_spatial", default))
        return spatial * int(transformer_config["patch_size"][1])


def _default_spatial_scale(out_channels) -> int:
    """The VAE factor a Wan transformer implies without its VAE: its latent channels name the VAE."""
    if int(out_channels) == WAN22_VAE_CHANNELS:
        return WAN22_VAE_SCALE_SPATIAL
    return WanBackbone.default_vae_scale_spatial
