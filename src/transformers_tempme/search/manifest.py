"""`index.json`: what an index holds and how it was made; writing it is the moment an update takes effect.

An update writes its new files (segment shards, vector index, report) under names that carry the index's new
generation number, then replaces `index.json` in one atomic rename. Readers only open the files `index.json`
names, so an index is readable at every moment: before the rename they see the previous generation whole, after it
the new one whole.

    {
      "format_version": 1, "generation": 3, "package_version": "0.1.0", "updated": "2025-...",
      "video_dir": "/abs/path/videos",
      "model": {"name_or_path": ..., "revision": ..., "fingerprint": ..., "preset": ..., "schedule": {...}},
      "embedding_dim": 512, "num_frames": 12, "frame_sampling": "fps", "segment_seconds": 10.0,
      "segment_overlap": 0.0, "vector_index": {"kind": "flat", "file": "vectors-00003.faiss", ...},
      "shards": ["segments/segments-00003-00000.parquet", ...], "report": "report-00003.json",
      "counts": {"videos": 120, "segments": 1450, "failed": 2}
    }
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .atomic import write_json_atomically

MANIFEST_NAME = "index.json"
FORMAT_VERSION = 1


class IndexNotFoundError(FileNotFoundError):
    """The folder holds no index (no `index.json`)."""


class IndexSettingsError(ValueError):
    """An update asks for segment settings other than the index's (they need `overwrite`)."""


@dataclass
class IndexManifest:
    """The content of `index.json` (see the module docstring for an example)."""

    video_dir: str
    model: dict
    embedding_dim: int
    num_frames: int
    frame_sampling: str
    segment_seconds: float
    segment_overlap: float
    vector_index: dict
    shards: list[str] = field(default_factory=list)
    report: str | None = None
    counts: dict = field(default_factory=lambda: {"videos": 0, "segments": 0, "failed": 0})
    generation: int = 0
    package_version: str = ""
    updated: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def segment_settings(self) -> dict:
        return {
            "num_frames": self.num_frames,
            "frame_sampling": self.frame_sampling,
            "segment_seconds": self.segment_seconds,
            "segment_overlap": self.segment_overlap,
        }

    def to_dict(self) -> dict:
        return asdict(self)


def read_manifest(index_dir: str | os.PathLike) -> IndexManifest:
    path = Path(index_dir) / MANIFEST_NAME
    if not path.is_file():
        raise IndexNotFoundError(
            f"{index_dir} is not a video index (it has no {MANIFEST_NAME}). Build one with "
            f"`tempme index VIDEO_DIR --index {index_dir} --model MODEL`."
        )
    data = json.loads(path.read_text())
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} has index format version {version}; this version of transformers-tempme reads version "
            f"{FORMAT_VERSION}. Rebuild the index with `tempme index ... --overwrite`."
        )
    return IndexManifest(**data)


def manifest_exists(index_dir: str | os.PathLike) -> bool:
    return (Path(index_dir) / MANIFEST_NAME).is_file()


def write_manifest(index_dir: str | os.PathLike, manifest: IndexManifest) -> None:
    write_json_atomically(Path(index_dir) / MANIFEST_NAME, manifest.to_dict())


__all__ = ["MANIFEST_NAME", "FORMAT_VERSION", "IndexManifest", "IndexNotFoundError", "IndexSettingsError",
           "read_manifest", "manifest_exists", "write_manifest"]
