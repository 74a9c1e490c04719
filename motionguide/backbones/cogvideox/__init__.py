"""CogVideoX (`CogVideoXTransformer3DModel`): the adapter (`adapter.py`) and the instrumented attention processor
(`processor.py`, loaded when instruments are installed)."""

from .adapter import CogVideoXBackbone

__all__ = ["CogVideoXBackbone"]
