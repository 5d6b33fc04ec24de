"""Incremental updates: which files of the video folder an update encodes, keeps, refreshes or drops.

A file is unchanged when its size and modification time are those recorded in the index; with `verify=True` its
content hash is compared instead, so that a file touched but not changed (copied back from a backup, say) is kept,
and its recorded size and time are refreshed. Files are hashed only with `verify=True`; a video indexed without it
has no recorded hash, so a verifying update compares its size and time and records its hash. Files that failed to
decode are not recorded in the table, so every update tries them again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa

from .discovery import VideoFile, file_sha256


@dataclass(frozen=True)
class IndexedVideo:
    """What the index recorded about a video when it encoded it."""

    path: str
    size: int
    mtime_ns: int
    sha256: str


@dataclass
class UpdatePlan:
    """The work of one update.

    Attributes:
        to_encode (`list[VideoFile]`): new and changed files, to decode and encode.
        new (`list[str]`), changed (`list[str]`): paths of the files of `to_encode`, by kind.
        removed (`list[str]`): indexed videos no longer in the folder; their rows go.
        unchanged (`list[str]`): indexed videos kept as they are.
        refreshed (`dict[str, VideoFile]`): unchanged videos (by content) whose size, time or recorded hash changed:
            their rows are kept with the new values.
    """

    to_encode: list[VideoFile] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    refreshed: dict[str, VideoFile] = field(default_factory=dict)

    @property
    def dropped(self) -> set[str]:
        """Indexed paths whose current rows go: removed or changed files."""
        return set(self.removed) | set(self.changed)


def indexed_videos(table: pa.Table) -> dict[str, IndexedVideo]:
    """The recorded file state of every video of a segment table (its path, size, mtime_ns and sha256 columns)."""
    columns = {name: table.column(name).to_pylist() for name in ("path", "size", "mtime_ns", "sha256")}
    videos: dict[str, IndexedVideo] = {}
    for path, size, mtime_ns, sha256 in zip(*columns.values()):
        if path not in videos:
            videos[path] = IndexedVideo(path, size, mtime_ns, sha256)
    return videos


def plan_update(
    files: Sequence[VideoFile],
    indexed: dict[str, IndexedVideo],
    video_dir: str | os.PathLike,
    verify: bool = False,
) -> UpdatePlan:
    """Compare the folder (`files`, from `list_files`) with what the index recorded."""
    plan = UpdatePlan()
    present = set()
    for file in files:
        present.add(file.path)
        recorded = indexed.get(file.path)
        if recorded is None:
            plan.new.append(file.path)
            plan.to_encode.append(file)
            continue
        same_stat = (recorded.size, recorded.mtime_ns) == (file.size, file.mtime_ns)
        same_content = same_stat
        if verify:
            file = replace(file, sha256=file_sha256(Path(video_dir) / file.path))
            if recorded.sha256:  # indexed without `verify`: no hash to compare, the size and time decide
                same_content = file.sha256 == recorded.sha256
            if same_content and (not same_stat or file.sha256 != recorded.sha256):
                plan.refreshed[file.path] = file
        if same_content:
            plan.unchanged.append(file.path)
        else:
            plan.changed.append(file.path)
            plan.to_encode.append(file)
    plan.removed = sorted(path for path in indexed if path not in present)
    return plan


__all__ = ["IndexedVideo", "UpdatePlan", "indexed_videos", "plan_update"]
