"""motionguide: motion-aware curation, correspondence guidance and saliency monitoring for video DiTs.

Everything attaches to stock diffusers models from the outside (attention processors, hooks, guiders,
callbacks). Model-family differences live in :mod:`motionguide.backbones`; attention instruments in
:mod:`motionguide.attention`.
"""

__version__ = "0.1.0"
