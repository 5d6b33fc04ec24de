"""Text-query encoding per query precision: latency of one query, and how far each precision moves the rankings.

The text tower is ViT-B/32-shaped TempMe with random weights and the real CLIP BPE tokenizer (`search_latency.py`'s
`text_encoder`). For each `query_precision` (`model`, `fp32`, `bf16`, `int8`, and what `auto` chooses here) a
`QueryEncoder` encodes `--queries` different captions one at a time, as `VideoSearchIndex.encode_text` does for one
query (tokenizing included): p50 / p95 milliseconds, the p50 of the thread's CPU time (with 1 thread, what a query
costs without the waits for a core on a busy machine), and the time per query of one batch of `--batch` captions.

Quality, against `model` (the reference): the smallest cosine between a precision's embedding of a caption and the
model's, and the top-10 agreement (share of the reference top-10 found) of exact search over `--segments` stored unit
vectors, two ways: `random` (uniformly random vectors: the hardest case, the top-10 barely ahead of the next hundred)
and `near` (the same, plus 50 vectors around each query's reference embedding at cosines from 0.3 to 0.9: a query with
relevant segments, which rank them by a margin). Random weights are not a trained model's: rerun with a trained one
(`--model`) to see its figures; `auto` makes the cosine check on the model it is given.

    python benchmarks/query_encoding.py                                   # 1 thread, 200 queries
    python benchmarks/query_encoding.py --threads 2 --output outputs/query_encoding_2t.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from transformers_tempme.analysis.benchmark_records import load_average, load_script, machine_description, write_results
from transformers_tempme.search.query_encoding import AUTO_MIN_COSINE, QueryEncoder

# The ViT-B/32 text tower, its captions and the timing summary are search_latency.py's (imported by its path).
search_latency = load_script(Path(__file__).with_name("search_latency.py"))
percentiles, queries = search_latency.percentiles, search_latency.queries
random_unit_vectors, text_encoder = search_latency.random_unit_vectors, search_latency.text_encoder

PRECISIONS = ("model", "fp32", "bf16", "int8", "auto")
NEAR_PER_QUERY = 50


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=200, help="distinct captions timed and compared")
    parser.add_argument("--batch", type=int, default=32, help="captions in the batch timed once per precision")
    parser.add_argument("--segments", type=int, default=100_000, help="stored vectors for the top-10 agreement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--model", default=None, help="a TempMe model folder instead of the random ViT-B/32 one")
    parser.add_argument("--output", default="outputs/query_encoding.json")
    parser.add_argument("--markdown", default="outputs/query_encoding.md")
    return parser.parse_args(argv)


def top10(stored: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    return np.argsort(-(embeddings @ stored.T), axis=1)[:, :10]


def agreement(found: np.ndarray, expected: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, expected)]))


def near_vectors(reference: np.ndarray, seed: int) -> np.ndarray:
    """`NEAR_PER_QUERY` unit vectors per query embedding, at cosines spread from 0.3 to 0.9 to it."""
    rng = np.random.default_rng(seed)
    cosines = np.linspace(0.3, 0.9, NEAR_PER_QUERY, dtype=np.float32)
    noise = rng.standard_normal((len(reference), NEAR_PER_QUERY, reference.shape[1]), dtype=np.float32)
    noise -= np.sum(noise * reference[:, None], axis=2, keepdims=True) * reference[:, None]  # orthogonal to the query
    noise /= np.linalg.norm(noise, axis=2, keepdims=True)
    vectors = cosines[None, :, None] * reference[:, None] + np.sqrt(1 - cosines**2)[None, :, None] * noise
    return vectors.reshape(-1, reference.shape[1])


def time_single(query_encoder: QueryEncoder, texts: list[str]) -> dict:
    for text in texts[:5]:
        query_encoder([text])
    seconds, cpu_seconds = [], []
    for text in texts:
        start, cpu_start = time.perf_counter(), time.thread_time()
        query_encoder([text])
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.thread_time() - cpu_start)
    # The thread's CPU time: what a query costs without the waits for a core on a busy machine (1 thread only).
    return {**percentiles(seconds), "cpu_p50_ms": float(np.percentile(cpu_seconds, 50) * 1000)}


def markdown(results: dict) -> str:
    lines = ["| query precision | p50 ms | p95 ms | CPU p50 ms | batch of " f"{results['batch']}: ms per query "
             "| min cosine to model | top-10 agreement (random) | top-10 agreement (near) |", "|---|---|---|---|---|---|---|---|"]
    for row in results["precisions"]:
        lines.append(f"| {row['precision']} | {row['single']['p50_ms']:.2f} | {row['single']['p95_ms']:.2f} | "
                     f"{row['single']['cpu_p50_ms']:.2f} | {row['batch_ms_per_query']:.2f} | {row['min_cosine']:.5f} | {row['top10_random']:.3f} | "
                     f"{row['top10_near']:.3f} |")
    machine = results["machine"]
    lines += ["", f"{machine['cpu']}, flags {' '.join(machine['cpu_features']['flags'])}; torch threads "
              f"{results['threads']}; {results['queries']} queries, {results['segments']:,} stored vectors; auto chose "
              f"{results['auto']} (bound: cosine >= {AUTO_MIN_COSINE}). Load average before → after: "
              f"{results['load_average_before']} → {load_average()}."]
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.model:
        from transformers_tempme import load_search_model

        model, processor, _ = load_search_model(args.model)
    else:
        model, processor = text_encoder()
    texts = queries(args.queries)
    results = {"command": "python benchmarks/query_encoding.py " + " ".join(argv or []),
               "machine": machine_description(), "threads": args.threads, "queries": args.queries,
               "batch": args.batch, "segments": args.segments, "model": args.model or "random ViT-B/32 text tower",
               "load_average_before": load_average(), "precisions": []}
    reference = QueryEncoder(model, processor, "model")(texts)
    stored_random = random_unit_vectors(args.segments, seed=1)
    stored_near = np.concatenate([stored_random, near_vectors(reference, seed=2)])
    expected_random, expected_near = top10(stored_random, reference), top10(stored_near, reference)
    for precision in PRECISIONS:
        query_encoder = QueryEncoder(model, processor, precision)
        embeddings = np.concatenate([query_encoder([text]) for text in texts])
        batch = texts[: args.batch]
        query_encoder(batch)
        start = time.perf_counter()
        query_encoder(batch)
        batch_ms = (time.perf_counter() - start) * 1000 / len(batch)
        row = {"precision": precision if precision != "auto" else f"auto ({query_encoder.precision})",
               "single": time_single(query_encoder, texts), "batch_ms_per_query": batch_ms,
               "min_cosine": float(np.min(np.sum(embeddings * reference, axis=1))),
               "top10_random": agreement(top10(stored_random, embeddings), expected_random),
               "top10_near": agreement(top10(stored_near, embeddings), expected_near)}
        if precision == "auto":
            results["auto"] = query_encoder.describe()
        results["precisions"].append(row)
        print(f"{row['precision']}: p50 {row['single']['p50_ms']:.2f} ms, min cosine {row['min_cosine']:.5f}, "
              f"top-10 agreement {row['top10_random']:.3f} / {row['top10_near']:.3f}", flush=True)
    write_results(results, args.output, args.markdown, markdown(results))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
