"""Work shards: the encoded videos of an unfinished update, written as it goes so that a killed run can resume.

Every few hundred segments (or every minute) a process writes the videos it has finished since its last shard to
`INDEX/work/` as one Parquet file (atomically: a kill leaves the shard whole or absent). A shard holds whole videos
only, and its metadata record says which model, settings and target generation made it, which videos it holds and
which files failed. When the update commits, the main process merges the work shards into the index and deletes
them. When a run is killed, the next run with the same model and settings takes every video a work shard holds
(whose size and time still match the file) as done and encodes only the rest.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from .table import read_shard_record, segment_table, write_shard

WORK_DIR = "work"


@dataclass
class WorkShardWriter:
    """Buffers finished videos and writes them as work shards of about `shard_rows` segments.

    Args:
        work_dir: the index's `work/` folder.
        rank (`int`): the writing process, part of the file names.
        record (`dict`): `fingerprint`, `settings` and `target_generation`, stored in every shard.
        shard_rows (`int`): segments per shard.
        commit_seconds (`float`): write what is buffered at least this often.
    """

    work_dir: Path
    rank: int
    record: dict
    shard_rows: int = 1024
    commit_seconds: float = 60.0
    shards_written: int = 0
    _columns: dict = field(default_factory=lambda: {name: [] for name in _COLUMNS})
    _embeddings: list = field(default_factory=list)
    _videos: list = field(default_factory=list)
    _failed: list = field(default_factory=list)
    _last_write: float = field(default_factory=time.monotonic)

    def add_video(self, video: dict, segments: list[tuple], embeddings: np.ndarray) -> None:
        """A finished video: its record (from `SegmentBatches`), its segments `(path, number, start, end)` and their
        `(segments, dim)` embeddings."""
        for (path, number, start, end) in segments:
            for name, value in zip(_COLUMNS, (path, number, start, end, video["duration"], video["size"],
                                             video["mtime_ns"], video["sha256"])):
                self._columns[name].append(value)
        self._embeddings.append(np.asarray(embeddings, dtype=np.float32))
        self._videos.append({key: video[key] for key in ("path", "size", "mtime_ns", "warnings")})

    def add_failure(self, video: dict) -> None:
        self._failed.append({key: video[key] for key in ("path", "size", "mtime_ns", "error")})

    @property
    def buffered_rows(self) -> int:
        return len(self._columns["path"])

    def maybe_write(self) -> None:
        """Write a shard when enough segments are buffered, or when the last one is old enough."""
        due = time.monotonic() - self._last_write >= self.commit_seconds
        if self.buffered_rows >= self.shard_rows or (due and (self._videos or self._failed)):
            self.write()

    def write(self) -> Path | None:
        """Write everything buffered as one shard (nothing when nothing is buffered)."""
        if not self._videos and not self._failed:
            return None
        dim = self.record["embedding_dim"]
        embeddings = np.concatenate(self._embeddings) if self._embeddings else np.zeros((0, dim), np.float32)
        table = segment_table(self._columns, embeddings)
        name = (
            f"g{self.record['target_generation']:05d}-p{self.rank:03d}-{self.shards_written:05d}-"
            f"{uuid.uuid4().hex[:8]}.parquet"
        )
        path = write_shard(self.work_dir / name, table, {**self.record, "videos": self._videos, "failed": self._failed})
        self.shards_written += 1
        self._columns = {name: [] for name in _COLUMNS}
        self._embeddings, self._videos, self._failed = [], [], []
        self._last_write = time.monotonic()
        return path


_COLUMNS = ("path", "segment", "start", "end", "duration", "size", "mtime_ns", "sha256")


@dataclass(frozen=True)
class WorkShard:
    """A work shard on disk and its metadata record."""

    path: Path
    record: dict

    @property
    def videos(self) -> list[dict]:
        return self.record.get("videos", [])

    @property
    def failed(self) -> list[dict]:
        return self.record.get("failed", [])


def find_work_shards(work_dir: str | os.PathLike, fingerprint: str, settings: dict, target_generation: int) -> list[WorkShard]:
    """Work shards of an earlier attempt at the same update (same model, settings and target generation)."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return []
    shards = []
    for path in sorted(work_dir.glob("g*.parquet")):
        try:
            record = read_shard_record(path)
        except (OSError, pa.ArrowInvalid):  # not a finished shard: temporary files are never renamed to g*.parquet
            continue
        if (
            record
            and record.get("fingerprint") == fingerprint
            and record.get("settings") == settings
            and record.get("target_generation") == target_generation
        ):
            shards.append(WorkShard(path, record))
    return shards


__all__ = ["WORK_DIR", "WorkShardWriter", "WorkShard", "find_work_shards"]
