"""Correspondence guidance (CAG) as a diffusers guider, for modular pipelines (e.g. `WanBlocks`).

CAG is DiffTrack's (https://arxiv.org/abs/2506.17220): a prediction with frame-local self-attention at the blocks
that carry cross-frame correspondence lacks temporal consistency, so guiding away from it, like CFG guides away
from the unconditional prediction, strengthens it.

    guider = CorrespondenceGuidance.from_profile("wan2.1-t2v-1.3b", modular_pipe.transformer, guidance_scale=5.0)
    modular_pipe.update_components(guider=guider)

Branches, in the order the denoise loop runs them: pred_cond, pred_uncond (when CFG is on), pred_cond_perturbed
(when the step is inside the correspondence window). `prepare_models` switches frame-local self-attention on at
the guidance blocks for the perturbed branch only; `cleanup_models` puts the stock processors back. The perturbed
branch runs the whole transformer (the classic-pipeline adapter, `correspondence_guided`, also reuses the
conditional pass's blocks before the first guidance block).
"""

from __future__ import annotations

import math
import os
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.guiders.guider_utils import BaseGuidance, GuiderOutput, rescale_noise_cfg

from ..attention import AttentionController
from ..backbones import LayerProfile, backbone_for
from .settings import cag_combine, check_attention_backend, resolve_cag_settings, step_in_window

if TYPE_CHECKING:  # pragma: no cover
    from diffusers.modular_pipelines.modular_pipeline import BlockState


class CorrespondenceGuidance(BaseGuidance):
    """v = v_u + w (v_c - v_u) + s (v_c - v_ptb), v_ptb with frame-local attention at `correspondence_blocks`.

    Args:
        guidance_scale: w (CFG; off at 1.0, as in diffusers' CFG guider).
        correspondence_scale: s (off at 0.0).
        correspondence_blocks: transformer blocks made frame-local in the perturbed branch.
        correspondence_start, correspondence_stop: window of the perturbed branch, as fractions of the steps.
        renormalize: frame-local softmax renormalised (True) or DiffTrack's dropped cross-frame mass (False).
        guidance_rescale, start, stop, enabled: as in diffusers' `ClassifierFreeGuidance`.

    On a tiny random Wan transformer, without a profile (the blocks given instead):

    >>> from motionguide.testing import tiny_wan_transformer
    >>> guider = CorrespondenceGuidance.from_profile(None, tiny_wan_transformer(num_layers=2), blocks=[1], scale=0.8)
    >>> guider.correspondence_blocks, guider.correspondence_scale, guider.num_conditions
    ([1], 0.8, 3)
    """

    _input_predictions = ["pred_cond", "pred_uncond", "pred_cond_perturbed"]

    @register_to_config
    def __init__(
        self,
        guidance_scale: float = 5.0,
        correspondence_scale: float = 1.0,
        correspondence_blocks: list[int] | None = None,
        correspondence_start: float = 0.0,
        correspondence_stop: float = 1.0,
        renormalize: bool = False,
        guidance_rescale: float = 0.0,
        start: float = 0.0,
        stop: float = 1.0,
        enabled: bool = True,
    ):
        super().__init__(start, stop, enabled)
        if not correspondence_blocks:
            raise ValueError("CorrespondenceGuidance needs correspondence_blocks (the blocks made frame-local); "
                             "build it with CorrespondenceGuidance.from_profile(...) to take them from a profile")
        if not 0.0 <= correspondence_start < correspondence_stop <= 1.0:
            raise ValueError("need 0 <= correspondence_start < correspondence_stop <= 1 (fractions of the steps), "
                             f"got {correspondence_start}, {correspondence_stop}")
        self.guidance_scale = guidance_scale
        self.correspondence_scale = correspondence_scale
        self.correspondence_blocks = [int(b) for b in correspondence_blocks]
        self.correspondence_window = (correspondence_start, correspondence_stop)
        self.renormalize = renormalize
        self.guidance_rescale = guidance_rescale
        self._frame_local: AbstractContextManager | None = None
        self._controllers: dict[int, AttentionController] = {}

    @classmethod
    def from_profile(cls, profile: str | os.PathLike | LayerProfile | None, transformer: torch.nn.Module,
                     guidance_scale: float = 5.0, **overrides: Any) -> "CorrespondenceGuidance":
        """Blocks, window, scale and renormalisation from a layer profile's `guidance` section (None: the model's
        shipped profile), checked against `transformer`; keyword overrides: scale, blocks, window, renormalize."""
        settings = resolve_cag_settings(backbone_for(transformer), profile=profile, **overrides)
        return cls(guidance_scale=guidance_scale, correspondence_scale=settings.scale,
                   correspondence_blocks=list(settings.blocks), correspondence_start=settings.window[0],
                   correspondence_stop=settings.window[1], renormalize=settings.renormalize)

    # ------------------------------------------------------------------ which branches run
    def _is_cfg_enabled(self) -> bool:
        if not self._enabled or math.isclose(self.guidance_scale, 1.0):
            return False
        if self._num_inference_steps is None:
            return True
        return step_in_window(self._step, self._num_inference_steps, (self._start, self._stop))

    def _is_cag_enabled(self) -> bool:
        if not self._enabled or math.isclose(self.correspondence_scale, 0.0):
            return False
        if self._num_inference_steps is None:
            return True
        return step_in_window(self._step, self._num_inference_steps, self.correspondence_window)

    @property
    def num_conditions(self) -> int:
        """Branches this step runs: conditional, plus unconditional and perturbed when enabled."""
        return 1 + int(self._is_cfg_enabled()) + int(self._is_cag_enabled())

    def _branches(self) -> list[tuple[int, str]]:
        """(tuple index into the guider input fields, prediction name) per branch, in run order."""
        branches = [(0, "pred_cond")]
        if self._is_cfg_enabled():
            branches.append((1, "pred_uncond"))
        if self._is_cag_enabled():
            branches.append((0, "pred_cond_perturbed"))  # conditional inputs, perturbed attention
        return branches

    @property
    def _in_perturbed_branch(self) -> bool:
        return self._is_cag_enabled() and self._count_prepared == self.num_conditions

    @property
    def is_conditional(self) -> bool:
        """Whether the branch being prepared uses the conditional inputs (plain or perturbed)."""
        return self._count_prepared == 1 or self._in_perturbed_branch

    # ------------------------------------------------------------------ inputs
    def prepare_inputs(self, data: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> list["BlockState"]:
        """One batch per branch this step runs, in run order."""
        return [self._prepare_batch(data, index, name) for index, name in self._branches()]

    def prepare_inputs_from_block_state(self, data: "BlockState",
                                        input_fields: dict[str, str | tuple[str, str]]) -> list["BlockState"]:
        """One batch per branch this step runs, read from the block state's input fields."""
        return [self._prepare_batch_from_block_state(input_fields, data, index, name)
                for index, name in self._branches()]

    # ------------------------------------------------------------------ models
    def _controller(self, denoiser: torch.nn.Module) -> AttentionController:
        controller = self._controllers.get(id(denoiser))
        if controller is None or controller.transformer is not denoiser:
            controller = AttentionController(denoiser)
            self._controllers = {id(denoiser): controller}
        return controller

    def prepare_models(self, denoiser: torch.nn.Module) -> None:
        """Count the branch; for the perturbed one, make the guidance blocks frame-local until cleanup."""
        self._count_prepared += 1
        if self._in_perturbed_branch:
            controller = self._controller(denoiser)
            check_attention_backend(controller.backbone, self.correspondence_blocks)
            scope = controller.frame_local(blocks=self.correspondence_blocks, renormalize=self.renormalize)
            scope.__enter__()
            self._frame_local = scope

    def cleanup_models(self, denoiser: torch.nn.Module) -> None:
        """Leave an open frame-local scope, putting the stock processors back."""
        if self._frame_local is not None:
            scope, self._frame_local = self._frame_local, None
            scope.__exit__(None, None, None)

    # ------------------------------------------------------------------ combination
    def forward(self, pred_cond: torch.Tensor, pred_uncond: torch.Tensor | None = None,
                pred_cond_perturbed: torch.Tensor | None = None) -> GuiderOutput:
        """Combine the branch predictions with CFG and correspondence guidance, then optional rescale."""
        pred = cag_combine(
            pred_cond,
            pred_uncond if self._is_cfg_enabled() else None,
            pred_cond_perturbed if self._is_cag_enabled() else None,
            self.guidance_scale,
            self.correspondence_scale,
        )
        if self.guidance_rescale > 0.0:
            pred = rescale_noise_cfg(pred, pred_cond, self.guidance_rescale)
        return GuiderOutput(pred=pred, pred_cond=pred_cond, pred_uncond=pred_uncond)
