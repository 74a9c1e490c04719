"""Attention instruments for stock diffusers video transformers: capture and frame-local attention."""

from .capture import AttentionCapture, CaptureConsumer, ForwardInfo
from .controller import AttentionController, FrameLocalConfig
from .kernels import chunked_logsumexp, frame_local_attention, sdpa_bshd
from .processors import InstrumentedCogVideoXProcessor, InstrumentedWanProcessor, InstrumentError

__all__ = [
    "AttentionController",
    "AttentionCapture",
    "CaptureConsumer",
    "ForwardInfo",
    "FrameLocalConfig",
    "InstrumentError",
    "InstrumentedWanProcessor",
    "InstrumentedCogVideoXProcessor",
    "frame_local_attention",
    "chunked_logsumexp",
    "sdpa_bshd",
]
