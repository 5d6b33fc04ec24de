"""The vector index over the segment embeddings, with faiss: exact inner product, or HNSW for large libraries.

Embeddings are L2-normalised, so the inner product is the cosine similarity. Vector `i` of the faiss index is row
`i` of the segment table (the table's shards in manifest order).

- `flat` (default): `IndexFlatIP`, exact; its cost grows with the number of segments (a matrix-vector product).
- `hnsw`: `IndexHNSWFlat` (inner product), approximate; query time grows slowly with the number of segments.
  `M` (links per vector) and `efConstruction` are fixed when it is built; `efSearch` (the candidate list of a query)
  trades speed for recall at query time. `benchmarks/search_latency.py` measures both against exact search.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from .atomic import write_atomically

VECTOR_INDEX_KINDS = ("flat", "hnsw")


def _faiss():
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "Video search needs faiss: pip install 'transformers-tempme[search]' (or pip install faiss-cpu)."
        ) from error
    return faiss


@dataclass(frozen=True)
class VectorIndexSettings:
    """How the vector index is built and searched.

    Args:
        kind (`str`): `"flat"` (exact) or `"hnsw"` (approximate).
        hnsw_m (`int`): HNSW links per vector.
        ef_construction (`int`): HNSW candidate list while building.
        ef_search (`int`): HNSW candidate list while searching (raised to `k` when smaller).
    """

    kind: str = "flat"
    hnsw_m: int = 32
    ef_construction: int = 40
    ef_search: int = 128

    def __post_init__(self):
        if self.kind not in VECTOR_INDEX_KINDS:
            raise ValueError(f"Unknown vector index {self.kind!r}; choose one of {', '.join(VECTOR_INDEX_KINDS)}.")

    def to_dict(self) -> dict:
        return asdict(self)


def build_vector_index(embeddings: np.ndarray, settings: VectorIndexSettings):
    """A faiss index holding `embeddings` `(n, dim)` float32, vector `i` = row `i`."""
    faiss = _faiss()
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    dim = embeddings.shape[1]
    if settings.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.ef_construction
        index.hnsw.efSearch = settings.ef_search
    if len(embeddings):
        index.add(embeddings)
    return index


def save_vector_index(index, path: str | os.PathLike) -> None:
    faiss = _faiss()
    write_atomically(path, lambda temporary: faiss.write_index(index, str(temporary)))


def load_vector_index(path: str | os.PathLike, settings: VectorIndexSettings):
    index = _faiss().read_index(str(path))
    if settings.kind == "hnsw":
        index.hnsw.efSearch = settings.ef_search
    return index


def search_vectors(index, queries: np.ndarray, k: int, settings: VectorIndexSettings) -> tuple[np.ndarray, np.ndarray]:
    """Scores and row ids, both `(queries, min(k, n))`, best first; rows of `-1` are padding (fewer hits)."""
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    k = min(int(k), index.ntotal)
    if k <= 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    if settings.kind == "hnsw" and index.hnsw.efSearch < k:
        index.hnsw.efSearch = k
    scores, ids = index.search(queries, k)
    return scores, ids


__all__ = [
    "VECTOR_INDEX_KINDS",
    "VectorIndexSettings",
    "build_vector_index",
    "save_vector_index",
    "load_vector_index",
    "search_vectors",
]
