"""`VideoSearchIndex`: build an index of a video folder once, update it as the folder changes, search it by text.

    from transformers_tempme import VideoSearchIndex, load_search_model

    model, processor, info = load_search_model("path/to/tempme-model")
    index = VideoSearchIndex.build("videos/", "videos.index", model, processor, model_info=info)
    for hit in index.search("a dog catches a frisbee", k=5):
        print(hit.rank, f"{hit.score:.3f}", hit.path, hit.start, hit.end)

    index = VideoSearchIndex.open("videos.index")   # later: loads the model the index names on first query
    report = index.update()                          # encode what was added or changed, drop what was deleted

The folder layout (`index.json`, `segments/*.parquet`, `vectors-*.faiss`, `report-*.json`) is described in
`manifest.py`, `table.py` and `vectors.py`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..video_io import read_video_frames
from .fingerprint import check_fingerprint, model_fingerprint
from .indexer import IndexingOptions, run_update
from .manifest import IndexManifest, read_manifest
from .results import IndexingReport, SearchHit
from .table import read_shards
from .vectors import VectorIndexSettings, load_vector_index, search_vectors


class VideoSearchIndex:
    """A searchable index of the moments of a video folder. Use `build` or `open`, not the constructor.

    Attributes:
        index_dir (`Path`): the index folder.
        manifest (`IndexManifest`): the content of its `index.json`.
    """

    def __init__(self, index_dir: str | os.PathLike, model=None, processor=None, device: str | None = None):
        self.index_dir = Path(index_dir).absolute()
        self.manifest: IndexManifest = read_manifest(self.index_dir)
        self.device = device
        self._model, self._processor = None, None
        if model is not None:
            self.set_model(model, processor)
        settings = VectorIndexSettings(**{k: v for k, v in self.manifest.vector_index.items() if k != "file"})
        self.vector_settings = settings
        self._vectors = load_vector_index(self.index_dir / self.manifest.vector_index["file"], settings)
        shards = [self.index_dir / name for name in self.manifest.shards]
        self._rows = read_shards(shards, self.manifest.embedding_dim, columns=["path", "start", "end"])
        if self._rows.num_rows != self._vectors.ntotal:
            raise ValueError(
                f"The index {self.index_dir} is inconsistent: {self._rows.num_rows} table rows but "
                f"{self._vectors.ntotal} vectors. Rebuild it with `tempme index ... --overwrite`."
            )

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
        index = cls(index_dir, model=model, processor=processor, device=options.device)
        index.last_report = report
        return index

    @classmethod
    def open(cls, index_dir: str | os.PathLike, model=None, processor=None, device: str | None = None) -> "VideoSearchIndex":
        """Open an index for searching. Without `model`, the model named in the index loads on the first query.

        Raises:
            `EmbeddingSpaceMismatchError`: `model` (with `processor`) is not the model the index was built with.
        """
        return cls(index_dir, model=model, processor=processor, device=device)

    def update(self, video_dir: str | os.PathLike | None = None, options: IndexingOptions | None = None,
               **option_kwargs) -> IndexingReport:
        """Re-scan the video folder (by default the one indexed) and encode only what changed; reopens the index."""
        model, processor = self.model, self.processor
        options = options or IndexingOptions(**option_kwargs)
        report = run_update(self.index_dir, video_dir or self.manifest.video_dir, model, processor,
                            self.manifest.model, options)
        self.__init__(self.index_dir, model=model, processor=processor, device=self.device)
        self.last_report = report
        return report

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
        from ..hub.loading import load_from_model_info

        self.set_model(*load_from_model_info(self.manifest.model, self.index_dir))

    @property
    def model(self):
        if self._model is None:
            self._load_model()
        return self._model

    @property
    def processor(self):
        if self._processor is None:
            self._load_model()
        return self._processor

    # ------------------------------------------------------------------ contents

    def __len__(self) -> int:
        """Number of stored segments."""
        return self._rows.num_rows

    @property
    def video_dir(self) -> Path:
        return Path(self.manifest.video_dir)

    @property
    def videos(self) -> list[str]:
        """Paths (relative to the video folder) of the indexed videos, sorted."""
        return sorted(set(self._rows.column("path").to_pylist()))

    @property
    def report(self) -> IndexingReport | None:
        """The report of the update that made this generation of the index."""
        if not self.manifest.report:
            return None
        return IndexingReport.from_dict(json.loads((self.index_dir / self.manifest.report).read_text()))

    def to_dataset(self):
        """Every stored segment, embeddings included, as a `datasets.Dataset`."""
        from datasets import Dataset

        shards = [self.index_dir / name for name in self.manifest.shards]
        return Dataset(read_shards(shards, self.manifest.embedding_dim))

    # ------------------------------------------------------------------ searching

    @torch.inference_mode()
    def encode_text(self, texts: str | Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings `(texts, dim)` float32."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        input_ids, attention_mask = self.processor.encode_text(texts)
        # CLIP's text attention is causal and pooled at the end-of-text token, so the padding after the longest
        # caption changes nothing: dropping it makes a short query 1.5x faster to encode.
        length = max(int(attention_mask.sum(axis=1).max()), 1)
        input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
        device = next(self.model.parameters()).device
        embeds = self.model.get_text_features(
            input_ids=torch.from_numpy(input_ids).to(device), attention_mask=torch.from_numpy(attention_mask).to(device)
        ).pooler_output
        return torch.nn.functional.normalize(embeds.float(), dim=-1).cpu().numpy()

    @torch.inference_mode()
    def encode_video(self, video: str | os.PathLike) -> np.ndarray:
        """L2-normalised embedding `(1, dim)` of a video file, its `num_frames` frames sampled over the whole clip."""
        processor = self.processor
        frames, _ = read_video_frames(video, processor.num_frames, processor.frame_sampling)
        pixel_values, video_mask = processor.preprocess_videos([frames])
        device = next(self.model.parameters()).device
        embeds = self.model.encode_video(
            torch.from_numpy(pixel_values).to(device=device, dtype=self.model.dtype), torch.from_numpy(video_mask).to(device)
        ).video_embeds
        return torch.nn.functional.normalize(embeds.float(), dim=-1).cpu().numpy()

    def search(self, query: str, k: int = 10, max_per_video: int | None = None) -> list[SearchHit]:
        """The `k` moments that best match a text query, best first.

        Args:
            query (`str`): what happens in the moment, e.g. "a dog catches a frisbee".
            k (`int`): hits to return.
            max_per_video (`int`, *optional*): at most this many hits from one video (e.g. 1 for distinct videos).
        """
        return self.search_embedding(self.encode_text(query)[0], k, max_per_video)

    def search_like(self, video: str | os.PathLike, k: int = 10, max_per_video: int | None = None) -> list[SearchHit]:
        """The `k` moments most similar to an example video clip (encoded as one segment), best first."""
        return self.search_embedding(self.encode_video(video)[0], k, max_per_video)

    def search_embedding(self, embedding: np.ndarray, k: int = 10, max_per_video: int | None = None) -> list[SearchHit]:
        """The `k` moments whose embeddings have the largest inner product with `embedding` `(dim,)`."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}.")
        if max_per_video is not None and max_per_video < 1:
            raise ValueError(f"max_per_video must be at least 1, got {max_per_video}.")
        total = len(self)
        fetch = k if max_per_video is None else min(total, 4 * k)
        while True:
            scores, ids = search_vectors(self._vectors, embedding[None, :], fetch, self.vector_settings)
            hits = self._hits(scores[0], ids[0], k, max_per_video)
            if len(hits) == k or fetch >= total:
                return hits
            fetch = min(total, 4 * fetch)

    def _hits(self, scores: np.ndarray, ids: np.ndarray, k: int, max_per_video: int | None) -> list[SearchHit]:
        valid = ids >= 0
        scores, ids = scores[valid], ids[valid]
        rows = self._rows.take(ids).to_pydict()
        per_video: dict[str, int] = {}
        hits = []
        for score, path, start, end in zip(scores, rows["path"], rows["start"], rows["end"]):
            if max_per_video is not None:
                if per_video.get(path, 0) >= max_per_video:
                    continue
                per_video[path] = per_video.get(path, 0) + 1
            hits.append(SearchHit(len(hits) + 1, path, float(start), float(end), float(score), str(self.video_dir / path)))
            if len(hits) == k:
                break
        return hits


__all__ = ["VideoSearchIndex"]
