"""A word-level tokenizer built in memory, for the toy model and offline tests (nothing from a hub)."""

from __future__ import annotations

from typing import Iterable

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


def word_level_tokenizer(words: Iterable[str], model_max_length: int = 512):
    """A `PreTrainedTokenizerFast` over whitespace-split lower-case words that appends `</s>` like T5.

    Ids: <pad>=0, </s>=1, <unk>=2, then the words in sorted order. It saves and reloads with
    `save_pretrained` / `AutoTokenizer.from_pretrained` like any fast tokenizer.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    vocab = {PAD: 0, EOS: 1, UNK: 2}
    for word in sorted({w.lower() for w in words}):
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, vocab[EOS])])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=model_max_length,
    )
