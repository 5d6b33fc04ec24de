"""`VideoSearchIndex`: build an index of a video folder once, update it as the folder changes, search it by text.

    from transformers_tempme import VideoSearchIndex, load_search_model

    model, processor, info = load_search_model("path/to/tempme-model")
    index = VideoSearchIndex.build("videos/", "videos.index", model, processor, model_info=info)
    for hit in index.search("a dog catches a frisbee", k=5):
        print(hit.rank, f"{hit.score:.3f}", hit.path, hit.start, hit.end)

    index = VideoSearchIndex.open("videos.index")   # later: loads the model the index names on first query
    report = index.update()                          # encode what was added or changed, drop what was deleted

An open index follows the folder: each search first checks whether `index.json` was replaced (one `stat`) and, when
another process committed a newer generation, loads it (`refresh`). The folder layout is described in `storage.py`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..video_io import VideoDecodeError
from .ann import DamagedVectorsError
from .discovery import NotAVideoError, VideoFile
from .fingerprint import check_fingerprint, model_fingerprint
from .indexer import IndexingOptions, run_update
from .query_encoding import QueryEncoder, check_query_precision
from .results import IndexingReport, SearchHit
from .segment_batches import SegmentBatches
from .storage import (
    IndexManifest,
    OpenGeneration,
    SearchIndexError,
    VectorIndexSettings,
    damaged,
    manifest_stamp,
    open_generation,
    read_report,
    read_segment_rows,
)

logger = logging.getLogger(__name__)

# A score above |query| (a cosine above 1) by more than float error can only come from damaged vectors.
_SCORE_TOLERANCE = 1e-3

QUERY_CHARS_PER_TOKEN = 32  # a query is cut to this many characters per text position before tokenizing
SMALL_VOCABULARY = 1000  # a word-level vocabulary up to this size is listed to the user (`known_words`)


class VideoSearchIndex:
    """A searchable index of the moments of a video folder. Use `build` or `open`, not the constructor.

    Attributes:
        index_dir (`Path`): the index folder.
        manifest (`IndexManifest`): the content of its `index.json` (of the generation loaded).
        auto_refresh (`bool`): check for a newer generation before each search (see `refresh`).
        query_precision (`str`): how text queries are encoded: `"auto"` (default), `"model"`, `"fp32"`, `"bf16"` or
            `"int8"` (see `query_encoding.py`); the video embeddings of the index are unaffected.
    """

    def __init__(self, index_dir: str | os.PathLike, model=None, processor=None, device: str | None = None,
                 auto_refresh: bool = True, query_precision: str = "auto"):
        self.index_dir = Path(index_dir).absolute()
        self._generation: OpenGeneration = open_generation(self.index_dir)
        self.device = device
        self.auto_refresh = auto_refresh
        self._refresh_lock = threading.Lock()
        self._refused_stamp = None  # the index.json whose generation could not be loaded (not retried until it changes)
        self._video_paths: tuple[OpenGeneration, frozenset[str]] | None = None  # cached per generation
        self._model, self._processor = None, None
        self._model_from_manifest = False
        self._query_precision = check_query_precision(query_precision)
        self._query_encoder: QueryEncoder | None = None  # built for the model in use on the first query
        self._query_encoder_lock = threading.Lock()
        if model is not None:
            self.set_model(model, processor)

    @property
    def manifest(self) -> IndexManifest:
        return self._generation.manifest

    @property
    def vector_settings(self) -> VectorIndexSettings:
        return self._generation.manifest.vector_settings

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        video_dir: str | os.PathLike,
        index_dir: str | os.PathLike,
        model,
        processor,
        model_info: dict | None = None,
        options: IndexingOptions | None = None,
        **option_kwargs,
    ) -> "VideoSearchIndex":
        """Index `video_dir` into `index_dir` (or update the index there) and open it.

        Args:
            video_dir: folder of videos, walked recursively.
            index_dir: where the index is written.
            model (`TempMeCLIPModel`), processor (`TempMeProcessor`): the encoder; see `load_search_model`.
            model_info (`dict`, *optional*): what the manifest records about the model (`load_search_model` returns
                it); by default the model's `name_or_path`.
            options (`IndexingOptions`, *optional*), option_kwargs: settings of the run (segment length, workers,
                ...), as an `IndexingOptions` or as its keyword arguments.

        The report of the run is in `index.last_report`.
        """
        options = options or IndexingOptions(**option_kwargs)
        from ..hub.loading import describe_model

        info = {**describe_model(model), **(model_info or {})}
        info["fingerprint"] = model_fingerprint(model, processor)
        report = run_update(index_dir, video_dir, model, processor, info, options)
        index = cls(index_dir, device=options.device)
        # The update checked the model against the index (or built it with it): no second pass over the weights.
        index._model, index._processor = model, processor
        index.last_report = report
        return index

    @classmethod
    def open(cls, index_dir: str | os.PathLike, model=None, processor=None, device: str | None = None,
             auto_refresh: bool = True, query_precision: str = "auto") -> "VideoSearchIndex":
        """Open an index for searching. Without `model`, the model named in the index loads on the first query.
        `query_precision` says how text queries are encoded (see the class docstring).

        Every file is checked as it is read (sizes; the SHA-256 of the vector index's files up to 256 MiB, larger
        ones through what each search reads; Parquet page checksums): see `storage.py`.

        Raises:
            `EmbeddingSpaceMismatchError`: `model` (with `processor`) is not the model the index was built with.
            `IndexNotFoundError`, `IndexDamagedError` (naming the file and `tempme index --repair`),
            `IndexVersionError`, `IndexFileError`: no index, or one that cannot be read.
        """
        return cls(index_dir, model=model, processor=processor, device=device, auto_refresh=auto_refresh,
                   query_precision=query_precision)

    def update(self, video_dir: str | os.PathLike | None = None, options: IndexingOptions | None = None,
               **option_kwargs) -> IndexingReport:
        """Re-scan the video folder (by default the one indexed) and encode only what changed; reopens the index."""
        model, processor = self.model, self.processor
        options = options or IndexingOptions(**option_kwargs)
        report = run_update(self.index_dir, video_dir or self.manifest.video_dir, model, processor,
                            self.manifest.model, options)
        self._generation = open_generation(self.index_dir)
        self.last_report = report
        return report

    # ------------------------------------------------------------------ following the folder

    def refresh(self) -> bool:
        """Load the newest generation when another process committed one since this one was loaded.

        Cheap when nothing changed (one `stat` of `index.json`), so a server can call it before every query. The
        generation in use keeps answering while the new one loads, and stays when the new one cannot be loaded.
        A newer generation built with another model drops the model loaded from the index (the new one loads on the
        next query); a model passed by the caller raises `EmbeddingSpaceMismatchError` instead.

        Returns:
            `True` when a newer generation was loaded.
        """
        stamp = manifest_stamp(self.index_dir)
        if stamp in (self._generation.stamp, self._refused_stamp) or not self._refresh_lock.acquire(blocking=False):
            return False  # unchanged, refused before, or another thread is loading it now
        try:
            try:
                loaded = open_generation(self.index_dir)
            except SearchIndexError:
                self._refused_stamp = stamp  # not tried again until index.json changes
                raise
            if loaded.manifest.generation == self.manifest.generation:
                self._generation = loaded
                return False
            if loaded.manifest.model["fingerprint"] != self.manifest.model["fingerprint"] and self._model is not None:
                if not self._model_from_manifest:
                    self._refused_stamp = stamp
                    check_fingerprint(loaded.manifest.model["fingerprint"], self.manifest.model["fingerprint"],
                                      self.index_dir, loaded.manifest.model["name_or_path"])
                self._model, self._processor, self._model_from_manifest = None, None, False
            self._generation = loaded
            logger.info("Loaded generation %d of %s", loaded.manifest.generation, self.index_dir)
            return True
        finally:
            self._refresh_lock.release()

    def _refresh_before_search(self) -> None:
        if not self.auto_refresh:
            return
        try:
            self.refresh()
        except SearchIndexError as error:
            logger.warning("Still searching generation %d of %s: the newer one cannot be used (%s)",
                           self.manifest.generation, self.index_dir, error)

    # ------------------------------------------------------------------ the model

    def set_model(self, model, processor=None) -> None:
        """Use `model` for queries after checking that it computes the embedding space of the index."""
        if processor is None:
            from ..hub.loading import load_processor

            processor = load_processor(self.manifest.model["name_or_path"] or None, model)
        check_fingerprint(self.manifest.model["fingerprint"], model_fingerprint(model, processor), self.index_dir,
                          self.manifest.model["name_or_path"])
        device = self.device or next(model.parameters()).device
        self._model, self._processor = model.to(device).eval(), processor

    def _load_model(self) -> None:
        """The index's own model (as its manifest records it), loaded on first use unless `set_model` gave one."""
        if self._model is None:
            from ..hub.loading import load_from_model_info

            self.set_model(*load_from_model_info(self.manifest.model, self.index_dir))
            self._model_from_manifest = True

    @property
    def model(self):
        self._load_model()
        return self._model

    @property
    def processor(self):
        self._load_model()
        return self._processor

    @property
    def query_precision(self) -> str:
        return self._query_precision

    @query_precision.setter
    def query_precision(self, precision: str) -> None:
        self._query_precision = check_query_precision(precision)
        self._query_encoder = None

    @property
    def query_encoder(self) -> QueryEncoder:
        """What encodes text queries: the model's text tower prepared at `query_precision` (`QueryEncoder`), built on
        first use for the model in use (again after a new model or precision)."""
        model, processor, encoder = self.model, self.processor, self._query_encoder
        if encoder is not None and encoder.model is model and encoder.requested == self._query_precision:
            return encoder
        with self._query_encoder_lock:
            encoder = self._query_encoder
            if encoder is None or encoder.model is not model or encoder.requested != self._query_precision:
                encoder = self._query_encoder = QueryEncoder(model, processor, self._query_precision)
                logger.info("%s: %s", self.index_dir, encoder.describe())
            return encoder

    # ------------------------------------------------------------------ contents

    def __len__(self) -> int:
        """Number of stored segments."""
        return self._generation.rows.num_rows

    @property
    def video_dir(self) -> Path:
        return Path(self.manifest.video_dir)

    @property
    def videos(self) -> list[str]:
        """Paths (relative to the video folder) of the indexed videos, sorted."""
        return sorted(self.video_paths)

    @property
    def video_paths(self) -> frozenset[str]:
        """Paths of the indexed videos as a set, built once per generation: what a server checks each request against
        follows `refresh` at the cost of one comparison."""
        generation, cached = self._generation, self._video_paths
        if cached is None or cached[0] is not generation:  # two threads may both build it: the same set
            cached = (generation, frozenset(generation.rows.column("path").unique().to_pylist()))
            self._video_paths = cached
        return cached[1]

    @property
    def report(self) -> IndexingReport | None:
        """The report of the update that made this generation of the index."""
        report = read_report(self.index_dir, self.manifest)
        return IndexingReport.from_dict(report) if report is not None else None

    def to_dataset(self):
        """Every stored segment, embeddings included, as a `datasets.Dataset`.

        Columns: `path`, `segment`, `start`, `end`, `duration`, `size`, `mtime_ns`, `sha256` and `embedding`
        (`List(float32, length=dim)`, L2-normalised: inner product is cosine similarity). Load it into another vector
        engine with `add_faiss_index("embedding", metric_type=faiss.METRIC_INNER_PRODUCT)` or export it with
        `to_parquet`; docs/search.md ("The segment table as open data") has a worked example.
        """
        from datasets import Dataset

        return Dataset(read_segment_rows(self.index_dir, self.manifest))

    # ------------------------------------------------------------------ searching

    def query_text(self, text: str) -> str:
        """What `encode_text` encodes of a query: its first `QUERY_CHARS_PER_TOKEN * max_words` characters.

        The model reads only the first `max_words` tokens, and no token of CLIP's vocabulary spans more than 32
        characters: cutting the text first bounds the tokenizer's work (a 10 MB query takes seconds to tokenize).
        """
        return text[: QUERY_CHARS_PER_TOKEN * self.processor.max_words]

    def encode_text(self, texts: str | Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings `(texts, dim)` float32, each text cut first (`query_text`), encoded at
        `query_precision` (`query_encoder`).

        Encoding many texts at once costs far less per text than one at a time, and gives each text the embedding it
        has alone (within float error; exactly at int8, which encodes each text alone): the padding after a shorter
        text changes nothing."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.query_encoder([self.query_text(text) for text in texts])

    @torch.inference_mode()
    def encode_video_windows(self, video: str | os.PathLike) -> tuple[np.ndarray, list[tuple[float, float]]]:
        """A video file cut and encoded exactly as indexing cuts and encodes the videos of this index.

        The file goes through the indexing path (`SegmentBatches`): probed, cut into the index's windows
        (`manifest.segment_seconds`, `segment_overlap`), each window sampled to the model's frame count as training
        samples a video; a clip no longer than one segment is one window covering all of it.

        Returns:
            The L2-normalised embeddings `(windows, dim)` float32, and each window's `(start, end)` in seconds.

        Raises:
            `VideoDecodeError` naming the reason (`NotAVideoError` for a file that is not a video).
        """
        path = Path(video)
        batches = SegmentBatches([VideoFile(path.name, 0, 0)], path.parent, self.processor,
                                 self.manifest.segment_seconds, self.manifest.segment_overlap)
        device = next(self.model.parameters()).device
        embeddings, windows = [], []
        for batch in batches:
            if batch["pixel_values"] is not None:
                embeds = self.model.encode_video(batch["pixel_values"].to(device=device, dtype=self.model.dtype),
                                                 batch["video_mask"].to(device)).video_embeds
                embeddings.append(torch.nn.functional.normalize(embeds.float(), dim=-1).cpu().numpy())
                windows += [(start, end) for _, _, start, end in batch["segments"]]
            for record in batch["videos"]:
                if record["error"] is not None:
                    raise (NotAVideoError if record["not_video"] else VideoDecodeError)(str(video), record["error"])
        return np.concatenate(embeddings), windows

    def encode_video(self, video: str | os.PathLike) -> np.ndarray:
        """L2-normalised embedding `(1, dim)` of a video file as a query: its windows (`encode_video_windows`)
        combined by `combine_windows` (for a clip of one window, that window's embedding)."""
        return combine_windows(self.encode_video_windows(video)[0])[None, :]

    def search(self, query: str, k: int = 10, max_per_video: int | None = None) -> list[SearchHit]:
        """The `k` moments that best match a text query, best first.

        Args:
            query (`str`): what happens in the moment, e.g. "a dog catches a frisbee".
            k (`int`): hits to return.
            max_per_video (`int`, *optional*): at most this many hits from one video (e.g. 1 for distinct videos).
        """
        self._refresh_before_search()  # before encoding: a newer generation may come with another model
        return self.search_embedding(self.encode_text(query)[0], k, max_per_video)

    def search_like(self, video: str | os.PathLike, k: int = 10, max_per_video: int | None = None) -> list[SearchHit]:
        """The `k` moments most similar to an example video clip, best first.

        The clip is cut into the index's windows and encoded as indexing encodes videos (`encode_video_windows`);
        a clip longer than one segment is searched by the mean of its windows' unit embeddings, re-normalised
        (`combine_windows`). A clip that is one window of the index finds that window with a score of 1.
        """
        self._refresh_before_search()
        return self.search_embedding(self.encode_video(video)[0], k, max_per_video)

    def search_embedding(self, embedding: np.ndarray, k: int = 10, max_per_video: int | None = None) -> list[SearchHit]:
        """The `k` moments whose embeddings have the largest cosine similarity with `embedding` `(dim,)`."""
        return self.search_embeddings(np.asarray(embedding)[None, :], k, max_per_video)[0]

    def search_embeddings(self, embeddings: np.ndarray, k: int = 10,
                          max_per_video: int | None = None) -> list[list[SearchHit]]:
        """`search_embedding` for a batch `(queries, dim)`: one vector search for all of them (for exact search one
        matrix product instead of one pass over every stored vector per query), the hits of each query those it has
        alone."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}.")
        if max_per_video is not None and max_per_video < 1:
            raise ValueError(f"max_per_video must be at least 1, got {max_per_video}.")
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if not np.isfinite(embeddings).all():
            raise SearchIndexError("The query's embedding is not finite (NaN or infinity): the model's weights are "
                                   "broken.")
        self._refresh_before_search()
        generation = self._generation  # one generation for the whole batch, whatever a refresh does meanwhile
        total = generation.rows.num_rows
        fetch = k if max_per_video is None else min(total, 4 * k)
        results: list[list[SearchHit]] = [[] for _ in embeddings]
        pending = list(range(len(embeddings)))  # queries still short of k hits (a video filled them): fetch more
        while pending:
            scores, ids = self._search_vectors(generation, embeddings[pending], fetch)
            short = []
            for query, query_scores, query_ids in zip(pending, scores, ids):
                self._check_scores(generation, query_scores[query_ids >= 0])
                results[query] = self._hits(generation, query_scores, query_ids, k, max_per_video)
                if len(results[query]) < k and fetch < total:
                    short.append(query)
            pending, fetch = short, min(total, 4 * fetch)
        return results

    def _search_vectors(self, generation: OpenGeneration, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Cosine scores and row numbers `(queries, k)` of the best segments for unit-normalised `queries` (row -1,
        score -inf: fewer hits). The vector index numbers its vectors by slot; rows are its live slots in order."""
        try:
            scores, slots = generation.vectors.search(queries, k)
        except DamagedVectorsError as error:
            folder = generation.manifest.vector_file
            raise damaged(self.index_dir, f"{folder}/{Path(error.path).name}",
                          f"{error.problem} (damaged bytes)") from error
        return scores, generation.vectors.rank_of(slots)

    def _check_scores(self, generation: OpenGeneration, scores: np.ndarray) -> None:
        """Stored vectors and queries are unit vectors, so no score exceeds 1 in size: one that does (or is not
        finite) comes from a damaged vector file (one whose damage no checksum saw), and is never returned."""
        if len(scores) and not (np.isfinite(scores).all() and np.abs(scores).max() <= 1 + _SCORE_TOLERANCE):
            raise damaged(self.index_dir, generation.manifest.vector_file,
                          f"it gives a score of {float(np.nanmax(np.abs(scores))):.3g} where a cosine similarity is "
                          "at most 1")

    def _hits(self, generation: OpenGeneration, scores: np.ndarray, ids: np.ndarray, k: int,
              max_per_video: int | None) -> list[SearchHit]:
        valid = ids >= 0
        scores, ids = scores[valid], ids[valid]
        rows = generation.rows.take(ids).to_pydict()
        per_video: dict[str, int] = {}
        hits = []
        for score, path, start, end in zip(scores, rows["path"], rows["start"], rows["end"]):
            if max_per_video is not None:
                if per_video.get(path, 0) >= max_per_video:
                    continue
                per_video[path] = per_video.get(path, 0) + 1
            hits.append(SearchHit(len(hits) + 1, path, float(start), float(end), float(score),
                                  str(Path(generation.manifest.video_dir) / path)))
            if len(hits) == k:
                break
        return hits

    # ------------------------------------------------------------------ the model's vocabulary

    def unknown_words(self, query: str) -> list[str]:
        """The parts of a text query the model cannot read, each once, in query order.

        A word-level tokenizer (the demo model's) maps every word outside its vocabulary to its unknown token, and a
        subword tokenizer does the same with what it cannot encode (CLIP's byte-level BPE encodes any text): the
        model then searches for the rest of the query, as confidently as ever. Say which words were lost.
        """
        tokenizer = self.processor.tokenizer
        unknown_id = tokenizer.unk_token_id
        if unknown_id is None:
            return []
        # Only what the model reads: the tokens `encode_text` keeps (between its start and end tokens).
        text, read = query[: QUERY_CHARS_PER_TOKEN * self.processor.max_words], self.processor.max_words - 2
        if tokenizer.is_fast:
            encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
            tokens = zip(encoding["input_ids"][:read], encoding["offset_mapping"][:read])
            pieces = [text[begin:end] for token, (begin, end) in tokens if token == unknown_id]
        else:  # no offsets: the words holding an unknown token
            pieces = []
            for word in text.split():
                ids = tokenizer(word, add_special_tokens=False, verbose=False)["input_ids"][:read]
                pieces += [word] if unknown_id in ids else []
                read -= len(ids)
                if read <= 0:
                    break
        return list(dict.fromkeys(pieces))

    def known_words(self, max_words: int = SMALL_VOCABULARY) -> list[str] | None:
        """The words of the model's vocabulary, sorted, when it is a word-level one of at most `max_words` words (a
        model trained from scratch on a closed set of captions, like the demo's); else None (CLIP's BPE reads any
        text)."""
        from tokenizers.models import WordLevel

        tokenizer = self.processor.tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or not isinstance(backend.model, WordLevel):
            return None
        special = set(tokenizer.all_special_tokens)
        words = sorted(word for word in tokenizer.get_vocab() if word not in special)
        return words if len(words) <= max_words else None


def combine_windows(embeddings: np.ndarray) -> np.ndarray:
    """One query `(dim,)` from the unit embeddings `(windows, dim)` of a clip's windows: their mean, re-normalised.

    The mean is the direction the windows share, so the query finds moments like the clip as a whole (what a TempMe
    video embedding is for one window, a pooled clip); segments like only one part of a long clip score lower. One
    window gives its own embedding back.
    """
    mean = np.asarray(embeddings, dtype=np.float32).mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


__all__ = ["VideoSearchIndex", "combine_windows"]
