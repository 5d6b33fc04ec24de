"""Tiny TempMe models and inputs shared by the Hub tests (32x32 frames, patch 8, a few narrow layers)."""

from __future__ import annotations

import torch

from transformers_tempme import TempMeCLIPModel, TempMeConfig

TINY_VISION = {
    "num_hidden_layers": 3,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}
TINY_TEXT = {
    "num_hidden_layers": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "vocab_size": 100,
    "max_position_embeddings": 16,
    "bos_token_id": 98,
    "eos_token_id": 99,
    "pad_token_id": 1,
}
# Per preset family: a schedule that fits the 3-block tiny vision tower and 4 frames.
TINY_SCHEDULES = {
    "tempme": {"num_frames": 4, "img_merge_r": 2, "clip_merge_layers": [1, 2], "clip_merge_groups": [2, 2]},
    "tome": {"num_frames": 4, "img_merge_r": 2, "clip_merge_layers": [], "clip_merge_groups": []},
    "clip": {"num_frames": 4, "img_merge_r": 0, "clip_merge_layers": [], "clip_merge_groups": []},
}


def tiny_config(family: str = "tempme", **overrides) -> TempMeConfig:
    """A tiny config of the `family` preset; clip position embeddings start non-zero so that they matter."""
    preset = {"tempme": "tempme-vit-b-32", "tome": "tome-vit-b-32", "clip": "clip-vit-b-32"}[family]
    fields = {
        **TINY_SCHEDULES[family],
        "vision_config": TINY_VISION,
        "text_config": TINY_TEXT,
        "projection_dim": 16,
        "clip_position_embedding_init_std": 0.02,
        **overrides,
    }
    return TempMeConfig.from_preset(preset, **fields)


def tiny_model(family: str = "tempme", seed: int = 0, **overrides) -> TempMeCLIPModel:
    torch.manual_seed(seed)
    return TempMeCLIPModel(tiny_config(family, **overrides)).eval()


def tiny_inputs(config: TempMeConfig, batch: int = 2, words: int = 7, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    size = config.vision_config.image_size
    pixel_values = torch.randn(batch, config.num_frames, 3, size, size, generator=generator)
    input_ids = torch.randint(2, config.text_config.vocab_size - 2, (batch, words), generator=generator)
    input_ids[:, -1] = config.text_config.eos_token_id
    return {"input_ids": input_ids, "pixel_values": pixel_values, "attention_mask": torch.ones_like(input_ids)}
