"""Video search: index a folder of videos once, then find any moment in it by typing what happens.

    tempme index videos/ --model path/to/tempme --index videos.index
    tempme search videos.index "a dog catches a frisbee" -k 5
    tempme serve videos.index

The index folder is open data: a Parquet table of segment embeddings with Hugging Face `datasets` features
(`segments/*.parquet`), a faiss vector index and a JSON manifest (`index.json`). One concept per module:

- `discovery`: listing the files of a folder and probing which ones are videos.
- `segments`: cutting a long video into time windows and reading a window's frames.
- `segment_batches`: decoding windows into model-ready batches in DataLoader workers.
- `planning`: which files an update encodes, keeps or drops (incremental updates).
- `storage`: the index on disk: the format, atomic and checked writes, the manifest, segment shards, vector files,
  work shards (resume after a kill), the commit of a generation, checking and repairing.
- `fingerprint`: refusing to score queries from a model other than the index's.
- `distributed`: sharing an update among `accelerate launch` processes.
- `indexer`: one update, end to end; `index`: `VideoSearchIndex`, the Python API.
- `service`: `QueryService`, the engine of the server (batched, cached, concurrent queries); `api`: its JSON API;
  `app`: the Gradio search page and the server; `request_gate`: what the server answers, and to whom.

Every error about an index or what is asked of it is a `SearchIndexError` (a `ValueError`), whose message says
what to do; `tempme` prints it as one `error:` line.
"""

from ..hub.loading import load_search_model  # the model and processor from a folder, the Hub, an adapter or CLIP
from .ann import VectorIndexSettings
from .distributed import FolderNotSharedError, ProcessLostError
from .fingerprint import EmbeddingSpaceMismatchError, model_fingerprint
from .index import VideoSearchIndex
from .indexer import IndexingOptions
from .results import FailedFile, IndexingReport, SearchHit
from .segments import segment_windows
from .service import QueryResult, QueryService
from .storage import (
    IndexCheck,
    IndexDamagedError,
    IndexFileError,
    IndexLockedError,
    IndexNotFoundError,
    IndexProblem,
    IndexSettingsError,
    IndexVersionError,
    SearchIndexError,
    UnsafeRemovalError,
    VideoFolderMismatchError,
    check_index,
    repair_index,
)

__all__ = [
    "EmbeddingSpaceMismatchError",
    "FailedFile",
    "FolderNotSharedError",
    "IndexCheck",
    "IndexDamagedError",
    "IndexFileError",
    "IndexLockedError",
    "IndexNotFoundError",
    "IndexProblem",
    "IndexSettingsError",
    "IndexVersionError",
    "IndexingOptions",
    "IndexingReport",
    "ProcessLostError",
    "QueryResult",
    "QueryService",
    "SearchHit",
    "SearchIndexError",
    "UnsafeRemovalError",
    "VectorIndexSettings",
    "VideoFolderMismatchError",
    "VideoSearchIndex",
    "check_index",
    "load_search_model",
    "model_fingerprint",
    "repair_index",
    "segment_windows",
]
