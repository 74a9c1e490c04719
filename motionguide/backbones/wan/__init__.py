"""Wan2.1 / Wan2.2 (`WanTransformer3DModel`): the adapter (`adapter.py`) and the instrumented attention processor
(`processor.py`, loaded when instruments are installed)."""

from .adapter import WanBackbone

__all__ = ["WanBackbone"]
