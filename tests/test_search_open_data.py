"""The segment table as open data: the worked example of docs/search.md ("The segment table as open data"), run as
written, finds what `VideoSearchIndex.search` finds, through `datasets`' faiss index and through the Parquet file
read back with pyarrow; the Parquet file has the column types the docs state."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from search_helpers import make_many_videos, save_tiny_search_model

from transformers_tempme import TempMeCLIPModel, TempMeProcessor, VideoSearchIndex

DOCS = Path(__file__).resolve().parents[1] / "docs" / "search.md"
SECTION = "## The segment table as open data"


def section_python_blocks() -> list[str]:
    """The Python blocks of the section, in order."""
    text = DOCS.read_text()
    section = text[text.index(SECTION):]
    section = section[: section.find("\n## ", len(SECTION))]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


@pytest.fixture(scope="module")
def index_folder(tmp_path_factory):
    """A folder holding `videos.index`, as the example expects (3 videos of 25 s: 9 segments)."""
    root = tmp_path_factory.mktemp("open_data")
    model = save_tiny_search_model(root / "model")
    videos = make_many_videos(root / "videos", 3)
    VideoSearchIndex.build(videos, root / "videos.index", TempMeCLIPModel.from_pretrained(model),
                           TempMeProcessor.from_pretrained(model), model_info={"name_or_path": str(model)},
                           num_workers=0, batch_size=4, progress=False)
    return root


def test_the_docs_example_finds_what_the_index_finds(index_folder, monkeypatch, capsys):
    blocks = section_python_blocks()
    assert len(blocks) == 2 and "add_faiss_index" in blocks[0] and "pq.read_table" in blocks[1]
    monkeypatch.chdir(index_folder)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, f"{DOCS}:{SECTION}", "exec"), namespace)

    index = namespace["index"]
    expected = index.search("a dog catches a frisbee", k=5)
    assert len(expected) == 5
    # datasets' faiss index: the same segments, in the same order, with the same scores.
    hits, scores = namespace["hits"], namespace["scores"]
    assert list(zip(hits["path"], hits["start"], hits["end"])) == [(h.path, h.start, h.end) for h in expected]
    np.testing.assert_allclose(scores, [h.score for h in expected], rtol=0, atol=1e-5)
    printed = capsys.readouterr().out.splitlines()
    assert printed[:5] == [f"{h.score:.3f}  {h.path}  {h.start:.0f}-{h.end:.0f} s" for h in expected]
    # The Parquet file read back into a plain faiss index: the same rows.
    table, rows = namespace["table"], namespace["rows"]
    np.testing.assert_allclose(namespace["similarities"][0], [h.score for h in expected], rtol=0, atol=1e-5)
    assert [(table["path"][int(r)].as_py(), table["start"][int(r)].as_py()) for r in rows[0]] == \
        [(h.path, h.start) for h in expected]
    assert printed[5] == str([h.path for h in expected])
    assert table.num_rows == len(index) == 9


def test_the_parquet_file_has_the_documented_types(index_folder, monkeypatch):
    monkeypatch.chdir(index_folder)
    index = VideoSearchIndex.open("videos.index")
    index.to_dataset().to_parquet("types.parquet")
    dim = index.manifest.embedding_dim
    schema = pq.read_schema("types.parquet")
    assert {field.name: field.type for field in schema} == {
        "path": pa.string(), "segment": pa.int32(), "start": pa.float64(), "end": pa.float64(),
        "duration": pa.float64(), "size": pa.int64(), "mtime_ns": pa.int64(), "sha256": pa.string(),
        "embedding": pa.list_(pa.float32(), dim),  # fixed_size_list<float>[dim]
    }
    # Without the stored Arrow schema (what a reader of plain Parquet sees), a list of float32.
    plain = pq.ParquetFile("types.parquet").schema.to_arrow_schema()
    assert plain.field("embedding").type.value_type == pa.float32()
    # Every vector whole and unit length: inner product is cosine similarity.
    embeddings = pq.read_table("types.parquet")["embedding"].combine_chunks().flatten().to_numpy()
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings.reshape(len(index), dim), axis=1), 1, atol=1e-5)
