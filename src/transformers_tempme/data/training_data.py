"""Torch datasets and the collator that feed (caption, video) samples to `TempMeTrainer`.

Rows come from `load_retrieval_dataset` (or any sequence of dicts with `video_id`, `video_path`, `caption` and,
optionally, `captions`). Each sample is tokenised and decoded by a `TempMeProcessor`:

    {"input_ids": (words,), "attention_mask": (words,), "pixel_values": (frames, 3, H, W),
     "video_mask": (frames,), "video_index": ()}

`video_index` numbers the distinct videos of the split in order of first appearance, so that evaluation counts a
video with several captions once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset


class VideoTextDataset(Dataset):
    """(caption, video) samples of a retrieval split, decoded on access.

    Args:
        rows: sequence of mappings with `video_id`, `video_path`, `caption` (and `captions` for `random_caption`).
        processor (`TempMeProcessor`): tokenises captions and decodes / preprocesses videos.
        augment (`bool`): the processor's video-consistent train augmentation.
        random_caption (`bool`): draw the caption of each access from the row's `captions` (torch's RNG, so that
            a resumed `Trainer` run draws the same ones) instead of using `caption`.
        cache_videos (`bool`): keep every decoded video in memory (only for small splits, without augmentation).
    """

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        processor,
        augment: bool = False,
        random_caption: bool = False,
        cache_videos: bool = False,
    ):
        if cache_videos and augment:
            raise ValueError("cache_videos keeps one decoded copy per video; it cannot be combined with augment=True.")
        self.rows = rows
        self.processor = processor
        self.augment = augment
        self.random_caption = random_caption
        self.cache_videos = cache_videos
        # Decoded videos by video index, filled on access when cache_videos is set (or assigned from a saved copy).
        self.decoded_videos: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        video_ids = [row["video_id"] for row in rows]
        self.video_ids: list[str] = list(dict.fromkeys(video_ids))
        number = {video_id: i for i, video_id in enumerate(self.video_ids)}
        self.video_index: list[int] = [number[video_id] for video_id in video_ids]

    def __len__(self) -> int:
        return len(self.rows)

    def caption(self, i: int) -> str:
        row = self.rows[i]
        if self.random_caption and row.get("captions"):
            captions = row["captions"]
            return captions[int(torch.randint(len(captions), ()))]
        return row["caption"]

    def video(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`pixel_values` `(frames, 3, H, W)` and `video_mask` `(frames,)` of row `i`'s video."""
        index = self.video_index[i]
        if index in self.decoded_videos:
            return self.decoded_videos[index]
        pixel_values, video_mask = self.processor.preprocess_videos([self.rows[i]["video_path"]], augment=self.augment)
        video = (torch.from_numpy(pixel_values[0]), torch.from_numpy(video_mask[0]))
        if self.cache_videos:
            self.decoded_videos[index] = video
        return video

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = self.processor.encode_text(self.caption(i))
        pixel_values, video_mask = self.video(i)
        return {
            "input_ids": torch.from_numpy(input_ids[0]),
            "attention_mask": torch.from_numpy(attention_mask[0]),
            "pixel_values": pixel_values,
            "video_mask": video_mask,
            "video_index": torch.tensor(self.video_index[i]),
        }


class PairedVideoTextDataset(Dataset):
    """Items are groups of rows that always share a batch, e.g. a video and its time reversal.

    Each item is a list of samples of `dataset`; `collate_video_text` flattens them, so a batch of `n` items holds
    `n * len(group)` samples and every sample meets its partners as hard negatives.
    """

    def __init__(self, dataset: Dataset, groups: Sequence[Sequence[int]]):
        if not groups:
            raise ValueError("PairedVideoTextDataset needs at least one group of row indices.")
        self.dataset = dataset
        self.groups = [list(group) for group in groups]

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> list[dict[str, torch.Tensor]]:
        return [self.dataset[j] for j in self.groups[i]]


def reversal_groups(video_ids: Sequence[str], partner_of: Mapping[str, str]) -> list[list[int]]:
    """Row pairs `[i, j]` where video `j` is the time reversal of video `i` (each pair once, in row order).

    Rows whose partner is not in `video_ids` form a group of one.
    """
    row_of = {video_id: i for i, video_id in enumerate(video_ids)}
    groups, seen = [], set()
    for i, video_id in enumerate(video_ids):
        if i in seen:
            continue
        j = row_of.get(partner_of.get(video_id, ""), None)
        group = [i] if j is None or j in seen or j == i else [i, j]
        seen.update(group)
        groups.append(group)
    return groups


def collate_video_text(features: Sequence[Mapping[str, torch.Tensor] | Sequence[Mapping[str, torch.Tensor]]]):
    """Stack samples (or groups of samples, flattened in order) into one batch of tensors."""
    samples = []
    for feature in features:
        if isinstance(feature, Mapping):
            samples.append(feature)
        else:
            samples.extend(feature)
    if not samples:
        raise ValueError("collate_video_text got an empty batch.")
    return {key: torch.stack([sample[key] for sample in samples]) for key in samples[0]}


__all__ = ["VideoTextDataset", "PairedVideoTextDataset", "reversal_groups", "collate_video_text"]
