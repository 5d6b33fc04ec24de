"""Vector search at 100k to 10M segments: build time, disk, resident memory, latency and recall@10 of each index kind.

For every size and data set, vectors of 512 values (ViT-B/32's projection size) are generated straight into a
float16 `.npy` file in chunks (10M segments: 10 GB on disk, a few hundred MB of RAM), and the exact top-10 of every
query is found by a chunked matrix product over that file. Then each index kind of
`transformers_tempme.search.ann` is built with the settings `settings_for(kind, segments)` picks, as an update
would leave it: built on the first 99% of the rows, then the last 1% added to it (`add`, no rebuild: the time of
that step is reported beside the whole build's), and saved. A fresh process loads the saved index and measures:

- resident memory per segment: the rise of the process's anonymous memory (`RssAnon` in /proc/self/status) while
  loading, divided by the segments (the faiss index and its ids; the float16 vectors of `ivfpq` are memory-mapped,
  not read). Beside it, the file-backed pages (`RssFile`) the queries touched in the float16 vectors: page cache
  the kernel may evict, which grows with the number of distinct queries up to the file's size;
- vector-search latency: `AnnIndex.search(query, k=10)` one query at a time (text encoding not included), p50
  and p95 over the queries;
- recall@10: the share of the exact top-10 found, averaged over the queries;
- removing 1% of the segments (`remove`, no rebuild): its time, and that no removed segment is returned after.

Data (`--data`):

- `structured`: `StructuredLibrary`, whose rows have the structure of a real index (neighbouring windows of one
  video nearly identical, videos clustered by topic, topics of very different sizes; see its docstring). Two query
  sets: `text` (queries shaped like text embeddings: far from every stored vector, cosine about 0.4 to the segment
  they describe) and `clip` (queries shaped like `search_like` clips: cosine about 0.95 to a stored segment).
- `random`: rows and queries uniform on the sphere. Every vector is about as far from every other one, so the
  exact top-10 are barely closer than the next thousand: the hardest case for any approximate index, and not what
  real embeddings look like.

Latency depends on the machine and its load: the load average is recorded before and after every measurement,
with the CPU flags. Recall, memory and disk size do not depend on the load.

    python benchmarks/search_scale.py --sizes 100000,1000000 --data structured,random
    python benchmarks/search_scale.py --sizes 10000000 --data structured --kinds ivfpq --work-dir /data/scale
    python benchmarks/search_scale.py --sizes 20000 --queries 50 --kinds flat,ivfpq   # a smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

DIM = 512
CHUNK = 131_072  # rows generated, or scanned for the exact top-k, at a time
K = 10
VIDEO_BLOCK = 2048  # videos generated per random stream: the rows do not depend on CHUNK


def _unit_rows(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    rows = rng.standard_normal((count, dim), dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


class StructuredLibrary:
    """Segment embeddings with the structure of a real video index, generated video by video.

    Every row is a unit vector `normalise(a * cone + b * topic + c * video + d * walk)` of four random unit
    directions (in 512 dimensions random directions are nearly orthogonal):

    - `cone`, shared by all rows: CLIP embeddings of one modality sit in a narrow cone, so that unrelated segments
      still have a cosine of about 0.25 (`a^2 = 0.25`);
    - `topic`, shared by the videos of one topic (`b^2 = 0.20`; segments of two videos on one topic: cosine about
      0.45). There are `segments / 5000` topics, at least 8, of Zipf-like popularity (weight `1 / rank^0.8`): a few
      topics hold many videos, most hold few, as in a real library;
    - `video`, shared by the windows of one video (`c^2 = 0.25`; two windows far apart in one video: about 0.7).
      Videos hold a log-normal number of windows: median 18, mean about 30, from 1 to 360 (10-second windows of
      clips from seconds to an hour);
    - `walk`, an AR(1) random walk along the video (`d^2 = 0.30`, correlation 0.8 from one window to the next):
      neighbouring windows of one video are near-duplicates (cosine about 0.94), drifting apart along the video.

    `blocks()` yields the rows block by block (`VIDEO_BLOCK` videos from their own random stream, so that a library
    is the start of a longer one with as many topics), `write(path)` streams them into a float16 `.npy` file.
    Queries: `text_queries` mimic text embeddings (a fixed offset direction for the modality gap, plus the content
    of a random target segment, plus noise: cosine about 0.4 to the target and near 0 to most rows),
    `clip_queries` mimic `search_like` clips (a random target segment plus a little noise: cosine about 0.95).
    """

    CONE, TOPIC, VIDEO, WALK = 0.25, 0.20, 0.25, 0.30
    CORRELATION = 0.8
    SEGMENTS_PER_TOPIC = 5000

    def __init__(self, count: int, dim: int = DIM, seed: int = 0):
        self.count, self.dim, self.seed = int(count), dim, seed
        rng = np.random.default_rng([seed, 0])
        self.cone = _unit_rows(rng, 1, dim)[0]
        self.text_offset = _unit_rows(rng, 1, dim)[0]
        self.num_topics = max(8, self.count // self.SEGMENTS_PER_TOPIC)
        self.topics = _unit_rows(rng, self.num_topics, dim)
        popularity = 1.0 / np.arange(1, self.num_topics + 1) ** 0.8
        self.topic_weights = popularity / popularity.sum()

    def _block(self, block: int, rows: int) -> np.ndarray:
        """The first `rows` rows of block `block` of `VIDEO_BLOCK` videos, float32. The videos' lengths, topics and
        directions are drawn for the whole block first, so that fewer rows are a prefix of more."""
        rng = np.random.default_rng([self.seed, 1, block])
        lengths = np.clip(np.rint(rng.lognormal(np.log(18.0), 1.0, VIDEO_BLOCK)), 1, 360).astype(np.int64)
        topic = rng.choice(self.num_topics, size=VIDEO_BLOCK, p=self.topic_weights)
        video = _unit_rows(rng, VIDEO_BLOCK, self.dim)
        owner = np.repeat(np.arange(VIDEO_BLOCK), lengths)[:rows]
        position = (np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths))[:rows]
        walk = rng.standard_normal((len(owner), self.dim), dtype=np.float32) / np.float32(np.sqrt(self.dim))
        # AR(1) along each video, all videos at once: window t of every video from window t - 1 (the row before)
        order = np.argsort(position, kind="stable")
        bounds = np.searchsorted(position[order], np.arange(int(position.max()) + 2))
        keep, fresh = np.float32(self.CORRELATION), np.float32(np.sqrt(1 - self.CORRELATION**2))
        for t in range(1, int(position.max()) + 1):
            at = order[bounds[t] : bounds[t + 1]]
            walk[at] = keep * walk[at - 1] + fresh * walk[at]
        weight = {name: np.float32(np.sqrt(getattr(self, name))) for name in ("CONE", "TOPIC", "VIDEO", "WALK")}
        out = weight["WALK"] * walk
        out += weight["VIDEO"] * video[owner]
        out += weight["TOPIC"] * self.topics[topic[owner]]
        out += weight["CONE"] * self.cone
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    def blocks(self):
        """`(first_row, rows)` of every block of videos, in order; the last video is cut at `count` rows."""
        first, block = 0, 0
        while first < self.count:
            rows = self._block(block, self.count - first)
            yield first, rows
            first += len(rows)
            block += 1

    def write(self, path: str | os.PathLike) -> np.ndarray:
        """All rows into a float16 `.npy` file at `path`; returns it memory-mapped (read-only)."""
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(self.count, self.dim))
        for first, rows in self.blocks():
            out[first : first + len(rows)] = rows
        out.flush()
        del out
        return np.load(path, mmap_mode="r")

    def text_queries(self, vectors: np.ndarray, count: int, seed: int = 1) -> np.ndarray:
        """`count` text-like queries about random rows of `vectors` (see the class docstring)."""
        rng = np.random.default_rng([self.seed, 3, seed])
        target = _rows_at(vectors, rng.integers(len(vectors), size=count))
        content = target - (target @ self.cone)[:, None] * self.cone
        content /= np.linalg.norm(content, axis=1, keepdims=True)
        queries = 0.6 * self.text_offset + 0.5 * content + 0.62 * _unit_rows(rng, count, self.dim)
        return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)

    def clip_queries(self, vectors: np.ndarray, count: int, seed: int = 2) -> np.ndarray:
        """`count` clip-like queries near random rows of `vectors` (see the class docstring)."""
        rng = np.random.default_rng([self.seed, 4, seed])
        queries = _rows_at(vectors, rng.integers(len(vectors), size=count)) + 0.3 * _unit_rows(rng, count, self.dim)
        return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def _rows_at(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    order = np.argsort(rows)
    out = np.empty((len(rows), vectors.shape[1]), np.float32)
    out[order] = vectors[rows[order]]
    return out


def write_random(path: str | os.PathLike, count: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """`count` unit vectors uniform on the sphere into a float16 `.npy` file; returns it memory-mapped."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(count, dim))
    for first in range(0, count, CHUNK):
        rng = np.random.default_rng([seed, 5, first // CHUNK])
        out[first : first + CHUNK] = _unit_rows(rng, min(CHUNK, count - first), dim)
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


def random_queries(count: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return _unit_rows(np.random.default_rng([seed, 6]), count, dim)


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """Scores and rows of the exact top-`k` of every query, `(queries, k)` each, by a chunked matrix product over
    `vectors` (a memory map is read `CHUNK` rows at a time)."""
    best_scores = np.full((len(queries), k), -np.inf, np.float32)
    best_rows = np.full((len(queries), k), -1, np.int64)
    for first in range(0, len(vectors), CHUNK):
        scores = queries @ np.asarray(vectors[first : first + CHUNK], dtype=np.float32).T
        top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], axis=1)
        merged_rows = np.concatenate([best_rows, top + first], axis=1)
        keep = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
        best_scores, best_rows = np.take_along_axis(merged_scores, keep, 1), np.take_along_axis(merged_rows, keep, 1)
    return best_scores, best_rows


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top-k among its found top-k."""
    return float(np.mean([len(set(a[a >= 0].tolist()) & set(b.tolist())) / len(b) for a, b in zip(found, exact)]))


# ------------------------------------------------------------------------------------- measuring a saved index


def _memory() -> dict:
    """RssAnon and RssFile of this process, in bytes (Linux; zeros elsewhere)."""
    values = {"RssAnon": 0, "RssFile": 0}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in values:
                    values[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return values


def search_variants(settings: dict, sweep: bool) -> list[dict]:
    """The search-time settings measured on one build: the chosen ones, and with `sweep` their neighbours (half and
    twice `nprobe` and `rerank` for IVF-PQ, half to four times `ef_search` for HNSW)."""
    kind, variants = settings["kind"], [{}]
    if sweep and kind == "ivfpq":
        nprobe, rerank = settings["nprobe"], settings["rerank"]
        variants += [{"nprobe": max(1, nprobe // 2)}, {"nprobe": 2 * nprobe}, {"rerank": max(10, rerank // 2)},
                     {"rerank": 2 * rerank}, {"nprobe": 2 * nprobe, "rerank": 2 * rerank}]
    elif sweep and kind == "hnsw":
        ef = settings["ef_search"]
        variants += [{"ef_search": max(16, ef // 2)}, {"ef_search": 2 * ef}, {"ef_search": 4 * ef}]
    return variants


def measure_saved(folder: Path, queries_file: Path, truth_file: Path, threads: int | None, sweep: bool) -> dict:
    """Load the index saved in `folder` and measure memory, latency and recall (for each of `search_variants`),
    and removal. Runs in a fresh process: see the module docstring."""
    import faiss

    from transformers_tempme.search.ann import AnnIndex

    if threads:
        faiss.omp_set_num_threads(threads)
    query_sets = dict(np.load(queries_file))
    truths = dict(np.load(truth_file))
    gc.collect()
    before = _memory()
    start = time.perf_counter()
    index = AnnIndex.load(folder)
    load_seconds = time.perf_counter() - start
    loaded = _memory()
    result = {"load_seconds": load_seconds, "segments": index.live,
              "resident_bytes_per_segment": (loaded["RssAnon"] - before["RssAnon"]) / index.live,
              "load_average_before": list(os.getloadavg()), "searches": []}
    built = index.settings
    for changes in search_variants(built.to_dict(), sweep):
        index.settings = replace(built, **changes)
        measured = {"changes": changes, "queries": {}}
        for name, queries in query_sets.items():
            index.search(queries[:5], K)  # warm-up
            seconds = []
            for query in queries:
                start = time.perf_counter()
                index.search(query, K)
                seconds.append(time.perf_counter() - start)
            _, found = index.search(queries, K)
            ms = np.asarray(seconds) * 1000
            measured["queries"][name] = {"count": len(queries), "recall_at_10": recall_at_k(found, truths[name]),
                                         "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}
        result["searches"].append(measured)
    index.settings = built
    result["touched_file_bytes_per_segment"] = (_memory()["RssFile"] - loaded["RssFile"]) / index.live
    result["load_average_after"] = list(os.getloadavg())
    # removing 1% of the segments (whole videos in a real update: here a contiguous run of rows)
    removed = np.arange(index.slots // 2, index.slots // 2 + max(1, index.slots // 100))
    start = time.perf_counter()
    index.remove(removed)
    result["remove_1pct_seconds"] = time.perf_counter() - start
    _, found = index.search(np.concatenate(list(query_sets.values())), K)
    result["removed_returned"] = int(np.isin(found, removed).sum())
    return result


# -------------------------------------------------------------------------------------------- the benchmark


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file())


def benchmark_kind(kind: str, vectors: np.ndarray, work: Path, queries_file: Path, truth_file: Path,
                   args) -> dict:
    """Build (99% then add 1%), save, and measure one index kind in a fresh process."""
    from transformers_tempme.search.ann import AnnIndex, settings_for

    count = len(vectors)
    settings = settings_for(kind, count, vectors.shape[1])
    if kind == "ivfpq" and args.opq:
        settings = replace(settings, opq=True)
    folder = work / f"{kind}-{count}"
    shutil.rmtree(folder, ignore_errors=True)
    first = count - max(1, count // 100)
    result = {"kind": kind, "settings": settings.to_dict(), "load_average_before": list(os.getloadavg())}
    start = time.perf_counter()
    index = AnnIndex.build(vectors[:first], settings, folder=folder, progress=not args.quiet)
    result["build_99pct_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    index.add(vectors[first:])
    result["add_1pct_seconds"] = time.perf_counter() - start
    result["build_seconds"] = result["build_99pct_seconds"] + result["add_1pct_seconds"]
    start = time.perf_counter()
    index.save(folder)
    result["save_seconds"] = time.perf_counter() - start
    result["disk_bytes_per_segment"] = folder_bytes(folder) / count
    del index
    gc.collect()
    command = [sys.executable, __file__, "--measure", str(folder), str(queries_file), str(truth_file)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.sweep:
        command.append("--sweep")
    measured = subprocess.run(command, check=True, capture_output=True, text=True)
    result.update(json.loads(measured.stdout.strip().splitlines()[-1]))
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def skip_reason(kind: str, count: int, args) -> str | None:
    from transformers_tempme.search.ann import estimated_bytes_per_vector, settings_for

    needed = estimated_bytes_per_vector(settings_for(kind, count, DIM), count, DIM) * count
    if needed > args.max_memory:
        return f"needs about {needed / 2**30:.1f} GiB of RAM (over --max-memory {args.max_memory / 2**30:.1f} GiB)"
    if kind == "hnsw" and count > args.hnsw_max:
        return f"HNSW builds over {args.hnsw_max:,} segments are skipped (--hnsw-max): they take hours on few cores"
    return None


def prepare_data(data: str, count: int, queries: int, work: Path) -> tuple[np.ndarray, Path, Path, dict]:
    """The vectors (memory-mapped), query and exact top-10 files of one data set, generated in `work`, or reused
    from an earlier run that kept them (`--keep`) with as many queries; and the seconds each step took."""
    path = work / f"{data}-{count}.npy"
    queries_file, truth_file = work / f"{data}-{count}-queries.npz", work / f"{data}-{count}-truth.npz"
    if path.exists() and queries_file.exists() and truth_file.exists():
        vectors = np.load(path, mmap_mode="r")
        with np.load(queries_file) as stored:
            if vectors.shape == (count, DIM) and all(len(stored[name]) == queries for name in stored.files):
                return vectors, queries_file, truth_file, {"reused": str(work)}
    timings = {}
    start = time.perf_counter()
    if data == "structured":
        library = StructuredLibrary(count)
        vectors = library.write(path)
        query_sets = {"text": library.text_queries(vectors, queries), "clip": library.clip_queries(vectors, queries)}
    else:
        vectors = write_random(path, count)
        query_sets = {"random": random_queries(queries)}
    timings["generate_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    everything = exact_top_k(vectors, np.concatenate(list(query_sets.values())))[1]  # one pass over the file
    truths = dict(zip(query_sets, np.split(everything, len(query_sets))))
    timings["exact_top_k_seconds"] = time.perf_counter() - start
    np.savez(truth_file, **truths)
    np.savez(queries_file, **query_sets)
    return vectors, queries_file, truth_file, timings


def benchmark_data(data: str, count: int, args, work: Path) -> dict:
    from transformers_tempme.search.ann import ANN_KINDS

    vectors, queries_file, truth_file, timings = prepare_data(data, count, args.queries, work)
    result = {"data": data, "segments": count, **timings, "kinds": []}
    for kind in [kind for kind in args.kinds.split(",") if kind in ANN_KINDS]:
        reason = skip_reason(kind, count, args)
        if reason:
            result["kinds"].append({"kind": kind, "skipped": reason})
            print(f"  {kind}: skipped, {reason}", flush=True)
            continue
        print(f"  {kind} ...", flush=True)
        result["kinds"].append(benchmark_kind(kind, vectors, work, queries_file, truth_file, args))
        print(markdown_rows([{**result, "kinds": result["kinds"][-1:]}]), flush=True)
    del vectors
    if not args.keep:
        for leftover in (work / f"{data}-{count}.npy", queries_file, truth_file):
            leftover.unlink(missing_ok=True)
    return result


def _shown(settings: dict) -> str:
    if settings["kind"] == "hnsw":
        return f"M={settings['hnsw_m']} efC={settings['ef_construction']} ef={settings['ef_search']}"
    if settings["kind"] == "ivfpq":
        return (f"{'OPQ, ' if settings['opq'] else ''}nlist={settings['nlist']} m={settings['pq_m']} "
                f"nprobe={settings['nprobe']} rerank={settings['rerank']}")
    return "exact"


def markdown_rows(results: list[dict]) -> str:
    lines = []
    for data in results:
        for kind in data["kinds"]:
            label = f"| {data['data']} | {data['segments']:,} | {kind['kind']} |"
            if "skipped" in kind:
                lines.append(f"{label} skipped: {kind['skipped']} |" + " |" * 11)
                continue
            for search in kind["searches"]:
                shown = _shown({**kind["settings"], **search["changes"]})
                for name, query in search["queries"].items():
                    lines.append(
                        f"{label} {shown} | {name} | {query['recall_at_10']:.3f} | {query['p50_ms']:.2f} | "
                        f"{query['p95_ms']:.2f} | {kind['resident_bytes_per_segment']:.0f} | "
                        f"{kind['touched_file_bytes_per_segment']:.0f} | {kind['disk_bytes_per_segment']:.0f} | "
                        f"{kind['build_seconds']:.0f} | {kind['add_1pct_seconds']:.1f} | "
                        f"{kind['remove_1pct_seconds']:.2f} | {kind['load_average_before'][0]:.1f} → "
                        f"{kind['load_average_after'][0]:.1f} |")
    return "\n".join(lines)


def markdown(record: dict) -> str:
    header = ("| data | segments | kind | settings | queries | recall@10 | p50 ms | p95 ms | resident B/segment | "
              "touched float16 B/segment | disk B/segment | build s | add 1% s | remove 1% s | load |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    machine = record["machine"]
    return "\n".join([
        f"Command: `{record['command']}`",
        "",
        f"CPU: {machine.get('cpu')} ({machine.get('cpu_count')} cores; flags {', '.join(record['cpu_features']['flags'])});"
        f" {machine.get('faiss', 'faiss ?')}; latency over {record['queries']} single queries, vector search only.",
        "",
        header,
        markdown_rows(record["results"]),
    ])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="segments, comma-separated")
    parser.add_argument("--data", default="structured,random", help="structured and/or random, comma-separated")
    parser.add_argument("--kinds", default="flat,hnsw,ivfpq", help="index kinds, comma-separated")
    parser.add_argument("--queries", type=int, default=500, help="queries per query set")
    parser.add_argument("--threads", type=int, default=None, help="faiss threads (default: all cores)")
    parser.add_argument("--max-memory", type=float, default=0.5, help="skip kinds needing more RAM than this "
                        "share of the machine's memory (a value above 1 is bytes)")
    parser.add_argument("--hnsw-max", type=int, default=2_000_000, help="skip HNSW above this many segments")
    parser.add_argument("--work-dir", default=None, help="where the vectors and indexes go (default: a temporary "
                        "folder; 10M segments need about 11 GB)")
    parser.add_argument("--sweep", action="store_true", help="also measure neighbouring search-time settings "
                        "(nprobe, rerank, efSearch) on the same build")
    parser.add_argument("--opq", action="store_true", help="IVF-PQ with an OPQ rotation (default: as settings_for)")
    parser.add_argument("--keep", action="store_true", help="keep the generated vectors, queries, exact top-10 and "
                        "indexes in --work-dir (a later run with the same sizes and queries reuses the data)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--output", default="outputs/search_scale.json")
    parser.add_argument("--markdown", default="outputs/search_scale.md")
    parser.add_argument("--measure", nargs=3, metavar=("FOLDER", "QUERIES", "TRUTH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.max_memory <= 1:
        args.max_memory *= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.measure:
        print(json.dumps(measure_saved(*map(Path, args.measure), args.threads, args.sweep)))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from search_machine import machine

    from transformers_tempme.inference.cpu_features import cpu_features

    if args.threads:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    record = {"command": "python benchmarks/search_scale.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": machine(), "cpu_features": cpu_features(), "queries": args.queries, "results": []}
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="search_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    for count in [int(value) for value in args.sizes.split(",")]:
        for data in args.data.split(","):
            print(f"{data}, {count:,} segments ...", flush=True)
            record["results"].append(benchmark_data(data, count, args, work))
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(record, indent=2) + "\n")  # what is done so far
    record["machine"]["load_average_end"] = list(os.getloadavg())
    for path, text in ((args.output, json.dumps(record, indent=2)), (args.markdown, markdown(record))):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
    print("\n" + markdown(record))
    print(f"\nWrote {args.output} and {args.markdown}")
    if not args.work_dir and not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
