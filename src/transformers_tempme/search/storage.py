"""The video index on disk: its format, and every function that writes, reads, checks or repairs it.

    videos.index/
      index.json                                   the manifest of the current generation: writing it commits
      index-00003.json                             a copy of the manifest of each generation still kept
      segments/segments-00003-new-00000.parquet    rows of the videos that generation 3 encoded
      segments/segments-00003-kept-00001.parquet   rows of an earlier shard, rewritten by generation 3 without the
                                                   rows of removed or changed videos (a shard with nothing to drop
                                                   keeps its name and is not rewritten)
      vectors-00003/                               the vector index (`search/ann.py`): ann.json, index.faiss,
                                                   removed.npy, and for ivfpq float16 vectors-00000.npy, ...
                                                   with their row checksums checksums-00000.npy, ...; its
                                                   live slots in ascending order are the rows of the shards in
                                                   manifest order (slot - removed slots below it = row)
      report-00003.json                            what the update that made generation 3 did (`IndexingReport`)
      work/g00004-p000-00000-1a2b3c4d.parquet      videos encoded by an update that has not committed yet
      .lock                                        held by the update running now

**Generations.** An update (or a repair) writes its files under the new generation's names, then a copy of its
manifest (`index-NNNNN.json`), then replaces `index.json` in one atomic rename: that rename is the commit. Readers
open only what `index.json` names, so they always see one generation whole; an update that fails or is killed
leaves the previous generation as it was. The files of the `GENERATIONS_KEPT - 1` generations before the current
one stay on disk, so that a reader that read `index.json` just before a commit can still open its files; a reader
that loses the race anyway (its files gone) reads `index.json` again and opens the new generation.

**Every file is written atomically and checked.** A file is written under a temporary name (`.tmp-*`, which
readers never open and the next run deletes) in its final folder, flushed to disk, read back (a Parquet file's
footer and row count; a faiss index loaded back with as many vectors as rows; JSON parsed), hashed, and only then
renamed over its final name; the folder is synced so that the rename survives a power cut. A write cut short (a
full disk; faiss reports a failed close only on stderr) fails the read-back, and nothing is committed.

**Every file is checked when read.** The manifest records the size and SHA-256 of every file it names (`files`).
Opening an index checks every size, the SHA-256 of each file of the vector index up to `HASH_ON_OPEN_MAX_BYTES`
(its description, removed slots, the faiss index of all but large flat/HNSW libraries) and the Parquet page
checksums of the columns it reads. Larger files (IVF-PQ's 1 GiB float16 files; a flat or HNSW faiss file of
millions of segments) are checked by size only there, so that opening a 10M-segment index does not read 10 GB; what
a search reads of them is checked instead: every float16 vector re-ranked is compared with the checksum written
beside it (`ann.row_checksums`, 8 bytes per vector: any flipped bit; `DamagedVectorsError`), and every score must
be a finite cosine (`VideoSearchIndex._check_scores`, all a large flat or HNSW faiss file gets), so that damage
is an error, never an answer. `check_index` (`tempme index --check`) checks every byte; `repair_index` (`tempme index --repair`) rebuilds
what is derived (the vector file from the Parquet rows, the counts, `index.json` from its newest intact copy)
without encoding anything. Damage is reported as `IndexDamagedError`, naming the file and the fix.

**The vector index is updated, not rebuilt.** A commit loads the current vector index, removes the slots of the
rows it drops, adds the new rows (IVF lists, HNSW graph or flat index extended: no training), compacts it once
`needs_compaction`, and saves it as the new generation's folder, written in a `.tmp-*` folder, read back, then
renamed into place; float16 files of the previous generation are hard-linked there and keep their records (not
hashed again). It is built from all rows only for a new index, other settings, or a repair (`chosen_vector_settings`
sizes `auto` and kind-only requests then). Indexes of format 1 and 2 (one flat or HNSW `vectors-NNNNN.faiss`) open
through `AnnIndex.from_faiss_file` and are written as a folder by their next commit.

**Work shards.** Every few hundred segments (or every minute) each process of an update writes the videos it has
finished to `work/` as one Parquet file holding whole videos; its key-value metadata (`tempme`) records the model
fingerprint, settings and target generation, the videos it holds and the files that failed. A killed update that
is run again takes the videos of matching work shards (same model and settings, file size and time unchanged) as
done. A work shard that cannot be read whole is deleted when found: its videos are simply encoded again.

`index.json` (and each `index-NNNNN.json`):

    {
      "video_dir": "/abs/path/videos",
      "model": {"name_or_path": ..., "revision": ..., "fingerprint": ..., "preset": ..., "schedule": {...}},
      "embedding_dim": 512, "num_frames": 12, "frame_sampling": "fps", "segment_seconds": 10.0,
      "segment_overlap": 0.0,
      "vector_index": {"kind": "ivfpq", "nlist": 1024, "pq_m": 64, "nprobe": 20, "rerank": 200, ...,
                       "max_memory": 4294967296, "file": "vectors-00003"},
      "shards": ["segments/segments-00002-new-00000.parquet", "segments/segments-00003-new-00000.parquet"],
      "report": "report-00003.json",
      "counts": {"videos": 120, "segments": 1450, "failed": 2},
      "generation": 3, "package_version": "0.1.0", "updated": "2025-...", "format_version": 3,
      "files": {"vectors-00003/index.faiss": {"size": BYTES, "sha256": HEX}, ...}
    }

The segment table (each shard; plain Parquet with Hugging Face `datasets` features, `segment_features`):

    path      string      the video's path relative to the video folder, `/` separators
    segment   int32       the segment's number within its video, from 0 in time order
    start     float64     seconds from the start of the video
    end       float64     seconds
    duration  float64     seconds the whole video lasts
    size      int64       the video file's size in bytes when it was indexed
    mtime_ns  int64       its modification time (nanoseconds since the epoch) when it was indexed
    sha256    string      SHA-256 of its content when it was indexed with `verify` (else empty)
    embedding List(float32, length=dim)  the L2-normalised video embedding of the segment

The vector index is `search.ann.AnnIndex` (`flat`, `hnsw` or `ivfpq`; its module docstring describes each kind
and its files).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .ann import AnnIndex, VectorIndexSettings, checksum_path, choose_ann, settings_for
from .discovery import file_sha256

logger = logging.getLogger(__name__)

MANIFEST_NAME = "index.json"
FORMAT_VERSION = 3
# Version 1 recorded no checksums (its files are checked by structure only); versions 1 and 2 keep the vectors in one
# `.faiss` file (flat or HNSW), version 3 in a folder (`search/ann.py`).
READABLE_FORMAT_VERSIONS = (1, 2, 3)
SEGMENTS_DIR = "segments"
WORK_DIR = "work"
LOCK_NAME = ".lock"
TEMP_PREFIX = ".tmp-"
# The current generation and the one before it stay on disk (readers that opened the previous one finish).
GENERATIONS_KEPT = 2

METADATA_KEY = b"tempme"
METADATA_COLUMNS = ("path", "segment", "start", "end", "duration", "size", "mtime_ns", "sha256")
SEARCH_COLUMNS = ("path", "start", "end")
_GENERATION_IN_NAME = re.compile(r"^(?:index|vectors|report|segments)-(\d+)(?:[.-]|$)")


# ---------------------------------------------------------------------------------------------------------- errors


class SearchIndexError(ValueError):
    """A video index cannot do what was asked: its message says why and what to do. `tempme` prints it as one
    `error:` line and exits with code 2. Every index error below is one."""


class IndexNotFoundError(SearchIndexError, FileNotFoundError):
    """The folder holds no index (no `index.json`)."""


class IndexDamagedError(SearchIndexError):
    """A file of the index is missing, cut short or changed since it was written; the message names it and the fix.

    Attributes:
        path (`Path`): the damaged file.
        problem (`str`): what is wrong with it.
    """


class IndexVersionError(SearchIndexError):
    """`index.json` was written by another version of transformers-tempme, with a format this one cannot read."""


class IndexFileError(SearchIndexError):
    """The system refused to read or write a file of the index (disk full, permission denied, ...); names the file."""


class IndexSettingsError(SearchIndexError):
    """An update asks for settings other than the index's (they need `overwrite`), or ones the model cannot run."""


class IndexLockedError(SearchIndexError):
    """Another update holds the index's lock."""


class VideoFolderMismatchError(SearchIndexError):
    """An update names another video folder than the one the index was built from."""


class UnsafeRemovalError(SearchIndexError):
    """An update would remove every indexed video, or more than half of them (an unmounted drive, a typo)."""


def damaged(index_dir: str | os.PathLike, name: str, problem: str, fix: str | None = None) -> IndexDamagedError:
    """An `IndexDamagedError` for file `name` of the index, saying what is wrong and, by default, to repair it."""
    path = Path(index_dir) / name
    fix = fix or f"run `tempme index --repair --index {index_dir}` to rebuild it from the intact files (nothing is re-encoded)"
    error = IndexDamagedError(f"{path} is damaged: {problem}. To fix it, {fix}.")
    error.path, error.problem = path, problem
    return error


_DISK_FULL = ("the disk is full: free some space and run the same command again (nothing was committed: the index "
              "is as it was, and the videos encoded so far are kept)")
_PERMISSION_DENIED = "permission denied: check who owns the index folder and its permissions"
_OS_ERROR_HINTS = {
    errno.ENOSPC: _DISK_FULL,
    getattr(errno, "EDQUOT", errno.ENOSPC): _DISK_FULL,  # a quota used up (no EDQUOT on Windows)
    errno.EACCES: _PERMISSION_DENIED,
    errno.EPERM: _PERMISSION_DENIED,
    errno.EROFS: "the file system is mounted read-only",
}


def file_error(path: str | os.PathLike, action: str, error: OSError) -> IndexFileError:
    """An `IndexFileError` naming the file, what was being done and, for the usual causes, the fix."""
    hint = _OS_ERROR_HINTS.get(error.errno, error.strerror or str(error))
    return IndexFileError(f"Cannot {action} {path}: {hint}.")


@contextmanager
def _reporting_os_errors(path: str | os.PathLike, action: str):
    try:
        yield
    except SearchIndexError:
        raise
    except OSError as error:
        raise file_error(path, action, error) from error


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


# ------------------------------------------------------------------------------------- atomic writes, file records


def file_record(path: str | os.PathLike) -> dict:
    """`{"size": bytes, "sha256": hex}` of a file as it is on disk."""
    return {"size": os.path.getsize(path), "sha256": file_sha256(path)}


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # folders cannot be opened on some platforms: the rename is still atomic there
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_atomically(
    path: str | os.PathLike, write: Callable[[Path], None], check: Callable[[Path], None] | None = None
) -> dict:
    """Write a file so that a crash (kill -9 included) leaves the old file or the new one, never half of one.

    `write(temporary)` creates the file at the path it is given (any writer that takes a path: `pq.write_table`,
    `faiss.write_index`, ...); `check(temporary)` reads it back and raises when it is not what was meant to be
    written. The file is flushed to disk, checked and hashed, then moved to `path` in one step. On any error the
    temporary file is removed, `path` is left as it was, and an `OSError` becomes an `IndexFileError` naming `path`.

    Returns:
        The file's record, `{"size": ..., "sha256": ...}`, for the manifest.
    """
    path = Path(path)
    with _reporting_os_errors(path, "write"):
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=path.suffix, dir=path.parent)
        os.close(descriptor)
        temporary = Path(temporary)
        try:
            write(temporary)
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
            if check is not None:
                check(temporary)
            record = file_record(temporary)
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _fsync_folder(path.parent)
    return record


def write_json_atomically(path: str | os.PathLike, data: Any) -> dict:
    """Write `data` as indented JSON, atomically; returns the file's record."""
    text = json.dumps(data, indent=2) + "\n"

    def check(temporary: Path) -> None:
        if temporary.read_text() != text:
            raise IndexFileError(f"Cannot write {path}: the file read back differs from what was written.")

    return write_atomically(path, lambda temporary: temporary.write_text(text), check)


def remove_temporary_files(folder: str | os.PathLike) -> int:
    """Delete the `.tmp-*` files and folders a killed run left in `folder` (not recursive); returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for leftover in folder.glob(f"{TEMP_PREFIX}*"):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed += 1
    return removed


def _check_size(index_dir: Path, name: str, record: dict | None) -> Path:
    path = index_dir / name
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise damaged(index_dir, name, "the file is missing") from None
    except OSError as error:
        raise file_error(path, "read", error) from error
    if record is not None and size != record["size"]:
        raise damaged(index_dir, name, f"it holds {size:,} bytes where index.json recorded {record['size']:,} "
                                       "(cut short or replaced)")
    return path


def verify_file(index_dir: str | os.PathLike, name: str, record: dict | None) -> None:
    """Check a file of the index against its record in the manifest (its size, then its SHA-256).

    A file without a record (an index of format version 1) is only checked to exist."""
    index_dir = Path(index_dir)
    path = _check_size(index_dir, name, record)
    if record is None:
        return
    with _reporting_os_errors(path, "read"):
        digest = file_sha256(path)
    if digest != record["sha256"]:
        raise damaged(index_dir, name, "its content differs from the SHA-256 that index.json recorded when it was "
                                       "written")


def highest_generation(index_dir: Path) -> int:
    """The highest generation number in the names of the index's files (0 when there are none)."""
    names = [path.name for path in index_dir.glob("*")]
    if (index_dir / SEGMENTS_DIR).is_dir():
        names += [path.name for path in (index_dir / SEGMENTS_DIR).glob("*")]
    numbers = [int(match.group(1)) for name in names if (match := _GENERATION_IN_NAME.match(name))]
    return max(numbers, default=0)


# ----------------------------------------------------------------------------------------------------- manifest


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
    files: dict = field(default_factory=dict)

    @property
    def segment_settings(self) -> dict:
        return {
            "num_frames": self.num_frames,
            "frame_sampling": self.frame_sampling,
            "segment_seconds": self.segment_seconds,
            "segment_overlap": self.segment_overlap,
        }

    @property
    def vector_settings(self) -> "VectorIndexSettings":
        return VectorIndexSettings.from_dict(self.vector_index)

    @property
    def vector_file(self) -> str | None:
        return self.vector_index.get("file")

    @property
    def vector_files(self) -> list[str]:
        """The files of the vector index: the files of its folder that `files` records, or its one `.faiss` file
        (format 1 and 2)."""
        name = self.vector_file
        if name is None:
            return []
        if name.endswith(".faiss"):
            return [name]
        return sorted(key for key in self.files if key.startswith(f"{name}/"))

    @property
    def file_names(self) -> list[str]:
        """Every file this generation reads: its shards, vector files and report."""
        return [name for name in [*self.shards, *self.vector_files, self.report] if name is not None]

    def to_dict(self) -> dict:
        return asdict(self)


def _generation_manifest_name(generation: int) -> str:
    return f"index-{generation:05d}.json"


def _parse_manifest(index_dir: Path, name: str) -> IndexManifest:
    """The manifest stored in file `name` of the index (`index.json` or a generation's copy)."""
    path = index_dir / name
    try:
        text = path.read_text()
    except FileNotFoundError:
        if name == MANIFEST_NAME and any(index_dir.glob("index-*.json")):
            raise damaged(index_dir, name, "the file is missing", _manifest_fix(index_dir)) from None
        raise _not_an_index(index_dir) from None
    except UnicodeDecodeError as error:
        raise damaged(index_dir, name, "it is not text", _manifest_fix(index_dir)) from error
    except OSError as error:
        raise file_error(path, "read", error) from error
    if not text.strip():
        raise damaged(index_dir, name, "it is empty", _manifest_fix(index_dir))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise damaged(index_dir, name, f"it is not valid JSON (cut short?): {error}", _manifest_fix(index_dir)) from None
    if not isinstance(data, dict):
        raise damaged(index_dir, name, "it does not hold a JSON object", _manifest_fix(index_dir))
    from .. import __version__

    version = data.get("format_version")
    known = {item.name for item in fields(IndexManifest)}
    unknown = sorted(set(data) - known)
    if (isinstance(version, int) and version > FORMAT_VERSION) or unknown:
        what = f"index format {version}" + (f" with fields this version does not know ({', '.join(unknown)})"
                                            if unknown else "")
        raise IndexVersionError(
            f"{path} was written by transformers-tempme {data.get('package_version') or '(unknown version)'} "
            f"({what}); this is version {__version__}, which reads index formats up to {FORMAT_VERSION}. Upgrade "
            f"transformers-tempme, or rebuild the index with this version (`tempme index ... --overwrite`)."
        )
    if version not in READABLE_FORMAT_VERSIONS:
        raise damaged(index_dir, name, f"its format_version is {version!r}", _manifest_fix(index_dir))
    missing = [key for key in _REQUIRED_MANIFEST_FIELDS if key not in data]
    if missing:
        raise damaged(index_dir, name, f"it lacks {', '.join(missing)}", _manifest_fix(index_dir))
    wrong = [key for key, kind in _MANIFEST_FIELD_TYPES.items() if key in data and not isinstance(data[key], kind)]
    if wrong:
        raise damaged(index_dir, name, f"its fields {', '.join(wrong)} have the wrong type", _manifest_fix(index_dir))
    return IndexManifest(**data)


_REQUIRED_MANIFEST_FIELDS = ("video_dir", "model", "embedding_dim", "num_frames", "frame_sampling",
                             "segment_seconds", "segment_overlap", "vector_index", "shards", "generation")
_MANIFEST_FIELD_TYPES = {"model": dict, "embedding_dim": int, "num_frames": int, "vector_index": dict,
                         "shards": list, "counts": dict, "generation": int, "files": dict}


def _not_an_index(index_dir: Path) -> IndexNotFoundError:
    return IndexNotFoundError(f"{index_dir} is not a video index (it has no {MANIFEST_NAME}). Build one with "
                              f"`tempme index VIDEO_DIR --index {index_dir} --model MODEL`.")


def _manifest_fix(index_dir: Path) -> str:
    return (f"run `tempme index --repair --index {index_dir}` to restore the newest intact generation, or rebuild "
            f"the index with `tempme index VIDEO_DIR --index {index_dir} --model MODEL --overwrite`")


def read_manifest(index_dir: str | os.PathLike) -> IndexManifest:
    """The manifest of the current generation; `IndexNotFoundError`, `IndexDamagedError` or `IndexVersionError`
    (each naming the fix) when there is none that this version can use."""
    return _parse_manifest(Path(index_dir), MANIFEST_NAME)


def manifest_exists(index_dir: str | os.PathLike) -> bool:
    """Whether the folder holds an index: its `index.json`, or (when that is lost) a generation's copy."""
    index_dir = Path(index_dir)
    return (index_dir / MANIFEST_NAME).is_file() or any(index_dir.glob("index-*.json"))


def is_index_folder(folder: str | os.PathLike) -> bool:
    """Whether a folder is a video index (its manifest, or the lock and work shards of a first update still running),
    so that indexing a folder that holds it does not probe the index's own files as videos."""
    folder = Path(folder)
    locked = (folder / LOCK_NAME).is_file()  # every update leaves it; an `index.json` alone may be anyone's
    if manifest_exists(folder):
        return locked or (folder / SEGMENTS_DIR).is_dir()
    return locked and (folder / WORK_DIR).is_dir()


def write_manifest(index_dir: str | os.PathLike, manifest: IndexManifest) -> None:
    """Commit `manifest`: write its generation's copy, then replace `index.json` (one atomic rename)."""
    index_dir = Path(index_dir)
    write_json_atomically(index_dir / _generation_manifest_name(manifest.generation), manifest.to_dict())
    write_json_atomically(index_dir / MANIFEST_NAME, manifest.to_dict())


def manifest_stamp(index_dir: str | os.PathLike) -> tuple | None:
    """What changes when `index.json` is replaced (its inode, size and time), `None` when it cannot be read: a cheap
    way to notice a commit without reading the manifest."""
    try:
        stat = os.stat(Path(index_dir) / MANIFEST_NAME)
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _newest_intact_copy(index_dir: Path) -> IndexManifest | None:
    """The manifest of the newest generation whose copy (`index-NNNNN.json`) reads, or None."""
    for path in sorted(index_dir.glob("index-*.json"), reverse=True):
        try:
            return _parse_manifest(index_dir, path.name)
        except SearchIndexError:
            continue
    return None


# ------------------------------------------------------------------------------------------------ segment table


def segment_features(embedding_dim: int):
    """The `datasets.Features` of the segment table for embeddings of `embedding_dim` values."""
    from datasets import Features, List, Value  # imported here: searching an index does not need `datasets`

    return Features(
        {
            "path": Value("string"),
            "segment": Value("int32"),
            "start": Value("float64"),
            "end": Value("float64"),
            "duration": Value("float64"),
            "size": Value("int64"),
            "mtime_ns": Value("int64"),
            "sha256": Value("string"),
            "embedding": List(Value("float32"), length=embedding_dim),
        }
    )


def segment_table(columns: dict[str, Sequence], embeddings: np.ndarray) -> pa.Table:
    """An Arrow table with the segment schema from metadata columns and an `(n, dim)` float32 embedding matrix."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be a (segments, dim) matrix, got shape {embeddings.shape}.")
    n, dim = embeddings.shape
    data = {name: list(columns[name]) for name in METADATA_COLUMNS}
    lengths = {name: len(values) for name, values in data.items()}
    if set(lengths.values()) - {n}:
        raise ValueError(f"Every column needs {n} values (one per embedding), got {lengths}.")
    data["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), dim)
    return pa.Table.from_pydict(data, schema=segment_features(dim).arrow_schema)


def write_shard(path: str | os.PathLike, table: pa.Table, record: dict | None = None) -> dict:
    """Write `table` as one Parquet file (page checksums on), atomically, with `record` (JSON) in its key-value
    metadata; returns the file's record for the manifest (`size`, `sha256`, `rows`)."""
    if record is not None:
        metadata = dict(table.schema.metadata or {})
        metadata[METADATA_KEY] = json.dumps(record).encode()
        table = table.replace_schema_metadata(metadata)

    def check(temporary: Path) -> None:
        try:
            rows = pq.ParquetFile(temporary).metadata.num_rows
        except (OSError, pa.ArrowException) as error:
            raise IndexFileError(f"Writing {path} was cut short ({_first_line(error)}): nothing was committed. "
                                 "Is the disk full?") from error
        if rows != table.num_rows:
            raise IndexFileError(f"Writing {path} was cut short ({rows} of {table.num_rows} rows read back): "
                                 "nothing was committed. Is the disk full?")

    written = write_atomically(path, lambda temporary: pq.write_table(table, temporary, write_page_checksum=True),
                               check)
    return {**written, "rows": table.num_rows}


def read_parquet(index_dir: str | os.PathLike, name: str, record: dict | None = None,
                 columns: Sequence[str] | None = None) -> pa.Table:
    """File `name` of the index, checked: its size against `record`, the checksums of every page read, and its row
    count; `IndexDamagedError` naming the file when any of them fails."""
    index_dir = Path(index_dir)
    path = _check_size(index_dir, name, record)
    try:
        table = pq.read_table(path, columns=list(columns) if columns is not None else None,
                              page_checksum_verification=True)
    except PermissionError as error:
        raise file_error(path, "read", error) from error
    except (OSError, pa.ArrowException) as error:
        raise damaged(index_dir, name, f"it cannot be read as Parquet ({_first_line(error)})") from error
    if record is not None and "rows" in record and table.num_rows != record["rows"]:
        raise damaged(index_dir, name, f"it holds {table.num_rows} rows where index.json recorded {record['rows']}")
    return table


def read_shard_record(path: str | os.PathLike) -> dict | None:
    """The JSON record `write_shard` stored in a file's metadata (reads the footer only)."""
    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(METADATA_KEY)
    return json.loads(raw) if raw else None


def read_segment_rows(index_dir: str | os.PathLike, manifest: IndexManifest,
                      columns: Sequence[str] | None = None) -> pa.Table:
    """The rows of every shard of `manifest`, in order, as one Arrow table (only `columns` when given), checked."""
    tables = [read_parquet(index_dir, name, manifest.files.get(name), columns) for name in manifest.shards]
    if not tables:
        empty = segment_features(manifest.embedding_dim).arrow_schema.empty_table()
        return empty.select(list(columns)) if columns is not None else empty
    return pa.concat_tables(tables).combine_chunks()


def embedding_matrix(table: pa.Table) -> np.ndarray:
    """The `embedding` column as a `(rows, dim)` float32 numpy matrix."""
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    values = column.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values.reshape(-1, dim), dtype=np.float32)


# ------------------------------------------------------------------------------------------------- vector index

# Files of the vector index up to this size are hashed (SHA-256) every time the index is opened; larger ones (the
# float16 vectors of an IVF-PQ index, the faiss file of a large flat or HNSW index) are checked by size there, by
# what every search reads (see the module docstring), and byte by byte by `check_index`.
HASH_ON_OPEN_MAX_BYTES = 256 * 2**20
# Product-quantizer codebooks of 256 centroids are learnt from the vectors: fewer than this cannot train them.
IVFPQ_MIN_ROWS = 256


def chosen_vector_settings(vector_index: dict, rows: int, dim: int) -> VectorIndexSettings:
    """The settings of a vector index about to be built over `rows` vectors of `dim` values.

    `vector_index` is a manifest's (its settings as they are), or a request sized now that the rows are known:
    `{"kind": "auto", "max_memory": BYTES or None}` (`choose_ann`), or `{"kind": KIND, "sized": true}` with any
    setting to keep (`settings_for`, then those settings).

    Raises:
        `IndexSettingsError`: no index fits the memory budget, or IVF-PQ over too few rows to learn its codes.
    """
    kind = vector_index["kind"]
    try:
        if kind == "auto":
            settings = choose_ann(rows, dim, vector_index.get("max_memory"))
        elif vector_index.get("sized"):
            chosen = settings_for(kind, rows, dim)
            given = {key: value for key, value in vector_index.items()
                     if key in chosen.to_dict() and key != "kind" and value is not None}
            settings = replace(chosen, **given)
        else:
            settings = VectorIndexSettings.from_dict(vector_index)
        settings.check_dim(dim)
    except ValueError as error:
        raise IndexSettingsError(f"{error} (The videos encoded so far are kept: the same command with other "
                                 "--ann / --max-memory settings commits them without encoding them again.)") from error
    if settings.kind == "ivfpq" and rows < max(IVFPQ_MIN_ROWS, settings.nlist):
        raise IndexSettingsError(
            f"An IVF-PQ index learns its codes from the segments it holds and needs at least "
            f"{max(IVFPQ_MIN_ROWS, settings.nlist)} of them; this index has {rows}. Use --ann flat (or auto), which "
            "is exact and fast at this size.")
    return settings


def build_vector_index(index_dir: Path, shards: Sequence[str], files: dict, settings: VectorIndexSettings, dim: int,
                       folder: Path, progress: bool = False) -> AnnIndex:
    """The vector index of the rows of `shards` (slot `i` = row `i`), built in `folder` (the temporary folder it is
    saved into). `ivfpq` reads the rows into a float16 staging file first, so that it trains on a sample of all of
    them and encodes them in batches without holding them in RAM as float32."""
    if settings.kind != "ivfpq":
        vectors = AnnIndex.build(np.zeros((0, dim), np.float32), settings)
        for name in shards:
            vectors.add(embedding_matrix(read_parquet(index_dir, name, files.get(name), ["embedding"])),
                        progress=progress)
        return vectors
    rows = [_shard_rows(index_dir, name, files) for name in shards]
    staging_path = folder / f"{TEMP_PREFIX}staging.npy"
    staging = np.lib.format.open_memmap(staging_path, mode="w+", dtype=np.float16, shape=(sum(rows), dim))
    try:
        start = 0
        for name in shards:
            embeddings = embedding_matrix(read_parquet(index_dir, name, files.get(name), ["embedding"]))
            staging[start : start + len(embeddings)] = embeddings
            start += len(embeddings)
        return AnnIndex.build(staging, settings, folder=folder, progress=progress)
    finally:
        del staging
        staging_path.unlink(missing_ok=True)


def save_vector_index(index_dir: str | os.PathLike, vectors: AnnIndex, name: str, folder: Path | None = None,
                      previous_files: dict | None = None) -> dict:
    """Write `vectors` as the folder `name` of the index, atomically; returns the records (`size`, `sha256`) of its
    files for the manifest, keyed `name/FILE`.

    The files are written into a temporary folder (`folder`, where a build already put its float16 files, or a new
    one), flushed, and read back (faiss loads the index with as many live vectors of as many values); then the folder
    is renamed into place in one step. Float16 files of an earlier generation are hard-linked, not copied, and keep
    their records (`previous_files`) instead of being hashed again: an update that adds 1% writes and hashes 1%."""
    index_dir = Path(index_dir)
    target = index_dir / name
    folder = folder or Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{name}-", dir=index_dir))
    sources = [path for path, _ in vectors.vectors.files] if vectors.vectors is not None else []
    try:
        with _reporting_os_errors(target, "write"):
            try:
                names = vectors.save(folder)
            except RuntimeError as error:  # faiss
                raise IndexFileError(f"Cannot write {target}: faiss: {_first_line(error)}. Is the disk full?") from error
            linked = {}  # file name: the record of the earlier generation's file it is a hard link of
            for number, source in enumerate(sources):
                copy = folder / f"vectors-{number:05d}.npy"
                for source_file, written in ((source, copy), (checksum_path(source), checksum_path(copy))):
                    if source_file.parent != folder and written.exists() and os.path.samefile(source_file, written):
                        linked[written.name] = (previous_files or {}).get(_relative_name(index_dir, source_file))
            records = {}
            for file in names:
                path = folder / file
                if linked.get(file) is not None:
                    records[f"{name}/{file}"] = dict(linked[file])
                    continue
                with open(path, "rb+") as handle:
                    os.fsync(handle.fileno())
                records[f"{name}/{file}"] = file_record(path)
            try:
                written = AnnIndex.load(folder)
            except (RuntimeError, ValueError, OSError) as error:
                raise IndexFileError(f"Writing {target} was cut short (it cannot be read back: {_first_line(error)}): "
                                     "nothing was committed. Is the disk full?") from error
            if (written.live, written.dim, written.index.ntotal) != (vectors.live, vectors.dim, vectors.index.ntotal):
                raise IndexFileError(f"Writing {target} was cut short ({written.live} of {vectors.live} vectors read "
                                     "back): nothing was committed. Is the disk full?")
            del written
            _fsync_folder(folder)
            if target.exists():  # a folder of an attempt that crashed between its rename and its commit
                shutil.rmtree(target)
            os.replace(folder, target)
            _fsync_folder(index_dir)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if vectors.vectors is not None:  # the memory maps now read the files under their final names
        vectors.vectors.files = [(target / path.name, array) for path, array in vectors.vectors.files]
    return records


def load_vector_index(index_dir: str | os.PathLike, manifest: IndexManifest, rows: int, full: bool = False) -> AnnIndex:
    """The vector index of `manifest`, checked against the records of its files and against the `rows` of the
    segment table (one live vector of `embedding_dim` values per row).

    Each file's size is checked; its SHA-256 too when it is at most `HASH_ON_OPEN_MAX_BYTES` or with `full` (what
    `check_index` does). An index of one `.faiss` file (flat or HNSW, written before the folder format) opens as
    well."""
    index_dir = Path(index_dir)
    name = manifest.vector_file
    if name is None:
        raise damaged(index_dir, MANIFEST_NAME, "it names no vector file")
    for file in manifest.vector_files:
        record = manifest.files.get(file)
        if full or record is None or record["size"] <= HASH_ON_OPEN_MAX_BYTES:
            verify_file(index_dir, file, record)
        else:
            _check_size(index_dir, file, record)
    if name.endswith(".faiss"):
        try:
            vectors = AnnIndex.from_faiss_file(index_dir / name, manifest.vector_settings)
        except RuntimeError as error:
            raise damaged(index_dir, name, f"faiss cannot read it ({_first_line(error)})") from error
    elif not manifest.vector_files:
        raise damaged(index_dir, MANIFEST_NAME, f"it records no files of the vector index {name}")
    else:
        try:
            vectors = AnnIndex.load(index_dir / name, manifest.vector_settings)
        except FileNotFoundError as error:
            raise damaged(index_dir, name, f"{Path(error.filename or name).name} is missing") from error
        except (RuntimeError, ValueError, OSError, KeyError) as error:
            raise damaged(index_dir, name, f"it cannot be read ({_first_line(error)})") from error
    if (vectors.live, vectors.dim) != (rows, manifest.embedding_dim):
        raise damaged(index_dir, name, f"it holds {vectors.live} vectors of {vectors.dim} values for {rows} rows of "
                                       f"{manifest.embedding_dim}")
    return vectors


# ------------------------------------------------------------------------------------------- opening for search


@dataclass(frozen=True)
class OpenGeneration:
    """One generation of an index, loaded for searching.

    Attributes:
        manifest (`IndexManifest`): its `index.json`.
        vectors (`AnnIndex`): its vector index; its live slots in order are the rows of `rows` (`rank_of`).
        rows (`pa.Table`): `path`, `start` and `end` of every segment.
        stamp (`tuple`): `manifest_stamp` of `index.json` when it was read.
    """

    manifest: IndexManifest
    vectors: AnnIndex
    rows: pa.Table
    stamp: tuple | None


def open_generation(index_dir: str | os.PathLike, attempts: int = 3) -> OpenGeneration:
    """Load the current generation for searching, every file checked (`IndexDamagedError` names a damaged one).

    A commit between reading `index.json` and opening its files can delete them (once they are older than
    `GENERATIONS_KEPT`): a reader that loses that race reads `index.json` again and opens the new generation."""
    index_dir = Path(index_dir)
    for attempt in range(attempts):
        stamp = manifest_stamp(index_dir)
        manifest = read_manifest(index_dir)
        try:
            rows = read_segment_rows(index_dir, manifest, SEARCH_COLUMNS)
            vectors = load_vector_index(index_dir, manifest, rows.num_rows)
            return OpenGeneration(manifest, vectors, rows, stamp)
        except IndexDamagedError:
            if attempt + 1 < attempts and _committed_generation(index_dir) not in (None, manifest.generation):
                logger.info("A commit replaced generation %d of %s while it was read: reading the new one",
                            manifest.generation, index_dir)
                continue
            raise
    raise AssertionError("unreachable")


def _committed_generation(index_dir: Path) -> int | None:
    try:
        return read_manifest(index_dir).generation
    except SearchIndexError:
        return None


def read_report(index_dir: str | os.PathLike, manifest: IndexManifest) -> dict | None:
    """The report of the update that made this generation, checked against its record."""
    if not manifest.report:
        return None
    verify_file(index_dir, manifest.report, manifest.files.get(manifest.report))
    try:
        return json.loads((Path(index_dir) / manifest.report).read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise damaged(index_dir, manifest.report, f"it is not valid JSON ({_first_line(error)})") from error


# ------------------------------------------------------------------------------------------------- work shards


@dataclass
class WorkShardWriter:
    """Buffers finished videos and writes them as work shards of about `shard_rows` segments.

    Args:
        work_dir: the index's `work/` folder.
        rank (`int`): the writing process, part of the file names.
        record (`dict`): `fingerprint`, `settings`, `target_generation` and `embedding_dim`, stored in every shard.
        shard_rows (`int`): segments per shard.
        commit_seconds (`float`): write what is buffered at least this often.
    """

    work_dir: Path
    rank: int
    record: dict
    shard_rows: int = 1024
    commit_seconds: float = 60.0
    shards_written: int = 0
    _columns: dict = field(default_factory=lambda: {name: [] for name in METADATA_COLUMNS})
    _embeddings: list = field(default_factory=list)
    _videos: list = field(default_factory=list)
    _failed: list = field(default_factory=list)
    _last_write: float = field(default_factory=time.monotonic)

    def add_video(self, video: dict, segments: list[tuple], embeddings: np.ndarray) -> None:
        """A finished video: its record (from `SegmentBatches`), its segments `(path, number, start, end)` and their
        `(segments, dim)` embeddings."""
        for (path, number, start, end) in segments:
            for name, value in zip(METADATA_COLUMNS, (path, number, start, end, video["duration"], video["size"],
                                                      video["mtime_ns"], video["sha256"])):
                self._columns[name].append(value)
        self._embeddings.append(np.asarray(embeddings, dtype=np.float32))
        self._videos.append({key: video[key] for key in ("path", "size", "mtime_ns", "warnings")})

    def add_failure(self, video: dict) -> None:
        """A file that is not indexed: a video that failed, or (`not_video`) a file that is not a video."""
        self._failed.append({**{key: video[key] for key in ("path", "size", "mtime_ns", "error")},
                             "not_video": bool(video.get("not_video"))})

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
        path = self.work_dir / name
        write_shard(path, table, {**self.record, "videos": self._videos, "failed": self._failed})
        self.shards_written += 1
        self._columns = {name: [] for name in METADATA_COLUMNS}
        self._embeddings, self._videos, self._failed = [], [], []
        self._last_write = time.monotonic()
        return path


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


def _read_work_shard(path: Path) -> WorkShard:
    """A work shard read whole (every page checksum checked, its rows those of the videos its record names)."""
    table = pq.read_table(path, page_checksum_verification=True)
    record = json.loads((table.schema.metadata or {}).get(METADATA_KEY, b"null"))
    if not isinstance(record, dict):
        raise ValueError("no tempme record in its metadata")
    if set(table.column("path").to_pylist()) != {video["path"] for video in record.get("videos", [])}:
        raise ValueError("its rows are not those of the videos its record names")
    return WorkShard(path, record)


def find_work_shards(index_dir: str | os.PathLike, fingerprint: str, settings: dict,
                     target_generation: int) -> list[WorkShard]:
    """Work shards an earlier, interrupted attempt at an update of this index left (same model and settings).

    Shards from an attempt at an earlier generation count too: the file size and time recorded for each video, with
    the model and settings, say exactly what was encoded. A work shard that cannot be read whole is deleted (its
    videos are encoded again), so that one damaged file neither blocks the update nor multiplies."""
    work_dir = Path(index_dir) / WORK_DIR
    if not work_dir.is_dir():
        return []
    shards = []
    for path in sorted(work_dir.glob("g*.parquet")):
        try:
            shard = _read_work_shard(path)
        except (OSError, pa.ArrowException, ValueError, KeyError) as error:
            logger.warning("Deleting the damaged work shard %s (%s): its videos are encoded again.", path,
                           _first_line(error))
            path.unlink(missing_ok=True)
            continue
        record = shard.record
        if (
            record.get("fingerprint") == fingerprint
            and record.get("settings") == settings
            and record.get("target_generation", target_generation + 1) <= target_generation
        ):
            shards.append(shard)
    return shards


@dataclass
class EncodedWork:
    """What the work shards of an update hold for the files it meant to encode.

    Attributes:
        rows (`pa.Table`, *optional*): the segment rows of the encoded videos.
        encoded (`set[str]`): their paths.
        failed (`dict[str, str]`): paths of the files that failed, with the reason.
        skipped (`dict[str, str]`): paths of the files that are not videos, with the reason.
        warnings (`list[str]`): windows left out of encoded videos, partial decodes.
    """

    rows: pa.Table | None = None
    encoded: set = field(default_factory=set)
    failed: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)


def collect_work(index_dir: str | os.PathLike, shards: Iterable[WorkShard], wanted: Iterable[tuple[str, int, int]],
                 embedding_dim: int) -> EncodedWork:
    """The videos of `shards` that an update wants (`(path, size, mtime_ns)` of each file it encodes)."""
    wanted = set(wanted)
    work = EncodedWork()
    tables = []
    for shard in shards:
        videos = [v for v in shard.videos if (v["path"], v["size"], v["mtime_ns"]) in wanted
                  and v["path"] not in work.encoded]
        if videos:
            table = read_parquet(shard.path.parent, shard.path.name)
            table = table.filter(pc.is_in(table.column("path"), value_set=pa.array([v["path"] for v in videos])))
            tables.append(table.cast(segment_features(embedding_dim).arrow_schema))
            work.encoded.update(v["path"] for v in videos)
            work.warnings.extend(w for v in videos for w in v.get("warnings", []))
        for video in shard.failed:
            if (video["path"], video["size"], video["mtime_ns"]) in wanted:
                (work.skipped if video.get("not_video") else work.failed)[video["path"]] = video["error"]
    for path in work.encoded:
        work.failed.pop(path, None)
        work.skipped.pop(path, None)
    if tables:
        work.rows = pa.concat_tables(tables)
    return work


# -------------------------------------------------------------------------------------------------------- lock


class IndexLock:
    """An exclusive lock on the index folder for the length of an update (released by the OS if the run dies)."""

    def __init__(self, index_dir: str | os.PathLike):
        self.path = Path(index_dir) / LOCK_NAME
        self._handle = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks, one run at a time is up to the user
            return
        with _reporting_os_errors(self.path, "write"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise IndexLockedError(
                f"Another `tempme index` run is updating {self.path.parent}; wait for it to finish (an index is "
                "updated by one run at a time; `accelerate launch` shares one run among processes)."
            ) from None
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "IndexLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


# ------------------------------------------------------------------------------------------------------- commit


def commit_generation(
    index_dir: str | os.PathLike,
    base: IndexManifest,
    *,
    new_rows: pa.Table | None = None,
    dropped: Iterable[str] = (),
    refreshed: dict[str, dict] | None = None,
    report: dict | None = None,
    failed: int | None = None,
    rows_per_shard: int = 100_000,
    clear_work: bool = True,
    progress: bool = False,
) -> IndexManifest:
    """Write and commit generation `base.generation + 1` of the index; returns its manifest.

    Args:
        base (`IndexManifest`): the settings and model of the new generation, with the files it keeps from the
            current one (`shards`, their `files` records, and `vector_index["file"]` when that vector index holds
            exactly the rows of those shards and may be updated instead of rebuilt; `None` to build it, with the
            settings `chosen_vector_settings` gives for `vector_index`).
        new_rows (`pa.Table`, *optional*): segment rows to add (sorted by path and segment, written in shards of
            `rows_per_shard`).
        dropped: paths whose rows leave the kept shards (removed and re-encoded videos).
        refreshed (`dict`): new `size`, `mtime_ns` and `sha256` for the rows of some kept paths.
        report (`dict`, *optional*): the report of the update (else the current one stays).
        failed (`int`, *optional*): files that failed (else the current count stays).
        clear_work (`bool`): delete the work shards once committed (an update merged them).
        progress (`bool`): show progress bars while the vector index is built.

    The new files are written first, each atomically and checked; `index.json` is replaced last. Then the files of
    generations older than `GENERATIONS_KEPT` are deleted. The vector index of the new generation is the current one
    updated (the vectors of dropped rows removed, the new rows' added, compacted when `needs_compaction`) and saved
    as a new folder whose unchanged float16 files are hard links; it is built from all rows only when there is none
    to update (a new index, other settings, a repair).
    """
    from .. import __version__

    index_dir = Path(index_dir)
    generation = max(base.generation, highest_generation(index_dir)) + 1
    shards, files, dropped_rows = _keep_shards(index_dir, base, set(dropped), refreshed or {}, generation)
    kept = len(shards)
    if new_rows is not None and new_rows.num_rows:
        new_rows = new_rows.sort_by([("path", "ascending"), ("segment", "ascending")])
        for number, start in enumerate(range(0, new_rows.num_rows, rows_per_shard)):
            name = f"{SEGMENTS_DIR}/segments-{generation:05d}-new-{number:05d}.parquet"
            files[name] = write_shard(index_dir / name, new_rows.slice(start, rows_per_shard))
            shards.append(name)

    vector_file = f"vectors-{generation:05d}"
    with _reporting_os_errors(index_dir / vector_file, "write"):
        folder = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{vector_file}-", dir=index_dir))
    try:
        vectors, videos = _vectors_for(index_dir, base, shards, kept, files, dropped_rows, folder, progress)
        files.update(save_vector_index(index_dir, vectors, vector_file, folder, base.files))
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # renamed into place when all went well
    report_file = base.report
    if report is not None:
        report_file = f"report-{generation:05d}.json"
        files[report_file] = write_json_atomically(index_dir / report_file, report)
    elif report_file in base.files:
        files[report_file] = base.files[report_file]

    manifest = replace(
        base,
        generation=generation,
        shards=shards,
        vector_index={**vectors.settings.to_dict(), "file": vector_file,
                      **({"max_memory": base.vector_index["max_memory"]} if "max_memory" in base.vector_index else {})},
        report=report_file,
        counts={"videos": videos, "segments": int(vectors.live),
                "failed": base.counts.get("failed", 0) if failed is None else failed},
        files=files,
        package_version=__version__,
        updated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        format_version=FORMAT_VERSION,
    )
    write_manifest(index_dir, manifest)
    _delete_old_generations(index_dir, manifest, clear_work)
    return manifest


def _keep_shards(index_dir: Path, base: IndexManifest, dropped: set[str], refreshed: dict[str, dict],
                 generation: int) -> tuple[list[str], dict, np.ndarray]:
    """The shards of `base` without the rows of `dropped` paths, with `refreshed` values; a shard with nothing to
    drop or refresh is kept as it is (no rewrite). Returns the shard names, their records, and the numbers of the
    rows dropped (counted over the rows of `base`, in order)."""
    dropped_paths = pa.array(sorted(dropped), pa.string())
    refreshed_paths = pa.array(sorted(refreshed), pa.string())
    kept, files, dropped_rows = [], {}, []
    offset = 0
    for number, name in enumerate(base.shards):
        record = base.files.get(name)
        paths = read_parquet(index_dir, name, record, ["path"]).column("path")
        drop = pc.is_in(paths, value_set=dropped_paths)
        touch = pc.is_in(paths, value_set=refreshed_paths)
        dropped_rows.append(offset + np.flatnonzero(drop.to_numpy(zero_copy_only=False)))
        offset += len(paths)
        if not pc.any(drop).as_py() and not pc.any(touch).as_py():
            kept.append(name)
            if record is not None:
                files[name] = record
            continue
        table = read_parquet(index_dir, name, record).filter(pc.invert(drop))
        if refreshed:
            rows = table.column("path").to_pylist()
            for column, kind in (("size", pa.int64()), ("mtime_ns", pa.int64()), ("sha256", pa.string())):
                old = table.column(column).to_pylist()
                new = [refreshed[path][column] if path in refreshed else value for path, value in zip(rows, old)]
                table = table.set_column(table.schema.get_field_index(column), column, pa.array(new, kind))
        if table.num_rows:
            new_name = f"{SEGMENTS_DIR}/segments-{generation:05d}-kept-{number:05d}.parquet"
            files[new_name] = write_shard(index_dir / new_name, table)
            kept.append(new_name)
    return kept, files, np.concatenate(dropped_rows or [np.zeros(0, np.int64)]).astype(np.int64)


def _vectors_for(index_dir: Path, base: IndexManifest, shards: list[str], kept: int, files: dict,
                 dropped_rows: np.ndarray, folder: Path, progress: bool) -> tuple[AnnIndex, int]:
    """The vector index of `shards` (live slots in ascending order = rows in order) and the number of distinct
    videos in them. `shards[:kept]` are the shards of `base` without `dropped_rows`; the rest are new.

    When `base` names a vector index and it passes its checks, it is updated: the slots of the dropped rows removed
    (IVF-PQ and flat remove them from faiss, HNSW marks them), the new rows added (IVF lists or the HNSW graph
    extended: no training, no rebuild), and compacted once `needs_compaction` says so. Otherwise (or when it is
    damaged: damage is never carried into a new generation) it is built from all rows."""
    vectors = None
    if base.vector_file is not None:
        try:
            vectors = load_vector_index(index_dir, base, base.counts.get("segments", -1))
        except IndexDamagedError as error:
            logger.warning("%s Rebuilding the vector index from the Parquet rows.", error)
    if vectors is not None:
        vectors.remove(vectors.live_slots()[dropped_rows])
        for name in shards[kept:]:
            vectors.add(embedding_matrix(read_parquet(index_dir, name, files.get(name), ["embedding"])),
                        progress=progress)
        if vectors.needs_compaction:
            vectors.compact(folder=folder, progress=progress)
    else:
        rows = sum(_shard_rows(index_dir, name, files) for name in shards)
        settings = chosen_vector_settings(base.vector_index, rows, base.embedding_dim)
        vectors = build_vector_index(index_dir, shards, files, settings, base.embedding_dim, folder, progress)
    paths, rows = set(), 0
    for name in shards:
        table = read_parquet(index_dir, name, files.get(name), ["path"])
        paths.update(pc.unique(table.column("path")).to_pylist())
        rows += table.num_rows
    if vectors.live != rows:
        raise RuntimeError(f"The vector index holds {vectors.live} vectors for {rows} rows; nothing committed.")
    return vectors, len(paths)


def _shard_rows(index_dir: Path, name: str, files: dict) -> int:
    record = files.get(name) or {}
    return record["rows"] if "rows" in record else pq.ParquetFile(index_dir / name).metadata.num_rows


def _delete_old_generations(index_dir: Path, current: IndexManifest, clear_work: bool) -> None:
    """After a commit: delete the files no generation still kept names (and the merged work shards)."""
    kept = [current]
    for path in sorted(index_dir.glob("index-*.json"), reverse=True):
        if len(kept) == GENERATIONS_KEPT:
            break
        try:
            earlier = _parse_manifest(index_dir, path.name)
        except SearchIndexError:  # a damaged copy protects nothing
            continue
        if earlier.generation < current.generation:
            kept.append(earlier)
    referenced = {index_dir / name for manifest in kept for name in manifest.file_names}
    referenced |= {index_dir / _generation_manifest_name(manifest.generation) for manifest in kept}
    referenced |= {index_dir / manifest.vector_file for manifest in kept if manifest.vector_file is not None}
    candidates = [
        *index_dir.glob("vectors-*"),
        *index_dir.glob("report-*.json"),
        *index_dir.glob("index-*.json"),
        *(index_dir / SEGMENTS_DIR).glob("*.parquet"),
    ]
    if clear_work:
        candidates += (index_dir / WORK_DIR).glob("*.parquet")
    for path in candidates:
        if path not in referenced:
            if path.is_dir():  # a vector index folder: its float16 files may live on as hard links in a newer one
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------- checking, repairing


@dataclass(frozen=True)
class IndexProblem:
    """Something `check_index` found wrong, and what `repair_index` does about it.

    Attributes:
        name (`str`): the file, relative to the index folder.
        problem (`str`): what is wrong with it.
        repair (`str`): what `tempme index --repair` does about it.
    """

    name: str
    problem: str
    repair: str


@dataclass
class IndexCheck:
    """The result of `check_index`.

    Attributes:
        manifest (`IndexManifest`, *optional*): the manifest a repair starts from: `index.json`, or the newest
            intact generation copy when `index.json` is damaged; `None` when there is none.
        problems (`list[IndexProblem]`): empty when every file matches the manifest.
        files_checked (`int`): files read in full and compared with their records.
        repaired (`IndexManifest`, *optional*): the generation `repair_index` committed, if it committed one.
    """

    manifest: IndexManifest | None
    problems: list[IndexProblem] = field(default_factory=list)
    files_checked: int = 0
    repaired: IndexManifest | None = None
    _bad: set = field(default_factory=set, repr=False)  # names of the damaged files
    _unrecorded: set = field(default_factory=set, repr=False)  # names of intact files without a record

    @property
    def ok(self) -> bool:
        return not self.problems


def _problem_of(error: SearchIndexError) -> str:
    return getattr(error, "problem", str(error))


def _read_verified_parquet(index_dir: Path, name: str, record: dict | None) -> pa.Table:
    verify_file(index_dir, name, record)
    return read_parquet(index_dir, name, record)


def check_index(index_dir: str | os.PathLike) -> IndexCheck:
    """Read every file of the index in full and compare it with the manifest (`tempme index --check`).

    Checks `index.json`; each segment shard (size, SHA-256, every Parquet page checksum, row count); the vector file
    (size, SHA-256, loaded by faiss with one vector per row); the report; the manifest's counts; the work shards.

    Raises:
        `IndexNotFoundError`: the folder holds no index; `IndexVersionError`: another version's index.
    """
    index_dir = Path(index_dir).absolute()
    try:
        manifest = read_manifest(index_dir)
        check = IndexCheck(manifest)
    except (IndexDamagedError, IndexNotFoundError) as error:
        copy = _newest_intact_copy(index_dir)
        if copy is None:
            if isinstance(error, IndexNotFoundError):
                raise
            return IndexCheck(None, [IndexProblem(MANIFEST_NAME, _problem_of(error),
                                                  "none: no intact copy of a generation's manifest is left; rebuild "
                                                  "the index with --overwrite")])
        problem = "the file is missing" if isinstance(error, IndexNotFoundError) else _problem_of(error)
        check = IndexCheck(copy, [IndexProblem(MANIFEST_NAME, problem,
                                               f"restored from {_generation_manifest_name(copy.generation)} "
                                               f"(generation {copy.generation})")])
        check._bad.add(MANIFEST_NAME)
    manifest = check.manifest

    def inspect(name: str, read: Callable[[], Any], repair: str, names: Sequence[str] | None = None):
        """Read `name` (a file, or the vector index folder holding `names`) with `read`, noting what is wrong."""
        names = [name] if names is None else names
        try:
            result = read()
        except IndexDamagedError as error:
            damaged_name = _relative_name(index_dir, getattr(error, "path", None))
            damaged_name = damaged_name if damaged_name in names else name  # the damaged file of a folder
            check.problems.append(IndexProblem(damaged_name, _problem_of(error), repair))
            check._bad.add(name)
            return None
        check.files_checked += len(names)
        if any(manifest.files.get(file) is None for file in names):
            check._unrecorded.add(name)
        return result

    rows, paths = 0, set()
    for name in manifest.shards:
        table = inspect(name, lambda: _read_verified_parquet(index_dir, name, manifest.files.get(name)),
                        "dropped from the index: the next `tempme index` encodes its videos again")
        if table is not None:
            rows += table.num_rows
            paths.update(pc.unique(table.column("path")).to_pylist())
    shards_intact = not (check._bad & set(manifest.shards))
    if manifest.vector_file is not None:
        inspect(manifest.vector_file,
                lambda: load_vector_index(index_dir, manifest, rows if shards_intact else manifest.counts["segments"],
                                          full=True),
                "rebuilt from the Parquet rows (nothing is re-encoded)", manifest.vector_files)
    if manifest.report is not None:
        inspect(manifest.report, lambda: read_report(index_dir, manifest),
                "dropped: the report of the last update is lost (the index itself is intact)")
    if shards_intact and MANIFEST_NAME not in check._bad:
        counted = {"videos": len(paths), "segments": rows}
        recorded = {key: manifest.counts.get(key) for key in counted}
        if recorded != counted:
            check.problems.append(IndexProblem(MANIFEST_NAME, f"its counts say {recorded}, the rows hold {counted}",
                                               "counts corrected"))
            check._bad.add("counts")
    if check._unrecorded:
        names = sorted(check._unrecorded)
        check.problems.append(IndexProblem(
            ", ".join(names), "no size and SHA-256 recorded (written by an older version of transformers-tempme)",
            "recorded, after reading the shards in full; the vector file is rebuilt from them"))
    for path in sorted((index_dir / WORK_DIR).glob("g*.parquet")):
        try:
            _read_work_shard(path)
        except (OSError, pa.ArrowException, ValueError, KeyError) as error:
            name = path.relative_to(index_dir).as_posix()
            check.problems.append(IndexProblem(name, f"the work shard cannot be read ({_first_line(error)})",
                                               "deleted: the next `tempme index` encodes its videos again"))
            check._bad.add(name)
    return check


def _relative_name(index_dir: Path, path: Path | None) -> str | None:
    try:
        return Path(path).relative_to(index_dir).as_posix() if path is not None else None
    except ValueError:
        return None


def repair_index(index_dir: str | os.PathLike) -> IndexCheck:
    """Rebuild whatever derived file is damaged or missing, without encoding anything (`tempme index --repair`).

    `index.json` is restored from the newest intact generation copy; damaged segment shards are dropped (their
    videos are encoded again by the next update); the vector file is rebuilt from the Parquet rows when it is
    damaged or when shards were dropped; a damaged report is dropped; the counts are recomputed; damaged work shards
    are deleted. What was repaired is committed as a new generation. Returns the check that found the problems
    (empty when there was nothing to repair).

    Raises:
        `IndexDamagedError`: no intact manifest is left (rebuild the index with `overwrite`).
    """
    index_dir = Path(index_dir).absolute()
    if not manifest_exists(index_dir):
        raise _not_an_index(index_dir)  # before the lock, which would create the folder
    with IndexLock(index_dir):
        for folder in (index_dir, index_dir / SEGMENTS_DIR, index_dir / WORK_DIR):
            remove_temporary_files(folder)
        check = check_index(index_dir)
        if check.ok:
            return check
        if check.manifest is None:
            raise damaged(index_dir, MANIFEST_NAME, check.problems[0].problem,
                          f"rebuild the index: `tempme index VIDEO_DIR --index {index_dir} --model MODEL --overwrite`")
        work = {problem.name for problem in check.problems if problem.name.startswith(f"{WORK_DIR}/")}
        for name in work:
            (index_dir / name).unlink(missing_ok=True)
        if not (check._bad - work) and not check._unrecorded:
            return check  # only work shards were damaged: deleting them was the repair
        damaged_names = check._bad - work - {MANIFEST_NAME, "counts"}
        base = check.manifest
        shards = [name for name in base.shards if name not in damaged_names]
        files = {name: record for name, record in base.files.items() if name not in damaged_names}
        for name in check._unrecorded & {*shards, base.report}:  # read in full by the check: intact
            files[name] = file_record(index_dir / name)
            if name in shards:
                files[name]["rows"] = pq.ParquetFile(index_dir / name).metadata.num_rows
        rebuild_vectors = shards != base.shards or base.vector_file in damaged_names or bool(check._unrecorded)
        vector_index = {**base.vector_index, "file": None if rebuild_vectors else base.vector_file}
        base = replace(base, shards=shards, files=files, vector_index=vector_index,
                       report=None if base.report in damaged_names else base.report)
        check.repaired = commit_generation(index_dir, base, clear_work=False)
    return check


__all__ = [
    "FORMAT_VERSION",
    "GENERATIONS_KEPT",
    "MANIFEST_NAME",
    "METADATA_COLUMNS",
    "SEARCH_COLUMNS",
    "SEGMENTS_DIR",
    "WORK_DIR",
    "EncodedWork",
    "IndexCheck",
    "IndexDamagedError",
    "IndexFileError",
    "IndexLock",
    "IndexLockedError",
    "IndexManifest",
    "IndexNotFoundError",
    "IndexProblem",
    "IndexSettingsError",
    "IndexVersionError",
    "OpenGeneration",
    "SearchIndexError",
    "UnsafeRemovalError",
    "VideoFolderMismatchError",
    "WorkShard",
    "WorkShardWriter",
    "build_vector_index",
    "check_index",
    "chosen_vector_settings",
    "collect_work",
    "commit_generation",
    "damaged",
    "embedding_matrix",
    "file_error",
    "file_record",
    "find_work_shards",
    "highest_generation",
    "is_index_folder",
    "load_vector_index",
    "manifest_exists",
    "manifest_stamp",
    "open_generation",
    "read_manifest",
    "read_parquet",
    "read_report",
    "read_segment_rows",
    "read_shard_record",
    "remove_temporary_files",
    "repair_index",
    "save_vector_index",
    "segment_features",
    "segment_table",
    "verify_file",
    "write_atomically",
    "write_json_atomically",
    "write_manifest",
    "write_shard",
]
