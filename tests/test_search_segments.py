"""Cutting videos into windows, sampling each window like a training video, and finding the videos of a folder."""

from __future__ import annotations

import numpy as np
import pytest
from data_helpers import frame_numbers, numbered_frames
from search_helpers import BAD_FILES, NOT_VIDEOS, VIDEOS, make_video_folder, write_truncated_mp4

from transformers_tempme.data.synthetic_video import write_video
from transformers_tempme.search.discovery import NotAVideoError, list_files, probe_video
from transformers_tempme.search.segment_batches import partial_decode_warning
from transformers_tempme.search.storage import is_index_folder
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
    for name in BAD_FILES:
        with pytest.raises(VideoDecodeError) as error:
            probe_video(folder / name)
        assert isinstance(error.value, NotAVideoError) == (name in NOT_VIDEOS), name


def write_audio(path, container_format=None) -> None:
    """One second of silence, audio only."""
    import av

    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream("aac" if container_format == "mp4" else "pcm_s16le", rate=8000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.int16 if container_format != "mp4" else np.float32),
                                           format="s16" if container_format != "mp4" else "fltp", layout="mono")
        frame.sample_rate = 8000
        for _ in range(8):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_png(path) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path, format="PNG")


def write_cut_mp4(path) -> None:
    """An mp4 whose index (`moov`, written last) is cut off: FFmpeg cannot open it."""
    write_video(path, numbered_frames(40), fps=8)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# (file name, how to write it, skipped as not a video, what the reason says). The name decides only between a
# broken video (named like one: failed) and a file that cannot be opened and never was a video (skipped).
PROBE_CASES = [
    ("thumbnail.png", write_png, True, "a still image (png_pipe)"),
    ("thumbnail.mp4", write_png, True, "a still image (png_pipe)"),  # an image, whatever its name
    ("data.bin", lambda p: p.write_bytes(bytes(range(256)) * 20), True, "text art"),  # FFmpeg's `bin` demuxer
    ("notes.txt", lambda p: p.write_text("shopping list\n"), True, "not a readable media container"),
    ("README", lambda p: p.write_text("no suffix at all\n"), True, "not a readable media container"),
    ("empty.txt", lambda p: p.write_bytes(b""), True, "file is empty"),
    ("sound.wav", write_audio, True, "no video stream (found: audio)"),
    ("notes.mp4", lambda p: p.write_text("<html>404 Not Found</html>\n"), False, "not a readable media container"),
    ("empty.mp4", lambda p: p.write_bytes(b""), False, "file is empty"),
    ("sound.mp4", lambda p: write_audio(p, "mp4"), False, "no video stream (found: audio)"),
    ("cut.MP4", write_cut_mp4, False, "not a readable media container"),
]


@pytest.mark.parametrize("name, write, skipped, reason", PROBE_CASES, ids=[case[0] for case in PROBE_CASES])
def test_probing_tells_files_that_are_not_videos_from_broken_videos(tmp_path, name, write, skipped, reason):
    path = tmp_path / name
    write(path)
    with pytest.raises(VideoDecodeError) as error:
        probe_video(path)
    assert isinstance(error.value, NotAVideoError) == skipped
    assert reason in error.value.reason


def test_listing_skips_index_folders_inside_the_video_folder(tmp_path):
    folder = make_video_folder(tmp_path / "videos")
    clip = (folder / "red_right.mp4").read_bytes()
    (folder / "my.index" / "segments").mkdir(parents=True)
    (folder / "my.index" / "segments" / "clip.mp4").write_bytes(clip)
    assert "my.index/segments/clip.mp4" in [f.path for f in list_files(folder)]
    assert "my.index/segments/clip.mp4" not in [f.path for f in list_files(folder, exclude=[folder / "my.index"])]
    # Recognised by what an index holds: a manifest with its segments or lock, or a first update's lock and work.
    layouts = {
        "old.index": {"index.json": "{}", "segments/clip.mp4": clip},
        "copied.index": {"index.json": "{}", ".lock": "", "cache/clip.mp4": clip},
        "running.index": {".lock": "", "work/clip.mp4": clip},
        "site": {"index.json": "{}", "clip.mp4": clip},  # someone's index.json alone: a folder like any other
    }
    for name, files in layouts.items():
        for relative, content in files.items():
            (folder / name / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / name / relative).write_bytes(content if isinstance(content, bytes) else content.encode())
    listed = [f.path for f in list_files(folder, exclude=[folder / "my.index"], skip_folder=is_index_folder)]
    assert [path for path in listed if path.endswith("clip.mp4")] == ["site/clip.mp4"]
    assert not is_index_folder(folder / "site") and is_index_folder(folder / "running.index")


def test_a_truncated_file_is_read_up_to_its_last_frame_with_a_warning(tmp_path):
    path = write_truncated_mp4(tmp_path / "cut.mp4", seconds=30, keep=0.8)
    timeline = read_video_timeline(path)
    assert 10 < timeline.duration < 25 and timeline.index.header_duration_s == pytest.approx(30.0)
    warning = partial_decode_warning("cut.mp4", timeline)
    assert warning == (f"cut.mp4: indexed up to {timeline.duration:.1f} s of the 30.0 s its header states (the rest "
                       "cannot be read: the file looks truncated or damaged)")
    whole = read_video_timeline(write_truncated_mp4(tmp_path / "whole.mp4", seconds=30, keep=1.0))
    assert partial_decode_warning("whole.mp4", whole) is None
