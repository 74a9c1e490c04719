"""Attention instruments for stock diffusers video transformers: capture and frame-local attention.

The mechanism only (controller, what a capture hands over, the kernels, the base of an instrumented processor and
hook hygiene); each model family's instrumented processor lives with its adapter in `motionguide/backbones/<family>/`.
"""

from .capture import AttentionCapture, CaptureConsumer, ForwardInfo
from .controller import AttentionController
from .instrumented import CallPlan, FrameLocalConfig, InstrumentedProcessor, InstrumentError
from .kernels import chunked_logsumexp, frame_local_attention, sdpa_bshd

__all__ = [
    "AttentionController",
    "AttentionCapture",
    "CaptureConsumer",
    "CallPlan",
    "ForwardInfo",
    "FrameLocalConfig",
    "InstrumentError",
    "InstrumentedProcessor",
    "frame_local_attention",
    "chunked_logsumexp",
    "sdpa_bshd",
]
