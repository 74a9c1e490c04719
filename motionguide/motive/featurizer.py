"""Motive's per-clip gradient features: motion-weighted loss at one shared (t, eps), gradient, JL projection.

- `CommonRandomness`: the fixed timestep and noise every clip and every query uses (pitfall P1). The noise is
  generated on the CPU from a seed for each latent shape, so every rank and every later query gets the same
  tensors; its hash goes into the feature store's config.
- `motion_weighted_loss`: (1 / F) * mean over (f, h, w) of W * channel-mean squared error; W = 1 is the
  paper's "w/o MM" baseline. The mask weights only the loss, never the input or the noise.
- `GradientFeaturizer`: backward with a post-accumulate-grad hook per parameter that projects (or copies into
  one flat buffer, for non-streaming projectors) and frees each `.grad` at once, so two full gradient copies
  never coexist; tensors of at most `SMALL_TENSOR_BATCH` numbers are projected together once backward ends.
  Features are l2-normalised; a zero gradient (static clip, all-zero mask) gives a zero
  feature flagged "zero_gradient" (it scores 0, never NaN); a non-finite gradient is skipped with the reason.
  Gradients are taken in fp32 for the projector whatever the weights' dtype (bf16 weights give bf16 `.grad`,
  cast once per tensor). With `gradient_checkpointing`, diffusers' block checkpointing (non-reentrant
  `torch.utils.checkpoint`; Wan and CogVideoX use it whenever grad is enabled, in eval mode too) is switched on
  for the pass: block activations are recomputed in backward, so the gradients are the same numbers
  (bitwise on the CPU, tests/test_attribution_featurizer.py) at a fraction of the activation memory.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..backbones import backbone_for, condition_kwargs, move_condition
from ..errors import ConfigError
from ..files import atomic_write_text

PARAM_SCOPES = ("all", "lora", "blocks")
#: gradients of at most this many numbers (norms, biases, LoRA factors) wait until the backward pass ends and are
#: projected together (`Projector.project_many`): one stacked transform instead of one call per tensor. Bounded:
#: in a full model these tensors are a small share of the parameters.
SMALL_TENSOR_BATCH = 2**16


@dataclass
class CommonRandomness:
    """One shared (timestep, noise) for every clip and query; noise derived per latent shape from the seed."""

    timestep: float = 751.0  # on the 0..1000 training scale; sigma = 0.751 for flow models (paper's t_fix)
    seed: int = 0
    _cache: dict = field(default_factory=dict, repr=False, compare=False)
    _fingerprints: dict = field(default_factory=dict, repr=False, compare=False)

    def noise_for(self, shape: Sequence[int]) -> torch.Tensor:
        """Deterministic N(0, I) noise of `shape` (the seed is mixed with the shape: one rule for every shape)."""
        key = tuple(int(s) for s in shape)
        if key not in self._cache:
            mix = int.from_bytes(hashlib.sha256(json.dumps([self.seed, key]).encode()).digest()[:8], "little")
            g = torch.Generator().manual_seed(mix % (2**63))
            self._cache[key] = torch.randn(key, generator=g, dtype=torch.float32)
        return self._cache[key]

    def describe(self) -> dict[str, Any]:
        """JSON-able description of the timestep, seed and noise rule."""
        return {"timestep": self.timestep, "seed": self.seed, "noise_rule": "sha256(seed, shape) -> torch.randn"}

    def fingerprint(self, shape: Sequence[int]) -> str:
        """Hash of the actual noise tensor for a shape (stored with every clip's features; equal across ranks).
        Computed once per shape, like the noise itself."""
        key = tuple(int(s) for s in shape)
        if key not in self._fingerprints:
            h = hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode())
            h.update(self.noise_for(key).numpy().tobytes())
            self._fingerprints[key] = h.hexdigest()[:16]
        return self._fingerprints[key]

    def save(self, path: str | os.PathLike) -> Path:
        """Write `describe()` as JSON to `path` atomically; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(path, json.dumps(self.describe(), indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CommonRandomness":
        """The randomness saved by `save` (timestep and seed)."""
        data = json.loads(Path(path).read_text())
        return cls(timestep=float(data["timestep"]), seed=int(data["seed"]))


#: losses the featurizer can differentiate: the paper's, and a temporal-difference variant (a deviation)
LOSSES = ("motion_weighted", "temporal_difference")


def _check_loss(kind: str) -> str:
    if kind not in LOSSES:
        raise ConfigError(f"unknown attribution loss {kind!r}; valid: {', '.join(LOSSES)}")
    return kind


def motion_weighted_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None,
                         num_pixel_frames: int | None = None, kind: str = "motion_weighted") -> torch.Tensor:
    """pred/target [B, C, F', h, w]; mask [F', h, w] or [B, F', h, w] in [0, 1] (None: unweighted).

    kind "motion_weighted" (the paper): W * channel-mean squared error. "temporal_difference" (a deviation):
    the squared change of the prediction error between consecutive latent frames, weighted by the larger mask
    value of the two frames; an error the model makes alike on every frame (appearance) cancels, so the gradient
    carries what the clip teaches about change over time.
    """
    _check_loss(kind)
    error = pred.float() - target.float()
    if mask is not None:
        mask = mask.to(error.device, error.dtype)
        if mask.shape[-3:] != error.shape[-3:]:
            raise ValueError(f"motion mask {tuple(mask.shape)} does not match the latent grid "
                             f"{tuple(error.shape[-3:])}")
    if kind == "temporal_difference":
        if error.shape[2] < 2:
            raise ValueError("the temporal-difference loss needs at least 2 latent frames")
        per_location = (error[:, :, 1:] - error[:, :, :-1]).square().mean(dim=1)  # [B, F'-1, h, w]
        if mask is not None:
            mask = torch.maximum(mask[..., 1:, :, :], mask[..., :-1, :, :])
    else:
        per_location = error.square().mean(dim=1)  # channel mean -> [B, F', h, w]
    if mask is not None:
        per_location = per_location * mask
    loss = per_location.mean()
    return loss / num_pixel_frames if num_pixel_frames else loss


def _active_adapters(transformer: torch.nn.Module) -> list[str]:
    """Names of the transformer's active LoRA adapters (empty without peft adapters)."""
    if not getattr(transformer, "_hf_peft_config_loaded", False) or not hasattr(transformer, "active_adapters"):
        return []
    try:
        return list(transformer.active_adapters())
    except ValueError:  # no adapter loaded
        return []


def select_parameters(transformer: torch.nn.Module, scope: str = "all",
                      blocks: Sequence[int] | None = None) -> list[tuple[str, torch.nn.Parameter]]:
    """The parameters whose gradient is featurised, in `named_parameters()` order (identical on every rank).

    "all" is the paper's setting; "lora" (adapter weights only) and "blocks" (given transformer blocks) are
    cheaper deviations, labelled as such in the feature store's config.
    """
    named = list(transformer.named_parameters())
    if scope == "all":
        chosen = [(n, p) for n, p in named if "lora_" not in n]
    elif scope == "lora":
        active = _active_adapters(transformer)  # an inactive adapter does not shape the output: leave it out
        chosen = [(n, p) for n, p in named if "lora_" in n and (not active or any(f".{a}." in n for a in active))]
        if not chosen:
            raise ConfigError("--params lora: the transformer has no LoRA adapter. Pass a saved one with "
                              "`motionguide curate --lora PATH` (method_options.motive.lora in the fine-tuning "
                              "config), or add one before building the featurizer")
    elif scope == "blocks":
        if not blocks:
            raise ConfigError("--params blocks needs --blocks (e.g. 10,11,12)")
        backbone = backbone_for(transformer)  # the family knows where its blocks' parameters live
        prefixes = tuple(backbone.block_parameter_prefix(b) for b in blocks)
        chosen = [(n, p) for n, p in named if n.startswith(prefixes) and "lora_" not in n]
    else:
        raise ConfigError(f"unknown parameter scope {scope!r}; valid: {', '.join(PARAM_SCOPES)}")
    return chosen


def _compute_dtype(transformer: torch.nn.Module, fallback: torch.dtype) -> torch.dtype:
    """The dtype the transformer computes in: diffusers' `dtype` (it skips the modules kept in fp32), so fp32
    LoRA factors or an fp32 norm listed first do not decide the inputs' dtype of a bf16 model."""
    dtype = getattr(transformer, "dtype", None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else fallback


@dataclass
class FeatureResult:
    """One clip's projected gradient feature, its loss, gradient norm, flags and any skip reason."""

    feature: torch.Tensor | None  # [dim] l2-normalised, zeros for a zero gradient, None when skipped
    loss: float
    grad_norm: float
    flags: list[str]
    skip_reason: str | None = None


class GradientFeaturizer:
    """Projected, normalised gradients of the motion-weighted loss for one model (see module docstring)."""

    def __init__(self, backbone: Any, projector_factory, randomness: CommonRandomness, scope: str = "all",
                 blocks: Sequence[int] | None = None, loss: str = "motion_weighted",
                 gradient_checkpointing: bool = False, device: torch.device | str | None = None):
        self.loss = _check_loss(loss)
        backbone = backbone.for_timestep(randomness.timestep)  # a two-expert model: the expert owning t_fix
        self.gradient_checkpointing = bool(gradient_checkpointing)
        if self.gradient_checkpointing and not getattr(backbone.transformer, "_supports_gradient_checkpointing",
                                                       False):
            raise ConfigError(f"gradient_checkpointing: {type(backbone.transformer).__name__} does not support "
                              "diffusers' gradient checkpointing; turn it off")
        #: where inputs and the feature accumulate: the weights' device, unless told (model CPU offload keeps
        #: the weights on the CPU until the forward hook moves them to the execution device)
        self.device = torch.device(device) if device is not None else None
        self.backbone = backbone
        self.randomness = randomness
        self.scope = scope
        self.named = select_parameters(backbone.transformer, scope, blocks)
        self.sizes = [p.numel() for _, p in self.named]
        self.projector = projector_factory(self.sizes)
        self.timestep = torch.tensor([float(randomness.timestep)])

    def describe(self) -> dict[str, Any]:
        """JSON-able description of the parameter scope, projector, randomness and model family."""
        extra = {} if self.loss == "motion_weighted" else {"loss": self.loss}  # old stores keep their hash
        if getattr(self.backbone, "expert", 0):  # a two-expert model's second expert (Wan2.2 A14B, t < boundary)
            extra["expert"] = int(self.backbone.expert)
        return {**extra, "scope": self.scope, "num_parameters": int(sum(self.sizes)), "num_tensors": len(self.sizes),
                "projector": self.projector.describe(), "randomness": self.randomness.describe(),
                "family": self.backbone.family}

    def featurize(self, latents: torch.Tensor, prompt_embeds: torch.Tensor, mask: torch.Tensor | None,
                  num_pixel_frames: int | None = None,
                  condition: dict[str, torch.Tensor] | None = None) -> FeatureResult:
        """latents [C, F', h, w] (normalised, VAE layout), prompt_embeds [seq, dim], mask [F', h, w] or None;
        `condition`: an image-to-video model's conditioning of this clip, no batch axis (the latent cache's
        `condition.*` tensors: its first frame, encoded as the pipeline encodes its image)."""
        condition = self.backbone.check_condition(condition)
        transformer = self.backbone.transformer
        params = [p for _, p in self.named]
        was_training = transformer.training
        was_checkpointing = bool(getattr(transformer, "gradient_checkpointing", False))
        previous = {p: p.requires_grad for p in transformer.parameters()}
        device = self.device if self.device is not None else params[0].device
        weight_dtype = _compute_dtype(transformer, params[0].dtype)
        state = {"acc": torch.zeros(self.projector.dim, dtype=torch.float32, device=device),
                 "sumsq": torch.zeros((), dtype=torch.float64, device=device)}
        buffer = None if self.projector.streaming else torch.zeros(sum(self.sizes), dtype=torch.float32, device=device)
        batched = hasattr(self.projector, "project_many")
        offsets = [0]
        for n in self.sizes[:-1]:
            offsets.append(offsets[-1] + n)

        pending: list[tuple[int, torch.Tensor]] = []  # small gradients, projected together after backward

        def take_grad(p: torch.nn.Parameter) -> torch.Tensor:
            """The flat float32 gradient; its squared norm joins the total. NaN / inf anywhere make the total
            non-finite: checked once after backward, when the feature (which they also spoil) is discarded."""
            g = p.grad.detach().float().flatten()
            state["sumsq"] += torch.linalg.vector_norm(g).double().square()  # no float64 copy of g
            return g

        def on_grad(index: int):
            def hook(p: torch.nn.Parameter) -> None:
                g = take_grad(p)
                if buffer is not None:
                    buffer[offsets[index]: offsets[index] + g.numel()] = g
                else:
                    state["acc"] += self.projector.project_parameter(index, g).to(device)
                p.grad = None  # free at once: never two full gradient copies
            return hook

        # small tensors keep their .grad until backward ends and are projected together (no hook per tensor)
        small = {i for i, n in enumerate(self.sizes)
                 if batched and buffer is None and n <= SMALL_TENSOR_BATCH}
        handles = []
        try:
            transformer.eval()
            transformer.requires_grad_(False)
            if self.gradient_checkpointing and not was_checkpointing:
                transformer.enable_gradient_checkpointing()
            for i, p in enumerate(params):
                p.requires_grad_(True)
                if i not in small:
                    handles.append(p.register_post_accumulate_grad_hook(on_grad(i)))
            x0 = latents[None].to(device, torch.float32)
            noise = self.randomness.noise_for(latents.shape)[None].to(device)
            t = self.timestep.to(device)
            noisy = self.backbone.add_noise(x0, noise, t)
            target = self.backbone.training_target(x0, noise, t)
            pred = self.backbone.predict(noisy.to(weight_dtype), t, prompt_embeds[None].to(device, weight_dtype),
                                         **condition_kwargs(move_condition(condition, device, weight_dtype,
                                                                           add_batch=True)))
            skip = self.backbone.conditioned_latent_frames(condition)  # TI2V image-to-video: frame 0 is given
            if skip:
                pred, target = pred[:, :, skip:], target[:, :, skip:]
                mask = mask[..., skip:, :, :] if mask is not None else None
            loss = motion_weighted_loss(pred, target, mask, num_pixel_frames, kind=self.loss)
            if not torch.isfinite(loss):
                return FeatureResult(None, float(loss.detach()), float("nan"), ["nonfinite_loss"], "non-finite loss")
            loss.backward()
            for i in sorted(small):
                if params[i].grad is not None:  # None: the parameter did not take part in this loss
                    pending.append((i, take_grad(params[i])))
                params[i].grad = None
        finally:
            for h in handles:
                h.remove()
            for p, flag in previous.items():
                p.requires_grad_(flag)
                p.grad = None
            if self.gradient_checkpointing and not was_checkpointing:
                transformer.disable_gradient_checkpointing()
            transformer.train(was_training)
        if not torch.isfinite(state["sumsq"]):
            return FeatureResult(None, float(loss.detach()), float("nan"), ["nonfinite_gradient"], "non-finite gradient")
        grad_norm = float(state["sumsq"].sqrt())
        if pending:
            state["acc"] += self.projector.project_many(pending).to(device)
        acc = state["acc"] if buffer is None else self.projector.project_full(buffer).to(device)
        flags = []
        if grad_norm == 0.0 or float(acc.norm()) == 0.0:
            flags.append("zero_gradient")
            return FeatureResult(torch.zeros(self.projector.dim), float(loss.detach()), grad_norm, flags)
        return FeatureResult((acc / acc.norm()).float().cpu(), float(loss.detach()), grad_norm, flags)
