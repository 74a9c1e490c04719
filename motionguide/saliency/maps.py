"""`SaliencyMaps`: the result of a saliency pass, per kind of map and per requested word."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = ["SaliencyMaps", "KINDS"]

#: "imap": mean of the top-k frame-separable heads' GramCol; "gramcol": sum over all heads' GramCol (the
#: reference's all-head baseline); "cross_attention": head mean of query-key logits (Wan: softmax over text
#: of logits / d), the raw cross-attention baseline.
KINDS = ("imap", "gramcol", "cross_attention")


@dataclass
class SaliencyMaps:
    """Maps at patch resolution, `maps[kind]` of shape [words, F', H', W'] (fp32, CPU), rows in `words` order.

    `selected_heads[block]`: the IMAP heads of the last captured step, best first. `chi[block]`: per-head
    Calinski-Harabasz index averaged over the captured steps. `steps`: the step (or forward) keys averaged.
    """

    maps: dict[str, torch.Tensor]
    words: list[str]
    selected_heads: dict[int, list[int]] = field(default_factory=dict)
    chi: dict[int, torch.Tensor] = field(default_factory=dict)
    steps: list[int] = field(default_factory=list)

    @property
    def kinds(self) -> list[str]:
        """The kinds of map held, in storage order."""
        return list(self.maps)

    def get(self, word: str, kind: str = "imap") -> torch.Tensor:
        """One word's map [F', H', W']."""
        if kind not in self.maps:
            raise KeyError(f"no {kind!r} maps here; available: {', '.join(self.maps)}")
        if word not in self.words:
            raise KeyError(f"no map for word {word!r}; available: {', '.join(self.words)}")
        return self.maps[kind][self.words.index(word)]

    def save(self, path: str | Path) -> Path:
        """Raw maps as one .npz (`<kind>` arrays [words, F', H', W'] plus `words`), for offline comparison."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {kind: m.numpy() for kind, m in self.maps.items()}
        np.savez(path, words=np.array(self.words), **arrays)
        return path
