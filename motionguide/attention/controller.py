"""`AttentionController`: installs attention instruments on chosen blocks for the length of a `with` block.

The instruments are how the project's methods read and edit attention inside stock diffusers video transformers:
DiffTrack-style tracking and layer analysis read per-head q / k (https://arxiv.org/abs/2506.17220), IMAP reads
video-text attention, and correspondence guidance (CAG, same paper) makes self-attention frame-local. They are
installed through diffusers' own extension points (`Attention.set_processor`, `ModelHook`) so that the model needs
no fork and is exactly stock again afterwards.

    controller = AttentionController(pipe)           # or a transformer, or a VideoBackbone
    with controller.capture(consumer, blocks=[17], attention="self"):
        pipe(prompt, ...)                             # consumer(AttentionCapture) per call, cond branch only
    with controller.frame_local(blocks=[13, 17, 21], renormalize=False):
        v_ptb = transformer(...)                      # video tokens attend within their latent frame only

This module is the mechanism only; every model-specific part comes from the backbone (a folder
`motionguide/backbones/<family>/`): the attention module of a block, the instrumented processor that stands in for
its stock one, which batch rows of a call are conditional and the sampling step of a call. On exit the stock processor objects are put back
(`module.processor is original`) and the transformer hook is removed with everything it created, so the model is
exactly as found (hooks other code registered meanwhile keep working). Per-call state (token grid, branch, step)
comes from a diffusers `ModelHook` on the transformer: its pre-forward reads the latent shape, and as a stateful hook
it receives the pipeline's `cache_context` ("cond" / "uncond" / "cond_uncond", step index, sigma).

Gating: captures fire once per transformer forward and block: never during backward (gradient-checkpoint
recomputation) and, unless asked with `branches="all"`, only for the conditional rows of the batch.

`torch.compile`: what compiles and where the graph breaks are.

- Idle instruments (installed, nothing subscribed: `installed()`, or blocks outside every open scope) compile as
  the stock model does, `fullgraph=True` included, with one compilation for any number of forwards and
  timesteps, and under regional compilation (`compile_repeated_blocks`) as many as the stock blocks need. An
  idle processor hands the call to the stock processor after reading one flag (`InstrumentedProcessor.active`,
  never its `block`, which would recompile per block) and the hook one flag (`AttentionController._busy`); both
  change only when a scope opens or closes, never per forward, so no guard fails between forwards.
  `torch.export` (AOT) of an idle model works for the same reason.
- Frame-local attention (correspondence guidance's perturbed branch) compiles without a graph break
  (`fullgraph=True` works): a frame-local module with no capture reads its scope's options from its processor and
  the latent frames from the shape the hook noted, and its kernel is plain tensor code. Entering and leaving the
  scope switches between two cached graphs.
- While a capture is open (tracking, layer analysis, IMAP probes) each attention call it covers runs eagerly: its
  processor's `instrumented_call` is `torch.compiler.disable`d, and so is `plan_call` for families that ask for
  a plan directly. These are the graph breaks, one around each captured attention call; the rest of the
  transformer, the uncaptured blocks included, stays compiled. Consumers are arbitrary Python and the
  once-per-forward and not-in-backward gating reads autograd state, so they cannot live in a graph. The hook does
  not break: busy, it notes the latent shape, timestep and cache context, and the first captured call of the
  forward turns them into the `ForwardInfo` (forward id, branch, step, the timestep as a number), eagerly.
  Nothing per forward is read in a compiled frame, so the breaks do not recompile per forward or timestep;
  opening a scope compiles once (new flag values) and closing it returns to the cached idle graph. A capture on a
  compiled model needs `fullgraph=False`; a module with both a capture and frame-local attention runs eagerly.
- Compile the transformer itself (`torch.compile(transformer)`, `transformer.compile()` in place, or
  `compile_repeated_blocks`) and give the controller that transformer or its pipeline; `tests/test_compile.py`
  checks all of the above against the uncompiled model.
"""

from __future__ import annotations

import itertools
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Container, Iterable, Iterator, Sequence

import torch
from diffusers.hooks import ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from ..backbones import VideoBackbone, backbone_for
from .capture import CaptureConsumer, ForwardInfo
from .hooks import AttachedHook, attach_hook, detach_hook
from .instrumented import CallPlan, FrameLocalConfig, InstrumentError, Subscription

_HOOK_NAME = "motionguide_attention_controller"
_ids = itertools.count(1)


@dataclass
class _ModuleState:
    module: torch.nn.Module
    original: Any
    processor: Any
    installs: int = 0
    captures: list[Subscription] = field(default_factory=list)
    frame_local: list[FrameLocalConfig] = field(default_factory=list)
    last_capture_forward: int = -1


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
        """Record the token grid and cache context for this forward; pass the inputs through unchanged.

        Idle (nothing subscribed) it reads one flag and nothing else, so a compiled transformer neither breaks
        its graph nor recompiles here. Busy, it only notes the latent shape, the timestep and where the cache
        context is; the first captured attention call of the forward turns them into a `ForwardInfo`, eagerly. No
        graph break here keeps the busy flag among the guards of the compiled forward, so that the idle graph is
        picked again once the scopes close.
        """
        if self.controller._busy:
            hidden_states = args[0] if args else kwargs["hidden_states"]
            timestep = {"timestep": kwargs["timestep"]} if "timestep" in kwargs else {}
            shape = tuple(hidden_states.shape)
            self.controller._forward_shape = shape
            self.controller._pending_forward = (shape, timestep, self.state_manager)
        return args, kwargs

    def reset_state(self, module):
        """Nothing to reset: per-forward info lives on the controller."""
        return module


class AttentionController:
    """Installs and scopes attention instruments on one transformer (see the module docstring)."""

    def __init__(self, model: Any, every_expert: bool = True):
        """model: a pipeline, transformer or `VideoBackbone`. every_expert: on a pipeline with several experts
        chosen by timestep (Wan2.2 A14B), each scope also opens on the other experts (one controller each, at
        the same block indices), so a capture during sampling sees whichever expert runs each step; False
        instruments only the backbone's own transformer (per-expert callers such as guidance)."""
        self.backbone: VideoBackbone = model if isinstance(model, VideoBackbone) else backbone_for(model)
        self.transformer = self.backbone.transformer
        others = range(len(self.backbone.experts)) if every_expert else ()
        self._other_experts = [AttentionController(self.backbone.for_expert(index), every_expert=False)
                               for index in others if index != self.backbone.expert]
        self._states: dict[tuple[int, str], _ModuleState] = {}
        self._hook_users = 0
        self._hook: AttachedHook | None = None
        self._info: ForwardInfo | None = None
        # whether any installed processor has something subscribed: the one value the forward hook reads under
        # torch.compile (a guard), so it changes only when a scope opens or closes (see the module docstring)
        self._busy = False
        # (latent shape, {"timestep": ...} or {}, the hook's state manager) noted by the hook at a busy forward
        self._pending_forward: tuple | None = None
        self._forward_shape: tuple[int, ...] | None = None  # latent shape of the busy forward under way

    # ------------------------------------------------------------------ public scopes
    @contextmanager
    def installed(self, blocks: Iterable[int] | None = None, attention: str | Sequence[str] = "self") -> Iterator["AttentionController"]:
        """Install instrumented processors in pass-through mode (useful for parity checks)."""
        keys = self._install(blocks, attention)
        try:
            with self._on_other_experts("installed", blocks, attention):
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
        sub = Subscription(consumer, branches, steps, pre_rope)
        for key in keys:
            self._states[key].captures.append(sub)
        self._refresh_activity()
        try:
            with self._on_other_experts("capture", consumer, blocks, attention, branches, steps, pre_rope):
                yield self
        finally:
            for key in keys:
                self._states[key].captures.remove(sub)
            self._refresh_activity()
            self._uninstall(keys)

    @contextmanager
    def frame_local(self, blocks: Iterable[int], renormalize: bool = True) -> Iterator["AttentionController"]:
        """Make video self-attention at `blocks` frame-local (each token sees its own latent frame, plus text
        tokens in joint-sequence models). `renormalize=False` is DiffTrack's non-renormalised form."""
        keys = self._install(blocks, "self")
        config = FrameLocalConfig(renormalize=renormalize)
        for key in keys:
            self._states[key].frame_local.append(config)
        self._refresh_activity()
        try:
            with self._on_other_experts("frame_local", blocks, renormalize):
                yield self
        finally:
            for key in keys:
                self._states[key].frame_local.remove(config)
            self._refresh_activity()
            self._uninstall(keys)

    def _on_other_experts(self, scope: str, *args: Any) -> ExitStack:
        """The same scope opened on every other expert's controller (nothing for one-transformer models)."""
        stack = ExitStack()
        try:
            for other in self._other_experts:
                stack.enter_context(getattr(other, scope)(*args))
        except BaseException:
            stack.close()
            raise
        return stack

    @property
    def is_installed(self) -> bool:
        """Whether any instrumented processor is in place right now."""
        return bool(self._states) or any(other.is_installed for other in self._other_experts)

    # ------------------------------------------------------------------ installation
    def _refresh_activity(self) -> None:
        """Set each processor's `active` flag and the controller's `_busy` after a subscription changed.

        These flags are all that idle instruments read in a forward, so a compiled transformer is guarded on
        them alone. Leaving the busy state drops the last forward's info, so that no stale info outlives it.
        """
        busy = False
        for state in self._states.values():
            processor = state.processor
            processor.active = bool(state.captures or state.frame_local)
            processor.capturing = bool(state.captures)
            processor.frame_local = state.frame_local[-1] if state.frame_local else None
            busy = busy or processor.active
        if not busy:
            self._info = None
            self._pending_forward = None
            self._forward_shape = None
        self._busy = busy
    def _module_key(self, block: int, attention: str) -> tuple[int, str, torch.nn.Module]:
        module = self.backbone.attention_module(block, attention)
        return self.backbone.check_block(block), self.backbone.attention_role(attention), module

    def _instrumented_processor(self, original: Any, index: int, role: str) -> Any:
        try:
            return self.backbone.instrumented_processor(self, original, index, role)
        except NotImplementedError as error:
            raise InstrumentError(str(error)) from None

    def _install(self, blocks: Iterable[int] | None, attention: str | Sequence[str]) -> list[tuple[int, str]]:
        kinds = [attention] if isinstance(attention, str) else list(attention)
        for kind in kinds:
            if kind not in ("self", "text"):
                raise ValueError(f"attention must be 'self' or 'text', got {kind!r}")
        block_list = range(self.backbone.num_blocks) if blocks is None else list(blocks)
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
                        processor = self._instrumented_processor(original, index, role)
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
            self._hook = attach_hook(self.transformer, _ForwardInfoHook(self), _HOOK_NAME)
        self._hook_users += 1

    def _release_hook(self) -> None:
        self._hook_users -= 1
        if self._hook_users == 0:
            self._info = None
            detach_hook(self._hook)
            self._hook = None

    # ------------------------------------------------------------------ per forward / per call
    def _begin_forward(self, shape: tuple[int, ...], kwargs: dict, context: Any) -> None:
        batch = shape[0]
        branch = getattr(context, "name", None)
        timestep = kwargs.get("timestep", getattr(context, "timestep", None))
        if isinstance(timestep, torch.Tensor) and timestep.numel() > 0:
            timestep = float(timestep.flatten()[0])
        step_index = getattr(context, "step_index", None)
        if step_index is None and branch is not None:
            step_index = self.backbone.schedule_step(timestep)
        cfg = self.backbone.runs_classifier_free_guidance(step_index) if branch is not None else None
        self._info = ForwardInfo(
            forward_id=next(_ids),
            grid=self.backbone.token_grid(shape),
            batch_size=batch,
            branch=branch,
            step_index=step_index,
            num_inference_steps=getattr(context, "num_inference_steps", None),
            timestep=float(timestep) if isinstance(timestep, (int, float)) else None,
            sigma=getattr(context, "sigma", None),
            cond_rows=self.backbone.conditional_rows(branch, batch, cfg),
        )

    def forward_frames(self) -> int:
        """Latent frames of the forward under way (integer arithmetic on its latent shape: traceable)."""
        if self._forward_shape is None:
            raise InstrumentError(
                "an instrumented attention ran outside a transformer forward; call the transformer itself, "
                "not its blocks, while instruments are active"
            )
        return self.backbone.token_grid(self._forward_shape).frames

    @torch.compiler.disable
    def plan_call(self, processor: Any, batch: int) -> CallPlan | None:
        """What an instrumented processor's call must do; None when it should run the stock processor untouched.

        Eager under torch.compile (a graph break): it keeps per-forward state and reads autograd's.
        """
        key = (processor.block, processor.attention)
        state = self._states.get(key)
        if state is None or (not state.captures and not state.frame_local):
            return None
        if self._pending_forward is not None:  # the first planned call of a forward
            shape, kwargs, state_manager = self._pending_forward
            self._pending_forward = None
            self._begin_forward(shape, kwargs, state_manager._context)
        info = self._info
        if info is None:
            raise InstrumentError(
                "an instrumented attention ran outside a transformer forward; call the transformer itself, "
                "not its blocks, while instruments are active"
            )
        captures: list[Subscription] = []
        in_backward = torch._C._current_graph_task_id() != -1
        if state.captures and not in_backward and state.last_capture_forward != info.forward_id:
            captures = [s for s in state.captures if s.steps is None or info.step_index in s.steps]
            state.last_capture_forward = info.forward_id
        # Frame-local must also act in recomputation, or checkpointed gradients would be wrong.
        frame_local = state.frame_local[-1] if state.frame_local else None
        if not captures and frame_local is None:
            return None
        return CallPlan(info, captures, frame_local)
