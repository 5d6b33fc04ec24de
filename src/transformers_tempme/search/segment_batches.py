"""Decoding videos into batches of model-ready segments, in DataLoader worker processes.

`SegmentBatches` is an `IterableDataset`: each DataLoader worker takes every `num_workers`-th video of the list,
cuts it into windows (`segment_windows`), decodes each window's frames (`read_window_frames`; a video that is one
window goes through `read_video_frames`, the path training and evaluation use) and preprocesses them with the
model's `TempMeProcessor`. Segments of consecutive videos are packed into batches of `batch_size`, so that the model
always encodes full batches while the workers decode the next ones.

Each yielded batch is a dict:

    pixel_values  (segments, frames, 3, size, size) float32, or None when the batch holds no segment
    video_mask    (segments, frames) int64, or None
    segments      [(path, segment number, start s, end s)] for every row of pixel_values
    videos        [video record] for every video whose last segment is in this batch or an earlier one

A video record is a dict with `path`, `size`, `mtime_ns`, `sha256` (its content's hash when `hash_files`, else
empty), `duration`, `segments` (how many were yielded), `error` (the reason the file is not indexed, or None),
`not_video` (the file is not a video: skipped, not failed; `discovery.NotAVideoError`) and `warnings` (what was left
out of an indexed video: windows that do not decode, or the part of a truncated file past what can be read). A
file never stops the run: any error while reading it becomes its record's `error`.

A truncated file (a download cut short) whose header states a longer duration than its frames cover is indexed up
to the last frame that can be read, with a warning giving both durations.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..video_io import (
    DEFAULT_DECODE_TIMEOUT_S,
    TRUNCATION_TOLERANCE_FRACTION,
    TRUNCATION_TOLERANCE_S,
    TruncatedVideoWarning,
    VideoDecodeError,
    read_video_frames,
)
from .discovery import NotAVideoError, VideoFile, file_sha256, probe_video
from .segments import VideoTimeline, read_window_frames, segment_windows


def partial_decode_warning(path: str, timeline: VideoTimeline) -> str | None:
    """The report's warning for a video whose readable frames cover clearly less time than its header states (the
    tolerance of `read_video_frames`' `TruncatedVideoWarning`), else `None`."""
    header = timeline.index.header_duration_s
    if header is None or header - timeline.duration <= max(TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_FRACTION * header):
        return None
    return (f"{path}: indexed up to {timeline.duration:.1f} s of the {header:.1f} s its header states (the rest "
            "cannot be read: the file looks truncated or damaged)")


class SegmentBatches(IterableDataset):
    """Batches of decoded, preprocessed segments of `files` (see the module docstring for their layout).

    Args:
        files (`Sequence[VideoFile]`): videos to read, paths relative to `video_dir`.
        video_dir: the folder the paths are relative to.
        processor (`TempMeProcessor`): frame count, sampling and CLIP preprocessing of the model.
        segment_seconds (`float`), overlap_seconds (`float`): the windows (`segment_windows`).
        batch_size (`int`): segments per batch.
        timeout_s (`float`): limit for reading one window.
        hash_files (`bool`): record each file's SHA-256 (what `verify` compares later); reading a whole file costs
            time, so it is done only when asked (a file the update already hashed keeps its `VideoFile.sha256`).
    """

    def __init__(
        self,
        files: Sequence[VideoFile],
        video_dir: str | os.PathLike,
        processor,
        segment_seconds: float,
        overlap_seconds: float = 0.0,
        batch_size: int = 16,
        timeout_s: float = DEFAULT_DECODE_TIMEOUT_S,
        hash_files: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.files = list(files)
        self.video_dir = Path(video_dir)
        self.processor = processor
        self.segment_seconds = segment_seconds
        self.overlap_seconds = overlap_seconds
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.hash_files = hash_files

    def _my_files(self) -> list[VideoFile]:
        worker = get_worker_info()
        if worker is None:
            return self.files
        return self.files[worker.id :: worker.num_workers]

    def _read_segments(self, file: VideoFile, record: dict) -> Iterator[tuple[tuple, torch.Tensor, torch.Tensor]]:
        """`((path, number, start, end), pixel_values, video_mask)` of every window of one video that decodes."""
        full_path = self.video_dir / file.path
        if self.hash_files and not record["sha256"]:
            record["sha256"] = file_sha256(full_path)
        timeline = probe_video(full_path, timeout_s=self.timeout_s)
        record["duration"] = timeline.duration
        if (warning := partial_decode_warning(file.path, timeline)) is not None:
            record["warnings"].append(warning)
        windows = segment_windows(timeline.duration, self.segment_seconds, self.overlap_seconds)
        num_frames, sampling = self.processor.num_frames, self.processor.frame_sampling
        number = 0
        for start, end in windows:
            try:
                if len(windows) == 1:
                    with warnings.catch_warnings():  # the record's warning says it, once, in the report
                        warnings.simplefilter("ignore", TruncatedVideoWarning)
                        frames, _ = read_video_frames(full_path, num_frames, sampling, timeout_s=self.timeout_s)
                else:
                    frames, _ = read_window_frames(
                        full_path, timeline, start, end, num_frames, sampling, timeout_s=self.timeout_s
                    )
            except VideoDecodeError as error:
                if len(windows) == 1:
                    raise
                record["warnings"].append(f"{file.path}: window {start:.1f}-{end:.1f} s left out ({error.reason})")
                continue
            pixel_values, video_mask = self.processor.preprocess_videos([frames])
            yield (file.path, number, start, end), torch.from_numpy(pixel_values[0]), torch.from_numpy(video_mask[0])
            number += 1

    def __iter__(self) -> Iterator[dict]:
        pixels, masks, segments, videos = [], [], [], []

        def batch() -> dict:
            packed = {
                "pixel_values": torch.stack(pixels) if pixels else None,
                "video_mask": torch.stack(masks) if masks else None,
                "segments": list(segments),
                "videos": list(videos),
            }
            pixels.clear(), masks.clear(), segments.clear(), videos.clear()
            return packed

        for file in self._my_files():
            record = {
                "path": file.path, "size": file.size, "mtime_ns": file.mtime_ns, "sha256": file.sha256, "duration": 0.0,
                "segments": 0, "error": None, "not_video": False, "warnings": [],
            }
            try:
                for segment, pixel_values, video_mask in self._read_segments(file, record):
                    segments.append(segment)
                    pixels.append(pixel_values)
                    masks.append(video_mask)
                    record["segments"] += 1
                    if len(segments) == self.batch_size:
                        yield batch()
                if record["segments"] == 0:
                    raise VideoDecodeError(file.path, "none of its windows decodes")
            except VideoDecodeError as error:
                record["error"] = error.reason
                record["not_video"] = isinstance(error, NotAVideoError)
            except Exception as error:  # noqa: BLE001 - one bad file must not stop an indexing run
                record["error"] = f"{type(error).__name__}: {error}"
            if record["error"] is not None and record["segments"]:
                # Segments of this video already sit in the batch being filled: take them back out.
                kept = [i for i, segment in enumerate(segments) if segment[0] != file.path]
                pixels[:] = [pixels[i] for i in kept]
                masks[:] = [masks[i] for i in kept]
                segments[:] = [segments[i] for i in kept]
                record["segments"] = 0
            videos.append(record)
        if segments or videos:
            yield batch()


__all__ = ["SegmentBatches", "partial_decode_warning"]
