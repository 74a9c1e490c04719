"""`--curation random`: the baseline every curation method is compared with at the same budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from .callbacks import Curation, CurationResult, TrainContext, register_curation

__all__ = ["RandomCuration", "RandomCurationOptions"]


@dataclass
class RandomCurationOptions:
    """`method_options.random`: `fraction` of the clips to keep (0.1)."""

    fraction: float = 0.1

    def __post_init__(self):
        if isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float)) \
                or not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"method_options.random.fraction: expected a number in (0, 1], got {self.fraction!r}")
        self.fraction = float(self.fraction)


@register_curation("random")
class RandomCuration(Curation):
    """A seeded random `fraction` of the clips (same budget as a method's top fraction); seeded by `seed`."""

    name = "random"
    options_class = RandomCurationOptions

    def select(self, ctx: TrainContext) -> CurationResult:
        """A seeded random `fraction` of the clips (at least one), sorted."""
        n = len(ctx.dataset)
        k = max(1, int(round(self.settings.fraction * n)))
        rng = np.random.default_rng(ctx.config.seed)
        chosen = sorted(int(i) for i in rng.choice(n, size=k, replace=False))
        return CurationResult(indices=chosen, summary={"method": "random", "kept": k, "of": n})

    def fingerprint(self) -> dict[str, Any]:
        """{fraction, mode}; random has one mode (None), kept so checkpoints from before the split resume."""
        return {"fraction": self.settings.fraction, "mode": None}
