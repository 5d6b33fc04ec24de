"""Cutting videos into windows, sampling each window like a training video, and finding the videos of a folder."""

from __future__ import annotations

import numpy as np
import pytest
from data_helpers import frame_numbers, numbered_frames
from search_helpers import BAD_FILES, VIDEOS, make_video_folder

from transformers_tempme.data.synthetic_video import write_video
from transformers_tempme.search.discovery import list_files, probe_video
from transformers_tempme.search.segments import (
    read_video_timeline,
    read_window_frames,
    segment_windows,
    window_frame_indices,
)
from transformers_tempme.video_io import VideoDecodeError, read_video_frames, sample_frame_indices


@pytest.mark.parametrize(
    "duration, seconds, overlap, expected",
    [
        (4.0, 10.0, 0.0, [(0.0, 4.0)]),  # short: one segment, the whole video
        (10.0, 10.0, 0.0, [(0.0, 10.0)]),
        (20.0, 10.0, 0.0, [(0.0, 10.0), (10.0, 20.0)]),
        (25.0, 10.0, 0.0, [(0.0, 10.0), (10.0, 20.0), (15.0, 25.0)]),  # the last window ends with the video
        (25.0, 10.0, 5.0, [(0.0, 10.0), (5.0, 15.0), (10.0, 20.0), (15.0, 25.0)]),
        (20.0000001, 10.0, 0.0, [(0.0, 10.0), (10.0, 20.0)]),  # float noise adds no window
        (3601.0, 600.0, 0.0, [(600.0 * i, 600.0 * (i + 1)) for i in range(6)] + [(3001.0, 3601.0)]),
    ],
)
def test_segment_windows(duration, seconds, overlap, expected):
    assert segment_windows(duration, seconds, overlap) == expected


@pytest.mark.parametrize("seconds, overlap", [(0.0, 0.0), (-1.0, 0.0), (10.0, 10.0), (10.0, -1.0)])
def test_segment_windows_reject_bad_settings(seconds, overlap):
    with pytest.raises(ValueError, match="segment"):
        segment_windows(30.0, seconds, overlap)


def test_a_window_holding_the_whole_video_samples_like_training(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, numbered_frames(60), fps=10)
    timeline = read_video_timeline(path)
    assert timeline.duration == pytest.approx(6.0)
    for sampling in ("fps", "uniform"):
        assert window_frame_indices(timeline, 0.0, timeline.duration, 12, sampling).tolist() == \
            sample_frame_indices(60, 10.0, 12, sampling).tolist()
        whole, _ = read_video_frames(path, 12, sampling)
        window, _ = read_window_frames(path, timeline, 0.0, timeline.duration, 12, sampling)
        np.testing.assert_array_equal(window, whole)


def test_windows_of_a_long_video_sample_their_own_frames(tmp_path):
    # 25 s at 10 fps with a keyframe every 30 frames: windows are read by seeking.
    path = tmp_path / "long.mp4"
    write_video(path, numbered_frames(250), fps=10, codec_options={"g": "30"})
    timeline = read_video_timeline(path)
    for start, end in segment_windows(timeline.duration, 10.0):
        frames, mask = read_window_frames(path, timeline, start, end, 4, "uniform")
        first = int(round(start * 10))
        expected = (first + sample_frame_indices(100, 10.0, 4, "uniform")).tolist()
        assert frame_numbers(frames) == expected
        assert mask.tolist() == [1, 1, 1, 1]


def test_a_window_without_frames_takes_the_frame_shown_at_its_start(tmp_path):
    path = tmp_path / "slides.mkv"  # one frame every 4 seconds
    write_video(path, numbered_frames(5), fps=1, container_format="matroska", frame_times_s=[0, 4, 8, 12, 16])
    timeline = read_video_timeline(path)
    assert window_frame_indices(timeline, 5.0, 6.0, 3).tolist() == [1, 1, 1]


def test_probing_tells_videos_from_other_files(tmp_path):
    folder = make_video_folder(tmp_path / "videos")
    files = [f.path for f in list_files(folder)]
    assert files == sorted(VIDEOS + BAD_FILES)  # hidden files are not listed
    assert probe_video(folder / "green_clip").duration == pytest.approx(3.0)  # no extension, still a video
    reasons = {}
    for name in BAD_FILES:
        with pytest.raises(VideoDecodeError) as error:
            probe_video(folder / name)
        reasons[name] = error.value.reason
    assert reasons["empty.mp4"] == "file is empty"
    assert "not a readable media container" in reasons["notes.mp4"]
    assert reasons["thumbnail.png"] == "a still image (png_pipe), not a video"


def test_text_art_is_not_a_video(tmp_path):
    # FFmpeg's `bin` demuxer opens any .bin file as a "video" of ANSI art.
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 20)
    with pytest.raises(VideoDecodeError, match="text art"):
        probe_video(path)


def test_listing_skips_the_index_folder_inside_the_video_folder(tmp_path):
    folder = make_video_folder(tmp_path / "videos")
    (folder / "my.index" / "segments").mkdir(parents=True)
    (folder / "my.index" / "segments" / "clip.mp4").write_bytes((folder / "red_right.mp4").read_bytes())
    assert "my.index/segments/clip.mp4" in [f.path for f in list_files(folder)]
    assert "my.index/segments/clip.mp4" not in [f.path for f in list_files(folder, exclude=[folder / "my.index"])]
