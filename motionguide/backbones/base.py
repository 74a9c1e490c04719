"""The `VideoBackbone` protocol: everything that differs between video DiT families, in one place.

Method code (attribution, correspondence, saliency) and the attention instruments ask the backbone for token grids,
attention modules and their instrumented processors, which batch rows are conditional, the sampling step of a call,
the parameters of a block, latent normalisation and training targets, and never branch on a diffusers class
themselves. Each family is a folder next to this file (`wan/`, `cogvideox/`: adapter + instrumented processor);
`registry.py` is the one place that lists them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    from .profiles import LayerProfile


@dataclass(frozen=True)
class TokenGrid:
    """Tokens of one clip inside the transformer, in (frame, row, column) order."""

    frames: int
    height: int
    width: int

    @property
    def tokens_per_frame(self) -> int:
        """Tokens in one latent frame (height x width)."""
        return self.height * self.width

    @property
    def num_tokens(self) -> int:
        """Tokens in the whole clip (frames x height x width)."""
        return self.frames * self.height * self.width

    def as_tuple(self) -> tuple[int, int, int]:
        """The grid as (frames, height, width)."""
        return (self.frames, self.height, self.width)


@dataclass(frozen=True)
class SamplingDefaults:
    """The video a family's released checkpoints make when the user names no size: frames, height, width,
    denoising steps, classifier-free guidance scale, playback fps and text tokens per prompt.

    They belong to the family because they are what its model cards and stock pipelines use; a model folder's
    own `sampling_defaults.json` (the toy model ships one) and the user's flags override them.
    """

    num_frames: int
    height: int
    width: int
    steps: int
    cfg: float
    fps: int
    #: None: the pipeline's own default text length
    max_sequence_length: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (the keys of `sampling_defaults.json` and `SamplingSettings`)."""
        return asdict(self)


#: for a family that declares none: a short, small clip (a registered family should set its own)
GENERIC_SAMPLING_DEFAULTS = SamplingDefaults(num_frames=17, height=64, width=64, steps=25, cfg=5.0, fps=8)


class VideoBackbone(ABC):
    """Adapter around one diffusers video transformer (plus optional VAE, text encoder, tokenizer, scheduler).

    Subclasses set the class attributes below and implement the abstract methods. Construct one with
    :func:`motionguide.backbones.backbone_for`, which looks the adapter up from the transformer's class.
    """

    family: ClassVar[str]
    #: diffusers transformer class names this adapter handles
    transformer_class_names: ClassVar[tuple[str, ...]]
    #: "cross": text only in a separate cross-attention; "joint_first": text tokens precede video in one sequence;
    #: "joint_last": text tokens follow video in one sequence (the family's processor marks its captures
    #: `text_last`, so methods read video and text rows through the capture's accessors either way)
    text_layout: ClassVar[str]
    #: how the stock pipeline runs classifier-free guidance: "separate" passes (cache contexts "cond" and
    #: "uncond") or one "uncond_cond" batch [uncond; cond] in a "cond_uncond" context (see `conditional_rows`),
    #: or "embedded": a guidance-distilled model whose guidance scale is a transformer input, one "cond" pass per
    #: step and an "uncond" pass only under true CFG (rows as for "separate")
    cfg_layout: ClassVar[str]
    #: frames, size, steps, CFG, fps and text length of a sample when the user sets none (see SamplingDefaults)
    sampling_defaults: ClassVar[SamplingDefaults] = GENERIC_SAMPLING_DEFAULTS
    #: VAE factors used when no VAE is attached (real-model defaults)
    default_vae_scale_spatial: ClassVar[int] = 8
    default_vae_scale_temporal: ClassVar[int] = 4
    # Names in which the built-in families differ where their code is otherwise the same: each adapter states its
    # own once and the implementations below read them (a family that sets none overrides what would read it).
    #: the family's name in messages ("CogVideoX"; None: `family`)
    display_name: ClassVar[str | None] = None
    #: block attributes of the video self-attention and of the attention where video queries meet text keys (a
    #: joint family names its one attention twice); read by `video_self_attention` / `text_attention`
    attention_names: ClassVar[tuple[str, str] | None] = None
    #: VAE config keys of the spatial and temporal factors (None: the default factor above)
    vae_scale_keys: ClassVar[tuple[str | None, str | None]] = (None, None)
    #: the axes of latents in the transformer: "BCFHW" (the VAE layout) or "BFCHW" (CogVideoX); read by
    #: `token_grid` and the layout conversions
    latent_layout: ClassVar[str | None] = None

    def __init__(
        self,
        transformer: torch.nn.Module,
        vae: Any = None,
        text_encoder: Any = None,
        tokenizer: Any = None,
        scheduler: Any = None,
        pipeline: Any = None,
    ):
        self.transformer = transformer
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self._pipeline = pipeline

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pipeline(cls, pipeline: Any) -> "VideoBackbone":
        """Adapter over a loaded pipeline's transformer, VAE, text encoder, tokenizer and scheduler."""
        return cls(
            pipeline.transformer,
            vae=getattr(pipeline, "vae", None),
            text_encoder=getattr(pipeline, "text_encoder", None),
            tokenizer=getattr(pipeline, "tokenizer", None),
            scheduler=getattr(pipeline, "scheduler", None),
            pipeline=pipeline,
        )

    # ------------------------------------------------------------------ architecture
    @property
    def config(self) -> Any:
        """The transformer's diffusers config."""
        return self.transformer.config

    @property
    @abstractmethod
    def blocks(self) -> Sequence[torch.nn.Module]:
        """The transformer blocks, in order."""

    @property
    def num_blocks(self) -> int:
        """Number of transformer blocks."""
        return len(self.blocks)

    @property
    def num_heads(self) -> int:
        """Attention heads per block."""
        return int(self.config.num_attention_heads)

    @property
    def head_dim(self) -> int:
        """Channels per attention head."""
        return int(self.config.attention_head_dim)

    @property
    @abstractmethod
    def patch_size(self) -> tuple[int, int, int]:
        """Transformer patch size (time, height, width) in latent units."""

    @property
    def vae_scale_spatial(self) -> int:
        """Pixels per latent cell along height and width: the VAE config's value under the family's spatial
        `vae_scale_keys` when a VAE is attached, else the default."""
        return self._vae_factor(self.vae_scale_keys[0], self.default_vae_scale_spatial)

    @property
    def vae_scale_temporal(self) -> int:
        """Pixel frames per latent frame (after the first) under the causal VAE: the VAE config's value under the
        family's temporal `vae_scale_keys` when a VAE is attached, else the default."""
        return self._vae_factor(self.vae_scale_keys[1], self.default_vae_scale_temporal)

    def _vae_factor(self, key: str | None, default: int) -> int:
        if key is None or self.vae is None:
            return default
        return int(getattr(self.vae.config, key))

    @property
    def _name(self) -> str:
        """The family's name in messages."""
        return self.display_name or self.family

    def _unnamed(self, what: str, fix: str) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__} ({self.family}) declares no {what}: set {fix}")

    @property
    def pixels_per_token(self) -> int:
        """Side of one token in pixels (16 on Wan2.1 and CogVideoX: VAE 8x times patch 2)."""
        return self.vae_scale_spatial * self.patch_size[1]

    def check_block(self, index: int) -> int:
        """Block `index` (negative counts from the end) as a non-negative index; IndexError if out of range."""
        if not -self.num_blocks <= index < self.num_blocks:
            raise IndexError(
                f"block {index} is out of range for {type(self.transformer).__name__} with "
                f"{self.num_blocks} blocks (valid: 0..{self.num_blocks - 1})"
            )
        return index % self.num_blocks

    def video_self_attention(self, index: int) -> torch.nn.Module:
        """The attention module of block `index` in which video tokens attend to video tokens (the block attribute
        `attention_names[0]`)."""
        return self._block_attention(index, 0)

    def text_attention(self, index: int) -> torch.nn.Module:
        """The attention module of block `index` in which video queries meet text keys (the block attribute
        `attention_names[1]`)."""
        return self._block_attention(index, 1)

    def _block_attention(self, index: int, which: int) -> torch.nn.Module:
        if self.attention_names is None:
            raise self._unnamed("attention modules", "attention_names = (self-attention attribute, text attention "
                                "attribute) or override video_self_attention() and text_attention()")
        return getattr(self.blocks[self.check_block(index)], self.attention_names[which])

    def attention_module(self, index: int, which: str) -> torch.nn.Module:
        """`which` is "self" (video self-attention) or "text" (where video meets text)."""
        if which == "self":
            return self.video_self_attention(index)
        if which == "text":
            return self.text_attention(index)
        raise ValueError(f"attention kind must be 'self' or 'text', got {which!r}")

    def block_parameter_prefix(self, index: int) -> str:
        """Prefix of block `index`'s names in `transformer.named_parameters()` (e.g. "blocks.3.")."""
        block = self.blocks[self.check_block(index)]
        for name, module in self.transformer.named_modules():
            if module is block:
                return f"{name}."
        raise ValueError(f"block {index} is not a submodule of {type(self.transformer).__name__}")

    # ------------------------------------------------------------------ instruments
    def instrumented_processor(self, controller: Any, original: Any, block: int, attention: str) -> Any:
        """The family's instrumented processor standing in for `original` at `block` ("self", "text" or "joint").

        Each family returns its own :class:`~motionguide.attention.instrumented.InstrumentedProcessor` subclass
        (see `backbones/wan/processor.py`); it raises `InstrumentError` for a processor it cannot reproduce.
        """
        raise NotImplementedError(
            f"{type(self).__name__} ({self.family}) provides no instrumented attention processor: override "
            "instrumented_processor() with an InstrumentedProcessor subclass written for its stock processor"
        )

    def attention_role(self, which: str) -> str:
        """Role of the module behind `attention_module(i, which)`: "joint" when text and video share one attention."""
        return "joint" if self.text_layout in ("joint_first", "joint_last") else which

    # ------------------------------------------------------------------ sampling calls
    def runs_classifier_free_guidance(self, step_index: int | None = None) -> bool | None:
        """Whether the pipeline this backbone was built from runs CFG in its current call (None: no pipeline).

        Read from the pipeline's own `do_classifier_free_guidance`, else its `guidance_scale > 1` (the stock rule).
        `step_index` is the call's step, for families whose pipeline changes its scale during the loop.
        """
        pipe = self._pipeline
        if pipe is None:
            return None
        try:
            return bool(pipe.do_classifier_free_guidance)
        except AttributeError:
            pass
        try:
            return float(pipe.guidance_scale) > 1.0
        except (AttributeError, TypeError):
            return None

    def conditional_rows(self, branch: str | None, batch: int, cfg: bool | None) -> slice | None:
        """Rows of a `batch`-row transformer call that belong to the conditional branch; None when none do.

        branch: the pipeline's cache-context name (None outside a pipeline: every row counts). Unconditional and
        perturbed passes ("uncond", "..._perturbed") have none. With `cfg_layout` "uncond_cond", a "cond_uncond"
        call under CFG (`cfg`, see `runs_classifier_free_guidance`) is the batch [uncond; cond]: its second half.
        """
        if branch == "uncond" or (branch is not None and branch.endswith("_perturbed")):
            return None
        if self.cfg_layout == "uncond_cond" and branch == "cond_uncond" and cfg:
            return slice(batch // 2, None)
        return slice(None)

    def schedule_step(self, timestep: Any, scheduler: Any = None) -> int | None:
        """Index of `timestep` in `scheduler.timesteps` (default: this backbone's pipeline's); None if absent.

        For pipelines whose cache context carries no step index (CogVideoX).
        """
        if scheduler is None:
            scheduler = getattr(self._pipeline, "scheduler", None)
        timesteps = getattr(scheduler, "timesteps", None)
        if isinstance(timestep, torch.Tensor):  # per-token timesteps (Wan2.2-TI2V): the step's t is the largest,
            # since an image-to-video first frame's tokens sit at 0
            timestep = float(timestep.flatten().max()) if timestep.numel() else None
        if timestep is None or timesteps is None or not len(timesteps):
            return None
        matches = (timesteps.float().cpu() - float(timestep)).abs() < 1e-3
        return int(matches.nonzero()[0, 0]) if matches.any() else None

    # ------------------------------------------------------------------ shapes
    def num_latent_frames(self, num_frames: int) -> int:
        """Latent frames of a clip through the causal VAE: 1 + (F - 1) / 4 (81 -> 21, 49 -> 13)."""
        r = self.vae_scale_temporal
        if num_frames < 1 or (num_frames - 1) % r:
            raise ValueError(
                f"{self.family} needs {r}k+1 frames (e.g. {r * ((max(num_frames, 1) - 1) // r) + 1}); got {num_frames}"
            )
        return 1 + (num_frames - 1) // r

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(F', h, w) of the VAE latent of a clip."""
        s = self.vae_scale_spatial
        if height % s or width % s:
            raise ValueError(f"height and width must be divisible by {s}; got {height}x{width}")
        return self.num_latent_frames(num_frames), height // s, width // s

    def token_grid(self, latent_shape: Sequence[int]) -> TokenGrid:
        """Token grid of a latent tensor shape in the transformer's layout (`latent_layout`, batch axis included)
        after patching."""
        layout = self._layout()
        if len(latent_shape) != 5:
            raise ValueError(f"{self._name} latents are [{', '.join(layout)}]; got shape {tuple(latent_shape)}")
        axes = dict(zip(layout, latent_shape))
        pt, ph, pw = self.patch_size
        return TokenGrid(axes["F"] // pt, axes["H"] // ph, axes["W"] // pw)

    def _layout(self) -> str:
        if self.latent_layout not in ("BCFHW", "BFCHW"):
            raise self._unnamed("latent layout", 'latent_layout = "BCFHW" or "BFCHW", or override token_grid() '
                                "and the layout conversions")
        return self.latent_layout

    def token_grid_for_video(self, num_frames: int, height: int, width: int) -> TokenGrid:
        """Token grid (F', H', W') of a clip of this many pixel frames and this size after patching."""
        f, h, w = self.latent_shape(num_frames, height, width)
        pt, ph, pw = self.patch_size
        return TokenGrid(f // pt, h // ph, w // pw)

    def pixel_frames_of_latent(self, latent_index: int) -> range:
        """Pixel frames a latent frame covers under the causal VAE: 0 <- 0, k <- 4k-3 .. 4k."""
        r = self.vae_scale_temporal
        if latent_index < 0:
            raise ValueError("latent frame index must be >= 0")
        if latent_index == 0:
            return range(0, 1)
        return range(r * latent_index - (r - 1), r * latent_index + 1)

    def latent_frame_of_pixel(self, frame_index: int) -> int:
        """Latent frame that holds pixel frame `frame_index` (inverse of :meth:`pixel_frames_of_latent`)."""
        r = self.vae_scale_temporal
        return 0 if frame_index <= 0 else (frame_index + r - 1) // r

    # ------------------------------------------------------------------ latents and targets
    @abstractmethod
    def normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE posterior latents ([B, C, F, H, W]) -> the scale the transformer is trained on."""

    @abstractmethod
    def denormalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize_latents`, before `vae.decode`."""

    def to_transformer_layout(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, C, F, H, W] (VAE layout) -> the layout the transformer consumes (`latent_layout`; unchanged for
        "BCFHW")."""
        return latents if self._layout() == "BCFHW" else latents.permute(0, 2, 1, 3, 4)

    def from_transformer_layout(self, latents: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_transformer_layout`."""
        return latents if self._layout() == "BCFHW" else latents.permute(0, 2, 1, 3, 4)

    @abstractmethod
    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Noisy latents at training timesteps (0..1000 scale), as in the model's training."""

    @abstractmethod
    def training_target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the transformer output is regressed to (flow velocity or v)."""

    @abstractmethod
    def predict(self, latents: torch.Tensor, timesteps: torch.Tensor, prompt_embeds: torch.Tensor,
                model: torch.nn.Module | None = None) -> torch.Tensor:
        """The transformer's prediction for noisy latents in VAE layout [B, C, F, H, W], returned in that layout.

        `model` is the module to call (e.g. the DDP / DeepSpeed wrapper of this backbone's transformer). An
        image-to-video family also takes `condition=` (the dict of :meth:`encode_condition`); callers pass it
        through :func:`condition_kwargs`, so a text-to-video family's `predict` never sees the keyword.
        """

    # ------------------------------------------------------------------ conditioning (image-to-video)
    @property
    def conditions_on_image(self) -> bool:
        """Whether the transformer takes a conditioning image besides the noisy latents (an image-to-video model:
        CogVideoX-I2V, Wan-I2V). Every call of :meth:`predict` then needs `condition=`."""
        return False

    def encode_condition(self, image: torch.Tensor, num_frames: int,
                         generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """What the transformer needs of a conditioning image besides the noisy latents, as the family's stock
        image-to-video pipeline computes it: `image` [B, 3, H, W] in [-1, 1] (the first frame of the clip),
        `num_frames` the clip's pixel frames; tensors with a batch axis, fp32, on the VAE's device.

        `generator`: draw from the VAE posterior as the pipeline does (exact parity with it); None takes the
        posterior's mode (a clip's cached condition then does not depend on a draw). {} for text-to-video.
        """
        if not self.conditions_on_image:
            return {}
        raise NotImplementedError(f"{type(self).__name__} conditions on an image but has no encode_condition()")

    def conditioned_latent_frames(self, condition: dict[str, torch.Tensor] | None) -> int:
        """Leading latent frames the condition itself supplies (Wan2.2-TI2V-5B: the image's latents, at t = 0): the
        model is not asked to denoise them, so training losses and the Motive loss leave them out (default 0)."""
        return 0

    def check_condition(self, condition: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """`condition` as {} or the dict given; a one-line ValueError when an image-to-video model gets none or a
        text-to-video model gets one."""
        if self.conditions_on_image and not condition:
            raise ValueError(f"{self.family}: this image-to-video transformer needs its conditioning image: pass "
                             "condition=backbone.encode_condition(first_frame, num_frames)")
        if not self.conditions_on_image and condition:
            raise ValueError(f"{self.family}: this text-to-video transformer takes no conditioning image; drop "
                             f"condition= (got {sorted(condition)})")
        return dict(condition or {})

    # ------------------------------------------------------------------ text
    @property
    def pipeline_class(self) -> type:
        """The stock diffusers pipeline class of this family."""
        raise NotImplementedError

    def pipeline(self) -> Any:
        """The stock diffusers pipeline over this backbone's components (built once, no weights copied)."""
        if self._pipeline is None:
            self._pipeline = self.pipeline_class(
                tokenizer=self.tokenizer,
                text_encoder=self.text_encoder,
                transformer=self.transformer,
                vae=self.vae,
                scheduler=self.scheduler,
            )
        return self._pipeline

    def encode_prompt(
        self, prompts: str | list[str], max_sequence_length: int, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Prompt embeddings exactly as the stock pipeline computes them (so training and sampling agree)."""
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError(
                f"{self.family} backbone has no text encoder or tokenizer attached: build it with "
                "backbone_for(pipeline) or pass text_encoder= and tokenizer="
            )
        pipe = self.pipeline()
        device = device if device is not None else self.text_encoder.device
        embeds, _ = pipe.encode_prompt(
            prompt=prompts,
            do_classifier_free_guidance=False,
            max_sequence_length=max_sequence_length,
            device=device,
        )
        return embeds

    # ------------------------------------------------------------------ experts
    @property
    def experts(self) -> tuple[torch.nn.Module, ...]:
        """The denoisers the pipeline switches between by timestep (one for every family but Wan2.2 A14B)."""
        return (self.transformer,)

    #: which of :attr:`experts` this adapter drives (see :meth:`for_expert`)
    expert: int = 0

    @property
    def expert_names(self) -> tuple[str, ...]:
        """The pipeline attributes that hold :attr:`experts`, in the same order."""
        return ("transformer",)

    def expert_index(self, timestep: float) -> int:
        """Index in :attr:`experts` of the denoiser that runs `timestep` (0..1000 scale)."""
        return 0

    def for_expert(self, index: int) -> "VideoBackbone":
        """This adapter over expert `index` (same VAE, text encoder, scheduler and pipeline)."""
        if index != 0:
            raise IndexError(f"{self.family} has one transformer; expert {index} does not exist")
        return self

    def for_timestep(self, timestep: float) -> "VideoBackbone":
        """This adapter over the expert that runs `timestep` (itself when there is one expert): what the Motive
        pass at its fixed timestep and any single-timestep transformer call must use."""
        return self.for_expert(self.expert_index(timestep))

    def cfg_scale(self) -> float:
        """The CFG scale the pipeline's current call applies to this adapter's expert (`guidance_scale`)."""
        return float(self._pipeline.guidance_scale)

    def check_trainable(self) -> None:
        """Raise a one-line `ConfigError` when the trainer cannot fine-tune this model as loaded (default: it can)."""
        return None

    def check_components(self) -> None:
        """Raise a one-line `ConfigError` when the attached components cannot work together (e.g. a VAE whose
        latent channels differ from the transformer's input channels, a text encoder of another width).

        Called when a pipeline loads (`motionguide.loading.load_pipeline`), so a mismatch is found before any
        latent is cached. Families override it with what their configs can tell; the default checks nothing."""
        return None

    # ------------------------------------------------------------------ profiles
    def default_profile(self) -> "LayerProfile":
        """The shipped layer profile that best matches this transformer's config."""
        from .profiles import default_profile_for

        return default_profile_for(self)

    def describe(self) -> dict[str, Any]:
        """A short dict for logs and reports."""
        return {
            "family": self.family,
            "transformer": type(self.transformer).__name__,
            "blocks": self.num_blocks,
            "heads": self.num_heads,
            "head_dim": self.head_dim,
            "patch_size": list(self.patch_size),
            "text_layout": self.text_layout,
        }


class ScaledLatents:
    """Latents scaled by the VAE config's `scaling_factor` (CogVideoX, HunyuanVideo): a mixin listed before
    :class:`VideoBackbone`."""

    @property
    def _scaling_factor(self) -> float:
        if self.vae is None:
            raise ValueError(f"{self._name} latent normalisation needs the VAE (its config holds scaling_factor)")
        return float(self.vae.config.scaling_factor)

    def normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scale by the VAE's `scaling_factor` (the pipeline divides by it before decoding)."""
        return latents * self._scaling_factor

    def denormalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Divide by the VAE's `scaling_factor`."""
        return latents / self._scaling_factor


class FlowMatchingTargets:
    """A rectified-flow velocity predictor (Wan, HunyuanVideo): x_t = (1 - s) x0 + s eps, target eps - x0,
    s = t / 1000; a mixin listed before :class:`VideoBackbone`."""

    @staticmethod
    def _sigma(timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        sigma = timesteps.to(like.device, torch.float32) / 1000.0
        return sigma.view(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """(1 - s) x0 + s eps with s = t / 1000 (as `FlowMatchEulerDiscreteScheduler.scale_noise`)."""
        sigma = self._sigma(timesteps, latents)
        return ((1.0 - sigma) * latents.float() + sigma * noise.float()).to(latents.dtype)

    def training_target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The flow velocity eps - x0 (what the flow schedulers integrate)."""
        return noise - latents


def image_pixels(frame_uint8: Any) -> torch.Tensor:
    """One uint8 RGB frame [H, W, 3] (numpy or tensor) -> [1, 3, H, W] float in [-1, 1], the scale the stock
    pipelines' image preprocessing gives a conditioning image."""
    x = frame_uint8 if isinstance(frame_uint8, torch.Tensor) else torch.from_numpy(np.array(frame_uint8, np.uint8))
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"a conditioning image is one uint8 RGB frame [H, W, 3]; got shape {tuple(x.shape)}")
    return (x.permute(2, 0, 1).float() / 127.5 - 1.0).unsqueeze(0)


def condition_kwargs(condition: dict[str, torch.Tensor] | None) -> dict[str, Any]:
    """`{"condition": condition}` for a non-empty conditioning dict, else {}: what a caller splices into
    `backbone.predict(...)` so that text-to-video families (and third-party adapters) see no new keyword."""
    return {"condition": condition} if condition else {}


def move_condition(condition: dict[str, torch.Tensor] | None, device: Any = None, dtype: torch.dtype | None = None,
                   add_batch: bool = False) -> dict[str, torch.Tensor]:
    """A conditioning dict moved to `device` and `dtype` (floating tensors only), with a leading batch axis added
    to each tensor when `add_batch` (one cached clip's condition -> a batch of one)."""
    out = {}
    for name, value in (condition or {}).items():
        value = value[None] if add_batch else value
        out[name] = value.to(device=device, dtype=dtype if value.is_floating_point() else None)
    return out
