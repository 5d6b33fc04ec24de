"""The offline CLIP tokenizer gives OpenAI CLIP's ids."""

from __future__ import annotations

from pathlib import Path

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


def test_the_wheel_is_found_where_make_setup_put_it_before_the_home_cache(tmp_path, monkeypatch):
    """One search order: $TEMPME_WHEEL_CACHE alone when set; else ./.cache/wheels, then the home folder's cache."""
    from data_helpers import require_wheel

    wheel = require_wheel("open_clip_torch-*.whl", "open-clip-torch")
    home, work = tmp_path / "home", tmp_path / "work"
    (work / ".cache" / "wheels").mkdir(parents=True)
    (work / ".cache" / "wheels" / wheel.name).symlink_to(wheel)
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("TEMPME_WHEEL_CACHE", raising=False)
    monkeypatch.chdir(work)
    assert tokenizer_module.find_cached_wheel("open_clip_torch-*.whl") == Path(".cache/wheels") / wheel.name
    assert build_clip_tokenizer()("a photo of a cat")["input_ids"] == KNOWN_IDS[0][1]

    monkeypatch.chdir(home)  # no ./.cache/wheels here, nothing in ~/.cache: the error names both folders
    with pytest.raises(FileNotFoundError, match=r"\.cache/wheels or .*home/\.cache/transformers_tempme/wheels"):
        build_clip_tokenizer()
    monkeypatch.setenv("TEMPME_WHEEL_CACHE", str(work / ".cache" / "wheels"))  # the variable wins, wherever we are
    assert build_clip_tokenizer()("a photo of a dog")["input_ids"] == KNOWN_IDS[1][1]
