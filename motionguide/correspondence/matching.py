"""DiffTrack matching costs between latent frames, from captured self-attention descriptors.

Cost between a source frame (frame 0) and a target frame j, per head h, with temperature tau:

    A_fwd[h](p, x) = softmax_x( q0_p . kj_x / tau )          softmax over frame j's tokens only
    A_bwd[h](p, x) = softmax_p( qj_x . k0_p / tau )^T        softmax over frame 0's tokens, transposed
    C = 1/2 (mean_h A_fwd + mean_h A_bwd)                    heads averaged after each softmax

Descriptors: "qk" is DiffTrack's (queries and keys after normalisation and RoPE); "qk_no_rope" takes them before
the rotary embedding, so the logits carry content only (on the toy model the rotary term dominates q.k and pulls
every match to the query's own position: `benchmarks/difftrack_rope_diagnostic.py`); "qk_mixed" adds the two,
q.k + w * q~.k~ with w = `content_weight` (position keeps textureless regions in place, content follows moving
objects); "output" is the intermediate-feature baseline.

Several blocks / steps are aggregated by concatenating q and k along channels (the logits add up) and dividing
the logits by the count. The intermediate-feature baseline uses the attention output before `to_out` (heads
concatenated) with a plain dot product in one direction.

Memory: a cost is computed for one frame pair at a time and a few heads at a time, so the largest tensor is
[head_chunk, P0, Pj] logits (bounded by `chunk_elements`), never a sequence x sequence map.
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator, Sequence

import torch

from ..attention.capture import AttentionCapture
from ..backbones.profiles import DEFAULT_CONTENT_WEIGHT, PRE_ROPE_DESCRIPTORS
from ..backbones.base import TokenGrid

DESCRIPTORS = ("qk", "qk_no_rope", "qk_mixed", "output")
DIRECTIONS = ("bidirectional", "forward", "backward")
#: named temperatures `resolve_temperature` accepts besides a positive number (the `track --temperature` choices)
TEMPERATURES = ("sqrt_dim", "sqrt_heads")

#: upper bound on the logits held at once while computing one pair cost (elements, fp32)
DEFAULT_CHUNK_ELEMENTS = 1 << 24


def resolve_temperature(temperature: str | float, head_dim: int, num_heads: int) -> float:
    """tau: "sqrt_dim" = sqrt(d_head) (the paper and DiffTrack's analysis path), "sqrt_heads" = sqrt(num heads)
    (DiffTrack's TAP-Vid path, a mislabelled variable kept for reproduction), or a positive number."""
    if temperature == "sqrt_dim":
        return math.sqrt(head_dim)
    if temperature == "sqrt_heads":
        return math.sqrt(num_heads)
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and temperature > 0:
        return float(temperature)
    named = ", ".join(repr(name) for name in TEMPERATURES)
    raise ValueError(f"temperature must be {named} or a positive number, got {temperature!r}")


def _check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value


def pair_cost(
    q_src: torch.Tensor,
    k_src: torch.Tensor,
    q_tgt: torch.Tensor,
    k_tgt: torch.Tensor,
    scale: float,
    direction: str = "bidirectional",
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Head-averaged matching cost [P0, Pj] between two frames' per-head descriptors.

    Args:
        q_src, k_src: [H, P0, D] queries / keys of the source frame's tokens.
        q_tgt, k_tgt: [H, Pj, D] queries / keys of the target frame's tokens.
        scale: multiplies the logits (1 / (tau * count)).
        direction: "forward" (softmax over target tokens), "backward" (softmax over source tokens, transposed)
            or "bidirectional" (their mean).
    """
    _check_choice("direction", direction, DIRECTIONS)
    heads, p0, _ = q_src.shape
    pj = q_tgt.shape[1]
    per_head = p0 * pj * (2 if direction == "bidirectional" else 1)
    step = max(1, chunk_elements // max(1, per_head))
    total = torch.zeros(p0, pj, dtype=torch.float32, device=q_src.device)
    for start in range(0, heads, step):
        sl = slice(start, start + step)
        if direction in ("forward", "bidirectional"):
            logits = torch.bmm(q_src[sl].float(), k_tgt[sl].float().transpose(1, 2)) * scale  # [h, P0, Pj]
            total += logits.softmax(dim=-1).sum(dim=0)
            del logits
        if direction in ("backward", "bidirectional"):
            logits = torch.bmm(q_tgt[sl].float(), k_src[sl].float().transpose(1, 2)) * scale  # [h, Pj, P0]
            total += logits.softmax(dim=-1).sum(dim=0).transpose(0, 1)
            del logits
    return total / (heads * (2 if direction == "bidirectional" else 1))


def feature_cost(f_src: torch.Tensor, f_tgt: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Intermediate-feature baseline: plain dot products [P0, Pj] of [P0, C] and [Pj, C] features (fp32)."""
    return (f_src.float() @ f_tgt.float().transpose(0, 1)) * scale


class CorrespondenceAccumulator:
    """A capture consumer that keeps the video descriptors it needs and gives frame-pair costs on demand.

        acc = CorrespondenceAccumulator(blocks=[17])
        with controller.capture(acc, blocks=acc.blocks):
            pipe(...)                                  # or one transformer forward
        cost = acc.cost(3)                             # [P0, P3], softmax rows over frame 3's tokens

    On a tiny random Wan transformer (one forward, 3 latent frames of 4x4 tokens):

    >>> import torch
    >>> from motionguide.attention import AttentionController
    >>> from motionguide.backbones import backbone_for
    >>> from motionguide.testing import tiny_wan_transformer
    >>> backbone = backbone_for(tiny_wan_transformer(num_layers=2))
    >>> acc = CorrespondenceAccumulator(blocks=[1])
    >>> with torch.no_grad(), AttentionController(backbone).capture(acc, blocks=acc.blocks):
    ...     _ = backbone.predict(torch.randn(1, 16, 3, 8, 8), torch.tensor([500.0]), torch.randn(1, 8, 32))
    >>> acc.cost(2).shape  # frame-0 tokens x frame-2 tokens
    torch.Size([16, 16])

    It stores the conditional rows' video q and k (or attention outputs) of each accepted capture, cloned so the
    attention's own tensors are freed; aggregation over blocks / steps concatenates them along channels. Use
    one accumulator per video (or per `reset()`).

    Args:
        blocks: blocks whose self-attention to accept (others are ignored).
        steps: pipeline step indices to accept (negative counts from the end when the pipeline reports its
            number of steps); None accepts every step.
        descriptor: "qk" (post-norm, post-RoPE queries and keys), "qk_no_rope" (post-norm, pre-RoPE), "qk_mixed"
            (logits q.k + content_weight * pre-RoPE q.k; counts as two captures in the 1 / count scale) or
            "output" (attention output before `to_out`).
        content_weight: weight of the pre-RoPE logits in "qk_mixed" (> 0).
        direction: "bidirectional", "forward" or "backward" ("qk" only; features use one direction).
        temperature: "sqrt_dim", "sqrt_heads" or a number (see :func:`resolve_temperature`).
    """

    def __init__(
        self,
        blocks: Iterable[int],
        steps: Iterable[int] | None = None,
        descriptor: str = "qk",
        direction: str = "bidirectional",
        temperature: str | float = "sqrt_dim",
        chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
        content_weight: float = DEFAULT_CONTENT_WEIGHT,
    ):
        self.blocks = sorted({int(b) for b in blocks})
        if not self.blocks:
            raise ValueError("give at least one block to read correspondences from")
        self.steps = None if steps is None else sorted({int(s) for s in steps})
        self.descriptor = _check_choice("descriptor", descriptor, DESCRIPTORS)
        #: read by `controller.capture`: keep q / k from before the rotary embedding
        self.pre_rope = descriptor in PRE_ROPE_DESCRIPTORS
        if not (isinstance(content_weight, (int, float)) and content_weight > 0):
            raise ValueError(f"content_weight must be a positive number, got {content_weight!r}")
        self.content_weight = float(content_weight)
        self.direction = _check_choice("direction", direction, DIRECTIONS)
        if descriptor == "output" and direction != "forward":
            self.direction = "forward"  # the feature baseline is one plain dot product
        resolve_temperature(temperature, 1, 1)  # validate early
        self.temperature = temperature
        self.chunk_elements = chunk_elements
        self.reset()

    # ------------------------------------------------------------------ consuming captures
    def reset(self) -> None:
        """Drop every accepted capture and the grid, ready for another video."""
        self._queries: list[torch.Tensor] = []  # each [B, H, S, D] (or [B, S, C] features)
        self._keys: list[torch.Tensor] = []
        self._cat: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self.grid: TokenGrid | None = None
        self.seen: list[tuple[int, int | None]] = []  # (block, step) of each accepted capture
        self._head_dim = self._num_heads = 0

    @property
    def count(self) -> int:
        """Number of descriptor groups the cost aggregates: one per accepted capture (blocks x steps), two for
        "qk_mixed"."""
        return len(self._queries)

    def _accepts_step(self, capture: AttentionCapture) -> bool:
        if self.steps is None:
            return True
        step, total = capture.info.step_index, capture.info.num_inference_steps
        if step is None:
            raise ValueError(
                "this forward reports no pipeline step index (e.g. a direct transformer call or the CogVideoX "
                "pipeline), so a step filter cannot apply: build the accumulator with steps=None and capture only "
                "around the forward you want"
            )
        wanted = {s % total if (s < 0 and total) else s for s in self.steps}
        return step in wanted

    def __call__(self, capture: AttentionCapture) -> None:
        if capture.block not in self.blocks or capture.attention == "text" or not self._accepts_step(capture):
            return
        if self.grid is not None and capture.grid != self.grid:
            raise ValueError(
                f"captures with different token grids ({self.grid} vs {capture.grid}) cannot be aggregated; "
                "use one accumulator per video"
            )
        self.grid = capture.grid
        if self.descriptor == "qk_mixed":  # two channel groups: the logits add, w scales the pre-RoPE one
            q, k = capture.video_query(), capture.video_key()
            self._num_heads, self._head_dim = q.shape[1], q.shape[-1]
            root = math.sqrt(self.content_weight)
            self._queries += [q.clone(), capture.video_query(pre_rope=True) * root]
            self._keys += [k.clone(), capture.video_key(pre_rope=True) * root]
        elif self.descriptor != "output":
            q, k = capture.video_query(self.pre_rope), capture.video_key(self.pre_rope)
            self._num_heads, self._head_dim = q.shape[1], q.shape[-1]
            self._queries.append(q.clone())
            self._keys.append(k.clone())
        else:
            out = capture.video_output()  # [B, H, S, D] -> heads concatenated [B, S, H*D]
            self._num_heads, self._head_dim = out.shape[1], out.shape[-1]
            self._queries.append(out.transpose(1, 2).flatten(2).clone())
        self.seen.append((capture.block, capture.info.step_index))
        self._cat = None

    def capturing(self, controller, **capture_kwargs):
        """`controller.capture(self, blocks=self.blocks, ...)`: the scope that feeds this accumulator."""
        return controller.capture(self, blocks=self.blocks, attention="self", **capture_kwargs)

    # ------------------------------------------------------------------ costs
    def _descriptors(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self._queries:
            raise ValueError(
                f"no captures accepted yet (blocks {self.blocks}, steps {self.steps}); run a forward inside "
                "`controller.capture(accumulator, blocks=accumulator.blocks)` first"
            )
        if self._cat is None:
            q = torch.cat(self._queries, dim=-1) if len(self._queries) > 1 else self._queries[0]
            k = None
            if self._keys:
                k = torch.cat(self._keys, dim=-1) if len(self._keys) > 1 else self._keys[0]
            self._cat = (q, k)
        return self._cat

    @property
    def scale(self) -> float:
        """Logit multiplier 1 / (tau * count) ("qk"), or 1 / count for the feature baseline."""
        if self.descriptor == "output":
            return 1.0 / self.count
        return 1.0 / (resolve_temperature(self.temperature, self._head_dim, self._num_heads) * self.count)

    def _frame(self, x: torch.Tensor, frame: int) -> torch.Tensor:
        grid = self.grid
        if not 0 <= frame < grid.frames:
            raise IndexError(f"latent frame {frame} is out of range 0..{grid.frames - 1}")
        p = grid.tokens_per_frame
        return x[..., frame * p : (frame + 1) * p, :]

    def cost(self, target: int, source: int = 0, sample: int = 0) -> torch.Tensor:
        """Matching cost [P_source, P_target] (fp32) between latent frames `source` and `target` of one sample."""
        q, k = self._descriptors()
        if not 0 <= sample < q.shape[0]:
            raise IndexError(f"sample {sample} is out of range: the captures hold {q.shape[0]} conditional rows")
        if self.descriptor == "output":
            return feature_cost(self._frame(q[sample], source), self._frame(q[sample], target), self.scale)
        q, k = q[sample], k[sample]  # [H, S, D]
        return pair_cost(
            self._frame(q, source), self._frame(k, source), self._frame(q, target), self._frame(k, target),
            scale=self.scale, direction=self.direction, chunk_elements=self.chunk_elements,
        )

    def costs(self, source: int = 0, sample: int = 0) -> Iterator[torch.Tensor]:
        """Costs from `source` to every later latent frame, one pair at a time."""
        self._descriptors()
        for target in range(source + 1, self.grid.frames):
            yield self.cost(target, source=source, sample=sample)

    def tracks(self, query_points_px, pixels_per_token: int, sample: int = 0, **track_kwargs) -> torch.Tensor:
        """Latent-frame tracks [N, F', 2] (pixels) of frame-0 query points; see `tracks_from_costs`."""
        from .tracks import tracks_from_costs

        return tracks_from_costs(self.costs(sample=sample), query_points_px, self.grid, pixels_per_token,
                                 **track_kwargs)
