"""Cutting a video's duration into the time windows that the index encodes one by one.

A video no longer than `segment_seconds` is one segment covering all of it. A longer one is cut into windows of
exactly `segment_seconds`, starting every `segment_seconds - overlap_seconds`; the last window is moved back so that
it ends with the video, so that every window of a long video shows the same amount of time to the model (a short
tail window would be sampled with repeated frames). Each window is then sampled to the model's frame count the way
training samples a whole video (`transformers_tempme.video_io.window_frame_indices`).
"""

from __future__ import annotations

import math

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


__all__ = ["DEFAULT_SEGMENT_SECONDS", "check_segment_settings", "segment_windows"]
