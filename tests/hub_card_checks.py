"""Checks that every number in a rendered model card comes from its input files, and example inputs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# A number standing on its own: not part of a name such as "R@1", "ViT-B/32", "recall_at_5" or "test-1k".
NUMBER = re.compile(r"(?<![A-Za-z0-9_@/.\-])\d+(?:\.\d+)?")

EVALUATION = {
    "dataset": "msrvtt",
    "split": "test-1k",
    "model": "outputs/tempme-msrvtt",
    "text_to_video": {"R@1": 44.537, "R@5": 71.21, "R@10": 80.915, "MdR": 2.0, "MnR": 13.456},
    "video_to_text": {"R@1": 43.12, "R@5": 70.03, "R@10": 81.5, "MdR": 2.0, "MnR": 9.754},
    "gflops": 4.987654,
    "output_tokens": 123,
    "videos_per_s": 88.123,
    "num_videos": 1000,
    "command": "tempme evaluate --model outputs/tempme-msrvtt --dataset msrvtt --num-frames 12",
}
BENCHMARK = [
    {"method": "clip", "backbone": "vit-b-32", "frames": 12, "gflops": 53.71, "output_tokens": 600, "videos_per_s": 20.55},
    {"method": "tome", "backbone": "vit-b-32", "frames": 12, "gflops": 41.306, "output_tokens": 312, "videos_per_s": 27.0},
    {"method": "tempme", "backbone": "vit-b-32", "frames": 12, "gflops": 30.1, "output_tokens": 71, "videos_per_s": 35.25},
]
BENCHMARK_COMMAND = "python benchmarks/benchmark.py --backbones vit-b-32 --frames 12"


def write_inputs(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    eval_path, bench_path = folder / "eval.json", folder / "benchmark.json"
    eval_path.write_text(json.dumps(EVALUATION))
    bench_path.write_text(json.dumps(BENCHMARK))
    return eval_path, bench_path


def source_numbers(*sources: Any) -> list[float]:
    """Every number in JSON-like data: numeric values, and numbers written inside string values."""
    found: list[float] = []

    def visit(value: Any) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, (int, float)):
            found.append(float(value))
        elif isinstance(value, str):
            found.extend(float(match) for match in NUMBER.findall(value))
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, Iterable):
            for item in value:
                visit(item)

    for source in sources:
        visit(source)
    return found


def numbers_not_from_sources(text: str, sources: list[float]) -> list[str]:
    """Numbers in `text` that no source explains: integers must match exactly, decimals up to their rounding."""
    unexplained = []
    for token in NUMBER.findall(text):
        value = float(token)
        decimals = len(token.split(".")[1]) if "." in token else 0
        tolerance = 0.5 * 10**-decimals + 1e-9 if decimals else 0.0
        if not any(abs(value - source) <= tolerance for source in sources):
            unexplained.append(token)
    return unexplained
