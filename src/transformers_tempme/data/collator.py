"""A data collator that decodes and preprocesses videos where the batch is built (in DataLoader worker processes).

The retrieval datasets hold paths and captions only, so decoding happens in the collator, i.e. in the `Trainer`'s
DataLoader workers (`dataloader_num_workers`). `Trainer` drops dataset columns that are not arguments of the model's
`forward` before collating; the collator needs `video_path` and `caption`, so train with
`TrainingArguments(remove_unused_columns=False)`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from ..processing_tempme import TempMeProcessor
from ..video_io import VideoDecodeError

logger = logging.getLogger(__name__)


@dataclass
class TempMeDataCollator:
    """Turn retrieval rows (`video_path`, `caption`) into model inputs.

    Args:
        processor (`TempMeProcessor`): tokenizer and video settings.
        augment (`bool`, defaults to `False`): apply the processor's video-consistent train augmentation.
        video_column (`str`, defaults to `"video_path"`), text_column (`str`, defaults to `"caption"`):
            the row keys to read; the video value may be a path, bytes or a uint8 frame array.
        on_decode_error (`str`, defaults to `"raise"`): `"skip"` leaves rows whose video does not decode out of the
            batch (logged), `"raise"` propagates the `VideoDecodeError`.
        seed (`int`, *optional*): base seed of the augmentation; each worker process mixes in torch's per-worker seed.

    Returns (when called on a list of rows):
        `dict` of torch tensors: `input_ids` and `attention_mask` `(batch, max_words)` int64, `pixel_values`
        `(batch, frames, 3, size, size)` float32 and `video_mask` `(batch, frames)` int64.
    """

    processor: TempMeProcessor
    augment: bool = False
    video_column: str = "video_path"
    text_column: str = "caption"
    on_decode_error: Literal["raise", "skip"] = "raise"
    seed: int | None = None
    _rng: np.random.Generator | None = field(default=None, init=False, repr=False)
    _rng_pid: int | None = field(default=None, init=False, repr=False)

    def _generator(self) -> np.random.Generator:
        # Forked workers inherit the parent's generator state: re-seed once per process from torch's worker seed,
        # which differs between workers and epochs, so that workers do not draw identical augmentations.
        if self._rng is None or self._rng_pid != os.getpid():
            entropy = [torch.initial_seed() % 2**63] + ([self.seed] if self.seed is not None else [])
            self._rng, self._rng_pid = np.random.default_rng(entropy), os.getpid()
        return self._rng

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.on_decode_error not in ("raise", "skip"):
            raise ValueError(f"on_decode_error must be 'raise' or 'skip', got {self.on_decode_error!r}.")
        rng = self._generator() if self.augment else None
        videos, captions = [], []
        for row in rows:
            try:
                frames, mask = self.processor.load_video(row[self.video_column])
            except VideoDecodeError as error:
                if self.on_decode_error == "raise":
                    raise
                logger.warning("Skipping a sample: %s", error)
                continue
            videos.append(frames)
            captions.append(row[self.text_column])
        if not videos:
            raise VideoDecodeError("batch", f"none of the {len(rows)} videos of the batch decodes")
        batch = self.processor(text=captions, videos=videos, return_tensors="pt", augment=self.augment, rng=rng)
        return dict(batch)
