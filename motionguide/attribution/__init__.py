"""Deprecated: Motive lives in :mod:`motionguide.motive` (one package with its flow estimators and masks).

This shim re-exports its public names so old imports keep working; `Selection` here is the new saved
selection (the vote outcome that had this name is :class:`motionguide.motive.MajorityVote`).
"""

import warnings

from ..motive import *  # noqa: F401,F403
from ..motive import __all__ as _motive_names

warnings.warn("motionguide.attribution is deprecated; import from motionguide.motive", DeprecationWarning,
              stacklevel=2)

__all__ = [*_motive_names, "MotiveCuration"]


def __getattr__(name: str):
    if name == "MotiveCuration":
        from ..motive.curation import MotiveCuration

        return MotiveCuration
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
