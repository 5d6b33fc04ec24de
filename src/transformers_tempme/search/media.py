"""What the search page plays for each hit: the file itself when browsers can, else a copy of the hit's window, and
a poster of its first frame.

Every file the page serves passes one rule (`IndexedMedia.video`): the path is one the index stores, it resolves
now (symbolic links followed) to a regular file inside the video folder (`indexed_file`), and that file is a video:
its container is probed once per file identity (path, device, inode, size, modification time) and the verdict
kept. So an index whose rows, or whose `video_dir`, were edited to name a text file, a key or `/etc/passwd` serves
nothing, whatever it names.

- **The file itself** (`/media/PATH`), when every current browser plays it as it is (`MediaProbe.browser_type`):
  H.264 (8-bit 4:2:0), VP9 or AV1 in MP4, VP8, VP9 or AV1 in WebM, with their usual sound codecs or none.
- **A browser copy of the window** (`/clip/START-END/PATH`) of any other video (AVI, MPEG-1/2, GIF, Motion JPEG,
  HEVC, H.264 in Matroska, PCM sound, ...): only the hit's window, transcoded on demand with PyAV to H.264 and AAC
  in MP4 (index first, so it starts playing while it loads), at most `CLIP_MAX_SIDE` pixels on its longer side.
  A window is at most one segment of the index long.
- **A poster** (`/poster/START/PATH`): a JPEG, at most `POSTER_WIDTH` pixels wide, of the frame shown at START.

Posters and copies are derived files, kept in the index folder under `cache/media/` (`MediaCache`): named by a hash
of the file's identity, the times and the kind of file, so a changed video is never answered from an old copy;
written atomically (a temporary file renamed into place); made by one thread while the others asking for the same
file wait for it; at most `max_concurrent` made at once, each within `time_limit_s`; and the folder kept under
`max_bytes` by deleting the least recently used files. Deleting the folder loses nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import math
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from urllib.parse import quote

import av
import numpy as np

from ..video_io import VideoDecodeError, _decode_packets, _open_video_stream
from .discovery import not_a_video_reason
from .storage import TEMP_PREFIX, write_atomically

MEDIA_ROUTE = "/media"
CLIP_ROUTE = "/clip"
POSTER_ROUTE = "/poster"
CACHE_FOLDER = "cache/media"  # inside the index folder

POSTER_WIDTH = 320
POSTER_QUALITY = 80
CLIP_MAX_SIDE = 640
CLIP_FRAME_RATE_LIMIT = 30  # frames per second of a copy, at most
CLIP_ENCODER_OPTIONS = {"preset": "veryfast", "crf": "26"}
CLIP_AUDIO_RATE = 48_000
MAX_COPY_BYTES = 256 * 1024 * 1024  # a copy growing past this is abandoned
DEFAULT_CACHE_BYTES = 1024**3
DEFAULT_TIME_LIMIT_S = 60.0
DEFAULT_CONCURRENT = 2
_VERDICTS_KEPT = 10_000
_CACHE_VERSION = 1  # part of every cache key: bump it when what is written changes
_TIME_DECIMALS = 3  # times in URLs and cache keys, in seconds
_SAME_TIME_S = 1e-3  # frame times closer than this are the same time (timestamps in other units, rounded)
_SOUND_LAG_S = 5.0  # how far past a window's last picture its sound is looked for

# Containers (FFmpeg demuxer names), and what every current browser plays in them: MIME type, video codecs, sound
# codecs. Everything else gets a copy. H.264 in Matroska plays in Chromium but not everywhere, so it gets one too.
_BROWSER_CONTAINERS = {
    "mov,mp4,m4a,3gp,3g2,mj2": ("video/mp4", {"h264", "vp9", "av1"}, {"aac", "mp3", "opus", "flac"}),
    "matroska,webm": ("video/webm", {"vp8", "vp9", "av1"}, {"opus", "vorbis"}),
}
_BROWSER_PIXEL_FORMATS = {"yuv420p", "yuvj420p"}  # 8-bit 4:2:0: 10-bit and 4:2:2 / 4:4:4 H.264 do not play

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ which files are served


def indexed_file(video_dir: str | os.PathLike, indexed: Container[str], requested: str) -> Path | None:
    """The file an indexed path names, or None.

    A path the index stores (exactly as stored) with no hidden component (the indexer lists no hidden file or
    folder), once it resolves, symbolic links followed now, to a regular file inside the video folder. So an index
    whose rows were edited to hold `../x` or `/etc/x` names nothing, and neither does a link inside the folder that
    leads out of it. (Whether the file is a video is `IndexedMedia.video`'s question.)
    """
    if requested not in indexed or any(part.startswith(".") for part in requested.split("/")):
        return None
    try:
        root = Path(video_dir).resolve(strict=True)
        path = (root / requested).resolve(strict=True)
    except (OSError, RuntimeError):  # gone, or a loop of links
        return None
    return path if path.is_relative_to(root) and path.is_file() else None


@dataclass(frozen=True)
class MediaProbe:
    """What a browser needs to know of a video file.

    Attributes:
        container (`str`): FFmpeg's demuxer name, e.g. `"mov,mp4,m4a,3gp,3g2,mj2"` or `"avi"`.
        video_codec (`str`), pixel_format (`str`, *optional*): of its first video stream.
        audio_codecs (`tuple[str, ...]`): of its sound streams.
    """

    container: str
    video_codec: str
    pixel_format: str | None
    audio_codecs: tuple[str, ...] = ()

    @property
    def browser_type(self) -> str | None:
        """The MIME type under which browsers play the file as it is, or None when it needs a copy."""
        if self.container not in _BROWSER_CONTAINERS:
            return None
        mime, video_codecs, audio_codecs = _BROWSER_CONTAINERS[self.container]
        playable = (
            self.video_codec in video_codecs
            and self.pixel_format in _BROWSER_PIXEL_FORMATS
            and all(codec in audio_codecs for codec in self.audio_codecs)
        )
        return mime if playable else None


def probe_media(path: str | os.PathLike) -> MediaProbe:
    """Open a file as a video and read its container and codecs.

    Raises:
        `VideoDecodeError`: it is not a video (by the indexer's rules: no video stream, a still image, text art, or
            no packet of video).
    """
    description = os.fspath(path)
    with _open_video_stream(path, description) as (container, stream):
        reason = not_a_video_reason(container, stream)
        if reason is not None:
            raise VideoDecodeError(description, reason)
        try:
            has_data = any(packet.size for packet in _first_packets(container, stream))
        except av.error.FFmpegError as error:
            raise VideoDecodeError(description, f"its video stream cannot be read ({error})") from None
        if not has_data:
            raise VideoDecodeError(description, "its video stream holds no frame")
        return MediaProbe(
            container=container.format.name,
            video_codec=stream.codec_context.name,
            pixel_format=stream.codec_context.pix_fmt,
            audio_codecs=tuple(audio.codec_context.name for audio in container.streams.audio),
        )


def _first_packets(container, stream, count: int = 16):
    for number, packet in enumerate(container.demux(stream)):
        if number == count:
            return
        yield packet


def file_identity(path: Path) -> tuple:
    """What changes when a file is replaced or edited: its path, device, inode, size and modification time."""
    stat = path.stat()
    return (str(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True)
class IndexedVideo:
    """A video file the page may serve: where it is, what it is (`MediaProbe`) and its identity."""

    path: Path
    probe: MediaProbe
    identity: tuple


# -------------------------------------------------------------------------------------------- decoding a window


def _clock_origin(stream) -> float:
    """Seconds of the stream's first frame: the index counts times from it (`read_video_timeline`)."""
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _frame_rate(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 25.0


def _timed_frames(path: Path, start_s: float, deadline: float, with_audio: bool) -> Iterator[tuple[str, float, object]]:
    """`(kind, seconds, frame)` from a little before `start_s` on (kind `"video"` or `"audio"`; seconds counted from
    the first video frame, as the index counts them), the sound of the first sound stream with the video when asked.

    Seeks to the keyframe before `start_s`; when the container cannot seek, or lands after `start_s`, decodes from
    the beginning instead.
    """
    description = os.fspath(path)
    for seek in (start_s > 0, False):
        with _open_video_stream(path, description) as (container, video):
            audio = container.streams.audio[0] if with_audio and container.streams.audio else None
            origin, fps = _clock_origin(video), _frame_rate(video)
            if seek:
                try:
                    container.seek(int((origin + start_s) / video.time_base), stream=video, backward=True)
                except (av.error.FFmpegError, ZeroDivisionError, TypeError):
                    continue
            video_count, audio_samples = 0, 0
            held_audio: list[tuple[str, float, object]] = []  # until the first video frame shows where the seek landed
            checked = False
            # (`demux` takes a list of streams as well as one.)
            for frame in _decode_packets(container, [video] if audio is None else [video, audio], description, deadline):
                if isinstance(frame, av.AudioFrame):
                    seconds = float(frame.time) - origin if frame.time is not None else audio_samples / frame.sample_rate
                    audio_samples += frame.samples
                    if checked:
                        yield "audio", seconds, frame
                    else:
                        held_audio.append(("audio", seconds, frame))
                    continue
                seconds = float(frame.time) - origin if frame.time is not None else video_count / fps
                video_count += 1
                if not checked:
                    if seek and (frame.time is None or seconds > start_s + 1.0 / fps):
                        break  # landed past the window (or has no times to tell): decode from the beginning
                    checked = True
                    yield from held_audio
                yield "video", seconds, frame
            else:
                return  # decoded to the end (or the caller stopped reading); after a `break`, try without seeking


def frame_at(path: Path, start_s: float, deadline: float):
    """The video frame shown at `start_s` seconds (the last one starting at or before it; the first frame of the
    video when none does). Raises `VideoDecodeError` when no frame decodes."""
    shown = None
    for _, seconds, frame in _timed_frames(path, start_s, deadline, with_audio=False):
        if seconds <= start_s + _SAME_TIME_S or shown is None:
            shown = frame
        if seconds > start_s + _SAME_TIME_S:
            break
    if shown is None:
        raise VideoDecodeError(os.fspath(path), f"no frame at {start_s:.3f} s decodes")
    return shown


def _even_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _upright_rgb(frame, width: int, height: int) -> np.ndarray:
    """The frame scaled to `width` x `height` as displayed, packed RGB: scaled first (a small picture to turn), then
    turned as its display matrix says (as `_to_rgb` does)."""
    quarter_turns = round(frame.rotation / 90) % 4
    if quarter_turns % 2:
        width, height = height, width
    rgb = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb


def _display_size(frame) -> tuple[int, int]:
    return (frame.height, frame.width) if round(frame.rotation / 90) % 2 else (frame.width, frame.height)


def write_poster(source: Path, start_s: float, target: Path, deadline: float, width: int = POSTER_WIDTH) -> None:
    """Write a JPEG of the frame shown at `start_s`, at most `width` pixels wide (never enlarged)."""
    from PIL import Image

    frame = frame_at(source, start_s, deadline)
    frame_width, frame_height = _display_size(frame)
    width = min(width, frame_width)
    height = max(1, round(frame_height * width / frame_width))
    Image.fromarray(_upright_rgb(frame, width, height)).save(target, format="JPEG", quality=POSTER_QUALITY)


def transcode_window(source: Path, start_s: float, end_s: float, target: Path, deadline: float,
                     max_side: int = CLIP_MAX_SIDE, max_bytes: int = MAX_COPY_BYTES) -> None:
    """Write the window `[start_s, end_s)` of a video as an MP4 that browsers play: H.264 (yuv420p, at most
    `max_side` pixels on its longer side and `CLIP_FRAME_RATE_LIMIT` frames per second), AAC sound when the video has
    sound, its index at the front. Times in the copy start at 0 at `start_s`.

    Raises:
        `VideoDecodeError`: no frame of the window decodes, the time limit passed or the copy grew past `max_bytes`.
    """
    description = os.fspath(source)
    output = av.open(os.fspath(target), mode="w", format="mp4", options={"movflags": "+faststart"})
    video_out = audio_out = resampler = None
    last_video_ms = -1
    audio_samples = 0
    written = 0

    def mux(packets) -> None:
        nonlocal written
        for packet in packets:
            written += packet.size
            output.mux(packet)
        if written > max_bytes:
            raise VideoDecodeError(description, f"the browser copy grew past {max_bytes} bytes")

    def open_streams(frame, with_audio: bool) -> None:
        nonlocal video_out, audio_out, resampler
        width, height = _even_size(*_display_size(frame), max_side)
        # The source's frame rate (it sets how long the last frame lasts), the times themselves to the millisecond.
        video_out = output.add_stream("libx264", rate=frame_rate, options=CLIP_ENCODER_OPTIONS)
        video_out.width, video_out.height, video_out.pix_fmt = width, height, "yuv420p"
        video_out.codec_context.time_base = Fraction(1, 1000)  # variable frame rate: times to the millisecond
        if with_audio:
            audio_out = output.add_stream("aac", rate=CLIP_AUDIO_RATE)
            audio_out.layout = "stereo"
            resampler = av.AudioResampler(format="fltp", layout="stereo", rate=CLIP_AUDIO_RATE,
                                          frame_size=audio_out.codec_context.frame_size or 1024)

    def encode_video(frame, seconds: float) -> None:
        nonlocal last_video_ms
        millis = max(0, round((seconds - start_s) * 1000))
        if last_video_ms >= 0 and millis - last_video_ms < 1000 // CLIP_FRAME_RATE_LIMIT:
            return  # the same time as the frame before (after rounding), or past the frame-rate limit
        picture = av.VideoFrame.from_ndarray(_upright_rgb(frame, video_out.width, video_out.height), format="rgb24")
        picture = picture.reformat(format="yuv420p")
        picture.pts, picture.time_base = millis, Fraction(1, 1000)
        last_video_ms = millis
        mux(video_out.encode(picture))

    def encode_audio(chunks) -> None:
        nonlocal audio_samples
        for chunk in chunks:
            chunk.pts, chunk.time_base = audio_samples, Fraction(1, CLIP_AUDIO_RATE)
            audio_samples += chunk.samples
            mux(audio_out.encode(chunk))

    try:
        with _open_video_stream(source, description) as (container, video_source):
            audio_source = container.streams.audio[0] if container.streams.audio else None
            frame_rate = min(Fraction(_frame_rate(video_source)).limit_denominator(1001), CLIP_FRAME_RATE_LIMIT)
        held = None  # the last frame starting at or before the window: shown at its start
        early_sound = []  # sound of the window decoded before its first picture (which sizes the copy)
        pictures_done = False
        for kind, seconds, frame in _timed_frames(source, start_s, deadline, with_audio=audio_source is not None):
            if kind == "audio":
                if seconds >= end_s:
                    if pictures_done:
                        break
                    continue
                if seconds + frame.samples / frame.sample_rate <= start_s:
                    continue
                if audio_out is None:
                    early_sound.append((seconds, frame))
                    continue
                early_sound.append((seconds, frame))
                for sound_seconds, sound in early_sound:
                    if audio_samples == 0:  # the copy's sound starts where its first frame does
                        audio_samples = max(0, round((sound_seconds - start_s) * CLIP_AUDIO_RATE))
                    sound.pts = None
                    encode_audio(resampler.resample(sound))
                early_sound.clear()
                continue
            if seconds >= end_s:
                # Containers interleave sound loosely (MPEG program streams by up to seconds): read on for the
                # window's sound, a bounded time.
                pictures_done = True
                if audio_out is None or seconds >= end_s + _SOUND_LAG_S:
                    break
                continue
            if video_out is None:
                open_streams(frame, with_audio=audio_source is not None)
            if seconds <= start_s + _SAME_TIME_S:
                held = frame
                continue
            if held is not None:
                encode_video(held, start_s)
                held = None
            encode_video(frame, max(seconds, start_s))
        if held is not None:  # no frame starts inside the window (a still stretch): the one before it is shown
            encode_video(held, start_s)
        if video_out is None:
            raise VideoDecodeError(description, f"no frame of the window {start_s:.3f}-{end_s:.3f} s decodes")
        mux(video_out.encode())
        if audio_out is not None:
            encode_audio(resampler.resample(None))
            mux(audio_out.encode())
    finally:
        output.close()


# --------------------------------------------------------------------------------------------------- the cache


class MediaCache:
    """Derived files in one folder: made once per key, written atomically, the least recently used deleted past
    `max_bytes`.

    Args:
        folder: where the files are kept (created when the first one is written).
        max_bytes (`int`): the folder's size is brought back under this after each write.
        max_concurrent (`int`): files made at once, at most (each is a decode and maybe an encode).
    """

    def __init__(self, folder: str | os.PathLike, max_bytes: int = DEFAULT_CACHE_BYTES,
                 max_concurrent: int = DEFAULT_CONCURRENT):
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self._making = threading.BoundedSemaphore(max_concurrent)
        self._guard = threading.Lock()
        self._locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()

    def _lock_for(self, name: str) -> threading.Lock:
        with self._guard:
            lock = self._locks.get(name)
            if lock is None:
                lock = self._locks[name] = threading.Lock()
            return lock

    def get(self, key: str, suffix: str, make: Callable[[Path], None]) -> Path:
        """The file for `key`, made by `make(temporary_path)` when it is not there (one thread makes it; the others
        wait and take it)."""
        name = key + suffix
        path = self.folder / name
        if self._touch(path):
            return path
        lock = self._lock_for(name)  # held in a local: the dictionary keeps it only while someone does
        with lock:
            if self._touch(path):
                return path
            with self._making:
                write_atomically(path, make)
            self._evict(keep=path)
        return path

    @staticmethod
    def _touch(path: Path) -> bool:
        """Mark a kept file as used now (eviction removes the least recently used); False when it is not there."""
        try:
            os.utime(path)
        except FileNotFoundError:
            return False
        except OSError:  # a read-only folder still serves what it holds
            return path.is_file()
        return True

    def _evict(self, keep: Path) -> None:
        with self._guard:
            entries = []
            with os.scandir(self.folder) as scan:
                for entry in scan:
                    if entry.name.startswith(TEMP_PREFIX) or not entry.is_file(follow_symlinks=False):
                        continue
                    stat = entry.stat(follow_symlinks=False)
                    entries.append((stat.st_mtime_ns, stat.st_size, entry.path))
            total = sum(size for _, size, _ in entries)
            for _, size, path in sorted(entries):
                if total <= self.max_bytes:
                    break
                if path == os.fspath(keep):
                    continue
                with contextlib.suppress(OSError):
                    os.unlink(path)
                    total -= size

    def size(self) -> int:
        """Bytes the kept files take."""
        if not self.folder.is_dir():
            return 0
        return sum(path.stat().st_size for path in self.folder.iterdir() if path.is_file())


def cache_key(kind: str, identity: tuple, *times: float) -> str:
    """The name of a derived file: a hash of what it is made from, so that a changed video gets new files."""
    text = repr((_CACHE_VERSION, kind, identity, *(round(t, _TIME_DECIMALS) for t in times)))
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def parse_seconds(text: str) -> float | None:
    """A time from a URL (`12.5`), or None when it is not a finite, non-negative number of seconds."""
    try:
        seconds = float(text)
    except ValueError:
        return None
    return round(seconds, _TIME_DECIMALS) if math.isfinite(seconds) and seconds >= 0 else None


def _seconds_text(seconds: float) -> str:
    return f"{seconds:.{_TIME_DECIMALS}f}"


# ------------------------------------------------------------------------------------------- what the page plays


@dataclass(frozen=True)
class HitMedia:
    """What a hit card plays and shows.

    Attributes:
        src (`str`): the URL of the `<video>`: the file itself with a media fragment (`#t=start,end`), or the copy of
            the window.
        poster (`str`): the URL of its poster.
        copy (`bool`): `src` is a browser copy of the window (times in it start at 0).
        format (`str`): the file's video codec and container, e.g. `"mpeg4 in avi"`.
        fallback (`str`, *optional*): the copy to play instead if the browser fails to play the file itself.
    """

    src: str
    poster: str
    copy: bool
    format: str
    fallback: str | None = None


class IndexedMedia:
    """The videos of an index as the page serves them: checked (`video`), with posters and browser copies.

    Args:
        video_dir (`Callable[[], Path]`): the video folder (asked at each request: a new generation may move it).
        indexed (`Callable[[], Container[str]]`): the stored paths (asked at each request: they follow the index to
            each new generation).
        cache_dir: where posters and copies are kept (`INDEX/cache/media`); a temporary folder, removed at exit,
            when it cannot be written.
        max_window_s (`float`): the longest window a copy is made of (the index's segment length).
        max_cache_bytes, max_concurrent: see `MediaCache`; time_limit_s: for making one file.
    """

    def __init__(self, video_dir: Callable[[], Path], indexed: Callable[[], Container[str]], cache_dir: str | os.PathLike,
                 max_window_s: float, max_cache_bytes: int = DEFAULT_CACHE_BYTES,
                 max_concurrent: int = DEFAULT_CONCURRENT, time_limit_s: float = DEFAULT_TIME_LIMIT_S):
        self._video_dir = video_dir
        self._indexed = indexed
        self.max_window_s = max_window_s
        self.time_limit_s = time_limit_s
        self.cache = MediaCache(_writable_folder(Path(cache_dir)), max_cache_bytes, max_concurrent)
        self._verdicts: OrderedDict[tuple, MediaProbe | None] = OrderedDict()
        self._verdicts_lock = threading.Lock()

    @classmethod
    def of_index(cls, index, **kwargs) -> "IndexedMedia":
        """The media of a `VideoSearchIndex`, its cache in the index folder; the served paths are those of the
        generation the index has loaded (`VideoSearchIndex.video_paths`)."""
        return cls(lambda: index.video_dir, lambda: index.video_paths, index.index_dir / CACHE_FOLDER,
                   index.manifest.segment_seconds, **kwargs)

    def video(self, requested: str) -> IndexedVideo | None:
        """The indexed video at `requested` (a stored path), or None: not indexed, outside the folder, gone, or not
        a video (probed once per file identity)."""
        path = indexed_file(self._video_dir(), self._indexed(), requested)
        if path is None:
            return None
        try:
            identity = file_identity(path)
        except OSError:
            return None
        with self._verdicts_lock:
            known = identity in self._verdicts
            probe = self._verdicts.get(identity)
            if known:
                self._verdicts.move_to_end(identity)
        if not known:
            try:
                probe = probe_media(path)
            except VideoDecodeError as error:
                logger.warning("Not served, not a video: %s", error)
                probe = None
            with self._verdicts_lock:
                self._verdicts[identity] = probe
                while len(self._verdicts) > _VERDICTS_KEPT:
                    self._verdicts.popitem(last=False)
        return IndexedVideo(path, probe, identity) if probe is not None else None

    def poster(self, requested: str, start_s: float) -> Path | None:
        """A JPEG of the frame at `start_s` of an indexed video (made once, then kept), or None."""
        video = self.video(requested)
        if video is None:
            return None
        deadline = time.monotonic() + self.time_limit_s
        return self._derived(video, "poster", ".jpg", (start_s,),
                             lambda target: write_poster(video.path, start_s, target, deadline))

    def browser_copy(self, requested: str, start_s: float, end_s: float) -> Path | None:
        """An MP4 of the window `[start_s, end_s)` of an indexed video that browsers play (made once, then kept), or
        None (also for a window longer than a segment)."""
        if not 0 <= start_s < end_s or end_s - start_s > self.max_window_s + 10**-_TIME_DECIMALS:
            return None
        video = self.video(requested)
        if video is None:
            return None
        deadline = time.monotonic() + self.time_limit_s
        return self._derived(video, "clip", ".mp4", (start_s, end_s),
                             lambda target: transcode_window(video.path, start_s, end_s, target, deadline))

    def _derived(self, video: IndexedVideo, kind: str, suffix: str, times: tuple, make) -> Path | None:
        try:
            return self.cache.get(cache_key(kind, video.identity, *times), suffix, make)
        except (VideoDecodeError, av.error.FFmpegError, OSError, ValueError) as error:
            logger.warning("Cannot make the %s of %s at %s: %s", kind, video.path, times, error)
            return None

    def hit_media(self, path: str, start_s: float, end_s: float) -> HitMedia | None:
        """What the page plays for a hit, or None when the file is not served."""
        video = self.video(path)
        if video is None:
            return None
        start, end = _seconds_text(start_s), _seconds_text(end_s)
        quoted = quote(path)
        poster = f"{POSTER_ROUTE}/{start}/{quoted}"
        copy = f"{CLIP_ROUTE}/{start}-{end}/{quoted}"
        probe = video.probe
        container = probe.container.split(",")[0]
        described = probe.video_codec if probe.video_codec == container else f"{probe.video_codec} in {container}"
        if probe.browser_type is None:
            return HitMedia(src=copy, poster=poster, copy=True, format=described)
        return HitMedia(src=f"{MEDIA_ROUTE}/{quoted}#t={start},{end}", poster=poster, copy=False, format=described,
                        fallback=copy)


def _writable_folder(folder: Path) -> Path:
    """`folder`, created; or a private temporary folder when it cannot be (an index on a read-only disk)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=TEMP_PREFIX, dir=folder):
            pass
        return folder
    except OSError as error:
        fallback = Path(tempfile.mkdtemp(prefix="tempme-media-"))
        atexit.register(shutil.rmtree, fallback, ignore_errors=True)
        logger.warning("Cannot write posters and browser copies to %s (%s): using %s", folder, error, fallback)
        return fallback


__all__ = [
    "CLIP_ROUTE",
    "MEDIA_ROUTE",
    "POSTER_ROUTE",
    "HitMedia",
    "IndexedMedia",
    "IndexedVideo",
    "MediaCache",
    "MediaProbe",
    "cache_key",
    "file_identity",
    "frame_at",
    "indexed_file",
    "parse_seconds",
    "probe_media",
    "transcode_window",
    "write_poster",
]
