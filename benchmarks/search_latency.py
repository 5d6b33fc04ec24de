"""Query latency of video search at 10k, 100k and 1M stored segments: exact and HNSW, with HNSW recall@10.

For each size, an index folder is written with the library's own storage code (`segment_table`, `write_shard`,
`save_vector_index`): random unit vectors stand in for segment embeddings (512 values, ViT-B/32's projection
size). The index is opened with `VideoSearchIndex` and a ViT-B/32-shaped TempMe text tower (random weights, the
real CLIP BPE tokenizer), its text tower prepared at `--query-precision` (default auto; `query_encoding.py` compares
the precisions), and `VideoSearchIndex.search(query, k=10)` is timed end to end for `--queries`
different captions: text encoding + vector search + building the typed hits. The two parts are also timed apart.

HNSW (`IndexHNSWFlat`, inner product) is built on the same vectors; its recall@10 is the share of the exact top-10
it returns, over the same queries, at several `efSearch` values.

`--data random` (default) stores uniformly random unit vectors and scores the text queries' embeddings against
them: the hardest case for an approximate index, since nothing in the data is near anything else and the exact
top-10 are barely ahead of the next hundred. `--data clustered` stores vectors drawn around `segments / 100`
random centres (cosine about 0.7 to their centre, as segments of one scene or topic sit together) and, for the
vector-search timings and the recall, asks queries drawn near stored vectors (a query with relevant segments);
the end-to-end timings still encode the text queries. Memory per stored segment is what an open index
holds for it: the vector index (faiss keeps in memory what its file stores: the vector, plus the HNSW links) and
the metadata columns searching needs (path, start, end: Arrow buffers). The Parquet table's bytes per segment on
disk are given too.

    python benchmarks/search_latency.py                                      # 10k, 100k, 1M
    python benchmarks/search_latency.py --sizes 10000 --queries 50 --output outputs/search_latency_small.json
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from transformers_tempme import TempMeCLIPModel, TempMeConfig, TempMeProcessor, VideoSearchIndex
from transformers_tempme.analysis.benchmark_records import load_average, machine_description, write_results
from transformers_tempme.data.tokenizer import build_clip_tokenizer
from transformers_tempme.search.ann import AnnIndex, VectorIndexSettings
from transformers_tempme.search.fingerprint import model_fingerprint
from transformers_tempme.search.query_encoding import QUERY_PRECISIONS
from transformers_tempme.search.storage import (
    IndexManifest,
    save_vector_index,
    segment_table,
    write_manifest,
    write_shard,
)

DIM = 512
SEGMENTS_PER_VIDEO = 6
ROWS_PER_SHARD = 100_000
COLOURS = ("red", "green", "blue", "yellow", "white", "purple", "orange", "cyan")
SHAPES = ("circle", "square", "triangle", "dog", "car", "person")
ACTIONS = ("moves from left to right", "moves from right to left", "jumps over a fence", "grows", "shrinks",
           "turns around", "catches a frisbee", "falls down")
DISTINCT_QUERIES = len(COLOURS) * len(SHAPES) * len(ACTIONS)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="stored segments, comma-separated")
    parser.add_argument("--queries", type=int, default=100, help="distinct text queries timed per setting")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=40)
    parser.add_argument("--ef-search", default="128,256,512,1024", help="HNSW efSearch values, comma-separated")
    parser.add_argument("--data", choices=("random", "clustered"), default="random", help="see the module docstring")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and faiss threads (default: torch's default, all cores); on a busy shared machine "
                        "1 thread avoids OpenMP threads spinning against other processes")
    parser.add_argument("--query-precision", default="auto", choices=QUERY_PRECISIONS,
                        help="how the text queries are encoded (VideoSearchIndex's query_precision; default auto)")
    parser.add_argument("--work-dir", default=None, help="where the index folders go (default: a temporary folder)")
    parser.add_argument("--output", default="outputs/search_latency.json")
    parser.add_argument("--markdown", default="outputs/search_latency.md")
    return parser.parse_args(argv)


def text_encoder() -> tuple[TempMeCLIPModel, TempMeProcessor]:
    torch.manual_seed(0)
    model = TempMeCLIPModel(TempMeConfig.from_preset("tempme-vit-b-32")).eval()
    return model, TempMeProcessor(build_clip_tokenizer(), num_frames=12)


def queries(count: int) -> list[str]:
    """`count` distinct captions (at most `DISTINCT_QUERIES`), the same on every run."""
    if count > DISTINCT_QUERIES:
        raise ValueError(f"Only {DISTINCT_QUERIES} distinct captions can be made; asked for {count}.")
    rng = np.random.default_rng(0)
    seen, texts = set(), []
    while len(texts) < count:
        text = f"a {rng.choice(COLOURS)} {rng.choice(SHAPES)} {rng.choice(ACTIONS)}"
        if text not in seen:
            seen.add(text)
            texts.append(text)
    return texts


def random_unit_vectors(count: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    """`(count, DIM)` float32 unit vectors, drawn in chunks so that memory holds them once."""
    rng = np.random.default_rng(seed)
    vectors = np.empty((count, DIM), dtype=np.float32)
    for start in range(0, count, chunk):
        block = rng.standard_normal((min(chunk, count - start), DIM), dtype=np.float32)
        vectors[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return vectors


def clustered_unit_vectors(count: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    """`(count, DIM)` unit vectors around `count // 100` random centres, each at cosine about 0.7 to its centre."""
    rng = np.random.default_rng(seed)
    centres = random_unit_vectors(max(1, count // 100), seed + 1)
    vectors = np.empty((count, DIM), dtype=np.float32)
    for start in range(0, count, chunk):
        size = min(chunk, count - start)
        block = centres[rng.integers(len(centres), size=size)]
        block = block + rng.standard_normal((size, DIM), dtype=np.float32) / np.sqrt(DIM)
        vectors[start : start + size] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return vectors


def queries_near(vectors: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` unit vectors near randomly chosen stored vectors (cosine about 0.9)."""
    rng = np.random.default_rng(seed)
    near = vectors[rng.integers(len(vectors), size=count)]
    near = near + 0.5 * rng.standard_normal(near.shape, dtype=np.float32) / np.sqrt(DIM)
    return near / np.linalg.norm(near, axis=1, keepdims=True)


def write_index(folder: Path, vectors: np.ndarray, fingerprint: str, model_info: dict) -> tuple[dict, float]:
    """Segment shards of `vectors` (fake paths and times); returns their names with their records, and their bytes."""
    shards = {}
    for number, start in enumerate(range(0, len(vectors), ROWS_PER_SHARD)):
        rows = np.arange(start, min(start + ROWS_PER_SHARD, len(vectors)))
        segment = rows % SEGMENTS_PER_VIDEO
        columns = {
            "path": [f"library/video{row // SEGMENTS_PER_VIDEO:07d}.mp4" for row in rows],
            "segment": segment.tolist(), "start": (10.0 * segment).tolist(), "end": (10.0 * segment + 10).tolist(),
            "duration": [60.0] * len(rows), "size": [50_000_000] * len(rows), "mtime_ns": [0] * len(rows),
            "sha256": ["0" * 64] * len(rows),
        }
        name = f"segments/segments-00001-new-{number:05d}.parquet"
        shards[name] = write_shard(folder / name, segment_table(columns, vectors[rows]))
    return shards, sum((folder / name).stat().st_size for name in shards)


def point_manifest(folder: Path, shards: dict, vector_file: str, vector_records: dict, settings: VectorIndexSettings,
                   count: int, fingerprint: str, model_info: dict) -> None:
    """Write `index.json` for the shards and the vector index folder `vector_file` (its file records)."""
    write_manifest(folder, IndexManifest(
        video_dir=str(folder / "videos"), model={**model_info, "fingerprint": fingerprint}, embedding_dim=DIM,
        num_frames=12, frame_sampling="fps", segment_seconds=10.0, segment_overlap=0.0,
        vector_index={**settings.to_dict(), "file": vector_file}, shards=list(shards),
        counts={"videos": count // SEGMENTS_PER_VIDEO, "segments": count, "failed": 0}, generation=1,
        files={**shards, **vector_records},
    ))


def write_flat_index(folder: Path, vectors: np.ndarray, fingerprint: str, model_info: dict) -> tuple[dict, float]:
    """An index `VideoSearchIndex` opens: the segment shards of `vectors` and an exact (`flat`) vector index over them,
    with its manifest. Returns `write_index`'s shards and their bytes."""
    shards, table_bytes = write_index(folder, vectors, fingerprint, model_info)
    flat = VectorIndexSettings("flat")
    records = save_vector_index(folder, AnnIndex.build(vectors, flat), "vectors-flat")
    point_manifest(folder, shards, "vectors-flat", records, flat, len(vectors), fingerprint, model_info)
    return shards, table_bytes


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": float(ms.mean())}


def time_queries(index: VideoSearchIndex, texts: list[str], k: int, query_vectors: np.ndarray | None = None) -> dict:
    """End-to-end search latency, and its text-encoding and vector-search parts, over `texts` (after a warm-up).

    The vector search is timed with `query_vectors` when given, else with the texts' embeddings."""
    for text in texts[:3]:
        index.search(text, k=k)
    total, encode, vector = [], [], []
    for i, text in enumerate(texts):
        start = time.perf_counter()
        index.search(text, k=k)
        total.append(time.perf_counter() - start)
        start = time.perf_counter()
        embedding = index.encode_text(text)[0]
        encode.append(time.perf_counter() - start)
        if query_vectors is not None:
            embedding = query_vectors[i]
        start = time.perf_counter()
        index.search_embedding(embedding, k=k)
        vector.append(time.perf_counter() - start)
    return {"search": percentiles(total), "text_encoding": percentiles(encode), "vector_search": percentiles(vector)}


def open_index(folder: Path, model, processor, query_precision: str = "auto") -> tuple[VideoSearchIndex, dict]:
    """The opened index and what it holds in memory per segment (see the module docstring)."""
    index = VideoSearchIndex.open(folder, model, processor, query_precision=query_precision)
    count = len(index)
    vector_bytes = sum(path.stat().st_size for path in (folder / index.manifest.vector_file).iterdir())
    metadata_bytes = index._generation.rows.nbytes
    return index, {"vector_bytes_per_segment": vector_bytes / count, "metadata_bytes_per_segment": metadata_bytes / count,
                   "memory_bytes_per_segment": (vector_bytes + metadata_bytes) / count}


def benchmark_size(count: int, args, model, processor, fingerprint: str, texts: list[str], work: Path) -> dict:
    folder = work / f"index-{count}"
    shutil.rmtree(folder, ignore_errors=True)
    model_info = {"name_or_path": "random ViT-B/32-shaped TempMe (benchmark)", "revision": None, "from_clip": False,
                  "preset": None, "schedule": model.config.merge_schedule}
    vectors = (clustered_unit_vectors if args.data == "clustered" else random_unit_vectors)(count, seed=count)
    near = queries_near(vectors, len(texts), seed=count + 7) if args.data == "clustered" else None
    shards, table_bytes = write_flat_index(folder, vectors, fingerprint, model_info)
    result = {"segments": count, "table_bytes_per_segment": table_bytes / count, "load_average_before": load_average()}

    index, memory = open_index(folder, model, processor, args.query_precision)
    result["exact"] = {**time_queries(index, texts, args.k, near), **memory}
    print(f"  exact: search p50 {result['exact']['search']['p50_ms']:.1f} ms, p95 {result['exact']['search']['p95_ms']:.1f} ms",
          flush=True)
    query_embeddings = near if near is not None else index.encode_text(texts)
    _, exact_ids = index._generation.vectors.search(query_embeddings, args.k)
    del index
    gc.collect()

    start = time.perf_counter()
    hnsw_settings = VectorIndexSettings("hnsw", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction)
    hnsw = AnnIndex.build(vectors, hnsw_settings)
    result["hnsw_build_seconds"] = time.perf_counter() - start
    print(f"  HNSW built in {result['hnsw_build_seconds']:.0f} s", flush=True)
    hnsw_records = save_vector_index(folder, hnsw, "vectors-hnsw")
    del hnsw, vectors
    gc.collect()

    result["hnsw"] = []
    for ef_search in [int(value) for value in args.ef_search.split(",")]:
        settings = VectorIndexSettings("hnsw", args.hnsw_m, args.ef_construction, ef_search)
        point_manifest(folder, shards, "vectors-hnsw", hnsw_records, settings, count, fingerprint, model_info)
        index, memory = open_index(folder, model, processor, args.query_precision)
        _, ids = index._generation.vectors.search(query_embeddings, args.k)
        recall = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(ids, exact_ids)]))
        result["hnsw"].append({
            "ef_search": ef_search, "recall_at_10": recall, **time_queries(index, texts, args.k, near), **memory,
        })
        del index
        gc.collect()
    result["load_average_after"] = load_average()
    shutil.rmtree(folder, ignore_errors=True)
    return result


def markdown(results: dict) -> str:
    lines = [
        "| segments | search | efSearch | recall@10 | p50 ms | p95 ms | text encoding p50 ms | vector search p50 ms "
        "| p95 ms | memory B/segment (vectors + metadata) | load before → after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in results["sizes"]:
        rows = [("exact", "—", "1.000", size["exact"])]
        rows += [("HNSW", str(h["ef_search"]), f"{h['recall_at_10']:.3f}", h) for h in size["hnsw"]]
        for kind, ef, recall, r in rows:
            lines.append(
                f"| {size['segments']:,} | {kind} | {ef} | {recall} | {r['search']['p50_ms']:.1f} | "
                f"{r['search']['p95_ms']:.1f} | {r['text_encoding']['p50_ms']:.1f} | {r['vector_search']['p50_ms']:.2f} | "
                f"{r['vector_search']['p95_ms']:.2f} | {r['memory_bytes_per_segment']:.0f} "
                f"({r['vector_bytes_per_segment']:.0f} + {r['metadata_bytes_per_segment']:.0f}) | "
                f"{size['load_average_before'][0]} → "
                f"{size['load_average_after'][0]} |"
            )
    builds = ", ".join(f"{s['segments']:,}: {s['hnsw_build_seconds']:.0f} s" for s in results["sizes"])
    lines.append("")
    lines.append(f"Data: {results.get('data', 'random')}. Query precision: {results.get('query_precision', 'model')}. HNSW M={results['hnsw_m']}, "
                 f"efConstruction={results['ef_construction']}; build time {builds}. "
                 f"Table (Parquet) bytes per segment: "
                 + ", ".join(f"{s['table_bytes_per_segment']:.0f}" for s in results["sizes"]) + ".")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        import faiss

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    model, processor = text_encoder()
    fingerprint = model_fingerprint(model, processor)
    texts = queries(args.queries)
    results = {"command": "python benchmarks/search_latency.py " + " ".join(argv or []), "machine": {**machine_description(faiss=True), "load_average": load_average()},
               "query_precision": args.query_precision, "data": args.data, "k": args.k, "queries": args.queries, "hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction,
               "sizes": []}
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="search_latency_"))
    work.mkdir(parents=True, exist_ok=True)
    for count in [int(value) for value in args.sizes.split(",")]:
        print(f"{count:,} segments ...", flush=True)
        results["sizes"].append(benchmark_size(count, args, model, processor, fingerprint, texts, work))
        print(markdown({**results, "sizes": results["sizes"][-1:]}), flush=True)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")  # what is done so far
    write_results(results, args.output, args.markdown, markdown(results))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
