"""Correspondence guidance (CAG) on the classic `WanPipeline` / `CogVideoXPipeline`, without forking diffusers.

The classic pipelines hard-code CFG: eps = eps_u + w (eps_c - eps_u). For one call, `pipe.transformer` is
replaced by :class:`CorrespondenceGuidedTransformer`, a thin module that calls the real transformer and, on
conditional calls inside the guidance window, runs a third pass with frame-local self-attention at the guidance
blocks and returns

    eps_c' = eps_c + (s / w) (eps_c - eps_ptb)      (CFG on, w > 1)
    eps_c' = eps_c + s (eps_c - eps_ptb)            (no CFG)

so the pipeline's own eps_u + w (eps_c' - eps_u) is exactly eps_u + w (eps_c - eps_u) + s (eps_c - eps_ptb).

Which calls are conditional comes from the pipeline's `cache_context` (diffusers >= 0.35) read through the model
family's declared CFG layout (`VideoBackbone.conditional_rows`): Wan runs "cond" and "uncond" as separate passes;
CogVideoX runs one "cond_uncond" batch [uncond; cond] when CFG is on (its second half is conditional) and a
conditional-only batch when it is off. The step index comes from the cache context (Wan) or from the timestep's
place in `pipe.scheduler.timesteps` (CogVideoX; `VideoBackbone.schedule_step`).

Correspondence guidance and its frame-local perturbation are DiffTrack's (https://arxiv.org/abs/2506.17220):
video DiTs match points across frames in a few blocks' query-key attention; making those blocks attend within
each frame only yields a prediction without cross-frame correspondence, and guiding away from it strengthens
temporal consistency.

The perturbed pass reuses the conditional pass's blocks before the first guidance block (`prefix_reuse.py`): they
see identical inputs, so their output is kept from the conditional call instead of being recomputed
(`reuse_prefix=False` runs the whole forward again).

A two-expert pipeline (Wan2.2 A14B: `transformer` above the timestep boundary, `transformer_2` below) has each
expert wrapped, with its own instruments at the same profile blocks (each expert has its own layers), so guidance
acts on whichever expert runs the step, with that expert's CFG scale (`guidance_scale_2` below the boundary).

The stock pipeline is untouched afterwards: `pipe.transformer` is the original module again (set without
rewriting the pipeline config), and the attention processors are the stock objects.
"""

from __future__ import annotations

import inspect
import os
from contextlib import ExitStack, contextmanager
from typing import Any, Iterator

import torch

from ..attention import AttentionController, InstrumentError
from ..backbones import LayerProfile, backbone_for
from ..errors import ConfigError
from ..sampling.guidance import register_guidance
from .prefix_reuse import PrefixReuse, reuse_blocker
from .settings import CAGSettings, _check_window, check_attention_backend, resolve_cag_settings

#: cache-context name of the perturbed pass, so caching hooks keep its state apart from the conditional pass
PERTURBED_CONTEXT = "cond_perturbed"


class CorrespondenceGuidedTransformer(torch.nn.Module):
    """Stands in for `pipe.transformer` during one guided call (see the module docstring).

    Everything the pipeline reads from its transformer (`config`, `dtype`, `device`, `cache_context`, any other
    attribute) is forwarded to the wrapped module.
    """

    def __init__(self, transformer: torch.nn.Module, pipe: Any, controller: AttentionController,
                 settings: CAGSettings, prefix: PrefixReuse | None = None):
        super().__init__()
        self._prefix = prefix
        self.inner = transformer
        self._pipe = pipe
        self._controller = controller
        self._settings = settings
        self._context: tuple[str, dict[str, Any]] | None = None
        self._parameter_names = list(inspect.signature(transformer.forward).parameters)
        #: number of perturbed (frame-local) passes run so far, for logs and tests
        self.perturbed_calls = 0
        #: the stand-ins of every expert of the pipeline (this one alone for one-transformer pipelines)
        self.experts = [self]

    # ------------------------------------------------------------------ forwarding
    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("inner")
            if inner is None:
                raise
            return getattr(inner, name)

    @property
    def config(self) -> Any:
        """The wrapped transformer's config."""
        return self.inner.config

    @property
    def dtype(self) -> torch.dtype:
        """The wrapped transformer's dtype."""
        return self.inner.dtype

    @property
    def device(self) -> torch.device:
        """The wrapped transformer's device."""
        return self.inner.device

    @contextmanager
    def cache_context(self, name: str, **kwargs: Any) -> Iterator[None]:
        """Enter the wrapped transformer's cache context and remember its name and step info for `forward`."""
        previous = self._context
        self._context = (name, kwargs)
        try:
            with self.inner.cache_context(name, **kwargs):
                yield
        finally:
            self._context = previous

    # ------------------------------------------------------------------ guidance
    def _cfg_on(self) -> bool:
        """Whether the pipeline's guidance scale is a CFG scale applied to this call's prediction, as the model
        family tells (`VideoBackbone.runs_classifier_free_guidance`): Wan and CogVideoX run CFG exactly when their
        guidance scale exceeds 1; HunyuanVideo's scale is embedded guidance, an input of the transformer."""
        cfg = self._controller.backbone.runs_classifier_free_guidance()
        return float(self._pipe.guidance_scale) > 1.0 if cfg is None else bool(cfg)

    def _conditional_rows(self, batch: int) -> slice | None:
        """Rows of this `batch`-row call that are conditional, from the pipeline's cache-context name and the
        family's CFG layout (the backbone's `conditional_rows`)."""
        name = self._context[0] if self._context else None
        if name not in ("cond", "uncond", "cond_uncond"):
            raise InstrumentError(
                f"transformer called in cache context {name!r}: correspondence guidance tells conditional from "
                "unconditional calls by the pipeline's cache_context ('cond', 'uncond', 'cond_uncond'), which the "
                "stock WanPipeline / CogVideoXPipeline of diffusers >= 0.35 set. Use the modular guider "
                "(CorrespondenceGuidance) for other pipelines"
            )
        return self._controller.backbone.conditional_rows(name, batch, self._cfg_on())

    def _step(self, timestep: Any) -> tuple[int, int]:
        """(step index, number of steps) of this call on the pipeline's schedule."""
        context = self._context[1] if self._context else {}
        timesteps = self._pipe.scheduler.timesteps
        total = context.get("num_inference_steps") or getattr(self._pipe, "_num_timesteps", None) or len(timesteps)
        step = context.get("step_index")
        if step is None:
            step = self._controller.backbone.schedule_step(timestep, self._pipe.scheduler)
        if step is None:
            raise InstrumentError("cannot place this transformer call on the sampling schedule (no step_index in "
                                  "its cache context and its timestep is not in pipe.scheduler.timesteps)")
        return int(step), int(total)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Call the real transformer; inside the window, guide its conditional rows with a frame-local pass."""
        if args:
            kwargs = {**dict(zip(self._parameter_names, args)), **kwargs}
        batch = kwargs["hidden_states"].shape[0]
        rows = self._conditional_rows(batch)
        if rows is None:
            return self.inner(**kwargs)
        step, total = self._step(kwargs.get("timestep"))
        if not self._settings.active_at(step, total):
            return self.inner(**kwargs)
        # with gradients on, a checkpointed recomputation would run the skipped blocks for real: recompute instead
        if self._prefix is None or not self._prefix.saves_blocks or torch.is_grad_enabled():
            output = self.inner(**kwargs)
            perturbed = self._perturbed_prediction(kwargs, rows, batch, step, total)
        else:
            with self._prefix.recording(rows, batch):
                output = self.inner(**kwargs)
            with self._prefix.replaying():
                perturbed = self._perturbed_prediction(kwargs, rows, batch, step, total)
        return self._guided_output(output, perturbed, rows)

    def _perturbed_prediction(self, kwargs: dict, rows: slice, batch: int, step: int, total: int) -> torch.Tensor:
        """The conditional rows' prediction with frame-local attention at the guidance blocks."""
        call = {k: (v[rows] if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == batch else v)
                for k, v in kwargs.items()}
        call["return_dict"] = False
        context = dict(self._context[1]) if self._context else {}
        context.update(step_index=step, num_inference_steps=total)
        settings = self._settings
        with self.inner.cache_context(PERTURBED_CONTEXT, **context), \
                self._controller.frame_local(blocks=settings.blocks, renormalize=settings.renormalize):
            perturbed = self.inner(**call)[0]
        self.perturbed_calls += 1
        return perturbed

    def _guided_output(self, output: Any, perturbed: torch.Tensor, rows: slice) -> Any:
        sample = output[0] if isinstance(output, tuple) else output.sample
        guidance_scale = self._controller.backbone.cfg_scale()  # this expert's CFG scale
        factor = self._settings.scale
        if self._cfg_on():
            factor = factor / guidance_scale
        cond = sample[rows].float()
        guided = sample.clone()
        guided[rows] = (cond + factor * (cond - perturbed.float())).to(sample.dtype)
        if isinstance(output, tuple):
            return (guided, *output[1:])
        return type(output)(sample=guided)


def _refuse_unsupported(pipe: Any) -> None:
    transformer = getattr(pipe, "transformer", None)
    if isinstance(transformer, CorrespondenceGuidedTransformer):
        raise InstrumentError("this pipeline is already under correspondence guidance (nested guided calls)")
    if transformer is None:
        raise ConfigError("correspondence guidance needs a pipeline with a `transformer`")
    if getattr(pipe, "_all_hooks", None) or hasattr(transformer, "_hf_hook"):
        raise ConfigError("correspondence guidance on a classic pipeline does not support enable_model_cpu_offload "
                          "/ sequential offload (the offload hooks would move to the temporary wrapper); move the "
                          "pipeline to the device with pipe.to(...) or use the modular pipeline's guider")


@contextmanager
def correspondence_guided(
    pipe: Any,
    scale: float | None = None,
    profile: str | os.PathLike | LayerProfile | None = None,
    blocks=None,
    window=None,
    renormalize: bool | None = None,
    reuse_prefix: bool = True,
) -> Iterator[CorrespondenceGuidedTransformer]:
    """Within the block, calls of the stock `pipe` apply correspondence guidance (see the module docstring).

        with correspondence_guided(pipe, scale=1.0, profile="wan2.1-t2v-1.3b"):
            video = pipe(prompt, guidance_scale=5.0, ...).frames[0]

    reuse_prefix: the perturbed pass takes the blocks before the first guidance block from the conditional pass
        (the same result up to rounding, fewer blocks run); False recomputes them. Turned off by itself when other
        diffusers hooks (block caches, group offloading) sit on the transformer or those blocks.
    """
    _refuse_unsupported(pipe)
    backbone = backbone_for(pipe)
    settings = resolve_cag_settings(backbone, scale=scale, profile=profile, blocks=blocks, window=window,
                                    renormalize=renormalize)
    check_attention_backend(backbone, settings.blocks)
    experts = [backbone.for_expert(index) for index in range(len(backbone.experts))]
    with ExitStack() as stack:
        proxies = []
        for name, expert in zip(backbone.expert_names, experts):
            proxies.append(_guide_expert(stack, pipe, name, expert, settings, reuse_prefix))
        for proxy in proxies:
            proxy.experts = proxies
        yield proxies[0]


def _guide_expert(stack: ExitStack, pipe: Any, name: str, backbone: Any, settings: CAGSettings,
                  reuse_prefix: bool) -> CorrespondenceGuidedTransformer:
    """Put a guided stand-in for `pipe.<name>` (one expert) in place until `stack` closes."""
    transformer = getattr(pipe, name)
    controller = AttentionController(backbone, every_expert=False)
    prefix = None
    if reuse_prefix and reuse_blocker(transformer, backbone.blocks[:min(settings.blocks)]) is None:
        prefix = PrefixReuse(backbone.blocks, min(settings.blocks), root=transformer)
    proxy = CorrespondenceGuidedTransformer(transformer, pipe, controller, settings, prefix)
    # Processors stay installed (pass-through) for the whole call; only the perturbed pass goes frame-local.
    stack.enter_context(controller.installed(settings.blocks, "self"))
    if prefix is not None:
        stack.enter_context(prefix.installed())
    # object.__setattr__: DiffusionPipeline.__setattr__ would also rewrite the pipeline config.
    object.__setattr__(pipe, name, proxy)
    stack.callback(object.__setattr__, pipe, name, transformer)
    return proxy


@register_guidance("correspondence")
def correspondence_guidance(
    scale: float | None = None,
    profile: str | os.PathLike | LayerProfile | None = None,
    blocks=None,
    window=None,
    renormalize: bool | None = None,
    reuse_prefix: bool = True,
):
    """`--guidance correspondence`: a guidance callable `guide(pipe, **call_kwargs)` (see `correspondence_guided`).

    Options: scale (s, default the profile's), profile (name, YAML path or LayerProfile; default the model's
    shipped one), blocks / window / renormalize overrides, and reuse_prefix.
    """
    if window is not None:
        _check_window(window)
    options = dict(scale=scale, profile=profile, blocks=blocks, window=window, renormalize=renormalize,
                   reuse_prefix=reuse_prefix)

    def guide(pipe: Any, **call_kwargs: Any):
        if call_kwargs.get("use_dynamic_cfg"):
            raise ConfigError("correspondence guidance needs a constant CFG scale; call without use_dynamic_cfg")
        with correspondence_guided(pipe, **options):
            return pipe(**call_kwargs)

    guide.options = options
    return guide
