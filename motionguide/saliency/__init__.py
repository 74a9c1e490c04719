"""IMAP / GramCol: per-word, per-frame saliency maps from a video DiT's text attention.

Jun et al., "I'm a Map! Interpretable Motion-Attentive Maps...", CVPR 2026, arXiv 2603.02919,
https://arxiv.org/abs/2603.02919 (reference code: youngjun-jun/IMAP).

Intuition: a word's peak query-key match marks one token; the Gram column of the attention outputs spreads it to
every token that looks like that peak (GramCol, `gramcol.py`). Heads whose outputs separate the frames best
(Calinski-Harabasz index with frame labels) carry the motion, so IMAP averages GramCol over those heads only
(`imap.py`).

- :func:`saliency_for_latents` (real video: re-noise, one forward) and :func:`saliency_while_sampling`
  (generated video: averaged over sampling steps) return :class:`SaliencyMaps` with IMAP, all-head GramCol and
  cross-attention maps per requested word.
- :class:`SaliencyAccumulator` is the capture consumer behind both; :func:`gramcol_head` and
  :func:`calinski_harabasz` are the per-head pieces.
- :class:`IMAPMonitor` is the training monitor (`--monitor imap`), usable in any accelerate loop
  (`set_probes`, `probe`, `log`).
"""

from .compute import encode_clip, resolve_imap_settings, saliency_for_latents, saliency_while_sampling
from .gramcol import gramcol_head, gramcol_heads
from .heads import calinski_harabasz, top_k_heads
from .imap import SaliencyAccumulator
from .maps import KINDS, SaliencyMaps
from .monitor import IMAPMonitor, IMAPProbe
from .words import EOS_WORD, default_caption_words, word_token_positions

__all__ = [
    "saliency_for_latents",
    "saliency_while_sampling",
    "resolve_imap_settings",
    "encode_clip",
    "SaliencyAccumulator",
    "SaliencyMaps",
    "KINDS",
    "gramcol_head",
    "gramcol_heads",
    "calinski_harabasz",
    "top_k_heads",
    "word_token_positions",
    "default_caption_words",
    "EOS_WORD",
    "IMAPMonitor",
    "IMAPProbe",
]
