"""A word-level tokenizer for small closed-vocabulary caption sets, such as the synthetic temporal benchmark.

For models trained from scratch on a few dozen distinct words, a 49,408-token BPE vocabulary would be an
embedding table almost entirely never seen in training, and its optimiser update would dominate a CPU step. This
tokenizer keeps one id per word of the corpus and follows CLIP's id layout, so that `CLIPTextModel`'s pooling at
the end-of-text token works unchanged: padding is 0, unknown words 1, then the words in sorted order, then
`<|startoftext|>` and `<|endoftext|>` as the two last ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, UNK, START_OF_TEXT, END_OF_TEXT = "<pad>", "<unk>", "<|startoftext|>", "<|endoftext|>"
_WORD = re.compile(r"\w+|[^\w\s]")


def corpus_words(texts: Iterable[str]) -> list[str]:
    """Sorted distinct lower-cased words and punctuation marks of `texts` (how the tokenizer splits them)."""
    return sorted({word for text in texts for word in _WORD.findall(text.lower())})


def build_word_level_tokenizer(texts: Iterable[str], model_max_length: int = 77) -> PreTrainedTokenizerFast:
    """A `PreTrainedTokenizerFast` with one id per word of `texts` (lower-cased; punctuation split off).

    Use `tokenizer.bos_token_id`, `eos_token_id`, `pad_token_id` and `len(tokenizer)` for the CLIP text config.
    """
    words = corpus_words(texts)
    vocab = {PAD: 0, UNK: 1}
    for word in words:
        vocab[word] = len(vocab)
    vocab[START_OF_TEXT] = len(vocab)
    vocab[END_OF_TEXT] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=START_OF_TEXT,
        eos_token=END_OF_TEXT,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=model_max_length,
    )


__all__ = ["build_word_level_tokenizer", "corpus_words"]
