"""Video decoding with PyAV and the frame sampling of the TempMe / CLIP4Clip data loaders.

`read_video_frames` returns exactly `num_frames` RGB frames of one video and its frame mask. Two sampling modes:

- `"fps"` (the paper): candidate frames one per second (every `round(fps)`-th frame index); if there are more
  candidates than `num_frames`, `linspace(0, n_candidates - 1, num_frames)` of them (integer truncation); if exactly
  `num_frames`, all of them; if fewer, `linspace(first_frame, last_frame, num_frames)` over the raw frame indices, so
  frames may repeat. Every video yields `num_frames` frames and the mask is all ones.
- `"uniform"`: `linspace(0, n_frames - 1, num_frames)` over all frames (repeats when the video is shorter).

Frames are addressed by index in presentation order, the way decord (used by the authors) addresses them. Frame
counts and timestamps come from demuxing the file (reading packet headers, no decoding), never from the container
header: Matroska/WebM and MPEG-TS store no frame count, and header durations are often wrong.
"""

from __future__ import annotations

import io
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Literal

import numpy as np

try:
    import av
except ImportError:  # Frame arrays need no decoder; `_require_av` says what to install when a file must be read.
    av = None

VideoSource = str | os.PathLike | BinaryIO | bytes
SamplingMode = Literal["fps", "uniform"]

# Upper bounds that keep a pathological file from decoding for ever: no benchmark video comes close.
MAX_FRAMES_PER_VIDEO = 1_000_000
DEFAULT_DECODE_TIMEOUT_S = 120.0

# A file whose readable part is shorter than its header says by more than this (seconds, or fraction of the
# header's duration, whichever is larger) is reported as truncated: headers round, and audio may outlast video.
TRUNCATION_TOLERANCE_S = 1.0
TRUNCATION_TOLERANCE_FRACTION = 0.1

# Seek or decode through? A seek flushes the decoder (and its frame threads) and restarts at a keyframe. On a 10 s
# 720p h264 clip (`tools/measure_decode.py`, 12 frames), seeking cut the time per video from 1.33 s to 0.47 s with
# a keyframe every second and from 1.25 s to 0.30 s with one every 5 frames, and cost nothing with one keyframe every
# 250 frames. Seeking over every gap and seeking only past a few frames measured the same within noise; the small
# margin avoids flushing the decoder to skip a handful of frames.
MIN_FRAMES_SKIPPED_BY_SEEK = 8


class TruncatedVideoWarning(UserWarning):
    """Only part of a video can be read (a truncated download or a damaged file): frames come from that part."""


class VideoDecodeError(ValueError):
    """A video file could not be decoded into frames. The message names the file and the reason."""

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"Cannot decode video {source}: {reason}")


@dataclass(frozen=True)
class VideoIndex:
    """What demuxing a video stream tells about its frames, without decoding them.

    Attributes:
        frame_pts (`np.ndarray` of shape `(n_frames,)`, int64):
            Presentation timestamps of the frames, sorted, in units of the stream time base. Empty when the
            container does not give timestamps, in which case `n_frames` counts packets.
        keyframe_pts (`np.ndarray`, int64): sorted timestamps of the keyframes (seek targets).
        n_frames (`int`): number of frames.
        fps (`float`): average frame rate, frames per second.
        header_duration_s (`float`, *optional*): the duration the file's header states (the video stream's, else
            the container's), `None` when it states none.
        readable_duration_s (`float`, *optional*): the time the demuxed frames span (from their timestamps, else
            their count and the frame rate), plus one frame.
    """

    frame_pts: np.ndarray
    keyframe_pts: np.ndarray
    n_frames: int
    fps: float
    header_duration_s: float | None = None
    readable_duration_s: float | None = None

    @property
    def has_timestamps(self) -> bool:
        return len(self.frame_pts) == self.n_frames and self.n_frames > 0


def _describe(source: VideoSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    name = getattr(source, "name", None)
    return f"<file object {name}>" if isinstance(name, str) else f"<{type(source).__name__}>"


def _require_av() -> None:
    if av is None:
        raise ImportError("Reading video files needs PyAV, which is not installed: pip install av")


@contextmanager
def _open_video_stream(
    source: VideoSource, description: str
) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    """Open `source` and yield its first video stream, translating every PyAV failure into `VideoDecodeError`."""
    _require_av()
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    elif not isinstance(source, (str, os.PathLike)):
        source.seek(0)
    if isinstance(source, (str, os.PathLike)):
        if not os.path.exists(source):
            raise VideoDecodeError(description, "file not found")
        if os.path.getsize(source) == 0:
            raise VideoDecodeError(description, "file is empty")
    try:
        container = av.open(source, mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as error:
        raise VideoDecodeError(description, f"not a readable media container ({error})") from error
    try:
        if not container.streams.video:
            kinds = sorted({stream.type for stream in container.streams}) or ["no streams"]
            raise VideoDecodeError(description, f"no video stream (found: {', '.join(kinds)})")
        stream = container.streams.video[0]
        # Frame-level threading decodes several frames at once; it pays off on long sequential decodes.
        stream.thread_type = "AUTO"
        yield container, stream
    finally:
        container.close()


def _average_fps(stream: av.VideoStream, frame_pts: np.ndarray) -> float:
    """Frame rate from the stream header, or from the timestamps when the header has none."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return float(rate)
    if len(frame_pts) > 1 and stream.time_base is not None:
        span_s = float((frame_pts[-1] - frame_pts[0]) * stream.time_base)
        if span_s > 0:
            return (len(frame_pts) - 1) / span_s
    return 1.0


def index_video(
    source: VideoSource, *, timeout_s: float = DEFAULT_DECODE_TIMEOUT_S, description: str | None = None
) -> VideoIndex:
    """Count the frames of a video and collect their timestamps by demuxing it (no decoding)."""
    description = description or _describe(source)
    deadline = time.monotonic() + timeout_s
    with _open_video_stream(source, description) as (container, stream):
        pts: list[int] = []
        keyframes: list[int] = []
        n_packets = 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # end-of-stream marker, not a frame
                    continue
                n_packets += 1
                timestamp = packet.pts
                if timestamp is not None:
                    pts.append(timestamp)
                    if packet.is_keyframe:
                        keyframes.append(timestamp)
                if n_packets > MAX_FRAMES_PER_VIDEO or time.monotonic() > deadline:
                    raise VideoDecodeError(description, f"gave up reading after {n_packets} packets")
        except av.error.FFmpegError as error:
            # A damaged tail: keep what was read before it, decoding will tell whether it is usable.
            if n_packets == 0:
                raise VideoDecodeError(description, f"cannot read packets ({error})") from error
        frame_pts = np.array(sorted(pts), dtype=np.int64) if len(pts) == n_packets else np.zeros(0, np.int64)
        fps = _average_fps(stream, frame_pts)
        readable_s = n_packets / fps
        if len(frame_pts) > 1 and stream.time_base is not None:
            readable_s = float((frame_pts[-1] - frame_pts[0]) * stream.time_base) + 1 / fps
        return VideoIndex(
            frame_pts=frame_pts,
            keyframe_pts=np.array(sorted(keyframes), dtype=np.int64),
            n_frames=n_packets,
            fps=fps,
            header_duration_s=_header_duration_s(container, stream),
            readable_duration_s=readable_s,
        )


def _header_duration_s(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _warn_if_truncated(description: str, readable_frames: int, index: VideoIndex) -> None:
    """Warn when the frames that can be read cover clearly less time than the header states."""
    header = index.header_duration_s
    if header is None or index.readable_duration_s is None or index.n_frames == 0:
        return
    readable = index.readable_duration_s * readable_frames / index.n_frames
    if header - readable > max(TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_FRACTION * header):
        warnings.warn(
            f"{description}: only {readable:.1f} s of the {header:.1f} s its header states can be decoded; the file "
            "looks truncated or damaged. Frames are sampled from the readable part; download or re-encode the file.",
            TruncatedVideoWarning,
            stacklevel=3,
        )


def sample_frame_indices(n_frames: int, fps: float, num_frames: int, sampling: SamplingMode = "fps") -> np.ndarray:
    """Indices (presentation order) of the `num_frames` frames to keep from a video of `n_frames` frames.

    Args:
        n_frames (`int`): frames in the video, at least 1.
        fps (`float`): average frame rate; sets the one-frame-per-second candidate stride of `"fps"` sampling.
        num_frames (`int`): frames to return.
        sampling (`str`): `"fps"` (the paper's sampling) or `"uniform"` (uniform over all frames).

    Returns:
        `np.ndarray` of shape `(num_frames,)`, int64, non-decreasing, within `[0, n_frames - 1]`.
    """
    if n_frames < 1:
        raise ValueError(f"A video needs at least one frame to sample from, got n_frames={n_frames}.")
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}.")
    if sampling == "uniform":
        return np.linspace(0, n_frames - 1, num=num_frames).astype(np.int64)
    if sampling != "fps":
        raise ValueError(f"Unknown sampling {sampling!r}; use 'fps' (the paper's) or 'uniform'.")
    stride = max(1, int(round(fps)))
    candidates = np.arange(0, n_frames, stride, dtype=np.int64)
    if len(candidates) > num_frames:
        return candidates[np.linspace(0, len(candidates) - 1, num=num_frames).astype(np.int64)]
    if len(candidates) == num_frames:
        return candidates
    # Fewer one-per-second candidates than frames wanted: spread over the raw frames, repeating when needed.
    return np.linspace(candidates[0], n_frames - 1, num=num_frames).astype(np.int64)


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """The frame as packed 8-bit RGB `(height, width, 3)`, turned upright as its display matrix says."""
    # swscale converts every pixel format (grey, alpha, 10-bit, palette) to packed 8-bit RGB and drops alpha.
    rgb = frame.to_ndarray(format="rgb24")
    # Phones record sideways and store the turn to display it (counter-clockwise degrees), as players apply it.
    quarter_turns = round(frame.rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb


def _decode_packets(container, stream, description: str, deadline: float) -> Iterator[av.VideoFrame]:
    """Decoded frames of `stream` from the current position; undecodable packets are skipped, not fatal."""
    for packet in container.demux(stream):
        if time.monotonic() > deadline:
            raise VideoDecodeError(description, "decoding took longer than the time limit")
        try:
            yield from packet.decode()
        except av.error.FFmpegError:
            continue


def _decode_by_timestamp(
    source: VideoSource, description: str, index: VideoIndex, wanted: np.ndarray, deadline: float
) -> dict[int, np.ndarray]:
    """Decode the frames at positions `wanted`, seeking over long stretches that hold no wanted frame.

    Returns a dict from frame index to RGB array; frames that never came out of the decoder are absent.
    """
    targets = np.unique(wanted)
    # For every frame index, the index of the keyframe a decoder has to start from to reach it.
    keyframe_indices = np.searchsorted(index.frame_pts, index.keyframe_pts)
    slots = np.searchsorted(keyframe_indices, targets, side="right") - 1
    start_of_target = np.where(slots >= 0, keyframe_indices[np.maximum(slots, 0)], 0)

    frames: dict[int, np.ndarray] = {}
    next_target = 0  # position in `targets` of the next frame to collect
    last_decoded = -1  # index of the last frame that came out of the decoder
    seeks = 0
    with _open_video_stream(source, description) as (container, stream):
        while next_target < len(targets):
            start = int(start_of_target[next_target])
            if last_decoded < 0 or start - last_decoded > MIN_FRAMES_SKIPPED_BY_SEEK:
                seeks += 1
                if seeks > len(targets) + 1:
                    return frames  # seeking does not land where the index says: the caller counts frames instead
                container.seek(int(index.frame_pts[start]), stream=stream, backward=True, any_frame=False)
            jumped = False
            for frame in _decode_packets(container, stream, description, deadline):
                if frame.pts is None:
                    return frames  # no timestamps to match: the caller falls back to counting frames
                position = int(np.searchsorted(index.frame_pts, frame.pts, side="left"))
                if position >= index.n_frames or index.frame_pts[position] != frame.pts:
                    continue  # a timestamp the demuxer never announced: not a frame that can be matched
                last_decoded = position
                while next_target < len(targets) and targets[next_target] < position:
                    next_target += 1  # that frame never came out of the decoder; the caller notices the gap
                if next_target < len(targets) and targets[next_target] == position:
                    frames[position] = _to_rgb(frame)
                    next_target += 1
                if next_target == len(targets):
                    return frames
                # Jump only once the decoder is past the keyframe sought last (a seek may land earlier).
                if last_decoded >= start and start_of_target[next_target] - last_decoded > MIN_FRAMES_SKIPPED_BY_SEEK:
                    jumped = True
                    break
            if not jumped:
                break  # end of stream
    return frames


def _decode_by_count(source, description, wanted: np.ndarray, deadline: float) -> tuple[dict[int, np.ndarray], int]:
    """Decode sequentially, numbering frames as they come out; returns the wanted frames and the frames decoded."""
    wanted_set = set(int(i) for i in wanted)
    frames: dict[int, np.ndarray] = {}
    n_decoded = 0
    with _open_video_stream(source, description) as (container, stream):
        for frame in _decode_packets(container, stream, description, deadline):
            if n_decoded in wanted_set:
                frames[n_decoded] = _to_rgb(frame)
            n_decoded += 1
            if len(frames) == len(wanted_set) or n_decoded > MAX_FRAMES_PER_VIDEO:
                break
    return frames, n_decoded


def _count_decodable_frames(source, description, deadline: float) -> int:
    n_decoded = 0
    with _open_video_stream(source, description) as (container, stream):
        for _ in _decode_packets(container, stream, description, deadline):
            n_decoded += 1
            if n_decoded > MAX_FRAMES_PER_VIDEO:
                break
    return n_decoded


def read_video_frames(
    path_or_file: VideoSource,
    num_frames: int,
    sampling: SamplingMode = "fps",
    *,
    timeout_s: float = DEFAULT_DECODE_TIMEOUT_S,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode `num_frames` frames of a video, sampled the way the paper's data loader samples them.

    Args:
        path_or_file (`str`, `os.PathLike`, binary file object or `bytes`):
            The video: a path, an open binary file (read from its start) or the file's bytes.
        num_frames (`int`):
            Frames to return. Short videos repeat frames so that every video yields exactly `num_frames`.
        sampling (`str`, *optional*, defaults to `"fps"`):
            `"fps"`: the paper's one-frame-per-second candidates, `num_frames` of them taken uniformly.
            `"uniform"`: `num_frames` frames spread uniformly over all frames.
        timeout_s (`float`, *optional*, defaults to 120):
            Wall-clock limit for reading one video; past it a `VideoDecodeError` is raised.

    Returns:
        `tuple[np.ndarray, np.ndarray]`: the frames, uint8 of shape `(num_frames, height, width, 3)` (RGB), and the
        frame mask, int64 of shape `(num_frames,)`, all ones (every returned frame is a real frame).

    Raises:
        `VideoDecodeError`: the file is missing, empty, not a media file, has no video stream, or no frame of it
        decodes.
    """
    description = _describe(path_or_file)
    if isinstance(path_or_file, bytes):
        path_or_file = io.BytesIO(path_or_file)
    deadline = time.monotonic() + timeout_s
    index = index_video(path_or_file, timeout_s=timeout_s, description=description)
    if index.n_frames == 0:
        raise VideoDecodeError(description, "the video stream has no frames")

    wanted = sample_frame_indices(index.n_frames, index.fps, num_frames, sampling)
    readable_frames = index.n_frames
    frames: dict[int, np.ndarray] = {}
    if index.has_timestamps and len(index.keyframe_pts) > 0:
        frames = _decode_by_timestamp(path_or_file, description, index, wanted, deadline)
    if len(frames) < len(np.unique(wanted)):
        # No usable timestamps, or packets that do not decode: number the frames the decoder actually produces.
        frames, n_decoded = _decode_by_count(path_or_file, description, wanted, deadline)
        if len(frames) < len(np.unique(wanted)):
            n_decodable = _count_decodable_frames(path_or_file, description, deadline)
            if n_decodable == 0:
                raise VideoDecodeError(description, f"none of its {index.n_frames} packets decodes to a frame")
            readable_frames = n_decodable
            wanted = sample_frame_indices(n_decodable, index.fps, num_frames, sampling)
            frames, _ = _decode_by_count(path_or_file, description, wanted, deadline)
            if len(frames) < len(np.unique(wanted)):
                raise VideoDecodeError(description, "decoding is not repeatable (frames differ between reads)")
    _warn_if_truncated(description, readable_frames, index)

    shapes = {frames[i].shape for i in frames}
    if len(shapes) != 1:
        # Resolution changes mid-stream: bring every frame to the first frame's size so they stack.
        target_h, target_w = frames[int(wanted[0])].shape[:2]
        frames = {i: _resize_rgb(f, target_h, target_w) for i, f in frames.items()}
    video = np.stack([frames[int(i)] for i in wanted])
    return video, np.ones(num_frames, dtype=np.int64)


def _resize_rgb(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    if frame.shape[:2] == (height, width):
        return frame
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BICUBIC))
