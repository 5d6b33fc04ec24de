"""`QueryService`: the search engine of the server, one object that the page and the JSON API both call.

Many users at once, on a CPU, without answering one query at a time:

- **Dynamic batching.** Text queries wait in one queue. A batch starts with the first query waiting and takes every
  query that arrives within `batch_wait_ms`, up to `batch_size`; the text encoder then runs once for the whole
  batch (`VideoSearchIndex.encode_text`: on a CPU a matrix product with 32 rows costs a few times one with a single
  row, not 32 times). While one batch is encoded the next one gathers, so under load batches form even with no
  wait at all.
- **Vector search in a thread pool.** Each batch's vector search is one faiss call per (k, one_per_video) group
  (`VideoSearchIndex.search_embeddings`), run by `search_threads` threads: faiss releases the GIL while it searches,
  so the next batch is encoded meanwhile.
- **Queries cut before any work** (`VideoSearchIndex.query_text`), blanks collapsed: a 10 MB query costs what a
  1,024-character one costs.
- **A cache of recent answers** (LRU, `cache_size` entries) keyed on the query text, k, one_per_video and the
  index's generation, so that an answer is never served from an older generation; identical queries in flight at
  the same time share one computation.

The answers are those of `VideoSearchIndex.search` one query at a time (within float error:
`tests/test_search_api.py`). Clips to search by run one at a time on their own thread, beside the text queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from .index import VideoSearchIndex
from .results import SearchHit

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
DEFAULT_BATCH_WAIT_MS = 2.0
DEFAULT_CACHE_SIZE = 256
DEFAULT_SEARCH_THREADS = 2
DEFAULT_MAX_CLIPS = 4


class ServiceBusyError(RuntimeError):
    """Every slot for clips to search by is taken: the client should try again shortly."""


@dataclass(frozen=True)
class QueryResult:
    """The answer to one text query.

    Attributes:
        query (`str`): the text searched: the query cut to what the model reads, blanks collapsed.
        hits (`tuple[SearchHit, ...]`): best first.
        generation (`int`): the index generation the query was asked against.
        unknown_words (`tuple[str, ...]`): the query's words the model's tokenizer cannot read
            (`VideoSearchIndex.unknown_words`).
    """

    query: str
    hits: tuple[SearchHit, ...]
    generation: int
    unknown_words: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Key:
    text: str
    k: int
    one_per_video: bool
    generation: int


@dataclass
class ServiceStats:
    """What the service has done since it started (counts of text queries).

    Attributes:
        queries: text queries asked. cache_hits: answered from the cache. shared: answered by a computation another
        identical query had started. batches: calls of the text encoder. encoded: texts encoded. largest_batch: the
        most texts encoded in one call.
    """

    queries: int = 0
    cache_hits: int = 0
    shared: int = 0
    batches: int = 0
    encoded: int = 0
    largest_batch: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def display_name(name_or_path: str) -> str:
    """What the server shows of a folder or model: a Hub id as it is, a local path by its last component only (it
    does not say where files lie on the server)."""
    if os.path.isabs(name_or_path) or os.path.exists(name_or_path):
        return Path(name_or_path).name or name_or_path
    return name_or_path


def _check_positive(name: str, value, minimum=1) -> None:
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}.")


class QueryService:
    """The search engine of `tempme serve`: batched, cached, thread-safe searches of one `VideoSearchIndex`.

    Args:
        index (`VideoSearchIndex`): what is searched. Its model is loaded now if it is not yet.
        batch_size (`int`): the most text queries encoded in one call.
        batch_wait_ms (`float`): how long a batch waits for more queries after its first one (0: take only those
            already waiting).
        cache_size (`int`): answers kept for repeated queries (0: no cache).
        search_threads (`int`): threads running vector searches.
        max_clips (`int`): clips to search by that may wait or run at once (`clip_slot`).

    Example:

        service = QueryService(index, batch_size=32, batch_wait_ms=2)
        result = service.search("a dog catches a frisbee", k=5)     # from any thread
        future = service.submit("a dog catches a frisbee", k=5)     # a concurrent.futures.Future[QueryResult]
        service.close()
    """

    def __init__(self, index: VideoSearchIndex, batch_size: int = DEFAULT_BATCH_SIZE,
                 batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS, cache_size: int = DEFAULT_CACHE_SIZE,
                 search_threads: int = DEFAULT_SEARCH_THREADS, max_clips: int = DEFAULT_MAX_CLIPS):
        _check_positive("batch_size", batch_size)
        _check_positive("batch_wait_ms", batch_wait_ms, 0)
        _check_positive("cache_size", cache_size, 0)
        _check_positive("search_threads", search_threads)
        _check_positive("max_clips", max_clips)
        self.index = index
        self.batch_size, self.batch_wait_ms, self.cache_size = batch_size, float(batch_wait_ms), cache_size
        self.stats = ServiceStats()
        index.query_encoder  # noqa: B018 - the model loaded and its text tower prepared now, not by the first query
        self._lock = threading.Lock()  # guards the cache, the queries in flight and the stats
        self._cache: OrderedDict[_Key, QueryResult] = OrderedDict()
        self._cache_generation: int | None = None
        self._in_flight: dict[_Key, Future] = {}
        self._queue: queue.SimpleQueue[tuple[_Key, Future] | None] = queue.SimpleQueue()
        self._search_pool = ThreadPoolExecutor(search_threads, thread_name_prefix="tempme-vector-search")
        self._clip_pool = ThreadPoolExecutor(1, thread_name_prefix="tempme-search-by-clip")
        self._clip_slots = threading.BoundedSemaphore(max_clips)
        self._batcher = threading.Thread(target=self._run_batches, name="tempme-query-batches", daemon=True)
        self._closed = False
        self._batcher.start()

    # ------------------------------------------------------------------ text queries

    def query_text(self, query: str) -> str:
        """The text searched for `query`: cut to what the model reads (`VideoSearchIndex.query_text`), blanks
        collapsed. CLIP's tokenizer gives the same tokens either way; the cache sees one key."""
        return " ".join(self.index.query_text(query).split())

    def submit(self, query: str, k: int = 10, one_per_video: bool = False) -> Future:
        """Ask a text query; returns a `Future` of its `QueryResult`.

        Raises:
            ValueError: the query is empty (or only blanks), or `k` is below 1.
            RuntimeError: the service is closed.
        """
        if self._closed:
            raise RuntimeError("The query service is closed.")
        _check_positive("k", k)
        text = self.query_text(query)
        if not text:
            raise ValueError("The query is empty.")
        self.refresh()  # the key's generation is the one searched
        key = _Key(text, int(k), bool(one_per_video), self.index.manifest.generation)
        with self._lock:
            self.stats.queries += 1
            if key.generation != self._cache_generation:  # a new generation: every answer kept is out of date
                self._cache.clear()
                self._cache_generation = key.generation
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.stats.cache_hits += 1
                future = Future()
                future.set_result(cached)
                return future
            if key in self._in_flight:
                self.stats.shared += 1
                return self._in_flight[key]
            future = self._in_flight[key] = Future()
        self._queue.put((key, future))
        return future

    def search(self, query: str, k: int = 10, one_per_video: bool = False) -> QueryResult:
        """`submit`, waiting for the answer."""
        return self.submit(query, k, one_per_video).result()

    async def search_async(self, query: str, k: int = 10, one_per_video: bool = False) -> QueryResult:
        """`search` for an event loop: asks from a worker thread (asking may first load a newer generation of the
        index, which must not stall the loop), then awaits the answer without holding a thread."""
        future = await asyncio.to_thread(self.submit, query, k, one_per_video)
        return await asyncio.wrap_future(future)

    def _run_batches(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.batch_wait_ms / 1000
            while len(batch) < self.batch_size:
                try:
                    waiting = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if waiting is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(waiting)
            self._encode(batch)

    def _encode(self, batch: list[tuple[_Key, Future]]) -> None:
        """Encode a batch's texts in one call, then hand its vector searches to the pool."""
        texts = list(dict.fromkeys(key.text for key, _ in batch))  # one key in flight per text and setting
        try:
            embeddings = self.index.encode_text(texts)
            unknown = {text: tuple(self.index.unknown_words(text)) for text in texts}
        except Exception as error:  # noqa: BLE001 - every caller of the batch gets the error
            self._fail(batch, error)
            return
        with self._lock:
            self.stats.batches += 1
            self.stats.encoded += len(texts)
            self.stats.largest_batch = max(self.stats.largest_batch, len(texts))
        row = {text: i for i, text in enumerate(texts)}
        groups: dict[tuple[int, bool], list[tuple[_Key, Future]]] = {}
        for key, future in batch:
            groups.setdefault((key.k, key.one_per_video), []).append((key, future))
        for (k, one_per_video), members in groups.items():
            rows = embeddings[[row[key.text] for key, _ in members]]
            self._search_pool.submit(self._search, members, rows, k, one_per_video, unknown)

    def _search(self, members: list[tuple[_Key, Future]], embeddings, k: int, one_per_video: bool,
                unknown: dict[str, tuple[str, ...]]) -> None:
        try:
            found = self.index.search_embeddings(embeddings, k, 1 if one_per_video else None)
        except Exception as error:  # noqa: BLE001
            self._fail(members, error)
            return
        for (key, future), hits in zip(members, found):
            result = QueryResult(key.text, tuple(hits), key.generation, unknown[key.text])
            with self._lock:
                self._in_flight.pop(key, None)
                if self.cache_size and key.generation == self._cache_generation:
                    self._cache[key] = result
                    if len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
            future.set_result(result)

    def _fail(self, members: list[tuple[_Key, Future]], error: Exception) -> None:
        with self._lock:
            for key, _ in members:
                self._in_flight.pop(key, None)
        for _, future in members:
            future.set_exception(error)

    # ------------------------------------------------------------------ clips

    @contextlib.contextmanager
    def clip_slot(self):
        """Hold one of the `max_clips` slots for a clip to search by while it is received and searched.

        Raises:
            ServiceBusyError: every slot is taken (an upload is not even read then).
        """
        if not self._clip_slots.acquire(blocking=False):
            raise ServiceBusyError("Too many clips are being searched; try again shortly.")
        try:
            yield
        finally:
            self._clip_slots.release()

    def submit_like(self, clip: str | os.PathLike, k: int = 10, one_per_video: bool = False) -> Future:
        """Search by an example clip (`VideoSearchIndex.search_like`) on the clip thread; returns a `Future` of the
        hits (`tuple[SearchHit, ...]`). Errors reading the clip (`VideoDecodeError`) come through the future."""
        if self._closed:
            raise RuntimeError("The query service is closed.")
        _check_positive("k", k)
        return self._clip_pool.submit(
            lambda: tuple(self.index.search_like(clip, k=int(k), max_per_video=1 if one_per_video else None))
        )

    async def search_like_async(self, clip: str | os.PathLike, k: int = 10,
                                one_per_video: bool = False) -> tuple[SearchHit, ...]:
        """`submit_like` for an event loop: awaits the hits without holding a thread."""
        return await asyncio.wrap_future(self.submit_like(clip, k, one_per_video))

    # ------------------------------------------------------------------ state

    def refresh(self) -> None:
        """Follow the index to a generation another process committed (one `stat` when there is none; a generation
        that cannot be loaded is logged and the current one kept)."""
        self.index._refresh_before_search()

    def status(self) -> dict:
        """What `/api/status` answers: the index's counts, model and generation, the engine's settings and counters.
        Nothing names where files lie on the server."""
        self.refresh()
        manifest = self.index.manifest
        with self._lock:
            stats, entries = self.stats.to_dict(), len(self._cache)
        return {
            "videos": manifest.counts["videos"],
            "segments": len(self.index),
            "failed": manifest.counts.get("failed", 0),
            "generation": manifest.generation,
            "model": display_name(manifest.model.get("name_or_path") or "(model built in memory)"),
            "segment_seconds": manifest.segment_seconds,
            "vector_index": manifest.vector_settings.kind,
            "batching": {"batch_size": self.batch_size, "batch_wait_ms": self.batch_wait_ms},
            "cache": {"size": self.cache_size, "entries": entries},
            "queries": stats,
        }

    def close(self) -> None:
        """Stop taking queries; those already asked are answered first."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._batcher.join()
        while True:  # a query that slipped in behind the stop
            try:
                waiting = self._queue.get_nowait()
            except queue.Empty:
                break
            if waiting is not None:
                self._fail([waiting], RuntimeError("The query service is closed."))
        self._search_pool.shutdown(wait=True)
        self._clip_pool.shutdown(wait=True)

    def __enter__(self) -> "QueryService":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_BATCH_WAIT_MS",
    "DEFAULT_CACHE_SIZE",
    "QueryResult",
    "QueryService",
    "ServiceBusyError",
    "ServiceStats",
    "display_name",
]
