"""Video search: index a folder of videos once, then find any moment in it by typing what happens.

    tempme index videos/ --model path/to/tempme --index videos.index
    tempme search videos.index "a dog catches a frisbee" -k 5
    tempme serve videos.index

The index folder is open data: a Parquet table of segment embeddings with Hugging Face `datasets` features
(`segments/*.parquet`), a faiss vector index and a JSON manifest (`index.json`). One concept per module:

- `discovery`: listing the files of a folder and probing which ones are videos.
- `segments`: cutting a long video into time windows.
- `segment_batches`: decoding windows into model-ready batches in DataLoader workers.
- `planning`: which files an update encodes, keeps or drops (incremental updates).
- `work_shards`, `atomic`: crash-safe progress and atomic file writes (resume after a kill).
- `table`, `vectors`, `manifest`: the stored table, the faiss index and `index.json`.
- `fingerprint`: refusing to score queries from a model other than the index's.
- `distributed`: sharing an update among `accelerate launch` processes.
- `indexer`: one update, end to end; `index`: `VideoSearchIndex`, the Python API.
- `app`: the Gradio search page.
"""

from ..hub.loading import load_search_model  # the model and processor from a folder, the Hub, an adapter or CLIP
from .fingerprint import EmbeddingSpaceMismatchError, model_fingerprint
from .index import VideoSearchIndex
from .indexer import IndexingOptions
from .manifest import IndexNotFoundError
from .results import FailedFile, IndexingReport, SearchHit
from .segments import segment_windows
from .vectors import VectorIndexSettings

__all__ = [
    "EmbeddingSpaceMismatchError",
    "FailedFile",
    "IndexNotFoundError",
    "IndexingOptions",
    "IndexingReport",
    "SearchHit",
    "VectorIndexSettings",
    "VideoSearchIndex",
    "load_search_model",
    "model_fingerprint",
    "segment_windows",
]
