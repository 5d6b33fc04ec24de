"""The one data pipeline of training, evaluation and indexing: (caption, video) samples of a retrieval split.

Rows come from `load_retrieval_dataset` (or any sequence of dicts with `video_id`, `video_path`, `caption` and,
optionally, `captions`). `VideoTextDataset` decodes and preprocesses a sample when it is accessed (so in the
DataLoader's worker processes), with a `TempMeProcessor`:

    {"input_ids": (words,), "attention_mask": (words,), "pixel_values": (frames, 3, H, W),
     "video_mask": (frames,), "video_index": ()}

and `collate_video_text` stacks samples into a batch. `video_index` numbers the distinct videos of the split in order
of first appearance, so that evaluation encodes a video with several captions once.

Randomness (the train augmentation, the caption drawn for a video with several) is a function of
`(seed, epoch, sample index)` only. Two runs with the same seed see the same samples whatever the number of
DataLoader workers, and a run resumed from a checkpoint sees the same samples as the uninterrupted run: the
`Trainer` fast-forwards a resumed epoch by skipping sampler indices without loading them, so a random stream
consumed sample after sample could not be replayed, but a draw keyed on the sample is. `TempMeTrainer` tells the
dataset the epoch (`set_epoch`); elsewhere call `set_epoch` yourself when the epoch matters.

Videos that do not decode are skipped and reported, up to a cap: each skip is logged once per video with the
reason, `skipped_video_ids` lists them, and past `max_skipped_videos` the dataset raises `TooManyBadVideosError`
instead of training on a split that is mostly missing. A skipped sample is `None`; `collate_video_text` leaves it
out of its batch.
"""

from __future__ import annotations

import logging
import math
import reprlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..video_io import VideoDecodeError

logger = logging.getLogger(__name__)

DecodeErrorPolicy = Literal["skip", "raise"]
Sample = dict[str, torch.Tensor]
# How many skipped ids an error message lists before it just counts.
_IDS_SHOWN = 5


class TooManyBadVideosError(RuntimeError):
    """More videos of a split failed to decode than `max_skipped_videos` allows. `video_ids` lists them (empty when
    re-raised from a DataLoader worker, which passes on the message only)."""

    def __init__(self, message: str, video_ids: list[str] | None = None):
        self.video_ids = video_ids or []
        super().__init__(message)


def _found(value) -> str:
    """A value as an error message shows it: its type and the start of its repr."""
    return "None" if value is None else f"the {type(value).__name__} {reprlib.repr(value)}"


def _check_captions(video_ids: list[str], captions: list, caption_lists: list, text_column: str) -> None:
    """Every caption must be a string and every `captions` entry a list of strings: a null, a number or a list
    would otherwise fail (or be tokenised as its repr) deep inside a DataLoader worker."""
    for row, (video_id, caption, caption_list) in enumerate(zip(video_ids, captions, caption_lists)):
        where = f"Row {row} (video_id {video_id!r})"
        if not isinstance(caption, str):
            hint = " (one caption per row; a video's other captions go in 'captions')" if isinstance(caption, (list, tuple)) else ""
            raise ValueError(f"{where}: {text_column!r} must be a caption string, found {_found(caption)}{hint}.")
        if caption_list is not None and (
            not isinstance(caption_list, (list, tuple)) or not all(isinstance(c, str) for c in caption_list)
        ):
            raise ValueError(f"{where}: 'captions' must be a list of caption strings, found {_found(caption_list)}.")


def _column(rows, name: str, default=None) -> list:
    """One column of `rows` (a `datasets.Dataset` or a sequence of mappings) as a list."""
    column_names = getattr(rows, "column_names", None)
    if column_names is not None:
        return list(rows[name]) if name in column_names else [default] * len(rows)
    return [row.get(name, default) for row in rows]


class VideoTextDataset(Dataset):
    """(caption, video) samples of a retrieval split, decoded on access.

    Args:
        rows: a `datasets.Dataset` or sequence of mappings with `video_id`, the video (`video_column`: a path, the
            file's bytes or a uint8 frame array), the caption (`text_column`) and optionally `captions`.
        processor (`TempMeProcessor`): tokenises captions and decodes / preprocesses videos.
        augment (`bool`, defaults to `False`): the processor's video-consistent train augmentation.
        random_caption (`bool`, defaults to `False`): each access draws the caption from the row's `captions`
            instead of using its caption.
        seed (`int`, *optional*): seed of the augmentation and caption draws. Defaults to `torch.initial_seed()`
            when the dataset is built, so that `transformers.set_seed` called before decides it.
        on_decode_error (`str`, defaults to `"skip"`): `"skip"` leaves a video that does not decode out (logged
            once), `"raise"` propagates the `VideoDecodeError`.
        max_skipped_videos (`int` or `float`, defaults to 0.01): how many distinct videos may be skipped before
            `TooManyBadVideosError` stops the run: a count, or a fraction (< 1) of the split's distinct videos,
            rounded up. Counted per process.
        cache_videos (`bool`, defaults to `False`): keep every decoded video in memory (small splits without
            augmentation; each DataLoader worker process keeps its own cache, so see `decode_all`).
        video_column (`str`, defaults to `"video_path"`), text_column (`str`, defaults to `"caption"`): row keys.
    """

    def __init__(
        self,
        rows,
        processor,
        augment: bool = False,
        random_caption: bool = False,
        seed: int | None = None,
        on_decode_error: DecodeErrorPolicy = "skip",
        max_skipped_videos: int | float = 0.01,
        cache_videos: bool = False,
        video_column: str = "video_path",
        text_column: str = "caption",
    ):
        if cache_videos and augment:
            raise ValueError("cache_videos keeps one decoded copy per video; it cannot be combined with augment=True.")
        if on_decode_error not in ("skip", "raise"):
            raise ValueError(f"on_decode_error must be 'skip' or 'raise', got {on_decode_error!r}.")
        if max_skipped_videos < 0:
            raise ValueError(f"max_skipped_videos must be >= 0, got {max_skipped_videos}.")
        self.processor = processor
        self.augment = augment
        self.random_caption = random_caption
        self.seed = int(torch.initial_seed() if seed is None else seed)
        self.on_decode_error = on_decode_error
        self.cache_videos = cache_videos

        video_ids = [str(video_id) for video_id in _column(rows, "video_id")]
        self.videos: list[Any] = _column(rows, video_column)
        self.captions: list[str] = _column(rows, text_column)
        self.caption_lists: list[list[str] | None] = _column(rows, "captions")
        if not video_ids:
            raise ValueError("VideoTextDataset got no rows: the split is empty.")
        _check_captions(video_ids, self.captions, self.caption_lists, text_column)
        self.video_ids: list[str] = list(dict.fromkeys(video_ids))
        number = {video_id: i for i, video_id in enumerate(self.video_ids)}
        self.video_index: list[int] = [number[video_id] for video_id in video_ids]
        if isinstance(max_skipped_videos, float) and max_skipped_videos < 1:
            self.max_skipped_videos = math.ceil(max_skipped_videos * len(self.video_ids))
        else:
            self.max_skipped_videos = int(max_skipped_videos)

        # Decoded videos by video index, filled on access when cache_videos is set (or by decode_all).
        self.decoded_videos: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        # Shared with DataLoader worker processes (shared memory), so that workers see the epoch the trainer sets and
        # all of a process's workers count skipped videos together.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._skipped = torch.zeros(len(self.video_ids), dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return len(self.video_index)

    # ------------------------------------------------------------------ randomness

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """The epoch that keys the random draws (the `Trainer` and Accelerate call this at every epoch)."""
        self._epoch.fill_(int(epoch))

    def sample_rng(self, i: int) -> np.random.Generator:
        """The generator of sample `i`'s random draws this epoch: a function of `(seed, epoch, i)` only."""
        return np.random.default_rng([self.seed, self.epoch, int(i)])

    # ------------------------------------------------------------------ access

    def caption(self, i: int, rng: np.random.Generator | None = None) -> str:
        """Row `i`'s caption, or with `random_caption` one of its `captions` drawn with `rng`."""
        captions = self.caption_lists[i]
        if self.random_caption and captions:
            rng = rng if rng is not None else self.sample_rng(i)
            return captions[int(rng.integers(len(captions)))]
        return self.captions[i]

    def video(
        self, i: int, augment: bool | None = None, rng: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """`pixel_values` `(frames, 3, H, W)` and `video_mask` `(frames,)` of row `i`'s video; `None` when it does
        not decode and the policy is to skip it."""
        index = self.video_index[i]
        augment = self.augment if augment is None else augment
        if index in self.decoded_videos and not augment:
            return self.decoded_videos[index]
        if bool(self._skipped[index]):
            return None
        rng = (rng if rng is not None else self.sample_rng(i)) if augment else None
        try:
            pixel_values, video_mask = self.processor.preprocess_videos([self.videos[i]], augment=augment, rng=rng)
        except VideoDecodeError as error:
            if self.on_decode_error == "raise":
                raise
            self._skip(index, error)
            return None
        video = (torch.from_numpy(pixel_values[0]), torch.from_numpy(video_mask[0]))
        if self.cache_videos and not augment:
            self.decoded_videos[index] = video
        return video

    def _skip(self, index: int, error: VideoDecodeError) -> None:
        self._skipped[index] = True
        skipped = self.skipped_video_ids
        if len(skipped) > self.max_skipped_videos:
            shown = ", ".join(skipped[:_IDS_SHOWN]) + (", ..." if len(skipped) > _IDS_SHOWN else "")
            raise TooManyBadVideosError(
                f"{len(skipped)} of the {len(self.video_ids)} videos of this split do not decode ({shown}; the last: "
                f"{error}), more than the {self.max_skipped_videos} that may be skipped. Re-encode or remove them, "
                "or raise max_skipped_videos.",
                skipped,
            ) from error
        logger.warning(
            "Skipping video %s (%d skipped so far, at most %d allowed): %s",
            self.video_ids[index], len(skipped), self.max_skipped_videos, error,
        )

    @property
    def skipped_video_ids(self) -> list[str]:
        """Ids of the videos skipped so far because they do not decode (in this process)."""
        return [self.video_ids[int(i)] for i in torch.nonzero(self._skipped).flatten()]

    def __getitem__(self, i: int) -> Sample | None:
        rng = self.sample_rng(i) if (self.augment or self.random_caption) else None
        video = self.video(i, rng=rng)
        if video is None:
            return None
        input_ids, attention_mask = self.processor.encode_text(self.caption(i, rng))
        return {
            "input_ids": torch.from_numpy(input_ids[0]),
            "attention_mask": torch.from_numpy(attention_mask[0]),
            "pixel_values": video[0],
            "video_mask": video[1],
            "video_index": torch.tensor(self.video_index[i]),
        }

    # ------------------------------------------------------------------ views for encoding

    def first_rows(self) -> list[int]:
        """For every distinct video (in `video_ids` order), the first row that shows it."""
        first: dict[int, int] = {}
        for row, index in enumerate(self.video_index):
            first.setdefault(index, row)
        return [first[index] for index in range(len(self.video_ids))]

    def video_view(self) -> DistinctVideos:
        """One item per distinct video, never augmented (evaluation and indexing)."""
        return DistinctVideos(self)

    def text_view(self) -> Captions:
        """One item per row: its caption, tokenised."""
        return Captions(self)

    def decode_all(self, description: str = "Decoding videos", progress: bool = True) -> None:
        """Decode every distinct video into the cache (needs `cache_videos=True`), with a progress bar."""
        if not self.cache_videos:
            raise ValueError("decode_all fills the cache of a dataset built with cache_videos=True.")
        for row in tqdm(self.first_rows(), desc=description, disable=not progress):
            self.video(row)


class DistinctVideos(Dataset):
    """The distinct videos of a `VideoTextDataset`, each once: `{"pixel_values", "video_mask", "video_index",
    "decoded"}`. A skipped video gives blank frames (zero pixels, every frame marked real, since the model refuses
    a video without frames) and `decoded=False`, so that every process's batches keep their size (Accelerate
    gathers equal slices); drop those rows after encoding."""

    def __init__(self, dataset: VideoTextDataset):
        self.dataset = dataset
        self.rows = dataset.first_rows()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Sample:
        video = self.dataset.video(self.rows[i], augment=False)
        decoded = video is not None
        if not decoded:
            frames, size = self.dataset.processor.num_frames, self.dataset.processor.image_size
            video = (torch.zeros(frames, 3, size, size), torch.ones(frames, dtype=torch.int64))
        return {
            "pixel_values": video[0],
            "video_mask": video[1],
            "video_index": torch.tensor(i),
            "decoded": torch.tensor(decoded),
        }


class Captions(Dataset):
    """The captions of a `VideoTextDataset`, one per row: `{"input_ids", "attention_mask", "video_index"}`."""

    def __init__(self, dataset: VideoTextDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Sample:
        input_ids, attention_mask = self.dataset.processor.encode_text(self.dataset.captions[i])
        return {
            "input_ids": torch.from_numpy(input_ids[0]),
            "attention_mask": torch.from_numpy(attention_mask[0]),
            "video_index": torch.tensor(self.dataset.video_index[i]),
        }


class GroupedDataset(Dataset):
    """Items are groups of samples that always share a batch, e.g. a video and its time reversal.

    Each item is the list of samples `dataset[j]` for `j` in one group; `collate_video_text` flattens them, so a
    batch of `n` items holds `n * len(group)` samples and every sample meets its partners as hard negatives.
    `set_epoch` reaches the wrapped dataset.
    """

    def __init__(self, dataset: VideoTextDataset, groups: Sequence[Sequence[int]]):
        if not groups:
            raise ValueError("GroupedDataset needs at least one group of row indices.")
        self.dataset = dataset
        self.groups = [list(group) for group in groups]

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> list[Sample | None]:
        return [self.dataset[j] for j in self.groups[i]]

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    @property
    def skipped_video_ids(self) -> list[str]:
        return self.dataset.skipped_video_ids


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


def collate_video_text(features: Sequence[Sample | Sequence[Sample | None] | None]) -> dict[str, torch.Tensor]:
    """Stack samples (or groups of samples, flattened in order) into one batch, leaving skipped samples out."""
    samples = []
    for feature in features:
        if feature is None or isinstance(feature, Mapping):
            samples.append(feature)
        else:
            samples.extend(feature)
    kept = [sample for sample in samples if sample is not None]
    if not kept:
        raise ValueError(
            f"Every one of the {len(samples)} samples of this batch was skipped (videos that do not decode); "
            "see the warnings above for the files."
        )
    return {key: torch.stack([sample[key] for sample in kept]) for key in kept[0]}


__all__ = [
    "VideoTextDataset",
    "DistinctVideos",
    "Captions",
    "GroupedDataset",
    "TooManyBadVideosError",
    "reversal_groups",
    "collate_video_text",
]
