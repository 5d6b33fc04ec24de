"""Finding the videos of a folder: every file is listed, and each one is probed by opening its container.

Extensions are not trusted: a video may be named `clip.bin` or have no suffix, and `notes.mp4` may be text. A file
counts as a video when FFmpeg (through PyAV) opens it, finds a video stream and demuxes at least one frame of it.
Containers that FFmpeg reads as a one-picture "video" (PNG, JPEG and other still images) or as text art (`.bin`,
`.ans` and the like, which its `tty`/`bin` demuxers accept almost anything as) are not videos.

Hidden files and folders (names starting with `.`) are not listed, nor is the index folder when it lies inside the
video folder.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..video_io import DEFAULT_DECODE_TIMEOUT_S, VideoDecodeError, _open_video_stream
from .segments import VideoTimeline, read_video_timeline

# FFmpeg demuxers and decoders that turn a still image or a text file into a "video stream".
_STILL_IMAGE_DEMUXER_SUFFIX = "_pipe"  # png_pipe, jpeg_pipe, webp_pipe, ...
_NOT_VIDEO_DEMUXERS = frozenset({"image2", "tty", "bin", "xbin", "adf", "idf", "ansi"})
_NOT_VIDEO_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})


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


def list_files(video_dir: str | os.PathLike, exclude: Iterable[str | os.PathLike] = ()) -> list[VideoFile]:
    """Every regular, non-hidden file under `video_dir` (recursively), sorted by path.

    Args:
        video_dir: the folder to walk. Symbolic links to files are followed; links to folders are not (no cycles).
        exclude: folders not to enter (e.g. the index folder).
    """
    root = Path(video_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"The video folder {root} does not exist or is not a folder.")
    excluded = {Path(folder).resolve() for folder in exclude}
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(
            name for name in subfolders if not _is_hidden(name) and (Path(folder) / name).resolve() not in excluded
        )
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


def probe_video(path: str | os.PathLike, *, timeout_s: float = DEFAULT_DECODE_TIMEOUT_S) -> VideoTimeline:
    """Open a file as a video and read its frame times; `VideoDecodeError` (naming the reason) if it is not one."""
    description = os.fspath(path)
    with _open_video_stream(path, description) as (container, stream):
        reason = not_a_video_reason(container, stream)
        if reason is not None:
            raise VideoDecodeError(description, reason)
    return read_video_timeline(path, timeout_s=timeout_s)


def not_a_video_reason(container, stream) -> str | None:
    """Why a container FFmpeg opened, with `stream` its first video stream, is not a video (a still image, text art
    read as frames), or None."""
    demuxer = container.format.name.split(",")[0]
    codec = stream.codec_context.name
    if demuxer.endswith(_STILL_IMAGE_DEMUXER_SUFFIX) or demuxer == "image2":
        return f"a still image ({demuxer}), not a video"
    if demuxer in _NOT_VIDEO_DEMUXERS or codec in _NOT_VIDEO_CODECS:
        return f"not a video (FFmpeg reads it as text art: {demuxer}/{codec})"
    return None


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content (what `--verify` compares, and what the index records of its own files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["VideoFile", "list_files", "not_a_video_reason", "probe_video", "file_sha256"]
