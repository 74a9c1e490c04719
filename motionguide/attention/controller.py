"""`AttentionController`: installs instruments on chosen blocks for the length of a `with` block.

    controller = AttentionController(pipe)           # or a transformer, or a VideoBackbone
    with controller.capture(consumer, blocks=[17], attention="self"):
        pipe(prompt, ...)                             # consumer(AttentionCapture) per call, cond branch only
    with controller.frame_local(blocks=[13, 17, 21], renormalize=False):
        v_ptb = transformer(...)                      # video tokens attend within their latent frame only

On exit the stock processor objects are put back (`module.processor is original`) and the transformer hook is
removed, so the model is exactly stock again. Per-call state (token grid, branch, step) comes from a diffusers
`ModelHook` on the transformer: its pre-forward reads the latent shape, and as a stateful hook it receives the
pipeline's `cache_context` ("cond" / "uncond" / "cond_uncond", step index, sigma).

Gating: captures fire once per transformer forward and block: never during backward (gradient-checkpoint
recomputation) and, unless asked with `branches="all"`, only for the conditional rows of the batch.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Container, Iterable, Iterator, Sequence

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from ..backbones import VideoBackbone, backbone_for
from .capture import AttentionCapture, CaptureConsumer, ForwardInfo
from .processors import INSTRUMENTED_PROCESSORS, InstrumentError

_HOOK_NAME = "motionguide_attention_controller"
_ids = itertools.count(1)


@dataclass
class FrameLocalConfig:
    """Options of one frame-local scope: softmax renormalised over the allowed keys (True) or not."""

    renormalize: bool = True


@dataclass
class _Subscription:
    consumer: CaptureConsumer
    branches: str  # "cond" or "all"
    steps: Container[int] | None
    pre_rope: bool = False


@dataclass
class _ModuleState:
    module: torch.nn.Module
    original: Any
    processor: Any
    installs: int = 0
    captures: list[_Subscription] = field(default_factory=list)
    frame_local: list[FrameLocalConfig] = field(default_factory=list)
    last_capture_forward: int = -1


@dataclass
class CallPlan:
    """What one attention call must do beyond the stock computation."""

    controller: "AttentionController"
    info: ForwardInfo
    captures: list[_Subscription]
    frame_local: FrameLocalConfig | None

    @property
    def wants_pre_rope(self) -> bool:
        """Whether a consumer asked for q / k before the rotary embedding (the processor then keeps them)."""
        return any(sub.pre_rope for sub in self.captures)

    def emit(self, processor: Any, query, key, output, text_len: int, query_pre_rope=None, key_pre_rope=None) -> None:
        """Hand [B, H, S, D] tensors to each consumer, restricted to the rows its branch filter allows."""
        with torch.no_grad():
            for sub in self.captures:
                rows = slice(None) if sub.branches == "all" else self.info.cond_rows
                if rows is None:
                    continue
                pre = sub.pre_rope and query_pre_rope is not None
                sub.consumer(
                    AttentionCapture(
                        block=processor.block,
                        attention=processor.attention,
                        info=self.info,
                        query=query[rows].detach(),
                        key=key[rows].detach(),
                        output=output[rows].detach(),
                        text_len=text_len,
                        query_pre_rope=query_pre_rope[rows].detach() if pre else None,
                        key_pre_rope=key_pre_rope[rows].detach() if pre else None,
                    )
                )


class _NoState(BaseState):
    def reset(self, *args, **kwargs) -> None:
        """Nothing to reset: the hook keeps no per-context state."""
        pass


class _ForwardInfoHook(ModelHook):
    """Reads the token grid and the pipeline's cache context at each transformer forward."""

    _is_stateful = True

    def __init__(self, controller: "AttentionController"):
        super().__init__()
        self.controller = controller
        self.state_manager = StateManager(_NoState)

    def pre_forward(self, module, *args, **kwargs):
        """Record the token grid and cache context for this forward; pass the inputs through unchanged."""
        hidden_states = args[0] if args else kwargs["hidden_states"]
        context = self.state_manager._context
        self.controller._begin_forward(hidden_states, kwargs, context)
        return args, kwargs

    def reset_state(self, module):
        """Nothing to reset: per-forward info lives on the controller."""
        return module


class AttentionController:
    """Installs and scopes attention instruments on one transformer (see the module docstring)."""

    def __init__(self, model: Any):
        self.backbone: VideoBackbone = model if isinstance(model, VideoBackbone) else backbone_for(model)
        self.transformer = self.backbone.transformer
        self._states: dict[tuple[int, str], _ModuleState] = {}
        self._hook_users = 0
        self._info: ForwardInfo | None = None
        #: "auto": infer CogVideoX-style [uncond; cond] batches; or force "separate" / "uncond_cond"
        self.cfg_layout = "auto"

    # ------------------------------------------------------------------ public scopes
    @contextmanager
    def installed(self, blocks: Iterable[int] | None = None, attention: str | Sequence[str] = "self") -> Iterator["AttentionController"]:
        """Install instrumented processors in pass-through mode (useful for parity checks)."""
        keys = self._install(blocks, attention)
        try:
            yield self
        finally:
            self._uninstall(keys)

    @contextmanager
    def capture(
        self,
        consumer: CaptureConsumer,
        blocks: Iterable[int] | None = None,
        attention: str | Sequence[str] = "self",
        branches: str = "cond",
        steps: Container[int] | None = None,
        pre_rope: bool | None = None,
    ) -> Iterator["AttentionController"]:
        """Call `consumer(AttentionCapture)` for every attention call at `blocks` while the block is open.

        branches: "cond" (default; the unconditional pass and rows are skipped) or "all".
        steps: pipeline step indices to capture at (from the pipeline's cache context); None for all.
        pre_rope: also hand q / k before the rotary embedding (`AttentionCapture.query_pre_rope`); None reads
            the consumer's own `pre_rope` attribute (False when it has none).
        """
        if branches not in ("cond", "all"):
            raise ValueError(f"branches must be 'cond' or 'all', got {branches!r}")
        if pre_rope is None:
            pre_rope = bool(getattr(consumer, "pre_rope", False))
        keys = self._install(blocks, attention)
        sub = _Subscription(consumer, branches, steps, pre_rope)
        for key in keys:
            self._states[key].captures.append(sub)
        try:
            yield self
        finally:
            for key in keys:
                self._states[key].captures.remove(sub)
            self._uninstall(keys)

    @contextmanager
    def frame_local(self, blocks: Iterable[int], renormalize: bool = True) -> Iterator["AttentionController"]:
        """Make video self-attention at `blocks` frame-local (each token sees its own latent frame, plus text
        tokens in joint-sequence models). `renormalize=False` is DiffTrack's non-renormalised form."""
        keys = self._install(blocks, "self")
        config = FrameLocalConfig(renormalize=renormalize)
        for key in keys:
            self._states[key].frame_local.append(config)
        try:
            yield self
        finally:
            for key in keys:
                self._states[key].frame_local.remove(config)
            self._uninstall(keys)

    @property
    def is_installed(self) -> bool:
        """Whether any instrumented processor is in place right now."""
        return bool(self._states)

    # ------------------------------------------------------------------ installation
    def _module_key(self, block: int, attention: str) -> tuple[int, str, torch.nn.Module]:
        module = self.backbone.attention_module(block, attention)
        role = "joint" if self.backbone.text_layout == "joint_first" else attention
        return self.backbone.check_block(block), role, module

    def _install(self, blocks: Iterable[int] | None, attention: str | Sequence[str]) -> list[tuple[int, str]]:
        kinds = [attention] if isinstance(attention, str) else list(attention)
        for kind in kinds:
            if kind not in ("self", "text"):
                raise ValueError(f"attention must be 'self' or 'text', got {kind!r}")
        block_list = range(self.backbone.num_blocks) if blocks is None else list(blocks)
        processor_cls = INSTRUMENTED_PROCESSORS.get(self.backbone.family)
        if processor_cls is None:
            raise InstrumentError(f"no instrumented attention processor for family {self.backbone.family!r}")
        keys: list[tuple[int, str]] = []
        try:
            for block in block_list:
                for kind in kinds:
                    index, role, module = self._module_key(block, kind)
                    key = (index, role)
                    if key in keys:
                        continue
                    state = self._states.get(key)
                    if state is None:
                        original = module.processor
                        processor = processor_cls(self, original, index, role)
                        state = _ModuleState(module=module, original=original, processor=processor)
                        self._states[key] = state
                        module.set_processor(processor)
                    state.installs += 1
                    keys.append(key)
            self._acquire_hook()
        except Exception:
            self._uninstall(keys)
            raise
        return keys

    def _uninstall(self, keys: list[tuple[int, str]]) -> None:
        for key in keys:
            state = self._states[key]
            state.installs -= 1
            if state.installs == 0:
                state.module.set_processor(state.original)
                del self._states[key]
        if keys:
            self._release_hook()

    def _acquire_hook(self) -> None:
        if self._hook_users == 0:
            registry = HookRegistry.check_if_exists_or_initialize(self.transformer)
            registry.register_hook(_ForwardInfoHook(self), _HOOK_NAME)
        self._hook_users += 1

    def _release_hook(self) -> None:
        self._hook_users -= 1
        if self._hook_users == 0:
            HookRegistry.check_if_exists_or_initialize(self.transformer).remove_hook(_HOOK_NAME, recurse=False)
            self._info = None

    # ------------------------------------------------------------------ per forward / per call
    def _begin_forward(self, hidden_states: torch.Tensor, kwargs: dict, context: Any) -> None:
        batch = hidden_states.shape[0]
        branch = getattr(context, "name", None)
        timestep = kwargs.get("timestep", getattr(context, "timestep", None))
        if isinstance(timestep, torch.Tensor) and timestep.numel() > 0:
            timestep = float(timestep.flatten()[0])
        step_index = getattr(context, "step_index", None)
        if step_index is None and branch is not None:
            step_index = self._step_from_scheduler(timestep)
        self._info = ForwardInfo(
            forward_id=next(_ids),
            grid=self.backbone.token_grid(hidden_states.shape),
            batch_size=batch,
            branch=branch,
            step_index=step_index,
            num_inference_steps=getattr(context, "num_inference_steps", None),
            timestep=float(timestep) if isinstance(timestep, (int, float)) else None,
            sigma=getattr(context, "sigma", None),
            cond_rows=self._cond_rows(branch, hidden_states),
        )

    def _step_from_scheduler(self, timestep: Any) -> int | None:
        """Pipelines whose cache context carries no step index (CogVideoX): find the timestep in the schedule."""
        pipe = getattr(self.backbone, "_pipeline", None)
        timesteps = getattr(getattr(pipe, "scheduler", None), "timesteps", None)
        if timestep is None or timesteps is None or not len(timesteps):
            return None
        matches = (timesteps.float() - float(timestep)).abs() < 1e-3
        return int(matches.nonzero()[0, 0]) if matches.any() else None

    def _cond_rows(self, branch: str | None, hidden_states: torch.Tensor) -> slice | None:
        """Batch rows that belong to the conditional branch of this forward.

        Unconditional passes and perturbed passes (guidance adds e.g. "cond_perturbed") have none.
        """
        if branch == "uncond" or (branch is not None and branch.endswith("_perturbed")):
            return None
        layout = self.cfg_layout
        if layout == "auto":
            layout = "separate"
            if branch == "cond_uncond" and hidden_states.shape[0] % 2 == 0:
                half = hidden_states.shape[0] // 2
                # The stock CogVideoX pipeline batches the same latents twice: [uncond; cond].
                if torch.equal(hidden_states[:half], hidden_states[half:]):
                    layout = "uncond_cond"
        if layout == "uncond_cond":
            return slice(hidden_states.shape[0] // 2, None)
        return slice(None)

    def _plan_call(self, processor: Any, batch: int) -> CallPlan | None:
        """None when the call should run the stock processor untouched."""
        key = (processor.block, processor.attention)
        state = self._states.get(key)
        if state is None or (not state.captures and not state.frame_local):
            return None
        info = self._info
        if info is None:
            raise InstrumentError(
                "an instrumented attention ran outside a transformer forward; call the transformer itself, "
                "not its blocks, while instruments are active"
            )
        captures: list[_Subscription] = []
        in_backward = torch._C._current_graph_task_id() != -1
        if state.captures and not in_backward and state.last_capture_forward != info.forward_id:
            captures = [s for s in state.captures if s.steps is None or info.step_index in s.steps]
            state.last_capture_forward = info.forward_id
        # Frame-local must also act in recomputation, or checkpointed gradients would be wrong.
        frame_local = state.frame_local[-1] if state.frame_local else None
        if not captures and frame_local is None:
            return None
        return CallPlan(self, info, captures, frame_local)
