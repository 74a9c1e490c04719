"""HunyuanVideo (`HunyuanVideoTransformer3DModel`): the adapter (`adapter.py`) and the instrumented attention
processor (`processor.py`, loaded when instruments are installed)."""

from .adapter import HunyuanVideoBackbone

__all__ = ["HunyuanVideoBackbone"]
