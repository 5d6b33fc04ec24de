"""Vector indexes for libraries of any size: exact (`flat`), graph (`hnsw`) and compressed (`ivfpq`), with faiss.

Pure functions and one class over numpy arrays and folders; nothing here knows the index manifest. The segment
embeddings are unit vectors, so the inner product is the cosine similarity, and every kind returns cosines.

- `flat`: every vector in RAM as float32, exact; 4 * dim + 8 bytes per vector, and a query costs a pass over all
  of them (memory-bound: the time grows with the library).
- `hnsw`: a graph over float32 vectors (`IndexHNSWFlat`); a query visits a few thousand vectors, whatever the size.
  About 4 * dim + 8 * M bytes per vector; building costs `efConstruction` distance computations per neighbour
  list, which is why it is slow past a few million vectors.
- `ivfpq`: an inverted file over `nlist` k-means cells; each vector kept as a `pq_m`-byte product-quantizer code
  of its residual to its cell centre, after an OPQ rotation that balances the variance between the sub-vectors.
  A query scans the codes of its `nprobe` nearest cells, keeps the best `rerank` candidates, and re-scores them
  exactly from float16 copies of the vectors kept on disk and read through a memory map: what RAM holds per vector
  is its code and its 8-byte id (`pq_m + 8` bytes), and the returned scores are true cosines.

Slots. Every vector added gets the next slot number (0, 1, 2, ...); searches return slots. Removing vectors
leaves a hole (the slots of the others do not change); `compact()` renumbers them densely and returns the map, so
that the caller can keep its rows in slot order. `ivfpq` and `flat` remove vectors from the faiss index itself;
`hnsw` cannot (a graph node holds its neighbours' links), so removed vectors stay in the graph as tombstones that
searches skip, until compaction rebuilds the graph (`needs_compaction`, when `compact_ratio` of the slots are
removed).

Files. `save(folder)` writes into an empty folder (a temporary one: the caller renames it into place and records
checksums):

    ann.json            the settings, dimension, slot count and the vector files with their row counts
    index.faiss         the faiss index; its ids are slots
    removed.npy         removed slots (int64), when there are any
    vectors-00000.npy   float16 vectors of consecutive slots (`ivfpq` only), read memory-mapped; files are never
    vectors-00001.npy   changed once written, so that saving again hard-links the existing ones and writes only
                        the files of vectors added since (an update of 1% writes 1% of them)
    checksums-00000.npy `row_checksums` of each file's rows (uint64, 8 bytes per vector), memory-mapped: every row a
                        search re-ranks is checked against it, so that damaged bytes are an error, not a score
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

ANN_KINDS = ("flat", "hnsw", "ivfpq")
STATE_FILE = "ann.json"
INDEX_FILE = "index.faiss"
REMOVED_FILE = "removed.npy"
FORMAT_VERSION = 1
# Vectors per float16 file: 2**20 rows of 512 values is 1 GiB. Smaller files let an update write only its own.
CHUNK_ROWS = 1 << 20
# OPQ training rounds (each trains a PQ and rotates the sample).
OPQ_ITERATIONS = 20
# Vectors added to faiss per call while building (bounds the float32 copy of a float16 or memory-mapped input).
ADD_BATCH = 65_536


class DamagedVectorsError(ValueError):
    """A float16 vector read for re-ranking does not match the checksum written with it: the file is damaged.
    `path` names it and `problem` says what is wrong; the caller turns them into its own damage error."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


def row_checksums(rows: np.ndarray) -> np.ndarray:
    """One uint64 per float16 row `(n, dim)`: the sum of its 16-bit values times fixed odd weights, modulo 2**64.

    Any change to one value changes the sum (an odd weight times a non-zero change below 2**16 is never a multiple
    of 2**64), so every flipped bit of a row is caught; a few hundred rows are checked in microseconds."""
    values = np.ascontiguousarray(rows, dtype=np.float16).view(np.uint16).astype(np.uint64)
    weights = np.random.default_rng(20240).integers(0, 2**62, values.shape[1], dtype=np.uint64) * np.uint64(2)
    return values @ (weights + np.uint64(1))


def _faiss():
    # Video search's optional dependency, imported when first used.
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "Video search needs faiss: pip install 'transformers-tempme[search]' (or pip install faiss-cpu)."
        ) from error
    return faiss


@dataclass(frozen=True)
class VectorIndexSettings:
    """How a vector index is built and searched (`to_dict` / `from_dict` for the manifest).

    Args:
        kind (`str`): `"flat"`, `"hnsw"` or `"ivfpq"` (see the module docstring).
        hnsw_m (`int`): HNSW links per vector (twice as many on the bottom layer).
        ef_construction (`int`): HNSW candidate list while inserting a vector.
        ef_search (`int`): HNSW candidate list while searching (raised to `k` when smaller).
        nlist (`int`): IVF cells (k-means centroids).
        pq_m (`int`): bytes per IVF-PQ code (sub-quantizers of 8 bits); divides the dimension.
        opq (`bool`): rotate the vectors with OPQ before the IVF-PQ (trained with it). Off by default: it makes
            the build several times longer, and re-ranking recovers what coarser codes miss; embeddings whose
            variance is very uneven across dimensions may gain from it (`benchmarks/search_scale.py --opq` measures
            the recall with it).
        nprobe (`int`): IVF cells scanned per query.
        rerank (`int`): IVF-PQ candidates per query re-scored exactly from the float16 vectors.
        train_size (`int`): vectors sampled (evenly at random) to train the IVF centroids, OPQ and PQ.
        compact_ratio (`float`): share of removed slots above which `needs_compaction` is true.
    """

    kind: str = "flat"
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    nlist: int = 4096
    pq_m: int = 64
    opq: bool = False
    nprobe: int = 64
    rerank: int = 200
    train_size: int = 200_000
    compact_ratio: float = 0.2

    def __post_init__(self):
        if self.kind not in ANN_KINDS:
            raise ValueError(f"Unknown vector index {self.kind!r}; choose one of {', '.join(ANN_KINDS)}.")
        for name in ("hnsw_m", "ef_construction", "ef_search", "nlist", "pq_m", "nprobe", "train_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}.")
        if self.rerank < 0 or not 0 < self.compact_ratio <= 1:
            raise ValueError(f"rerank must be >= 0 and compact_ratio in (0, 1], not {self.rerank}, {self.compact_ratio}.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "VectorIndexSettings":
        """Settings from `to_dict()` output; keys that are not settings (a file name, say) are ignored."""
        names = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})

    def builds_like(self, other: "VectorIndexSettings") -> bool:
        """Whether an index built with `other` is one built with these settings (the search-time ones may differ)."""
        search_time = ("ef_search", "nprobe", "rerank", "compact_ratio")
        return replace(self, **{name: getattr(other, name) for name in search_time}) == other

    def check_dim(self, dim: int) -> None:
        if self.kind == "ivfpq" and dim % self.pq_m:
            raise ValueError(f"pq_m={self.pq_m} must divide the embedding dimension {dim}.")


def estimated_bytes_per_vector(settings: VectorIndexSettings, num_vectors: int, dim: int) -> float:
    """RAM an index with `settings` holds per vector once loaded (what the faiss file stores, spread over the
    vectors; the memory-mapped float16 file of `ivfpq` is on disk and counts only where the page cache keeps it).

    - flat: the float32 vector and its id.
    - hnsw: the float32 vector and the links: `2 * M` on the bottom layer, `M` per upper layer with the upper
      layers holding 1/M of the vectors (4 bytes each), plus the level and offset per vector.
    - ivfpq: the code and its id, plus what all vectors share: the centroids, the PQ codebooks, the OPQ matrix,
      and the table of centroid-codeword products faiss precomputes to speed up the scan (`nlist * pq_m * 256`
      floats: 27 bytes per vector at 10M vectors and 4096 cells).
    """
    num_vectors = max(int(num_vectors), 1)
    if settings.kind == "flat":
        return 4 * dim + 8
    if settings.kind == "hnsw":
        links = 2 * settings.hnsw_m + settings.hnsw_m / (settings.hnsw_m - 1)
        return 4 * dim + 4 * links + 12
    shared = 4 * dim * settings.nlist + 4 * dim * 256 + (4 * dim * dim if settings.opq else 0)
    shared += 4 * settings.nlist * settings.pq_m * 256
    return settings.pq_m + 8 + shared / num_vectors


def settings_for(kind: str, num_vectors: int, dim: int = 512) -> VectorIndexSettings:
    """The settings of index `kind` for `num_vectors` vectors, chosen for a recall@10 of at least 0.95 against exact
    search on structured data (`benchmarks/search_scale.py` measures it, docs/search.md "Index kinds").

    - flat: nothing to choose.
    - hnsw: M=32, efConstruction=200, efSearch=256.
    - ivfpq: `nlist` the power of two nearest to `sqrt(n)` (lists of about sqrt(n) vectors), between 64 and 65536,
      and at most `n / 39` (the fewest training vectors per cell k-means is given); 64-byte codes (`pq_m=64`, 8
      values per byte at 512 dimensions); `nprobe` 2% of the cells, at least 16; 200 candidates re-ranked.
    """
    if kind == "flat":
        return VectorIndexSettings("flat")
    if kind == "hnsw":
        return VectorIndexSettings("hnsw", hnsw_m=32, ef_construction=200, ef_search=256)
    if kind != "ivfpq":
        raise ValueError(f"Unknown vector index {kind!r}; choose one of {', '.join(ANN_KINDS)}.")
    num_vectors = max(int(num_vectors), 1)
    nlist = 2 ** round(math.log2(math.sqrt(num_vectors)))
    nlist = int(min(max(nlist, 64), 65536, max(1, num_vectors // 39)))
    pq_m = max(m for m in (64, 32, 16, 8, 4, 2, 1) if dim % m == 0 and m <= max(dim // 8, 1))
    nprobe = min(nlist, max(16, round(0.02 * nlist)))
    train_size = min(num_vectors, max(64 * nlist, 65_536))
    return VectorIndexSettings("ivfpq", nlist=nlist, pq_m=pq_m, nprobe=nprobe, rerank=200, train_size=train_size)


# Flat search reads every vector per query, its time growing with the library: up to this many float32 values (250k
# segments of 512, 512 MB) a query's pass stays short, so an approximate index buys little below it
# (`benchmarks/search_latency.py` times exact search by size).
FLAT_MAX_VALUES = 128_000_000
# HNSW builds cost efConstruction distance computations per link and grow faster than linearly; above this many
# vectors IVF-PQ builds many times faster (`benchmarks/search_scale.py` reports both build times).
HNSW_MAX_VECTORS = 1_000_000


def choose_ann(num_segments: int, dim: int = 512, max_memory_bytes: float | None = None) -> VectorIndexSettings:
    """The index for `num_segments` vectors of `dim` values within `max_memory_bytes` of RAM (`None`: no limit).

    The rule, in order (`estimated_bytes_per_vector` for what fits):

    1. `flat` (exact) while a query's pass over every vector stays short (`num_segments * dim <= FLAT_MAX_VALUES`)
       and the vectors fit the budget;
    2. `hnsw` up to `HNSW_MAX_VECTORS` when its float32 vectors and links fit the budget (fastest queries, no
       training; its build time grows too fast beyond);
    3. `ivfpq` otherwise (`settings_for`), with shorter codes (`pq_m` 64, then 32, 16) if the 64-byte ones do not fit.

    Raises `ValueError` naming the memory needed when even 16-byte codes do not fit.
    """
    num_segments = max(int(num_segments), 0)
    budget = math.inf if max_memory_bytes is None else float(max_memory_bytes)

    def fits(settings: VectorIndexSettings) -> bool:
        return estimated_bytes_per_vector(settings, num_segments, dim) * num_segments <= budget

    flat = settings_for("flat", num_segments, dim)
    if num_segments * dim <= FLAT_MAX_VALUES and fits(flat):
        return flat
    hnsw = settings_for("hnsw", num_segments, dim)
    if num_segments <= HNSW_MAX_VECTORS and fits(hnsw):
        return hnsw
    ivfpq = settings_for("ivfpq", num_segments, dim)
    for pq_m in (ivfpq.pq_m, ivfpq.pq_m // 2, ivfpq.pq_m // 4):
        candidate = replace(ivfpq, pq_m=max(pq_m, 1))
        if dim % candidate.pq_m == 0 and fits(candidate):
            return candidate
    smallest = replace(ivfpq, pq_m=max(ivfpq.pq_m // 4, 1))
    needed = estimated_bytes_per_vector(smallest, num_segments, dim) * num_segments
    raise ValueError(f"{num_segments:,} segments need at least {needed / 2**20:,.0f} MiB of RAM for the vector index "
                     f"(IVF-PQ with {smallest.pq_m}-byte codes), more than the {budget / 2**20:,.0f} MiB allowed: "
                     "raise the memory limit.")


# ----------------------------------------------------------------------------------------------- vector files


class _VectorFiles:
    """Float16 vectors of consecutive slots, in `.npy` files of `CHUNK_ROWS` rows read through memory maps, then
    the vectors added since (in RAM until saved; with a `spill` folder, written there as each file fills, so that
    building from a memory map holds one file's worth at most)."""

    def __init__(self, dim: int, spill: Path | None = None):
        self.dim, self.spill = dim, spill
        self.files: list[tuple[Path, np.ndarray]] = []  # (path, memory map)
        self.checksums: list[np.ndarray] = []  # memory maps of the files' row checksums
        self.pending: list[np.ndarray] = []  # float16 arrays after the files

    @property
    def rows(self) -> int:
        return sum(len(array) for _, array in self.files) + sum(len(array) for array in self.pending)

    def append(self, vectors: np.ndarray) -> None:
        if len(vectors):
            self.pending.append(np.asarray(vectors, dtype=np.float16))
        if self.spill is not None and sum(len(array) for array in self.pending) >= CHUNK_ROWS:
            rows = np.concatenate(self.pending)
            full = len(rows) // CHUNK_ROWS * CHUNK_ROWS
            for start in range(0, full, CHUNK_ROWS):
                self._write(self.spill, rows[start : start + CHUNK_ROWS])
            self.pending = [rows[full:]] if len(rows) > full else []

    def append_file(self, path: Path) -> None:
        path = Path(path)
        vectors, checksums = np.load(path, mmap_mode="r"), np.load(checksum_path(path), mmap_mode="r")
        if vectors.shape != (len(checksums), self.dim) or checksums.dtype != np.uint64:
            raise ValueError(f"{path} holds {vectors.shape} vectors for {len(checksums)} checksums of {self.dim} values.")
        self.files.append((path, vectors))
        self.checksums.append(checksums)

    def _write(self, folder: Path, rows: np.ndarray) -> None:
        path = folder / f"vectors-{len(self.files):05d}.npy"
        if path.exists():
            raise FileExistsError(f"{path} exists: write a vector index into a new folder.")
        rows = np.ascontiguousarray(rows, dtype=np.float16)
        np.save(path, rows)
        np.save(checksum_path(path), row_checksums(rows))
        self.append_file(path)

    def gather(self, slots: np.ndarray) -> np.ndarray:
        """`(len(slots), dim)` float32 unit vectors of `slots` (read in slot order: each page of a file once)."""
        slots = np.asarray(slots, dtype=np.int64)
        arrays = [array for _, array in self.files] + self.pending
        starts = np.cumsum([0] + [len(array) for array in arrays])
        out = np.empty((len(slots), self.dim), dtype=np.float32)
        order = np.argsort(slots, kind="stable")
        chunk_of = np.searchsorted(starts, slots[order], side="right") - 1
        for chunk in np.unique(chunk_of):
            picked = order[chunk_of == chunk]
            rows = slots[picked] - starts[chunk]
            values = arrays[chunk][rows]
            if chunk < len(self.files):  # read from a file: checked (the vectors in RAM were never written)
                wrong = np.flatnonzero(row_checksums(values) != self.checksums[chunk][rows])
                if len(wrong):
                    path = self.files[chunk][0]
                    raise DamagedVectorsError(path, f"row {int(rows[wrong[0]])} does not match its checksum")
            out[picked] = values
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), np.float32(1e-12))
        return out

    def save(self, folder: Path) -> list[dict]:
        """Write the vectors into `folder`: the files hard-linked (copied where links fail), the vectors in RAM
        written as new files of at most `CHUNK_ROWS` rows, then read back through memory maps. Returns the file
        records (`file`, `rows`) in slot order."""
        saved, self.files, self.checksums = self.files, [], []
        for path, array in saved:
            target = folder / f"vectors-{len(self.files):05d}.npy"
            if path.resolve() != target.resolve():
                for source, destination in ((path, target), (checksum_path(path), checksum_path(target))):
                    try:
                        os.link(source, destination)
                    except OSError:
                        shutil.copyfile(source, destination)
            self.append_file(target)
        if self.pending:
            rows = np.concatenate(self.pending)
            self.pending = []
            for start in range(0, len(rows), CHUNK_ROWS):
                self._write(folder, rows[start : start + CHUNK_ROWS])
        return [{"file": path.name, "checksums": checksum_path(path).name, "rows": len(array)}
                for path, array in self.files]


def checksum_path(vectors_path: Path) -> Path:
    """The checksum file of a float16 vector file (`vectors-00003.npy`: `checksums-00003.npy`)."""
    return vectors_path.with_name(vectors_path.name.replace("vectors-", "checksums-", 1))


# ------------------------------------------------------------------------------------------------ the index


def _float32_rows(vectors: Any, start: int, stop: int) -> np.ndarray:
    return np.ascontiguousarray(vectors[start:stop], dtype=np.float32)


def _training_sample(vectors: Any, size: int, seed: int = 0) -> np.ndarray:
    """`size` rows drawn evenly at random (sorted, so that a memory map reads forward), as float32."""
    count = len(vectors)
    if size >= count:
        return _float32_rows(vectors, 0, count)
    rows = np.sort(np.random.default_rng(seed).choice(count, size=size, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def _new_faiss_index(settings: VectorIndexSettings, dim: int):
    faiss = _faiss()
    if settings.kind == "flat":
        return faiss.IndexIDMap(faiss.IndexFlatIP(dim))
    if settings.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.ef_construction
        return index
    # L2 on unit vectors ranks as the inner product does; k-means and the residual codes are made for L2.
    rotation = f"OPQ{settings.pq_m}," if settings.opq else ""
    index = faiss.index_factory(dim, f"{rotation}IVF{settings.nlist},PQ{settings.pq_m}", faiss.METRIC_L2)
    # Polysemous training reorders the codes for Hamming-distance filtering, which this index does not use; it
    # is on by default and costs more than the rest of the training.
    faiss.downcast_index(_ivf(index)).do_polysemous_training = False
    if settings.opq:  # 20 rounds instead of faiss' 50: the rotation trains 2.5 times faster
        faiss.downcast_VectorTransform(index.chain.at(0)).niter = OPQ_ITERATIONS
    return index


def _ivf(index):
    return _faiss().extract_index_ivf(index)


class AnnIndex:
    """A vector index over slots `0..slots-1` (see the module docstring): build, add, remove, search, save, load.

    Attributes:
        settings (`VectorIndexSettings`): how it is built and searched.
        dim (`int`): the embedding dimension.
        index: the faiss index (its ids are slots).
        slots (`int`): slots handed out so far (removed ones included).
        removed (`np.ndarray`): removed slots, sorted int64.
    """

    def __init__(self, settings: VectorIndexSettings, dim: int, index, vectors: _VectorFiles | None,
                 slots: int = 0, removed: np.ndarray | None = None):
        self.settings, self.dim, self.index, self.vectors = settings, dim, index, vectors
        self.slots = slots
        self.removed = np.zeros(0, np.int64) if removed is None else np.asarray(removed, np.int64)
        self._live_bitmap: np.ndarray | None = None
        self._selector_lock = threading.Lock()  # searches from several threads share one filter

    # ------------------------------------------------------------------------------------------------ building

    @classmethod
    def build(cls, vectors: Any, settings: VectorIndexSettings, *, folder: str | os.PathLike | None = None,
              trained: "AnnIndex | None" = None, progress: bool = False) -> "AnnIndex":
        """An index of `vectors` `(n, dim)` (float32 or float16; a memory map is read in batches), slot `i` =
        row `i`.

        `ivfpq` first trains (the IVF centroids, OPQ and the PQ codebooks) on `settings.train_size` rows drawn
        at random, then encodes every row; `flat` and `hnsw` need no training. `folder`: where `ivfpq` writes its
        float16 vector files as they fill (the folder it will be saved into; without one they stay in RAM until
        `save`). `trained`: an `ivfpq` index built like this one whose training is reused (a rebuild that keeps
        the centroids and codebooks, as `add` does); other kinds have no training and ignore it. `progress` shows
        a bar."""
        dim = int(vectors.shape[1])
        settings.check_dim(dim)
        if settings.kind != "ivfpq":
            faiss_index = _new_faiss_index(settings, dim)
        elif trained is not None:
            if not settings.builds_like(trained.settings) or trained.dim != dim:
                raise ValueError(f"The trained index was built with other settings ({trained.settings}, "
                                 f"dimension {trained.dim}).")
            faiss_index = _faiss().clone_index(trained.index)
            faiss_index.reset()
        else:
            if len(vectors) == 0:
                raise ValueError("An ivfpq index is trained on the vectors it indexes: build it from at least one.")
            sample = _training_sample(vectors, settings.train_size)
            if len(sample) < settings.nlist:
                raise ValueError(f"nlist={settings.nlist} cells need at least as many training vectors, "
                                 f"not {len(sample)}: choose a smaller nlist (choose_ann does).")
            faiss_index = _new_faiss_index(settings, dim)
            description = f"Training IVF-PQ ({settings.nlist} cells) on {len(sample):,} vectors"
            with tqdm(total=1, desc=description, disable=not progress, dynamic_ncols=True) as bar:
                faiss_index.train(sample)
                bar.update(1)
            del sample
        spill = None
        if folder is not None:
            spill = Path(folder)
            spill.mkdir(parents=True, exist_ok=True)
        ann = cls(settings, dim, faiss_index, _VectorFiles(dim, spill) if settings.kind == "ivfpq" else None)
        ann.add(vectors, progress=progress)
        return ann

    def add(self, vectors: Any, *, progress: bool = False) -> np.ndarray:
        """Add `vectors` `(n, dim)` without rebuilding (IVF lists or HNSW graph extended); returns their slots."""
        count = len(vectors)
        if count and vectors.shape[1] != self.dim:
            raise ValueError(f"Vectors of {vectors.shape[1]} values for an index of {self.dim}.")
        first = self.slots
        self._id_mapped_flat()
        description = {"flat": "Adding to the exact index", "hnsw": "Building the HNSW graph",
                       "ivfpq": "Encoding for IVF-PQ"}[self.settings.kind]
        with tqdm(total=count, unit="vector", desc=description, disable=not progress, dynamic_ncols=True) as bar:
            for start in range(0, count, ADD_BATCH):
                batch = _float32_rows(vectors, start, min(start + ADD_BATCH, count))
                ids = np.arange(self.slots, self.slots + len(batch), dtype=np.int64)
                if self.settings.kind == "hnsw":
                    self.index.add(batch)  # HNSW numbers its vectors in order: its ids are the slots
                else:
                    self.index.add_with_ids(batch, ids)
                if self.vectors is not None:
                    self.vectors.append(batch)
                self.slots += len(batch)
                bar.update(len(batch))
        self._live_bitmap = None
        return np.arange(first, self.slots, dtype=np.int64)

    def remove(self, slots: Any) -> int:
        """Remove the vectors of `slots` without rebuilding; returns how many were live."""
        slots = np.unique(np.asarray(slots, dtype=np.int64))
        if len(slots) and (slots[0] < 0 or slots[-1] >= self.slots):
            raise ValueError(f"Slots out of range: the index has slots 0 to {self.slots - 1}.")
        slots = np.setdiff1d(slots, self.removed, assume_unique=True)
        self._id_mapped_flat()
        if self.settings.kind != "hnsw" and len(slots):
            self.index.remove_ids(_faiss().IDSelectorBatch(slots))
        self.removed = np.union1d(self.removed, slots)
        self._live_bitmap = None
        return len(slots)

    def _id_mapped_flat(self) -> None:
        """Give a bare flat index (one read from a single `.faiss` file, slot = position) the id map that adding,
        removing and renumbering need; other indexes are left as they are."""
        faiss = _faiss()
        if self.settings.kind != "flat" or isinstance(self.index, faiss.IndexIDMap):
            return
        mapped = _new_faiss_index(self.settings, self.dim)
        if self.index.ntotal:
            mapped.add_with_ids(self.index.reconstruct_n(0, self.index.ntotal),
                                np.arange(self.index.ntotal, dtype=np.int64))
        self.index = mapped

    @property
    def live(self) -> int:
        """Vectors searchable now."""
        return self.slots - len(self.removed)

    @property
    def needs_compaction(self) -> bool:
        return self.slots > 0 and len(self.removed) / self.slots > self.settings.compact_ratio

    def compact(self, *, folder: str | os.PathLike | None = None, progress: bool = False) -> np.ndarray:
        """Renumber the live vectors densely, in slot order; returns `old_to_new` (`(slots,)` int64, -1 for
        removed slots). `ivfpq` and `flat` rewrite the ids in place (and `ivfpq` its float16 vectors: into `folder`
        as `build` does, else in RAM until saved); `hnsw` rebuilds its graph from the live vectors."""
        old_to_new = np.full(self.slots, -1, dtype=np.int64)
        keep = np.setdiff1d(np.arange(self.slots, dtype=np.int64), self.removed, assume_unique=True)
        old_to_new[keep] = np.arange(len(keep), dtype=np.int64)
        kind = self.settings.kind
        if kind == "hnsw":
            vectors = self.index.reconstruct_n(0, self.index.ntotal)[keep]
            rebuilt = AnnIndex.build(vectors, self.settings, progress=progress)
            self.index = rebuilt.index
        elif kind == "flat":
            self._id_mapped_flat()
            id_map = _faiss().vector_to_array(self.index.id_map)
            _faiss().copy_array_to_vector(old_to_new[id_map], self.index.id_map)
        else:
            _renumber_inverted_lists(_ivf(self.index), old_to_new)
            vectors = _VectorFiles(self.dim, Path(folder) if folder is not None else None)
            for start in range(0, len(keep), CHUNK_ROWS):
                vectors.append(self.vectors.gather(keep[start : start + CHUNK_ROWS]))
            self.vectors = vectors
        self.slots, self.removed, self._live_bitmap = len(keep), np.zeros(0, np.int64), None
        return old_to_new

    # ----------------------------------------------------------------------------------------------- searching

    def search(self, queries: np.ndarray, k: int, *, ef_search: int | None = None, nprobe: int | None = None,
               rerank: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Cosine scores and slots of the `k` best vectors per query, both `(queries, k)`, best first.

        `queries` `(q, dim)` (or `(dim,)`) are normalised here. Fewer than `k` hits are padded with slot -1 and
        score -inf. `ivfpq` scores are exact cosines of the re-ranked candidates (`rerank=0`: estimates from the
        codes). `ef_search`, `nprobe`, `rerank` replace the settings' for this call only: they travel to faiss as
        search parameters, never written into the shared index, so that threads may search at once with their own.

        Raises `DamagedVectorsError` when a re-ranked float16 vector does not match its checksum (damaged bytes)."""
        ef_search = self.settings.ef_search if ef_search is None else int(ef_search)
        nprobe = self.settings.nprobe if nprobe is None else int(nprobe)
        rerank = self.settings.rerank if rerank is None else int(rerank)
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        queries = np.ascontiguousarray(queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12))
        k = int(k)
        if k <= 0 or self.live == 0:
            return np.zeros((len(queries), max(k, 0)), np.float32), np.full((len(queries), max(k, 0)), -1, np.int64)
        faiss = _faiss()
        kind = self.settings.kind
        if kind == "flat":
            scores, slots = self.index.search(queries, min(k, self.live))
        elif kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(ef_search, k))
            if len(self.removed):
                params.sel = self._live_selector()
            scores, slots = self.index.search(queries, min(k, self.live), params=params)
        else:
            candidates = max(k, rerank)
            ivf_params = faiss.SearchParametersIVF(nprobe=min(nprobe, self.settings.nlist))
            params = faiss.SearchParametersPreTransform(index_params=ivf_params) if self.settings.opq else ivf_params
            distances, slots = self.index.search(queries, min(candidates, self.live), params=params)
            if rerank:
                scores, slots = self._rerank(queries, slots, k)
            else:
                scores = np.where(slots >= 0, 1 - distances / 2, -np.inf).astype(np.float32)  # |q - x|^2 = 2 - 2 q.x
        return _pad(scores, slots, k)

    def _rerank(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact cosines of the candidate slots (`-1`: none) from the float16 vectors; the best `k` per query."""
        unique, position = np.unique(candidates[candidates >= 0], return_inverse=True)
        rows = self.vectors.gather(unique)
        scores = np.full(candidates.shape, -np.inf, dtype=np.float32)
        index = np.full(candidates.shape, -1, dtype=np.int64)
        index[candidates >= 0] = position
        for query in range(len(queries)):
            valid = index[query] >= 0
            scores[query, valid] = rows[index[query, valid]] @ queries[query]
        np.clip(scores, -1.0, 1.0, out=scores)
        best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, best, 1), np.take_along_axis(candidates, best, 1)

    def _live_selector(self):
        """An HNSW search filter that passes the slots not removed (a bitmap, kept alive with the selector)."""
        with self._selector_lock:
            if self._live_bitmap is None:
                live = np.ones(self.slots, dtype=bool)
                live[self.removed] = False
                bitmap = np.packbits(live, bitorder="little")
                self._selector = _faiss().IDSelectorBitmap(self.slots, _faiss().swig_ptr(bitmap))
                self._live_bitmap = bitmap
            return self._selector

    # ------------------------------------------------------------------------------------------- slots and rows

    def live_slots(self) -> np.ndarray:
        """The slots not removed, ascending `(live,)` int64."""
        return np.setdiff1d(np.arange(self.slots, dtype=np.int64), self.removed, assume_unique=True)

    def rank_of(self, slots: np.ndarray) -> np.ndarray:
        """The position of each live slot among the live slots in ascending order (-1 stays -1): a caller that keeps
        one row per live slot, in slot order, reads its row numbers here (no table: a binary search in `removed`)."""
        slots = np.asarray(slots, dtype=np.int64)
        if not len(self.removed):
            return slots
        return np.where(slots >= 0, slots - np.searchsorted(self.removed, slots), -1)

    # ---------------------------------------------------------------------------------------------------- files

    def save(self, folder: str | os.PathLike) -> list[str]:
        """Write the index into `folder` (created; it must hold no index yet); returns the names of the files.

        Float16 vector files already on disk are hard-linked from where they are (copied where the file system
        cannot link), so that saving after an update writes only the new vectors."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / STATE_FILE).exists():
            raise FileExistsError(f"{folder} already holds a vector index; save into a new folder.")
        self._id_mapped_flat()  # the folder format's flat index maps ids to slots
        _faiss().write_index(self.index, str(folder / INDEX_FILE))
        names = [INDEX_FILE]
        if len(self.removed):
            np.save(folder / REMOVED_FILE, self.removed)
            names.append(REMOVED_FILE)
        records = self.vectors.save(folder) if self.vectors is not None else []
        names += [name for record in records for name in (record["file"], record["checksums"])]
        state = {"format_version": FORMAT_VERSION, "settings": self.settings.to_dict(), "dim": self.dim,
                 "slots": self.slots, "removed": len(self.removed), "vector_files": records}
        (folder / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        return [*names, STATE_FILE]

    @classmethod
    def from_faiss_file(cls, path: str | os.PathLike, settings: VectorIndexSettings) -> "AnnIndex":
        """An index over a bare faiss `IndexFlatIP` or `IndexHNSWFlat` file whose vector `i` is slot `i` (the single
        `.faiss` file of video indexes written before the folder format). faiss' `RuntimeError` when it cannot read
        it."""
        if settings.kind not in ("flat", "hnsw"):
            raise ValueError(f"A single faiss file holds a flat or hnsw index, not {settings.kind!r}.")
        index = _faiss().read_index(str(path))
        # A bare flat index answers with positions, which are its slots until something changes: it is searched as
        # it is, and given an id map (a copy of every vector) only by the first change (`_id_mapped_flat`).
        return cls(settings, index.d, index, None, int(index.ntotal))

    @classmethod
    def load(cls, folder: str | os.PathLike, settings: VectorIndexSettings | None = None) -> "AnnIndex":
        """The index saved in `folder`; `settings` may change the search-time ones (`nprobe`, `ef_search`,
        `rerank`, `compact_ratio`) but not how it was built."""
        folder = Path(folder)
        state = json.loads((folder / STATE_FILE).read_text())
        if state.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{folder / STATE_FILE} has format {state.get('format_version')}, not {FORMAT_VERSION}.")
        saved = VectorIndexSettings.from_dict(state["settings"])
        if settings is not None and not settings.builds_like(saved):
            raise ValueError(f"The index in {folder} was built with other settings ({saved}); rebuild it.")
        settings = settings or saved
        index = _faiss().read_index(str(folder / INDEX_FILE))
        removed = np.load(folder / REMOVED_FILE) if state["removed"] else None
        vectors = None
        if settings.kind == "ivfpq":
            vectors = _VectorFiles(state["dim"])
            for record in state["vector_files"]:
                vectors.append_file(folder / record["file"])
            if vectors.rows != state["slots"]:
                raise ValueError(f"{folder} holds {vectors.rows} float16 vectors for {state['slots']} slots.")
        ann = cls(settings, state["dim"], index, vectors, state["slots"], removed)
        if ann.live != index.ntotal and settings.kind != "hnsw":
            raise ValueError(f"{folder / INDEX_FILE} holds {index.ntotal} vectors where {ann.live} are live.")
        return ann


def _pad(scores: np.ndarray, slots: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and slots widened to `k` columns (slot -1, score -inf), missing hits (faiss' -1) marked alike."""
    scores = np.where(slots >= 0, scores, -np.inf).astype(np.float32)
    if slots.shape[1] < k:
        extra = k - slots.shape[1]
        scores = np.pad(scores, ((0, 0), (0, extra)), constant_values=-np.inf)
        slots = np.pad(slots, ((0, 0), (0, extra)), constant_values=-1)
    return scores, slots.astype(np.int64)


def _renumber_inverted_lists(ivf, old_to_new: np.ndarray) -> None:
    """Rewrite the ids of every IVF list through `old_to_new` (codes unchanged: no re-encoding)."""
    faiss = _faiss()
    lists = ivf.invlists
    for number in range(lists.nlist):
        size = lists.list_size(number)
        if size == 0:
            continue
        new_ids = np.ascontiguousarray(old_to_new[faiss.rev_swig_ptr(lists.get_ids(number), size)])
        codes = faiss.rev_swig_ptr(lists.get_codes(number), size * lists.code_size).copy()
        # swig_ptr does not keep its array alive: both are held by names until the call returns
        lists.update_entries(number, 0, size, faiss.swig_ptr(new_ids), faiss.swig_ptr(codes))


__all__ = [
    "ANN_KINDS",
    "DamagedVectorsError",
    "FLAT_MAX_VALUES",
    "HNSW_MAX_VECTORS",
    "checksum_path",
    "choose_ann",
    "row_checksums",
    "AnnIndex",
    "VectorIndexSettings",
    "estimated_bytes_per_vector",
    "settings_for",
]
