"""CogVideoX transformers (`CogVideoXTransformer3DModel`): one joint text+video attention per block.

CogVideoX-5B-I2V (`CogVideoXImageToVideoPipeline`) is the same transformer reading twice the latent channels: the
noisy latents, then the conditioning image's latents at latent frame 0 and zeros after it, concatenated on the
channel axis. The adapter tells it from the config (`in_channels == 2 x out_channels`) and builds that input in
:meth:`CogVideoXBackbone.predict` from :meth:`CogVideoXBackbone.encode_condition`'s image latents.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..base import SamplingDefaults, ScaledLatents, VideoBackbone
from ..component_checks import config_value, is_image_to_video, require_equal, text_encoder_width


class CogVideoXBackbone(ScaledLatents, VideoBackbone):
    """CogVideoX: `attn1` is joint attention over [text (226 slots); video]; no separate cross-attention.

    Latents are scaled by the VAE's `scaling_factor`; the transformer consumes [B, F, C, H, W] and predicts
    v (DDPM-style schedule from the scheduler's `alphas_cumprod`).
    """

    family = "cogvideox"
    transformer_class_names = ("CogVideoXTransformer3DModel",)
    text_layout = "joint_first"
    cfg_layout = "uncond_cond"
    display_name = "CogVideoX"
    attention_names = ("attn1", "attn1")  # joint attention: one module holds video x video and video x text
    vae_scale_keys = (None, "temporal_compression_ratio")  # spatial: from the VAE's stages (vae_scale_spatial)
    latent_layout = "BFCHW"
    #: CogVideoX-2B/5B as their model cards and `CogVideoXPipeline` sample them: 49 frames of 480x720 at 8 fps,
    #: 226 text tokens (the joint attention's fixed text length)
    sampling_defaults = SamplingDefaults(num_frames=49, height=480, width=720, steps=50, cfg=6.0, fps=8,
                                         max_sequence_length=226)

    @property
    def blocks(self) -> Sequence[torch.nn.Module]:
        """The transformer's `transformer_blocks`."""
        return self.transformer.transformer_blocks

    @property
    def patch_size(self) -> tuple[int, int, int]:
        """(time, height, width) patch; time is 1 when the config sets no `patch_size_t`."""
        p = int(self.config.patch_size)
        pt = self.config.patch_size_t
        return (int(pt) if pt else 1), p, p

    @property
    def vae_scale_spatial(self) -> int:
        """2 ** (VAE down-sampling stages) when a VAE is attached, else the default."""
        if self.vae is not None:
            return 2 ** (len(self.vae.config.block_out_channels) - 1)
        return self.default_vae_scale_spatial

    def instrumented_processor(self, controller, original, block: int, attention: str):
        """:class:`InstrumentedCogVideoXProcessor` (loaded here: it builds on `motionguide.attention`)."""
        from .processor import InstrumentedCogVideoXProcessor

        return InstrumentedCogVideoXProcessor(controller, original, block, attention)

    def runs_classifier_free_guidance(self, step_index: int | None = None) -> bool | None:
        """CFG as the pipeline decided it at step 0 of the current call.

        `CogVideoXPipeline(use_dynamic_cfg=True)` rewrites its `guidance_scale` after every step, to values that no
        longer say whether it batches [uncond; cond]: the batching it chose at the start of the call stays.
        """
        if step_index is None or step_index == 0 or getattr(self, "_cfg_at_first_step", None) is None:
            cfg = super().runs_classifier_free_guidance(step_index)
            if step_index is None:
                return cfg
            self._cfg_at_first_step = cfg
        return self._cfg_at_first_step

    def check_components(self) -> None:
        """The VAE's `latent_channels` must equal the transformer's `out_channels`, and its `in_channels` for
        text-to-video (CogVideoX-I2V's transformer takes twice the latent channels: noise and image latents, which
        an image-to-video pipeline accepts); the text encoder's `d_model` must equal `text_embed_dim`."""
        latent = (("vae.config.latent_channels", config_value(self.vae, "latent_channels"))
                  if self.vae is not None else ("vae", None))
        same_model = "load the VAE and transformer of the same model (one pipeline folder)"
        in_channels = config_value(self.transformer, "in_channels")
        if is_image_to_video(self._pipeline):
            doubled = ("2 x vae.config.latent_channels", None if latent[1] is None else 2 * latent[1])
            require_equal(doubled, ("transformer.config.in_channels", in_channels),
                          f"{same_model}; an image-to-video pipeline needs an image-to-video transformer "
                          "(CogVideoX-5B-I2V: in_channels = 2 x latent_channels)")
        else:
            fix = f"{same_model}; text-to-video needs in_channels = latent_channels"
            if latent[1] is not None and in_channels == 2 * latent[1]:
                fix = ("this is an image-to-video transformer (in_channels = 2 x latent_channels, CogVideoX-I2V), not "
                       "a text-to-video one: "
                       "load it with CogVideoXImageToVideoPipeline, as its model folder's model_index.json names it")
            require_equal(latent, ("transformer.config.in_channels", in_channels), fix)
        require_equal(latent, ("transformer.config.out_channels", config_value(self.transformer, "out_channels")),
                      same_model)
        field, width = text_encoder_width(self.text_encoder)
        require_equal((f"text_encoder.config.{field}", width),
                      ("transformer.config.text_embed_dim", config_value(self.transformer, "text_embed_dim")),
                      "load the text encoder the transformer was trained with (CogVideoX: T5-XXL, d_model 4096)")

    def _alphas(self, timesteps: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.scheduler is None or not hasattr(self.scheduler, "alphas_cumprod"):
            raise ValueError("CogVideoX noising needs its DDIM/DPM scheduler (alphas_cumprod); pass scheduler=")
        index = timesteps.to(like.device).long().clamp(0, len(self.scheduler.alphas_cumprod) - 1)
        ac = self.scheduler.alphas_cumprod.to(like.device, torch.float32)[index]
        ac = ac.view(-1, *([1] * (like.ndim - 1)))
        return ac.sqrt(), (1.0 - ac).sqrt()

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """sqrt(a) x0 + sqrt(1 - a) eps with a the scheduler's `alphas_cumprod` at each timestep."""
        a, s = self._alphas(timesteps, latents)
        return (a * latents.float() + s * noise.float()).to(latents.dtype)

    def training_target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The v target: sqrt(a) eps - sqrt(1 - a) x0."""
        a, s = self._alphas(timesteps, latents)
        return (a * noise.float() - s * latents.float()).to(latents.dtype)

    def rotary_embeddings(self, latents: torch.Tensor):
        """3D RoPE for latents [B, C, F, H, W] when the model uses it (CogVideoX-5B), built as the pipeline does."""
        if not self.config.use_rotary_positional_embeddings:
            return None
        _, _, f, h, w = latents.shape
        s = self.vae_scale_spatial
        return self.pipeline()._prepare_rotary_positional_embeddings(h * s, w * s, f, latents.device)

    # ------------------------------------------------------------------ image-to-video (CogVideoX-5B-I2V)
    @property
    def conditions_on_image(self) -> bool:
        """An image-to-video transformer: it reads twice the channels it writes (noise + image latents)."""
        return int(self.config.in_channels) == 2 * int(self.config.out_channels)

    def encode_condition(self, image, num_frames, generator=None):
        """{"image_latents": [B, C, 1, h, w]}: each image alone through the VAE (a one-frame video), scaled by the
        VAE's `scaling_factor` (divided, for a VAE with `invert_scale_latents`), as
        `CogVideoXImageToVideoPipeline.prepare_latents` does; the transformer input pads frames 1.. with zeros."""
        if not self.conditions_on_image:
            return {}
        if self.vae is None:
            raise ValueError("CogVideoX-I2V conditioning needs the VAE: build the backbone from the pipeline")
        x = image.to(self.vae.device, self.vae.dtype).unsqueeze(2)  # [B, 3, 1, H, W]
        latents = []
        for one in x:  # one encode per image, drawing from `generator` in order, as the pipeline does
            posterior = self.vae.encode(one[None]).latent_dist
            latents.append(posterior.sample(generator) if generator is not None else posterior.mode())
        latents = torch.cat(latents).float()
        scale = self._scaling_factor
        latents = latents / scale if getattr(self.vae.config, "invert_scale_latents", False) else latents * scale
        return {"image_latents": latents}

    def _model_input(self, latents: torch.Tensor, condition) -> torch.Tensor:
        """[B, F, C(, + C), H, W]: the noisy latents, and for I2V the image latents at frame 0 then zeros."""
        hidden = self.to_transformer_layout(latents)
        if not self.conditions_on_image:
            return hidden
        image = self.to_transformer_layout(condition["image_latents"]).to(hidden.device, hidden.dtype)
        if image.shape[0] != hidden.shape[0]:
            image = image.expand(hidden.shape[0], *image.shape[1:])
        b, f, c, h, w = hidden.shape
        padding = hidden.new_zeros(b, f - image.shape[1], image.shape[2], h, w)
        return torch.cat([hidden, torch.cat([image, padding], dim=1)], dim=2)

    def predict(self, latents, timesteps, prompt_embeds, model=None, condition=None):
        """Call the transformer in [B, F, C, H, W] layout with integer timesteps and RoPE if the model uses it;
        an image-to-video transformer also gets the image latents (`condition`, see :meth:`encode_condition`) on
        the channel axis and, when its config has `ofs_embed_dim` (CogVideoX1.5-I2V), the pipeline's ofs of 2."""
        model = model if model is not None else self.transformer
        condition = self.check_condition(condition)
        extra = {}
        if self.conditions_on_image and self.config.ofs_embed_dim is not None:
            extra["ofs"] = latents.new_full((1,), 2.0)
        out = model(hidden_states=self._model_input(latents, condition), encoder_hidden_states=prompt_embeds,
                    timestep=timesteps.long() if timesteps.is_floating_point() else timesteps,
                    image_rotary_emb=self.rotary_embeddings(latents), return_dict=False, **extra)[0]
        return self.from_transformer_layout(out)

    @property
    def pipeline_class(self) -> type:
        """`diffusers.CogVideoXPipeline`, or `CogVideoXImageToVideoPipeline` for an image-to-video transformer."""
        from diffusers import CogVideoXImageToVideoPipeline, CogVideoXPipeline

        return CogVideoXImageToVideoPipeline if self.conditions_on_image else CogVideoXPipeline

    @classmethod
    def pixel_multiple(cls, transformer_config: dict, vae_config: dict | None) -> int:
        """What frame height and width must divide by, from the config files alone (VAE x patch; 16 on CogVideoX)."""
        stages = (vae_config or {}).get("block_out_channels")
        spatial = 2 ** (len(stages) - 1) if stages else cls.default_vae_scale_spatial
        return spatial * int(transformer_config["patch_size"])
