"""The OpenAI CLIP tokenizer, built offline from the BPE file that ships inside the `open-clip-torch` wheel.

OpenAI's `simple_tokenizer.py` defines the vocabulary from `bpe_simple_vocab_16e6.txt.gz`: the 256 byte-level
unicode characters, the same characters with the end-of-word marker `</w>`, one token per BPE merge (the first
48,894 merges of the file), then `<|startoftext|>` (49406) and `<|endoftext|>` (49407). This module rebuilds exactly
that vocabulary and merge list and hands them to `transformers.CLIPTokenizer`, so no Hub access is needed.

The wheel is fetched once with `pip download --no-deps open-clip-torch -d <cache>` (`make setup` does it into
`.cache/wheels`, `tempme build-tokenizer --download` into `~/.cache/transformers_tempme/wheels`; `wheel_cache_folders`
gives the search order); only the BPE file is read out of the zip, open_clip itself is never installed. Building the
tokenizer never downloads anything unless asked to (`download=True`).
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
WHEEL_PATTERN = "open_clip_torch-*.whl"
WHEEL_CACHE_ENV = "TEMPME_WHEEL_CACHE"
# OpenAI's vocabulary size is 49408: 2 * 256 byte tokens + 48894 merges + 2 special tokens.
NUM_MERGES = 49152 - 256 - 2
START_OF_TEXT, END_OF_TEXT = "<|startoftext|>", "<|endoftext|>"
CONTEXT_LENGTH = 77


def wheel_cache_folders() -> list[Path]:
    """The folders searched for downloaded wheels, in order.

    1. `$TEMPME_WHEEL_CACHE`, when set (then nothing else is searched);
    2. `.cache/wheels` in the working directory, where `make setup` puts them;
    3. `~/.cache/transformers_tempme/wheels`, where `tempme build-tokenizer --download` puts them by default.
    """
    if os.environ.get(WHEEL_CACHE_ENV):
        return [Path(os.environ[WHEEL_CACHE_ENV])]
    return [Path(".cache") / "wheels", default_wheel_cache()]


def default_wheel_cache() -> Path:
    """Where wheels are downloaded when no folder is named: `$TEMPME_WHEEL_CACHE`, else
    `~/.cache/transformers_tempme/wheels`."""
    if os.environ.get(WHEEL_CACHE_ENV):
        return Path(os.environ[WHEEL_CACHE_ENV])
    return Path.home() / ".cache" / "transformers_tempme" / "wheels"


def find_cached_wheel(pattern: str) -> Path | None:
    """The newest wheel matching `pattern` in the first of `wheel_cache_folders()` that holds one, or `None`."""
    for folder in wheel_cache_folders():
        wheel = find_wheel(folder, pattern)
        if wheel is not None:
            return wheel
    return None


def find_wheel(cache_dir: str | os.PathLike, pattern: str) -> Path | None:
    """The newest wheel in `cache_dir` whose file name matches `pattern`, or `None`."""
    matches = sorted(Path(cache_dir).glob(pattern))
    return matches[-1] if matches else None


def download_wheel(package: str, cache_dir: str | os.PathLike) -> None:
    """`pip download --no-deps package -d cache_dir` with the running interpreter's pip."""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", package, "-d", os.fspath(cache_dir)],
        check=True,
    )


def read_bpe_merges(bpe_path_or_wheel: str | os.PathLike) -> list[tuple[str, str]]:
    """The merges OpenAI CLIP uses, from the gzipped BPE file or from an `open-clip-torch` wheel containing it."""
    path = Path(bpe_path_or_wheel)
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            text = gzip.decompress(wheel.read(BPE_MEMBER)).decode("utf-8")
    else:
        text = gzip.open(path, "rt", encoding="utf-8").read()
    # Line 0 is a version header; OpenAI keeps the next NUM_MERGES lines.
    lines = text.split("\n")[1 : NUM_MERGES + 1]
    return [tuple(line.split()) for line in lines]


def clip_vocab_and_merges(merges: list[tuple[str, str]]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """OpenAI CLIP's token-to-id vocabulary for the given merges (ids in simple_tokenizer's order)."""
    byte_tokens = list(bytes_to_unicode().values())
    tokens = byte_tokens + [token + "</w>" for token in byte_tokens]
    tokens += ["".join(merge) for merge in merges]
    tokens += [START_OF_TEXT, END_OF_TEXT]
    return {token: i for i, token in enumerate(tokens)}, merges


def build_clip_tokenizer(
    cache_dir: str | os.PathLike | None = None, bpe_path: str | os.PathLike | None = None, download: bool = False
) -> CLIPTokenizer:
    """Build OpenAI CLIP's tokenizer (ids identical to `openai/clip-vit-base-patch32`) without the Hub.

    Args:
        cache_dir (`str` or `os.PathLike`, *optional*):
            Folder searched for an `open_clip_torch-*.whl`; by default the folders of `wheel_cache_folders()`, in
            order (`$TEMPME_WHEEL_CACHE`; else `.cache/wheels`, then `~/.cache/transformers_tempme/wheels`).
        bpe_path (`str` or `os.PathLike`, *optional*):
            A `bpe_simple_vocab_16e6.txt.gz` or `open_clip_torch` wheel to read instead of searching `cache_dir`.
        download (`bool`, *optional*, defaults to `False`):
            Fetch the wheel with `pip download` into `cache_dir` (default `default_wheel_cache()`) when no folder
            holds it (needs the package index).

    Returns:
        `CLIPTokenizer` with `model_max_length=77`.
    """
    if bpe_path is None and cache_dir is not None:
        bpe_path = find_wheel(cache_dir, WHEEL_PATTERN)
    elif bpe_path is None:
        bpe_path = find_cached_wheel(WHEEL_PATTERN)
    if bpe_path is None and download:
        cache_dir = Path(cache_dir) if cache_dir is not None else default_wheel_cache()
        download_wheel("open-clip-torch", cache_dir)
        bpe_path = find_wheel(cache_dir, WHEEL_PATTERN)
    if bpe_path is None:
        searched = [Path(cache_dir)] if cache_dir is not None else wheel_cache_folders()
        raise FileNotFoundError(
            f"No {WHEEL_PATTERN} in {' or '.join(str(folder) for folder in searched)}. Fetch it with `make setup` "
            f"(into .cache/wheels), `pip download --no-deps open-clip-torch -d {searched[0]}`, "
            "`tempme build-tokenizer DIR --download`, or build_clip_tokenizer(download=True)."
        )
    vocab, merges = clip_vocab_and_merges(read_bpe_merges(bpe_path))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CONTEXT_LENGTH)
