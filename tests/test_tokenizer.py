"""The offline CLIP tokenizer gives OpenAI CLIP's ids."""

from __future__ import annotations

import pytest
from data_helpers import clip_tokenizer  # noqa: F401 (fixture)
from transformers import AutoTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from transformers_tempme.data import tokenizer as tokenizer_module
from transformers_tempme.data.tokenizer import build_clip_tokenizer

# Ids of OpenAI CLIP (`clip.tokenize`), as in the CLIP README's example and the HF model card.
KNOWN_IDS = [
    ("a photo of a cat", [49406, 320, 1125, 539, 320, 2368, 49407]),
    ("a photo of a dog", [49406, 320, 1125, 539, 320, 1929, 49407]),
    ("a diagram", [49406, 320, 22697, 49407]),
    ("A Photo  of a CAT", [49406, 320, 1125, 539, 320, 2368, 49407]),  # lower-cased, whitespace collapsed
]


@pytest.mark.parametrize("text, ids", KNOWN_IDS)
def test_ids_match_openai_clip(clip_tokenizer, text, ids):  # noqa: F811
    assert clip_tokenizer(text)["input_ids"] == ids


def test_vocabulary_layout(clip_tokenizer):  # noqa: F811
    assert len(clip_tokenizer) == 49408
    assert clip_tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"]) == [49406, 49407]
    assert clip_tokenizer.convert_tokens_to_ids(["!", "!</w>", "a</w>"]) == [0, 256, 320]
    assert clip_tokenizer.model_max_length == 77


def test_bytes_to_unicode_is_a_bijection_in_clip_order():
    """transformers' byte-to-unicode map, in the order of CLIP's first 256 token ids."""
    mapping = bytes_to_unicode()
    assert len(mapping) == 256 and len(set(mapping.values())) == 256
    assert list(mapping)[:3] == [ord("!"), ord('"'), ord("#")]
    assert mapping[ord(" ")] == "Ġ"


def test_save_and_reload(clip_tokenizer, tmp_path):  # noqa: F811
    clip_tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "a man is playing a guitar on stage"
    assert reloaded(text)["input_ids"] == clip_tokenizer(text)["input_ids"]


def test_missing_wheel_is_a_clear_error_and_nothing_is_downloaded_unless_asked(tmp_path, monkeypatch):
    def no_pip(*args, **kwargs):
        raise AssertionError("build_clip_tokenizer ran pip without download=True")

    monkeypatch.setattr(tokenizer_module.subprocess, "run", no_pip)
    with pytest.raises(FileNotFoundError, match="pip download --no-deps open-clip-torch"):
        build_clip_tokenizer(cache_dir=tmp_path)
    with pytest.raises(AssertionError, match="ran pip"):
        build_clip_tokenizer(cache_dir=tmp_path, download=True)
