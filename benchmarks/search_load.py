"""Many users at once: `tempme serve` under 1, 8 and 64 concurrent clients of `/api/search`, every answer checked.

The server is a real `tempme serve` process on 127.0.0.1 (a free port), over an index of `--segments` segments
written with the library's storage code (as `search_latency.py` does: random unit vectors of 512 values, exact
search) and a ViT-B/32-shaped TempMe with random weights and the real CLIP vocabulary (`build_clip_tokenizer`, from
the open-clip wheel), saved to a folder that the index names, so that the server loads it as it would a user's.

For each concurrency C, C clients (asyncio + httpx, one connection each) send `--queries` distinct text queries
between them, each client its next query as soon as the previous one is answered. No query is asked twice in the
whole run, so the server's cache answers none (`cache_hits` is recorded to show it). Every answer is compared
with `VideoSearchIndex.search` of the same query in this process, one query at a time, before the server starts:
the same hits in the same order, scores within 1e-5 (two hits whose scores are within 1e-5 of each other may
trade places). Recorded per concurrency: queries/s, p50 / p95 / p99 latency, the server's batches (texts encoded
per call of the text encoder) and the wrong answers; with the CPU's flags and the load average before and after.

Target (issue 24): at 64 clients every answer correct, >= 40 queries/s and p95 <= 2.5 s.

    python benchmarks/search_load.py                                    # 100,000 segments; 1, 8, 64 clients
    python benchmarks/search_load.py --segments 1000000 --batch-size 64
    python benchmarks/search_load.py --tiny --segments 2000 --queries 48 --concurrency 1,8  # smoke test, seconds

Bounded: every request has a timeout (`--timeout`), each concurrency a deadline (`--max-seconds`), the server is
stopped at the end (and on Ctrl-C), and nothing but 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from transformers_tempme import TempMeCLIPModel, TempMeConfig, TempMeProcessor, VideoSearchIndex
from transformers_tempme.analysis.benchmark_records import load_average, load_script, machine_description, write_results
from transformers_tempme.data.tokenizer import build_clip_tokenizer
from transformers_tempme.hub.loading import describe_model
from transformers_tempme.search.fingerprint import model_fingerprint


search_latency = load_script(Path(__file__).with_name("search_latency.py"))  # the synthetic index it serves
DIM = search_latency.DIM
REPO = Path(__file__).resolve().parents[1]
SCORE_TOLERANCE = 1e-5
WARM_UP = 16  # queries sent before the timed ones
COLOURS = ("red", "green", "blue", "yellow", "white", "black", "orange", "purple")
SUBJECTS = ("dog", "cat", "car", "person", "bird", "ball", "horse", "child")
ACTIONS = ("runs across", "jumps over", "walks along", "falls near", "turns around on", "waits beside")
PLACES = ("a fence", "the road", "a river", "the beach", "a tree", "the stairs", "a window", "the grass")
TINY_CONFIG = {  # --tiny: a small TempMe with the real CLIP vocabulary and ViT-B/32's embedding size
    "num_frames": 4, "img_merge_r": 2, "clip_merge_layers": [2, 3], "clip_merge_groups": [2, 2], "projection_dim": DIM,
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 2,
                      "image_size": 32, "patch_size": 8},
    "text_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2},
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=100_000, help="stored segments (default 100,000)")
    parser.add_argument("--concurrency", default="1,8,64", help="concurrent clients, comma-separated")
    parser.add_argument("--queries", type=int, default=384, help="distinct queries sent at each concurrency")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=None, help="tempme serve --batch-size (default: its own)")
    parser.add_argument("--batch-wait-ms", type=float, default=None, help="tempme serve --batch-wait-ms")
    parser.add_argument("--tiny", action="store_true", help="a small model with the CLIP vocabulary (smoke tests)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one request may take")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="seconds one concurrency may take")
    parser.add_argument("--work-dir", default=None, help="where the model and index go (default: a temporary folder)")
    parser.add_argument("--output", default="outputs/search_load.json")
    parser.add_argument("--markdown", default="outputs/search_load.md")
    return parser.parse_args(argv)


def text_queries(count: int) -> list[str]:
    """`count` distinct captions (up to 3,072), in a fixed shuffled order."""
    captions = [f"a {colour} {subject} {action} {place}" for colour in COLOURS for subject in SUBJECTS
                for action in ACTIONS for place in PLACES]
    if count > len(captions):
        raise SystemExit(f"error: at most {len(captions)} distinct queries, asked for {count}")
    order = np.random.default_rng(0).permutation(len(captions))
    return [captions[i] for i in order[:count]]


def save_model(folder: Path, tiny: bool) -> tuple[TempMeCLIPModel, TempMeProcessor]:
    torch.manual_seed(0)
    tokenizer = build_clip_tokenizer()
    if tiny:
        config = TempMeConfig(**{**TINY_CONFIG, "text_config": {**TINY_CONFIG["text_config"],
                                                                "vocab_size": len(tokenizer)}})
        processor = TempMeProcessor(tokenizer, num_frames=config.num_frames, image_size=32)
    else:
        config = TempMeConfig.from_preset("tempme-vit-b-32")
        processor = TempMeProcessor(tokenizer, num_frames=12)
    model = TempMeCLIPModel(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor


def write_synthetic_index(folder: Path, count: int, model, processor, model_dir: Path) -> None:
    """An index of `count` random unit vectors (exact search) that names the saved model."""
    shutil.rmtree(folder, ignore_errors=True)
    fingerprint = model_fingerprint(model, processor)
    model_info = describe_model(model, model_dir)
    vectors = search_latency.random_unit_vectors(count, seed=count)
    search_latency.write_flat_index(folder, vectors, fingerprint, model_info)


def answer_of(hits) -> list[tuple[str, float, float]]:
    return [(hit.path, hit.start, hit.score) for hit in hits]


def is_correct(got: list[dict], expected: list[tuple[str, float, float]]) -> bool:
    """The same hits in the same order with scores within `SCORE_TOLERANCE`; hits whose expected scores are within
    the tolerance of each other (a tie at float precision) may trade places."""
    if len(got) != len(expected):
        return False
    for rank, (hit, (path, start, score)) in enumerate(zip(got, expected)):
        if abs(hit["score"] - score) > SCORE_TOLERANCE:
            return False
        if (hit["path"], hit["start"]) != (path, start):
            tied = [(p, s) for p, s, e in expected if abs(e - score) <= SCORE_TOLERANCE]
            if (hit["path"], hit["start"]) not in tied and rank != len(expected) - 1:
                return False
    return True


class Server:
    """`tempme serve` on 127.0.0.1 and a free port, its output in a log file."""

    def __init__(self, index_dir: Path, log: Path, extra: list[str]):
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1",
               "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
        self.log = log
        with open(log, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "transformers_tempme.cli", "serve", str(index_dir), "--host", "127.0.0.1",
                 "--port", str(self.port), *extra], env=env, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, client, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit("error: tempme serve stopped:\n" + self.log.read_text()[-3000:])
            try:
                if client.get(self.url + "/api/status").status_code == 200:
                    return
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            time.sleep(0.5)
        raise SystemExit("error: tempme serve did not answer in time:\n" + self.log.read_text()[-3000:])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


async def run_level(url: str, queries: list[str], expected: dict, concurrency: int, k: int, timeout: float,
                    max_seconds: float) -> dict:
    """`concurrency` clients send `queries` between them; latencies and wrong answers."""
    import httpx

    pending = list(reversed(queries))
    latencies, wrong, failed = [], [], []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:

        async def one_client() -> None:
            while pending:
                query = pending.pop()
                start = time.perf_counter()
                try:
                    response = await client.get("/api/search", params={"q": query, "k": k})
                except httpx.HTTPError as error:
                    failed.append(f"{query}: {type(error).__name__}")
                    continue
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200:
                    failed.append(f"{query}: HTTP {response.status_code}")
                elif not is_correct(response.json()["hits"], expected[query]):
                    wrong.append(query)

        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(one_client() for _ in range(concurrency))), max_seconds)
        seconds = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    return {
        "concurrency": concurrency, "queries": len(queries), "answered": len(latencies), "seconds": seconds,
        "queries_per_s": len(latencies) / seconds, "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)), "p99_ms": float(np.percentile(ms, 99)), "wrong": len(wrong),
        "failed": len(failed), "wrong_examples": wrong[:5], "failed_examples": failed[:5],
    }


def markdown(results: dict) -> str:
    lines = ["| clients | queries | correct | queries/s | p50 ms | p95 ms | p99 ms | texts per batch "
             "| load before → after |", "|---|---|---|---|---|---|---|---|---|"]
    for level in results["levels"]:
        lines.append(
            f"| {level['concurrency']} | {level['queries']} | {level['answered'] - level['wrong']}/{level['queries']} "
            f"| {level['queries_per_s']:.1f} | {level['p50_ms']:.0f} | {level['p95_ms']:.0f} | {level['p99_ms']:.0f} "
            f"| {level['mean_batch']:.1f} | {level['load_average_before'][0]} → "
            f"{level['load_average_after'][0]} |")
    features = results["machine"]["cpu_features"]
    lines += ["", f"{results['segments']:,} segments (exact search), {results['model']}, k={results['k']}; "
              f"server settings {results['server_settings']}; CPU {features['cpu']} "
              f"({', '.join(features['flags']) or 'no AVX2'}), {results['machine']['cpu_count']} cores. "
              f"Cache hits over the run: {results['cache_hits']}.", "", f"`{results['command']}`"]
    return "\n".join(lines)


def main(argv=None) -> dict:
    import httpx

    args = parse_args(argv)
    levels = [int(value) for value in args.concurrency.split(",")]
    all_queries = text_queries(WARM_UP + args.queries * len(levels))  # a few to warm up, then a slice per level
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="search_load_"))
    work.mkdir(parents=True, exist_ok=True)
    print("saving the model and writing the index ...", flush=True)
    model, processor = save_model(work / "model", args.tiny)
    write_synthetic_index(work / "index", args.segments, model, processor, work / "model")

    print(f"answers one query at a time ({len(all_queries)} queries) ...", flush=True)
    reference = VideoSearchIndex.open(work / "index", model, processor, auto_refresh=False)
    expected = {query: answer_of(reference.search(query, k=args.k)) for query in all_queries}
    del reference, model
    extra = []
    if args.batch_size is not None:
        extra += ["--batch-size", str(args.batch_size)]
    if args.batch_wait_ms is not None:
        extra += ["--batch-wait-ms", str(args.batch_wait_ms)]
    results = {
        "command": "python benchmarks/search_load.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {**machine_description(faiss=True), "load_average": load_average()}, "segments": args.segments, "k": args.k,
        "model": "small TempMe, CLIP vocabulary (--tiny)" if args.tiny else "ViT-B/32-shaped TempMe, random weights",
        "levels": [],
    }
    server = Server(work / "index", work / "serve.log", extra)
    try:
        with httpx.Client(timeout=args.timeout) as client:
            server.wait_ready(client)
            status = client.get(server.url + "/api/status").json()
            results["server_settings"] = status["batching"]
            asyncio.run(run_level(server.url, all_queries[:WARM_UP], expected, 4, args.k, args.timeout,
                                  args.max_seconds))
            for number, concurrency in enumerate(levels):
                queries = all_queries[WARM_UP + number * args.queries : WARM_UP + (number + 1) * args.queries]
                before = client.get(server.url + "/api/status").json()["queries"]
                load_before = load_average()
                level = asyncio.run(run_level(server.url, queries, expected, concurrency, args.k, args.timeout,
                                              args.max_seconds))
                after = client.get(server.url + "/api/status").json()["queries"]
                batches = max(1, after["batches"] - before["batches"])
                level.update(load_average_before=load_before, load_average_after=load_average(),
                             mean_batch=(after["encoded"] - before["encoded"]) / batches,
                             cache_hits=after["cache_hits"] - before["cache_hits"])
                results["levels"].append(level)
                print(f"  {concurrency} clients: {level['queries_per_s']:.1f} queries/s, p50 {level['p50_ms']:.0f} ms, "
                      f"p95 {level['p95_ms']:.0f} ms, {level['wrong']} wrong, {level['failed']} failed, "
                      f"{level['mean_batch']:.1f} texts per batch", flush=True)
            results["cache_hits"] = client.get(server.url + "/api/status").json()["queries"]["cache_hits"]
    finally:
        server.stop()
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    write_results(results, args.output, args.markdown, markdown(results))
    return results


if __name__ == "__main__":
    main()
