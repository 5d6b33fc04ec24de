"""Figures reported in the TempMe paper (ICLR 2025), for side-by-side comparison with our own measurements.

Keys are this package's preset names. Each figure names the table it comes from.
"""

from __future__ import annotations

# Vision-tower GFLOPs per video (Table 1: B/32 and B/16 at 12 frames, B/32 at 64 frames).
# The paper's LoRA row is our no-merge preset, its ToMe row ImgMe in all blocks.
PAPER_GFLOPS: dict[str, float] = {
    "clip-vit-b-32": 53.0,
    "tome-vit-b-32": 40.2,
    "tempme-vit-b-32": 34.8,
    "clip-vit-b-16": 211.3,
    "tome-vit-b-16": 144.4,
    "tempme-vit-b-16": 121.4,
    "clip-vit-b-32-64f": 276.7,
    "tome-vit-b-32-64f": 208.5,
    "tempme-vit-b-32-64f": 180.3,
}

# Tokens leaving the vision encoder per video, as (clips, tokens per clip) (Table 1).
PAPER_OUTPUT_TOKENS: dict[str, tuple[int, int]] = {
    "clip-vit-b-32": (12, 50),
    "tome-vit-b-32": (12, 26),
    "tempme-vit-b-32": (1, 97),
    "clip-vit-b-16": (12, 197),
    "tome-vit-b-16": (12, 77),
    "tempme-vit-b-16": (1, 127),
    "clip-vit-b-32-64f": (64, 50),
    "tome-vit-b-32-64f": (64, 26),
    "tempme-vit-b-32-64f": (1, 500),
}

# Inference throughput in videos/s on one A100, ViT-B/16, 12 frames (Table 4).
PAPER_A100_VIDEOS_PER_S: dict[str, float] = {
    "clip-vit-b-16": 30.6,
    "tome-vit-b-16": 40.8,
    "tempme-vit-b-16": 45.1,
}

# Full fine-tuning of ViT-B/16 on MSR-VTT, 12 frames (Table 5): training speed relative to CLIP4Clip and GPU memory.
PAPER_FULL_FINETUNING: dict[str, dict[str, float]] = {
    "clip-vit-b-16": {"train_speedup": 1.00, "train_memory_gb": 70.1},
    "tome-vit-b-16": {"train_speedup": 1.35, "train_memory_gb": 61.6},
    "tempme-vit-b-16": {"train_speedup": 1.57, "train_memory_gb": 52.7},
}
