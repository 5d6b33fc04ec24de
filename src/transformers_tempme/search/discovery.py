"""Finding the videos of a folder: every file is listed, and each one is probed by opening its container.

Extensions do not decide what is a video: a video may be named `clip.bin` or have no suffix, and `notes.mp4` may be
text. A file counts as a video when FFmpeg (through PyAV) opens it, finds a video stream and demuxes at least one
frame of it. Files that are not videos are skipped (`NotAVideoError`), apart from the videos that fail:

- skipped, not a video: containers that FFmpeg reads as a one-picture "video" (PNG, JPEG and other still images)
  or as text art (`.bin`, `.ans` and the like, which its `tty`/`bin` demuxers accept almost anything as), whatever
  their name; and files that FFmpeg cannot open at all, or finds no video stream in (a text file, a PDF, a `.wav`),
  when their name does not say video;
- failed: a file named like a video (`VIDEO_SUFFIXES`: `.mp4`, `.mkv`, ...) that cannot be opened or holds no
  video stream (a download cut short before its header, an HTML error page saved as `clip.mp4`), and any file
  whose video stream does not decode. These are what a user has to look at. (The indexer also counts as failed a
  file it held as a video that is no longer one.)

The extension only tells a broken video from a file that was never one; it never keeps a video out.

Hidden files and folders (names starting with `.`) are not listed, nor are the folders that `skip_folder` names
(the indexer passes `storage.is_index_folder`: index folders inside the video folder, the one being written
included).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..video_io import DEFAULT_DECODE_TIMEOUT_S, VideoDecodeError, _open_video_stream
from .segments import VideoTimeline, read_video_timeline

# FFmpeg demuxers and decoders that turn a still image or a text file into a "video stream".
_STILL_IMAGE_DEMUXER_SUFFIX = "_pipe"  # png_pipe, jpeg_pipe, webp_pipe, ...
_NOT_VIDEO_DEMUXERS = frozenset({"image2", "tty", "bin", "xbin", "adf", "idf", "ansi"})
_NOT_VIDEO_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})

# Names that say "video": such a file that FFmpeg cannot open is a broken video (reported as failed), not a file
# that was never one (skipped).
VIDEO_SUFFIXES = frozenset({
    ".3g2", ".3gp", ".asf", ".avi", ".divx", ".dv", ".f4v", ".flv", ".gif", ".h264", ".hevc", ".m2t", ".m2ts", ".m2v",
    ".m4v", ".mj2", ".mjpeg", ".mk3d", ".mkv", ".mov", ".mp4", ".mpe", ".mpeg", ".mpg", ".mts", ".mxf", ".nut",
    ".ogv", ".qt", ".rm", ".rmvb", ".ts", ".vob", ".webm", ".wmv", ".y4m",
})


class NotAVideoError(VideoDecodeError):
    """The file is not a video (a still image, text, audio): skipped, not failed (see the module docstring)."""


@dataclass(frozen=True)
class VideoFile:
    """A file of the video folder as `os.stat` sees it.

    Attributes:
        path (`str`): path relative to the video folder, with `/` separators.
        size (`int`): bytes.
        mtime_ns (`int`): modification time, nanoseconds since the epoch.
        sha256 (`str`): SHA-256 of its content, when an update with `verify` has hashed it (else empty).
    """

    path: str
    size: int
    mtime_ns: int
    sha256: str = ""


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def list_files(
    video_dir: str | os.PathLike,
    exclude: Iterable[str | os.PathLike] = (),
    skip_folder: Callable[[Path], bool] | None = None,
) -> list[VideoFile]:
    """Every regular, non-hidden file under `video_dir` (recursively), sorted by path.

    Args:
        video_dir: the folder to walk. Symbolic links to files are followed; links to folders are not (no cycles).
        exclude: folders not to enter (e.g. the index folder being written).
        skip_folder: a test of a subfolder's path: folders for which it is true are not entered (e.g.
            `storage.is_index_folder`, so that the files of an index inside the video folder are not probed).
    """
    root = Path(video_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"The video folder {root} does not exist or is not a folder.")
    excluded = {Path(folder).resolve() for folder in exclude}

    def enters(path: Path) -> bool:
        return not _is_hidden(path.name) and path.resolve() not in excluded and not (skip_folder and skip_folder(path))

    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if enters(Path(folder) / name))
        for name in names:
            if _is_hidden(name):
                continue
            full = Path(folder) / name
            try:
                stat = full.stat()
            except OSError:  # a broken link or a file removed meanwhile: nothing to index
                continue
            if not os.path.isfile(full):
                continue
            files.append(VideoFile(full.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    files.sort(key=lambda f: f.path)
    return files


def has_video_suffix(path: str | os.PathLike) -> bool:
    """Whether the file's name ends like a video's (`VIDEO_SUFFIXES`, any case)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def probe_video(path: str | os.PathLike, *, timeout_s: float = DEFAULT_DECODE_TIMEOUT_S) -> VideoTimeline:
    """Open a file as a video and read its frame times.

    Raises:
        `NotAVideoError`: the file is not a video (see the module docstring): skipped, not failed.
        `VideoDecodeError`: a video that cannot be read (naming the reason).
    """
    description = os.fspath(path)
    try:
        with _open_video_stream(path, description) as (container, stream):
            reason = not_a_video_reason(container, stream)
    except VideoDecodeError as error:
        # Nothing FFmpeg could open as a video: a broken video when the name says video, else no video at all.
        if has_video_suffix(path) or not os.path.isfile(path):
            raise
        raise NotAVideoError(description, error.reason) from error
    if reason is not None:
        raise NotAVideoError(description, reason)
    return read_video_timeline(path, timeout_s=timeout_s)


def not_a_video_reason(container, stream) -> str | None:
    """Why a container FFmpeg opened, with `stream` its first video stream, is not a video (a still image, text art
    read as frames), or None. The indexer skips such files; the search page refuses to serve them."""
    demuxer = container.format.name.split(",")[0]
    codec = stream.codec_context.name
    if demuxer.endswith(_STILL_IMAGE_DEMUXER_SUFFIX) or demuxer == "image2":
        return f"a still image ({demuxer})"
    if demuxer in _NOT_VIDEO_DEMUXERS or codec in _NOT_VIDEO_CODECS:
        return f"text art to FFmpeg ({demuxer}/{codec})"
    return None


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content (what `--verify` compares, and what the index records of its own files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = [
    "NotAVideoError",
    "VIDEO_SUFFIXES",
    "VideoFile",
    "file_sha256",
    "has_video_suffix",
    "list_files",
    "not_a_video_reason",
    "probe_video",
]
