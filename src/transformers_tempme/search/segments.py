"""Cutting a long video into the time windows that the index encodes one by one, and reading a window's frames.

A video no longer than `segment_seconds` is one segment covering all of it. A longer one is cut into windows of
exactly `segment_seconds`, starting every `segment_seconds - overlap_seconds`; the last window is moved back so that
it ends with the video, so that every window of a long video shows the same amount of time to the model (a short
tail window would be sampled with repeated frames). Each window is then sampled to the model's frame count the way
training samples a whole video (`window_frame_indices`: `sample_frame_indices` over the frames shown in the
window, as if the window were a whole video).

The frame times of a video are read once (`read_video_timeline`, by demuxing) and reused for all its windows.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass

import numpy as np

from ..video_io import (
    DEFAULT_DECODE_TIMEOUT_S,
    SamplingMode,
    VideoDecodeError,
    VideoIndex,
    VideoSource,
    _decode_by_count,
    _decode_by_timestamp,
    _describe,
    _open_video_stream,
    _resize_rgb,
    index_video,
    sample_frame_indices,
)

DEFAULT_SEGMENT_SECONDS = 10.0

# Times are rounded to the microsecond so that windows compare equal across runs and processes.
_TIME_DECIMALS = 6
_NEGLIGIBLE_SECONDS = 1e-3


def check_segment_settings(segment_seconds: float, overlap_seconds: float) -> None:
    """Raise a `ValueError` naming the problem when the window length or overlap cannot cut a video."""
    if not segment_seconds > 0:
        raise ValueError(f"segment_seconds must be positive, got {segment_seconds}.")
    if not 0 <= overlap_seconds < segment_seconds:
        raise ValueError(
            f"The segment overlap must be at least 0 and shorter than the segment ({segment_seconds} s), "
            f"got {overlap_seconds}."
        )


def segment_windows(
    duration: float, segment_seconds: float = DEFAULT_SEGMENT_SECONDS, overlap_seconds: float = 0.0
) -> list[tuple[float, float]]:
    """`(start, end)` seconds of every window of a video lasting `duration` seconds, in time order.

    Examples: 25 s in 10 s windows gives `[(0, 10), (10, 20), (15, 25)]`; with a 5 s overlap,
    `[(0, 10), (5, 15), (10, 20), (15, 25)]`; a 4 s video gives `[(0, 4)]`.
    """
    check_segment_settings(segment_seconds, overlap_seconds)
    if not duration > 0:
        raise ValueError(f"A video to segment must last a positive time, got {duration} s.")
    if duration <= segment_seconds:
        return [(0.0, round(duration, _TIME_DECIMALS))]
    stride = segment_seconds - overlap_seconds
    # Windows needed to reach the end; less than a millisecond left over adds no window.
    count = math.ceil((duration - segment_seconds - _NEGLIGIBLE_SECONDS) / stride) + 1
    windows = []
    for i in range(count):
        start = min(i * stride, duration - segment_seconds)
        windows.append((round(start, _TIME_DECIMALS), round(start + segment_seconds, _TIME_DECIMALS)))
    return windows


@dataclass(frozen=True)
class VideoTimeline:
    """When each frame of a video is shown, read once by demuxing and reused for every window of the video.

    Attributes:
        index (`VideoIndex`): frame count, timestamps and keyframes of the video stream.
        frame_times (`np.ndarray` of shape `(n_frames,)`, float64): seconds from the first frame, presentation order.
        duration (`float`): seconds the video lasts (the last frame's time plus one frame period).
    """

    index: VideoIndex
    frame_times: np.ndarray
    duration: float


def read_video_timeline(source: VideoSource, *, timeout_s: float = DEFAULT_DECODE_TIMEOUT_S) -> VideoTimeline:
    """Frame times and duration of a video, from its packet timestamps (or its frame rate when it has none)."""
    description = _describe(source)
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    index = index_video(source, timeout_s=timeout_s, description=description)
    if index.n_frames == 0:
        raise VideoDecodeError(description, "the video stream has no frames")
    with _open_video_stream(source, description) as (_, stream):
        time_base = stream.time_base
    if index.has_timestamps and time_base is not None:
        frame_times = (index.frame_pts - index.frame_pts[0]).astype(np.float64) * float(time_base)
    else:
        frame_times = np.arange(index.n_frames, dtype=np.float64) / index.fps
    return VideoTimeline(index=index, frame_times=frame_times, duration=float(frame_times[-1] + 1.0 / index.fps))


def window_frame_indices(
    timeline: VideoTimeline, start_s: float, end_s: float, num_frames: int, sampling: SamplingMode = "fps"
) -> np.ndarray:
    """Indices of the `num_frames` frames to keep from the window `[start_s, end_s)` of a video.

    The frames shown in the window are sampled with `sample_frame_indices`, exactly as a video holding only those
    frames would be; a window that holds no frame (a very low frame rate) takes the frame shown at its start.

    Returns:
        `np.ndarray` of shape `(num_frames,)`, int64, non-decreasing, frame indices of the whole video.
    """
    first = int(np.searchsorted(timeline.frame_times, start_s, side="left"))
    stop = int(np.searchsorted(timeline.frame_times, end_s, side="left"))
    if stop <= first:
        shown = max(0, int(np.searchsorted(timeline.frame_times, start_s, side="right")) - 1)
        return np.full(num_frames, shown, dtype=np.int64)
    return first + sample_frame_indices(stop - first, timeline.index.fps, num_frames, sampling)


def read_window_frames(
    source: VideoSource,
    timeline: VideoTimeline,
    start_s: float,
    end_s: float,
    num_frames: int,
    sampling: SamplingMode = "fps",
    *,
    timeout_s: float = DEFAULT_DECODE_TIMEOUT_S,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode the `num_frames` frames of the window `[start_s, end_s)`, sampled by `window_frame_indices`.

    Seeks to the keyframe before the window, so reading the windows of a long video one by one decodes each part of
    it about once. A wanted frame that does not decode is replaced by the nearest one of the window that does.

    Returns:
        The frames, uint8 `(num_frames, height, width, 3)` RGB, and the frame mask `(num_frames,)`, all ones.

    Raises:
        `VideoDecodeError`: no frame of the window decodes.
    """
    description = _describe(source)
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    deadline = time.monotonic() + timeout_s
    index = timeline.index
    wanted = window_frame_indices(timeline, start_s, end_s, num_frames, sampling)
    frames: dict[int, np.ndarray] = {}
    if index.has_timestamps and len(index.keyframe_pts) > 0:
        frames = _decode_by_timestamp(source, description, index, wanted, deadline)
    if not frames:
        frames, _ = _decode_by_count(source, description, wanted, deadline)
    if not frames:
        raise VideoDecodeError(description, f"no frame of the window {start_s:.2f}-{end_s:.2f} s decodes")
    decoded = np.array(sorted(frames))
    nearest = decoded[np.abs(decoded[None, :] - wanted[:, None]).argmin(axis=1)]
    target_h, target_w = frames[int(nearest[0])].shape[:2]
    video = np.stack([_resize_rgb(frames[int(i)], target_h, target_w) for i in nearest])
    return video, np.ones(num_frames, dtype=np.int64)


__all__ = [
    "DEFAULT_SEGMENT_SECONDS",
    "VideoTimeline",
    "check_segment_settings",
    "read_video_timeline",
    "read_window_frames",
    "segment_windows",
    "window_frame_indices",
]
