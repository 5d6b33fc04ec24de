"""The index's table: one row per segment, stored as Parquet files with Hugging Face `datasets` features.

Columns (the `datasets` features of `segment_features`):

    path      string      the video's path relative to the video folder, `/` separators
    segment   int32       the segment's number within its video, from 0 in time order
    start     float64     seconds from the start of the video
    end       float64     seconds
    duration  float64     seconds the whole video lasts
    size      int64       the video file's size in bytes when it was indexed
    mtime_ns  int64       its modification time (nanoseconds since the epoch) when it was indexed
    sha256    string      SHA-256 of its content
    embedding List(float32, length=dim)  the L2-normalised video embedding of the segment

The files are plain Parquet: `datasets.load_dataset("parquet", data_files="INDEX/segments/*.parquet")`, pandas or
DuckDB read them as they are. Each file is written atomically; its Parquet key-value metadata may carry a JSON
record under `tempme` (the work shards of an unfinished run use it to say which model and settings made them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from .atomic import write_atomically

METADATA_KEY = b"tempme"
METADATA_COLUMNS = ("path", "segment", "start", "end", "duration", "size", "mtime_ns", "sha256")


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


def empty_segment_table(embedding_dim: int) -> pa.Table:
    return segment_features(embedding_dim).arrow_schema.empty_table()


def write_shard(path: str | os.PathLike, table: pa.Table, record: dict | None = None) -> Path:
    """Write `table` as one Parquet file, atomically, with `record` (JSON) in its key-value metadata."""
    if record is not None:
        metadata = dict(table.schema.metadata or {})
        metadata[METADATA_KEY] = json.dumps(record).encode()
        table = table.replace_schema_metadata(metadata)
    return write_atomically(path, lambda temporary: pq.write_table(table, temporary))


def read_shard_record(path: str | os.PathLike) -> dict | None:
    """The JSON record `write_shard` stored in a file's metadata (reads the footer only)."""
    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(METADATA_KEY)
    return json.loads(raw) if raw else None


def read_shards(paths: Iterable[str | os.PathLike], embedding_dim: int, columns: Sequence[str] | None = None) -> pa.Table:
    """The rows of several shards, in order, as one Arrow table (only `columns` when given)."""
    tables = [pq.read_table(path, columns=list(columns) if columns is not None else None) for path in paths]
    if not tables:
        empty = empty_segment_table(embedding_dim)
        return empty.select(list(columns)) if columns is not None else empty
    return pa.concat_tables(tables).combine_chunks()


def embedding_matrix(table: pa.Table) -> np.ndarray:
    """The `embedding` column as a `(rows, dim)` float32 numpy matrix."""
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    values = column.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values.reshape(-1, dim), dtype=np.float32)


__all__ = [
    "METADATA_COLUMNS",
    "segment_features",
    "segment_table",
    "empty_segment_table",
    "write_shard",
    "read_shard_record",
    "read_shards",
    "embedding_matrix",
]
