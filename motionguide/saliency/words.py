"""Word <-> text-slot alignment: where each requested word of a prompt sits among the encoder's tokens.

Saliency maps exist per text slot; users ask for words. T5 / UMT5 tokenizers add no BOS, so slot i of the
prompt embeddings is token i of `tokenizer(prompt)`. A word split into several sub-tokens is read at its
first sub-token (the reference's choice) unless asked otherwise. "</s>" names the end-of-sequence token.
"""

from __future__ import annotations

import re
from typing import Sequence

__all__ = ["word_token_positions", "prompt_words", "EOS_WORD"]

EOS_WORD = "</s>"
_WORD = re.compile(r"[\w'-]+")


def check_words(prompt: str, words: "Sequence[str] | str") -> None:
    """The prompt is not blank and holds every requested word (checkable without a tokenizer, so the saliency
    command can refuse a typo before the model loads); ValueError naming the word and the prompt's words."""
    if not prompt or not prompt.strip():
        raise ValueError("the prompt is empty; saliency maps need a prompt that contains the requested words")
    words = [words] if isinstance(words, str) else list(words)
    if not words:
        raise ValueError("no words requested; pass e.g. words=['circle', 'moves']")
    for word in words:
        if word != EOS_WORD and (not word.strip() or _char_span(prompt, word.strip()) is None):
            raise ValueError(f"word {word!r} is not in the prompt {prompt!r}; its words are: "
                             f"{', '.join(prompt_words(prompt))} (or {EOS_WORD!r} for the end token)")


def prompt_words(prompt: str) -> list[str]:
    """The prompt's words as a user would name them (lower case, punctuation stripped)."""
    return [w.lower() for w in _WORD.findall(prompt)]


def _char_span(prompt: str, word: str) -> tuple[int, int] | None:
    """Character span of the first whole-word, case-insensitive occurrence of `word` in `prompt`."""
    match = re.search(rf"(?<![\w'-]){re.escape(word)}(?![\w'-])", prompt, flags=re.IGNORECASE)
    return match.span() if match else None


def _token_ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def _positions_by_offsets(tokenizer, prompt: str, span: tuple[int, int]) -> list[int] | None:
    """Token positions overlapping a character span, from a fast tokenizer's offsets (None if unsupported)."""
    try:
        encoded = tokenizer(prompt, add_special_tokens=True, return_offsets_mapping=True)
    except (NotImplementedError, ValueError, TypeError):
        return None
    offsets = encoded.get("offset_mapping")
    if offsets is None:
        return None
    start, end = span  # added special tokens (e.g. </s>) have empty offsets and never overlap
    return [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]


def _positions_by_prefix(tokenizer, prompt: str, span: tuple[int, int]) -> list[int]:
    """Fallback for slow tokenizers: tokens added when the prompt prefix grows to include the word."""
    eos = getattr(tokenizer, "eos_token_id", None)

    def count(text: str) -> int:
        ids = _token_ids(tokenizer, text)
        while ids and ids[-1] == eos:
            ids = ids[:-1]
        return len(ids)

    before, through = count(prompt[: span[0]].rstrip()), count(prompt[: span[1]])
    return list(range(before, max(through, before + 1)))


def _eos_position(tokenizer, prompt: str) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    ids = _token_ids(tokenizer, prompt)
    if eos is None or eos not in ids:
        raise ValueError(f"the tokenizer appends no end-of-sequence token to {prompt!r}, so {EOS_WORD!r} has no slot")
    return ids.index(eos)


def word_token_positions(tokenizer, prompt: str, words: Sequence[str], subtokens: str = "first",
                         max_slots: int | None = None) -> dict[str, list[int]]:
    """Map each word to its token position(s) in `tokenizer(prompt)`.

    subtokens: "first" (one position per word, the reference's choice) or "all" (every sub-token; maps are
    then averaged over them). max_slots: the prompt-embedding length; a word beyond it raises (truncated).
    The first occurrence of a repeated word is used.
    """
    if subtokens not in ("first", "all"):
        raise ValueError(f"subtokens must be 'first' or 'all', got {subtokens!r}")
    check_words(prompt, words)
    if isinstance(words, str):
        words = [words]
    positions: dict[str, list[int]] = {}
    for word in words:
        if word == EOS_WORD:
            found = [_eos_position(tokenizer, prompt)]
        else:
            span = _char_span(prompt, word.strip())
            if not word.strip() or span is None:
                raise ValueError(
                    f"word {word!r} is not in the prompt {prompt!r}; its words are: "
                    f"{', '.join(prompt_words(prompt))} (or {EOS_WORD!r} for the end token)"
                )
            found = _positions_by_offsets(tokenizer, prompt, span)
            if found is None:
                found = _positions_by_prefix(tokenizer, prompt, span)
            if not found:
                raise ValueError(f"word {word!r} of {prompt!r} maps to no token of {type(tokenizer).__name__}")
        if max_slots is not None and found[0] >= max_slots:
            raise ValueError(
                f"word {word!r} sits at token {found[0]} but the prompt embeddings keep only {max_slots} slots "
                "(truncated); raise max_sequence_length or shorten the prompt"
            )
        if max_slots is not None:
            found = [p for p in found if p < max_slots]
        positions[word] = found[:1] if subtokens == "first" else found
    return positions


_STOPWORDS = {"a", "an", "the", "and", "then", "of", "in", "on", "at", "to", "with", "is", "are", "its", "it",
              "this", "was", "has", "his", "as", "us"}


def _reads_as_verb(word: str) -> bool:
    """English morphology only, no word list: a third-person present (-s, not -ss) or a participle (-ing)."""
    if word in _STOPWORDS or len(word) <= 3:
        return False
    return (word.endswith("s") and not word.endswith("ss")) or word.endswith("ing")


def default_caption_words(caption: str) -> list[str]:
    """Words worth monitoring, read from the caption's own words: the first word that reads as a verb (-s or
    -ing) with the content word before it as its subject ("a red circle moves left" -> circle, moves; "a dog is
    running" -> dog, running); a verb followed by a participle names the participle ("... starts moving up"
    -> circle, moving). Without such a word: the first and last content words ("the ocean at dawn")."""
    words = prompt_words(caption)
    for i, word in enumerate(words):
        if not _reads_as_verb(word):
            continue
        verb = words[i + 1] if i + 1 < len(words) and words[i + 1].endswith("ing") \
            and _reads_as_verb(words[i + 1]) else word
        subject = next((w for w in reversed(words[:i]) if w not in _STOPWORDS), None)
        return [subject, verb] if subject else [verb]
    content = [w for w in words if w not in _STOPWORDS]
    if not content:
        return words[:1]
    return list(dict.fromkeys([content[0], content[-1]]))
