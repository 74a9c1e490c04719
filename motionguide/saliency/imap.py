"""IMAP aggregation as a capture consumer: per layer, CHI head selection, GramCol maps, baselines.

IMAP is Jun et al., "I'm a Map! Interpretable Motion-Attentive Maps...", arXiv 2603.02919,
https://arxiv.org/abs/2603.02919. Intuition: heads whose outputs cluster by frame (high Calinski-Harabasz index
with frame labels) are the motion heads; averaging the GramCol maps of only the top-k of them per layer gives a
map of where the motion a word names happens.

    acc = SaliencyAccumulator({"circle": [2], "moves": [3]}, blocks=[5, 6, 7], top_k=3)
    with AttentionController(pipe).capture(acc, blocks=acc.blocks, attention="text"):
        ...                                    # one forward (real video) or a sampling run (generated video)
    maps = acc.result()                        # SaliencyMaps, maps["imap"]: [words, F', H', W']

The same on a tiny random Wan transformer, words at text slots 2 and 3 of an 8-token prompt embedding:

>>> import torch
>>> from motionguide.attention import AttentionController
>>> from motionguide.backbones import backbone_for
>>> from motionguide.testing import tiny_wan_transformer
>>> backbone = backbone_for(tiny_wan_transformer(num_layers=2))
>>> acc = SaliencyAccumulator({"circle": [2], "moves": [3]}, blocks=[0, 1], top_k=1)
>>> with torch.no_grad(), AttentionController(backbone).capture(acc, blocks=acc.blocks, attention="text"):
...     _ = backbone.predict(torch.randn(1, 16, 3, 8, 8), torch.tensor([500.0]), torch.randn(1, 8, 32))
>>> acc.result().maps["imap"].shape  # [words, F', H', W']
torch.Size([2, 3, 4, 4])

Per capture (one block of one conditional forward): CHI for all heads from the outputs alone, then GramCol
head chunk by head chunk, adding into three running maps of [T_keep, F', H', W'] (selected heads, all heads,
cross-attention logits). Only those stay alive; order as in the reference: z-score -> head mean / sum ->
layer mean -> step mean (slicing the kept slots early is exact, every step after the z-score is linear).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch

from ..attention.capture import AttentionCapture
from .gramcol import gramcol_from_scores, head_chunk_size, match_scores
from .heads import calinski_harabasz, top_k_heads
from .maps import KINDS, SaliencyMaps

__all__ = ["SaliencyAccumulator"]


def _normalise_tokens(tokens: Mapping[str, int | Sequence[int]] | Sequence[int]) -> dict[str, list[int]]:
    if isinstance(tokens, Mapping):
        named = {str(w): ([p] if isinstance(p, int) else [int(i) for i in p]) for w, p in tokens.items()}
    else:
        named = {str(int(p)): [int(p)] for p in tokens}
    if not named or any(not p for p in named.values()):
        raise ValueError("give at least one word with at least one token position, e.g. {'circle': [2]}; "
                         "word_token_positions(tokenizer, prompt, words) builds this mapping")
    return named


class SaliencyAccumulator:
    """Consumer for `AttentionController.capture(..., attention="text")`; see the module docstring.

    tokens: {word: token position(s)} (from :func:`word_token_positions`) or a list of positions.
    blocks: blocks to use (captures at other blocks are ignored); None uses every captured block.
    top_k: IMAP heads per layer. real_slots: z-score over the first `real_slots` text slots instead of all T.
    kinds: which maps to compute. cross_attention_softmax: softmax over text of logits / d for the baseline;
    None picks the reference's choice (yes for a separate cross-attention such as Wan's, no for joint).
    head_chunk: heads processed together (None: as many as fit a 128 MiB intermediate).
    """

    def __init__(self, tokens: Mapping[str, int | Sequence[int]] | Sequence[int], blocks: Iterable[int] | None,
                 top_k: int, real_slots: int | None = None, kinds: Sequence[str] = KINDS,
                 cross_attention_softmax: bool | None = None, head_chunk: int | None = None):
        self.tokens = _normalise_tokens(tokens)
        self.words = list(self.tokens)
        self.keep = sorted({p for positions in self.tokens.values() for p in positions})
        self.blocks = None if blocks is None else sorted({int(b) for b in blocks})
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        self.top_k = top_k
        self.real_slots = real_slots
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise ValueError(f"unknown map kinds {unknown}; choose from {', '.join(KINDS)}")
        self.kinds = [k for k in KINDS if k in kinds]
        self.cross_attention_softmax = cross_attention_softmax
        self.head_chunk = head_chunk
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated (the settings stay)."""
        self._steps: dict[int, dict[str, torch.Tensor]] = {}
        self._layers_per_step: dict[int, int] = {}
        self._chi_sum: dict[int, torch.Tensor] = {}
        self._chi_count: dict[int, int] = {}
        self.selected_heads: dict[int, list[int]] = {}
        self._shape: tuple[int, ...] | None = None

    # ------------------------------------------------------------------ per capture
    def __call__(self, capture: AttentionCapture, step: int | None = None) -> None:
        """Add one capture; `step` keys the step average (default: the pipeline's step index, else the forward)."""
        if self.blocks is not None and capture.block not in self.blocks:
            return
        k_text = capture.text_key()
        if k_text is None:
            raise ValueError(
                f"block {capture.block}: a saliency capture needs text keys; capture with attention='text' "
                "(Wan's cross-attention, CogVideoX's joint attention), not 'self'"
            )
        q_video, out_video = capture.video_query(), capture.video_output()
        if q_video.shape[0] != 1:
            raise ValueError(
                f"SaliencyAccumulator handles one video per forward, got a conditional batch of {q_video.shape[0]}; "
                "run one prompt at a time (num_videos_per_prompt=1) or one accumulator per video"
            )
        layer, chi, selected = self.layer_maps(q_video[0], k_text[0], out_video[0], capture)
        key = step if step is not None else capture.info.step_index
        key = key if key is not None else capture.info.forward_id
        self._add(key, capture.block, layer, chi, selected)

    def layer_maps(self, q_video: torch.Tensor, k_text: torch.Tensor, out_video: torch.Tensor,
                   capture: AttentionCapture) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[int]]:
        """One layer's maps {kind: [T_keep, F', H', W']} plus per-head CHI and the selected heads."""
        grid = capture.grid
        heads, num_video, _ = q_video.shape
        num_text = k_text.shape[1]
        if self.top_k > heads:
            raise ValueError(f"top_k={self.top_k} exceeds the {heads} heads of block {capture.block}; lower top_k")
        chunk = self.head_chunk or head_chunk_size(heads, num_video, num_text)
        chi = calinski_harabasz(out_video, grid.frames, head_chunk=chunk)
        selected = top_k_heads(chi, self.top_k)
        slots = num_text if self.real_slots is None else self.real_slots
        softmax = self.cross_attention_softmax
        if softmax is None:
            softmax = capture.attention == "text"
        shape = (len(self.keep), grid.frames, grid.height, grid.width)
        maps = {kind: torch.zeros(shape, dtype=torch.float32, device=out_video.device) for kind in self.kinds}
        # IMAP alone needs only the selected heads; the baselines need every head.
        needed = sorted(selected) if self.kinds == ["imap"] else list(range(heads))
        for start in range(0, len(needed), chunk):
            idx = needed[start:start + chunk]
            rows = slice(idx[0], idx[-1] + 1) if idx == list(range(idx[0], idx[-1] + 1)) else idx
            scores = match_scores(q_video[rows], k_text[rows])  # [c, N_v, T]
            if "imap" in maps or "gramcol" in maps:
                z = gramcol_from_scores(scores, out_video[rows], grid, self.real_slots, self.keep)
                if "gramcol" in maps:
                    maps["gramcol"] += z.sum(dim=0)
                chosen = [i for i, h in enumerate(idx) if h in selected]
                if "imap" in maps and chosen:
                    maps["imap"] += z[chosen].sum(dim=0)
                del z
            if "cross_attention" in maps:
                logits = scores[..., :slots]
                if softmax:
                    logits = (logits / q_video.shape[-1]).softmax(dim=-1)
                kept = logits[..., self.keep].sum(dim=0)  # [N_v, T_keep]
                maps["cross_attention"] += kept.T.reshape(shape)
            del scores
        if "imap" in maps:
            maps["imap"] /= self.top_k
        if "cross_attention" in maps:
            maps["cross_attention"] /= heads
        return maps, chi, selected

    def _add(self, key: int, block: int, layer: dict[str, torch.Tensor], chi: torch.Tensor,
             selected: list[int]) -> None:
        shape = tuple(next(iter(layer.values())).shape)
        if self._shape is not None and shape != self._shape:
            raise ValueError(
                f"captures of different token grids ({self._shape[1:]} then {shape[1:]}) cannot be averaged; "
                "use one accumulator per video (or call reset())"
            )
        self._shape = shape
        step = self._steps.setdefault(key, {})
        for kind, value in layer.items():
            step[kind] = step[kind] + value if kind in step else value
        self._layers_per_step[key] = self._layers_per_step.get(key, 0) + 1
        self._chi_sum[block] = self._chi_sum.get(block, 0) + chi.float().cpu()
        self._chi_count[block] = self._chi_count.get(block, 0) + 1
        self.selected_heads[block] = selected

    # ------------------------------------------------------------------ result
    @property
    def num_captures(self) -> int:
        """Layer captures accumulated so far, over all steps."""
        return sum(self._layers_per_step.values())

    def result(self) -> SaliencyMaps:
        """Mean over layers within each step, then over steps; one row per word (mean over its positions)."""
        if not self._steps:
            where = "any block" if self.blocks is None else f"blocks {self.blocks}"
            raise RuntimeError(
                f"no attention call was captured at {where}; run the forward inside "
                "controller.capture(accumulator, blocks=accumulator.blocks, attention='text')"
            )
        maps = {}
        row = {p: i for i, p in enumerate(self.keep)}
        for kind in self.kinds:
            per_step = [self._steps[s][kind] / self._layers_per_step[s] for s in self._steps]
            mean = torch.stack(per_step).mean(dim=0)
            words = [mean[[row[p] for p in self.tokens[w]]].mean(dim=0) for w in self.words]
            maps[kind] = torch.stack(words).cpu()
        chi = {b: self._chi_sum[b] / self._chi_count[b] for b in sorted(self._chi_sum)}
        return SaliencyMaps(maps=maps, words=list(self.words), selected_heads=dict(sorted(self.selected_heads.items())),
                            chi=chi, steps=sorted(self._steps))
