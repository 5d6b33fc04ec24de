"""What the search page plays (`search/media.py`): which files are videos and which browsers play as they are, the
poster of a hit, the browser copy of its window, and the cache that keeps them. The routes that serve them are
attacked in `test_search_server.py`; playback in a real browser is in `test_search_app.py`."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from search_helpers import COLOURS, FPS, MIXED_FORMATS, colour_seconds, make_mixed_formats_folder, write_clip

from transformers_tempme.data.synthetic_video import write_video
from transformers_tempme.search import media as media_module
from transformers_tempme.search.media import IndexedMedia, MediaCache, probe_media, transcode_window, write_poster
from transformers_tempme.video_io import VideoDecodeError, read_video_frames

SECONDS = 4
COLOUR_NAMES = list(COLOURS)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    return make_mixed_formats_folder(tmp_path_factory.mktemp("mixed") / "videos", seconds=SECONDS)


def colour_of(rgb: np.ndarray) -> str:
    """The name of the colour of the square in a frame (its brightest pixels)."""
    pixels = rgb.reshape(-1, 3).astype(int)
    square = pixels[pixels.sum(axis=1) > pixels.sum(axis=1).max() * 0.6].mean(axis=0)
    return min(COLOURS, key=lambda name: np.abs(np.array(COLOURS[name]) - square).sum())


def decoded(path: Path) -> tuple[list[float], list[str], tuple[str, str]]:
    """Times and square colours of every frame of a video, and its codec and pixel format."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [(float(frame.time), colour_of(frame.to_ndarray(format="rgb24"))) for frame in container.decode(stream)]
        codec, pixel_format = stream.codec_context.name, stream.codec_context.pix_fmt
    return [t for t, _ in frames], [c for _, c in frames], (codec, pixel_format)


# ------------------------------------------------------------------ which files are videos, and which play as they are


@pytest.mark.parametrize(
    "name, codec, pixel_format, container_format, browser_type",
    [
        ("h264.mp4", "libx264", "yuv420p", None, "video/mp4"),
        ("h264.mov", "libx264", "yuv420p", None, "video/mp4"),  # QuickTime's container is MP4's
        ("vp9.webm", "libvpx-vp9", "yuv420p", None, "video/webm"),
        ("h264_444.mp4", "libx264", "yuv444p", None, None),  # High 4:4:4: browsers refuse it
        ("h264.mkv", "libx264", "yuv420p", None, None),  # Matroska: Chromium plays it, other browsers do not
        ("mpeg4.mp4", "mpeg4", "yuv420p", None, None),
        ("mpeg4.avi", "mpeg4", "yuv420p", None, None),
        ("mjpeg.avi", "mjpeg", "yuvj420p", None, None),
        ("mjpeg.mov", "mjpeg", "yuvj420p", None, None),
        ("mpeg1.mpg", "mpeg1video", "yuv420p", "mpeg", None),
        ("anim.gif", "gif", "rgb8", None, None),
    ],
)
def test_the_probe_says_what_browsers_play(tmp_path, name, codec, pixel_format, container_format, browser_type):
    path = tmp_path / name
    write_video(path, colour_seconds(1, 25), fps=25, codec=codec, pix_fmt=pixel_format, container_format=container_format)
    assert probe_media(path).browser_type == browser_type


def test_sound_the_browser_cannot_play_needs_a_copy(tmp_path):
    path = write_with_sound(tmp_path / "pcm.mov", "libx264", "yuv420p", "pcm_s16le", seconds=1)
    probe = probe_media(path)
    assert probe.audio_codecs == ("pcm_s16le",) and probe.browser_type is None
    assert probe_media(write_with_sound(tmp_path / "aac.mp4", "libx264", "yuv420p", "aac", seconds=1)).browser_type == "video/mp4"


@pytest.mark.parametrize("name, content", [
    ("notes.mp4", b"not a video at all\n"),
    ("passwd", b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"),
    ("empty.avi", b""),
    ("key.pem", b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"),
    ("image.png", None),
    ("image.jpg", None),
])
def test_what_is_not_a_video_is_refused(tmp_path, name, content):
    path = tmp_path / name
    if content is None:
        Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(path)
    else:
        path.write_bytes(content)
    with pytest.raises(VideoDecodeError):
        probe_media(path)


# ------------------------------------------------------------------ posters and copies of every format


@pytest.mark.parametrize("name", list(MIXED_FORMATS))
def test_the_poster_is_the_frame_at_the_start(mixed, tmp_path, name):
    for start in (0.0, 1.5, 2.5):
        target = tmp_path / f"{start}.jpg"
        write_poster(mixed / name, start, target, time.monotonic() + 30)
        with Image.open(target) as image:
            assert image.format == "JPEG" and image.size == (64, 64)  # never enlarged
            assert colour_of(np.asarray(image.convert("RGB"))) == COLOUR_NAMES[int(start)], start


def test_a_poster_is_at_most_320_pixels_wide(tmp_path):
    path = tmp_path / "wide.mp4"
    write_video(path, np.zeros((4, 360, 1280, 3), np.uint8), fps=4)
    write_poster(path, 0.0, tmp_path / "poster.jpg", time.monotonic() + 30)
    with Image.open(tmp_path / "poster.jpg") as image:
        assert image.size == (320, 90)


@pytest.mark.parametrize("name", list(MIXED_FORMATS))
def test_a_copy_holds_the_window_and_plays_in_browsers(mixed, tmp_path, name):
    target = tmp_path / "copy.mp4"
    transcode_window(mixed / name, 1.0, 3.0, target, time.monotonic() + 60)
    assert probe_media(target).browser_type == "video/mp4"
    times, colours, (codec, pixel_format) = decoded(target)
    assert (codec, pixel_format) == ("h264", "yuv420p")
    fps = MIXED_FORMATS[name][3]
    assert times[0] == 0.0 and times[-1] == pytest.approx(2.0 - 1 / fps, abs=0.02)
    assert len(times) == pytest.approx(2 * fps, abs=1)
    # The copy's times start at the window's start: second 1 of the file is green, second 2 blue.
    assert {colour for t, colour in zip(times, colours) if 0.1 < t < 0.9} == {"green"}
    assert {colour for t, colour in zip(times, colours) if 1.1 < t < 1.9} == {"blue"}


def write_with_sound(path: Path, codec: str, pixel_format: str, sound_codec: str, seconds: int, fps: int = 25) -> Path:
    """A video with a 440 Hz tone, its picture `colour_seconds`."""
    frames = colour_seconds(seconds, fps, 64)
    with av.open(str(path), mode="w") as container:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = 64, 64, pixel_format
        sound = container.add_stream(sound_codec, rate=44_100)
        sound.layout = "mono"
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        tone = (np.sin(2 * np.pi * 440 * np.arange(44_100 * seconds) / 44_100) * 8000).astype(np.int16)
        size = sound.codec_context.frame_size or 1024
        for start in range(0, len(tone), size):
            frame = av.AudioFrame.from_ndarray(tone[None, start : start + size], format="s16", layout="mono")
            frame.sample_rate, frame.pts = 44_100, start
            container.mux(sound.encode(frame))
        container.mux(sound.encode())
        container.mux(video.encode())
    return path


@pytest.mark.parametrize("name, codec, pixel_format, sound_codec", [
    ("sound.avi", "mpeg4", "yuv420p", "pcm_s16le"),
    ("sound.mov", "mjpeg", "yuvj420p", "pcm_s16le"),
])
def test_a_copy_keeps_the_sound_of_its_window(tmp_path, name, codec, pixel_format, sound_codec):
    source = write_with_sound(tmp_path / name, codec, pixel_format, sound_codec, seconds=6)
    target = tmp_path / "copy.mp4"
    transcode_window(source, 2.0, 5.0, target, time.monotonic() + 60)
    with av.open(str(target)) as container:
        assert [stream.codec_context.name for stream in container.streams.audio] == ["aac"]
        chunks = list(container.decode(container.streams.audio[0]))
    assert chunks[0].time == pytest.approx(0.0, abs=0.03)
    assert sum(chunk.samples for chunk in chunks) / chunks[0].sample_rate == pytest.approx(3.0, abs=0.05)


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_posters_and_copies_of_a_phone_clip_are_upright(tmp_path, rotation):
    frames = np.zeros((8, 32, 48, 3), np.uint8)  # stored landscape: left half red, right half blue, top rows green
    frames[:, :, :24, 0], frames[:, :, 24:, 2], frames[:, :8, :, 1] = 255, 255, 255
    path = tmp_path / "phone.mov"
    with av.open(str(path), "w") as container:  # Motion JPEG: played from a copy
        stream = container.add_stream("mjpeg", rate=8)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuvj420p"
        stream.set_display_rotation(rotation)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    upright = read_video_frames(path, 1, "uniform")[0][0].astype(int)  # as a player shows it
    write_poster(path, 0.0, tmp_path / "poster.jpg", time.monotonic() + 30)
    with Image.open(tmp_path / "poster.jpg") as image:
        poster = np.asarray(image.convert("RGB")).astype(int)
    transcode_window(path, 0.0, 1.0, tmp_path / "copy.mp4", time.monotonic() + 30)
    with av.open(str(tmp_path / "copy.mp4")) as container:
        copied = next(container.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    assert poster.shape == copied.shape == upright.shape
    assert np.abs(poster - upright).mean() < 20 and np.abs(copied - upright).mean() < 20


def test_a_copy_is_bounded_in_time_and_size(mixed, tmp_path):
    with pytest.raises(VideoDecodeError, match="time limit"):
        transcode_window(mixed / "clip.avi", 0.0, 3.0, tmp_path / "late.mp4", deadline=time.monotonic() - 1)
    with pytest.raises(VideoDecodeError, match="grew past"):
        transcode_window(mixed / "clip.avi", 0.0, 3.0, tmp_path / "big.mp4", time.monotonic() + 60, max_bytes=100)


def test_a_window_past_the_end_shows_the_last_frame(mixed, tmp_path):
    transcode_window(mixed / "clip.avi", 10.0, 12.0, tmp_path / "after.mp4", time.monotonic() + 60)
    times, colours, _ = decoded(tmp_path / "after.mp4")
    assert times == [0.0] and colours == [COLOUR_NAMES[SECONDS - 1]]


# ------------------------------------------------------------------ the indexed files only


@pytest.fixture
def library(tmp_path, mixed):
    """An `IndexedMedia` over the mixed folder plus a text file and a link out, all of them "indexed"."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in MIXED_FORMATS:
        (videos / name).write_bytes((mixed / name).read_bytes())
    (videos / "notes.mp4").write_text("not a video\n")
    outside = write_clip(tmp_path / "outside.mp4", colour_seconds(1))
    (videos / "link_out.mp4").symlink_to(outside)
    indexed = {*MIXED_FORMATS, "notes.mp4", "link_out.mp4", "../outside.mp4", str(outside)}
    return IndexedMedia(lambda: videos, lambda: indexed, tmp_path / "videos.index" / "cache" / "media", max_window_s=10.0)


def test_only_indexed_videos_inside_the_folder_are_served(library, tmp_path):
    assert {name for name in MIXED_FORMATS if library.video(name) is not None} == set(MIXED_FORMATS)
    for name in ("notes.mp4", "link_out.mp4", "../outside.mp4", str(tmp_path / "outside.mp4"), "missing.mp4"):
        assert library.video(name) is None, name
        assert library.poster(name, 0.0) is None and library.browser_copy(name, 0.0, 1.0) is None


def test_an_index_rooted_at_slash_serves_no_system_file(tmp_path):
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    video = write_clip(tmp_path / "real.mp4", colour_seconds(1))
    rows = {"etc/passwd", str(text).lstrip("/"), str(video).lstrip("/")}
    media = IndexedMedia(lambda: Path("/"), lambda: rows, tmp_path / "cache", max_window_s=10.0)
    assert media.video("etc/passwd") is None and media.video(str(text).lstrip("/")) is None
    assert media.video(str(video).lstrip("/")) is not None  # a video is still a video


def test_the_verdict_is_probed_once_per_file_version(library, monkeypatch):
    probed = []
    probe = media_module.probe_media
    monkeypatch.setattr(media_module, "probe_media", lambda path: probed.append(path) or probe(path))
    for _ in range(3):
        assert library.video("clip.avi") is not None and library.video("notes.mp4") is None
    assert len(probed) == 2
    path = library.video("clip.avi").path
    path.write_bytes(path.read_bytes())  # rewritten: a new modification time
    library.video("clip.avi")
    assert len(probed) == 3


@pytest.mark.parametrize("start, end", [(0.0, 10.5), (0.0, 0.0), (3.0, 2.0), (-1.0, 2.0)])
def test_windows_longer_than_a_segment_or_empty_are_refused(library, start, end):
    assert library.browser_copy("clip.avi", start, end) is None


def test_what_a_hit_plays(library):
    shown = library.hit_media("clip.mp4", 1.0, 3.0)
    assert (shown.src, shown.copy, shown.fallback) == ("/media/clip.mp4#t=1.000,3.000", False, "/clip/1.000-3.000/clip.mp4")
    shown = library.hit_media("clip.avi", 1.0, 3.0)
    assert (shown.src, shown.copy, shown.poster) == ("/clip/1.000-3.000/clip.avi", True, "/poster/1.000/clip.avi")
    assert shown.format == "mpeg4 in avi"
    assert library.hit_media("notes.mp4", 0.0, 1.0) is None


# ------------------------------------------------------------------ the cache


def test_posters_and_copies_are_made_once_and_kept(library, monkeypatch):
    made = []
    transcode = media_module.transcode_window

    def slow_transcode(*args, **kwargs):
        made.append(args[1:3])
        time.sleep(0.5)  # long enough for every thread to ask while it runs
        return transcode(*args, **kwargs)

    monkeypatch.setattr(media_module, "transcode_window", slow_transcode)
    results = []
    threads = [threading.Thread(target=lambda: results.append(library.browser_copy("clip.avi", 1.0, 3.0)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert made == [(1.0, 3.0)] and len(set(results)) == 1 and results[0].is_file()
    assert library.browser_copy("clip.avi", 1.0, 3.0) == results[0] and len(made) == 1
    assert library.browser_copy("clip.avi", 0.0, 2.0) != results[0] and len(made) == 2
    # Kept under the index folder, under names that say nothing of the file; no temporary file left.
    assert results[0].parent == library.cache.folder and results[0].parent.parts[-3:] == ("videos.index", "cache", "media")
    assert "clip" not in results[0].name
    assert sorted(path.suffix for path in library.cache.folder.iterdir()) == [".mp4", ".mp4"]


def test_a_changed_file_gets_a_new_poster(library):
    first = library.poster("clip.mp4", 0.5)
    path = library.video("clip.mp4").path
    write_video(path, colour_seconds(2, FPS, 64)[::-1], fps=FPS)  # now green first
    second = library.poster("clip.mp4", 0.5)
    assert second != first
    with Image.open(first) as old, Image.open(second) as new:
        assert colour_of(np.asarray(old.convert("RGB"))) == "red" and colour_of(np.asarray(new.convert("RGB"))) == "green"


def test_a_failed_copy_leaves_nothing(library, monkeypatch):
    def failing(source, start, end, target, deadline):
        Path(target).write_bytes(b"half a file")
        raise VideoDecodeError(str(source), "broken")

    monkeypatch.setattr(media_module, "transcode_window", failing)
    assert library.browser_copy("clip.avi", 0.0, 1.0) is None
    assert list(library.cache.folder.iterdir()) == []


def test_the_cache_keeps_under_its_size(tmp_path):
    cache = MediaCache(tmp_path / "cache", max_bytes=3000)
    (tmp_path / "cache").mkdir()
    for i in range(8):
        cache.get(f"key{i}", ".bin", lambda target: Path(target).write_bytes(b"x" * 1000))
        time.sleep(0.01)  # distinct modification times
        cache.get("key0", ".bin", lambda target: pytest.fail("key0 was evicted"))  # used after each write: kept
        time.sleep(0.01)
    assert cache.size() == 3000
    assert sorted(path.name for path in cache.folder.iterdir()) == ["key0.bin", "key6.bin", "key7.bin"]
