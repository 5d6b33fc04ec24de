"""Text queries through the fast text tower (`QueryEncoder`, `query_precision`): embeddings within each precision's
bound of the model's own, batches equal to one query at a time, search hits at fp32 equal to the model's, the choice
"auto" makes by CPU and bound, and the option reaching `tempme search` and `tempme serve`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from search_helpers import build_index, encoder, make_video_folder  # noqa: F401

from transformers_tempme.cli import main
from transformers_tempme.search import query_encoding
from transformers_tempme.search.query_encoding import AUTO_MIN_COSINE, QueryEncoder

QUERIES = [  # different lengths, so that a batch pads the shorter ones
    "a red square moves from left to right",
    "yellow",
    "a green circle moves from top to bottom on black background",
    "blue square grows",
    "a yellow circle shrinks",
    "circle",
]

# precision: (smallest cosine to the model's own embeddings, largest difference of a batch from one query at a time)
BOUNDS = {
    "model": (1 - 1e-6, 1e-5),
    "fp32": (1 - 1e-6, 1e-5),
    "bf16": (0.9995, 1e-5),
    "int8": (0.998, 0.0),  # each query encoded alone: exactly its embedding alone
}


@pytest.fixture(scope="module")
def reference(encoder):  # noqa: F811
    model, processor = encoder
    return QueryEncoder(model, processor, "model")(QUERIES)


@pytest.mark.parametrize("precision", list(BOUNDS))
def test_fast_text_tower_stays_within_its_bound_of_the_model(encoder, reference, precision):  # noqa: F811
    model, processor = encoder
    query_encoder = QueryEncoder(model, processor, precision)
    embeddings = query_encoder(QUERIES)
    assert query_encoder.precision == precision and embeddings.shape == reference.shape
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)
    assert np.sum(embeddings * reference, axis=1).min() >= BOUNDS[precision][0]
    if precision != "model":  # the model itself is left as it was: its text tower is not swapped
        assert type(query_encoder.text_model.text_model.encoder.layers[0].mlp).__name__ == "InferenceMLP"
        assert type(model.text_model.encoder.layers[0].mlp).__name__ == "CLIPMLP"
        assert type(query_encoder.text_model.vision_model.encoder.layers[0].mlp).__name__ == "CLIPMLP"


@pytest.mark.parametrize("precision", list(BOUNDS))
def test_a_batch_is_encoded_as_each_query_alone(encoder, precision):  # noqa: F811
    model, processor = encoder
    query_encoder = QueryEncoder(model, processor, precision)
    together = query_encoder(QUERIES)
    alone = np.concatenate([query_encoder([text]) for text in QUERIES])
    np.testing.assert_allclose(together, alone, atol=BOUNDS[precision][1], rtol=0)


@pytest.fixture(scope="module")
def index(tmp_path_factory, encoder):  # noqa: F811
    root = tmp_path_factory.mktemp("query")
    return build_index(make_video_folder(root / "videos"), root / "videos.index", encoder)


def hits(index, precision: str, query: str) -> list[tuple]:
    index.query_precision = precision
    return [(hit.path, hit.start, hit.score) for hit in index.search(query, k=7)]


@pytest.mark.parametrize("query", QUERIES[:3])
def test_search_at_fp32_equals_the_model(index, query):
    expected, got = hits(index, "model", query), hits(index, "fp32", query)
    assert [hit[:2] for hit in got] == [hit[:2] for hit in expected]
    np.testing.assert_allclose([hit[2] for hit in got], [hit[2] for hit in expected], atol=1e-5, rtol=0)
    assert index.query_encoder.precision == "fp32"


def test_a_new_precision_or_model_rebuilds_the_query_encoder(index):
    index.query_precision = "int8"
    first = index.query_encoder
    assert index.query_encoder is first and first.precision == "int8"
    index.query_precision = "model"
    assert index.query_encoder.precision == "model" and index.query_encoder.text_model is index.model
    with pytest.raises(ValueError, match="Unknown query precision 'int4'"):
        index.query_precision = "int4"


# ------------------------------------------------------------------ what "auto" chooses


@pytest.fixture
def prepared(monkeypatch):
    """The precisions "auto" prepares, in order."""
    seen = []
    prepare = QueryEncoder._prepare
    monkeypatch.setattr(QueryEncoder, "_prepare", lambda self, precision: seen.append(precision) or prepare(self, precision))
    return seen


@pytest.mark.parametrize(
    ("native_bf16", "min_cosine", "chosen", "tried"),
    [
        (True, AUTO_MIN_COSINE, "int8", ["int8"]),  # int8 of the tiny model is within the default bound
        (False, 0.0, "int8", ["int8"]),
        (False, "between", "fp32", ["int8", "fp32"]),  # int8 refused; no native bfloat16: bf16 is not tried
        (True, "between", "bf16", ["int8", "bf16"]),
        (True, 1.1, "model", ["int8", "bf16", "fp32"]),  # no precision within the bound: the model's own forward
    ],
)
def test_auto_takes_the_fastest_precision_within_the_bound(encoder, reference, monkeypatch, prepared, native_bf16,  # noqa: F811
                                                          min_cosine, chosen, tried):
    model, processor = encoder
    if min_cosine == "between":  # above int8's cosine, below bf16's (and fp32's)
        calibration = QueryEncoder(model, processor, "model")(query_encoding.CALIBRATION_QUERIES)
        int8, bf16 = (query_encoding.min_cosine(QueryEncoder(model, processor, precision)(
            query_encoding.CALIBRATION_QUERIES), calibration) for precision in ("int8", "bf16"))
        min_cosine = (int8 + bf16) / 2
        assert int8 < min_cosine < bf16
        prepared.clear()
    monkeypatch.setattr(query_encoding, "cpu_features", lambda: {"onednn_bf16": native_bf16})
    monkeypatch.setattr(query_encoding, "AUTO_MIN_COSINE", min_cosine)
    query_encoder = QueryEncoder(model, processor, "auto")
    assert (query_encoder.precision, prepared) == (chosen, tried)
    if chosen == "model":
        assert query_encoder.text_model is model and query_encoder.calibration_cosine is None
    else:
        assert query_encoder.calibration_cosine >= min_cosine
        assert chosen in query_encoder.describe() and "auto" in query_encoder.describe()


# ------------------------------------------------------------------ the command line


@pytest.fixture(scope="module")
def saved_index(tmp_path_factory, encoder):  # noqa: F811
    """An index whose manifest names a saved model, as `tempme search` and `serve` load it."""
    from transformers_tempme import VideoSearchIndex

    root = tmp_path_factory.mktemp("query_cli")
    model, processor = encoder
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    VideoSearchIndex.build(make_video_folder(root / "videos"), root / "videos.index", model, processor,
                           model_info={"name_or_path": str(root / "model")}, num_workers=0, progress=False)
    return root / "videos.index"


def test_search_takes_the_query_precision(saved_index, capsys):
    answers = {}
    for precision in ("model", "fp32", "int8"):
        assert main(["search", str(saved_index), QUERIES[1], "-k", "5", "--json",
                     "--query-precision", precision]) == 0
        answers[precision] = json.loads(capsys.readouterr().out)
    assert [(h["path"], h["start"]) for h in answers["fp32"]] == [(h["path"], h["start"]) for h in answers["model"]]
    np.testing.assert_allclose([h["score"] for h in answers["fp32"]], [h["score"] for h in answers["model"]], atol=1e-5)
    assert [h["score"] for h in answers["int8"]] != [h["score"] for h in answers["model"]]  # another encoder ran


@pytest.mark.parametrize("command", ["search", "serve"])
def test_a_bad_query_precision_is_one_error_line(saved_index, capsys, command):
    arguments = [command, str(saved_index), *([QUERIES[0]] if command == "search" else []), "--query-precision", "int4"]
    with pytest.raises(SystemExit) as exit_info:  # argparse's exit, in `tempme` the process's exit code
        main(arguments)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--query-precision" in err[0] and "int4" in err[0]


@pytest.mark.parametrize(("argument", "precision"), [([], None), (["--query-precision", "int8"], "int8"),
                                                     (["--query-precision", "model"], "model")])
def test_serve_takes_the_query_precision(saved_index, monkeypatch, capsys, argument, precision):
    from transformers_tempme.search import app

    served = {}
    monkeypatch.setattr(app, "serve", lambda index, **kwargs: served.update(index=index))
    assert main(["serve", str(saved_index), *argument]) == 0
    encoder = served["index"].query_encoder  # noqa: F811 - prepared before serving
    assert encoder.requested == (precision or "auto")
    assert encoder.precision == (precision or "int8")  # the tiny model's int8 is within the bound
    assert encoder.describe() in capsys.readouterr().out


# ------------------------------------------------------------------ the benchmark runs


@pytest.mark.slow
def test_the_query_encoding_benchmark_writes_its_records(tmp_path):
    """`benchmarks/query_encoding.py` at a tiny size (ViT-B/32 text tower, real CLIP vocabulary); no timing asserted."""
    import subprocess
    import sys
    from pathlib import Path

    from search_helpers import subprocess_env

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "query_encoding.py"
    output = tmp_path / "query_encoding.json"
    subprocess.run([sys.executable, str(script), "--queries", "6", "--segments", "300", "--batch", "3", "--output",
                    str(output), "--markdown", str(tmp_path / "query_encoding.md")], check=True, env=subprocess_env(),
                   cwd=tmp_path, capture_output=True, timeout=600)
    results = json.loads(output.read_text())
    rows = {row["precision"].split(" ")[0]: row for row in results["precisions"]}
    assert list(rows) == ["model", "fp32", "bf16", "int8", "auto"]
    assert rows["fp32"]["min_cosine"] > 1 - 1e-5 and rows["fp32"]["top10_random"] == rows["fp32"]["top10_near"] == 1.0
    assert rows["auto"]["min_cosine"] >= 0.998  # checked on the calibration queries, near it on others
    assert all(row["single"]["p50_ms"] > 0 and row["single"]["cpu_p50_ms"] > 0 for row in rows.values())
    assert "flags" in results["machine"]["cpu_features"] and "query precision" in (tmp_path / "query_encoding.md").read_text()
