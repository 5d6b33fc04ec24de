"""Shared fixtures: tiny TempMe configurations that run in milliseconds on a CPU."""

import os
import tempfile
from pathlib import Path

# Nothing a test runs reads the home folder's caches or reaches the Hub: wheels come from the checkout's
# `.cache/wheels` (`make wheels`) unless $TEMPME_WHEEL_CACHE names another folder, and the Hugging Face cache is an
# empty folder of this run. Set before transformers is imported, which reads them once.
os.environ.setdefault("TEMPME_WHEEL_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "wheels"))
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="tempme-tests-hf-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from transformers_tempme import TempMeCLIPModel, TempMeConfig  # noqa: E402

# A 4-block vision tower on 32x32 frames with 8x8 patches (17 tokens per frame) and a 2-block text tower.
TINY_BACKBONE = {
    "vision_config": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "image_size": 32,
        "patch_size": 8,
    },
    "text_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "vocab_size": 128,
        "max_position_embeddings": 16,
        "bos_token_id": 126,
        "eos_token_id": 127,
        "pad_token_id": 0,
    },
    "projection_dim": 16,
}

# Merge schedules on the tiny backbone, by name: each is TempMeConfig overrides.
TINY_SCHEDULES = {
    "clip": {"img_merge_r": 0, "clip_merge_layers": [], "clip_merge_groups": []},
    "tome": {"img_merge_r": 2, "clip_merge_layers": [], "clip_merge_groups": []},
    "tempme": {"img_merge_r": 2, "clip_merge_layers": [2, 3], "clip_merge_groups": [2, 2]},
}


def tiny_config(schedule: str = "tempme", num_frames: int = 4, **overrides) -> TempMeConfig:
    """A tiny config with one of `TINY_SCHEDULES`; `overrides` replace any field."""
    fields = {**TINY_BACKBONE, **TINY_SCHEDULES[schedule], "num_frames": num_frames, **overrides}
    return TempMeConfig(**fields)


def random_video(batch: int, frames: int, config: TempMeConfig, seed: int = 0) -> torch.Tensor:
    """Normalised-looking pixel values `(batch, frames, 3, size, size)`."""
    size = config.vision_config.image_size
    return torch.randn(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


def random_text(batch: int, config: TempMeConfig, length: int = 8, seed: int = 0) -> torch.Tensor:
    """Token ids `(batch, length)`: BOS, random words, EOS (CLIP pools at the largest id, the EOS)."""
    vocab = config.text_config.vocab_size
    words = torch.randint(1, vocab - 2, (batch, length - 2), generator=torch.Generator().manual_seed(seed))
    bos = torch.full((batch, 1), vocab - 2)
    eos = torch.full((batch, 1), vocab - 1)
    return torch.cat([bos, words, eos], dim=1)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


def tiny_model(schedule: str = "tempme", seed: int = 0, **overrides) -> TempMeCLIPModel:
    """A tiny model in eval mode; clip position embeddings start non-zero so that they matter."""
    torch.manual_seed(seed)
    config = tiny_config(schedule, **{"clip_position_embedding_init_std": 0.02, **overrides})
    return TempMeCLIPModel(config).eval()


def tiny_inputs(config: TempMeConfig, batch: int = 2, words: int = 7, seed: int = 1) -> dict[str, torch.Tensor]:
    """`input_ids`, `attention_mask` and `pixel_values` for `batch` texts and videos of `config.num_frames`."""
    return {
        "input_ids": random_text(batch, config, length=words, seed=seed),
        "attention_mask": torch.ones(batch, words, dtype=torch.long),
        "pixel_values": random_video(batch, config.num_frames, config, seed=seed),
    }
