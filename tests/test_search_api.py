"""The search engine of `tempme serve` (`QueryService`), in process: batched answers equal to one query at a time,
batches that form under concurrency, the cache and its invalidation by a new generation, the set of served files
following the generation. The JSON routes and their security rules are tested against a real `tempme serve` process
in `test_search_server.py`."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from search_helpers import build_index, encoder, make_video_folder, moving_square, write_clip  # noqa: F401

from transformers_tempme import VideoSearchIndex
from transformers_tempme.search.service import QueryService

QUERIES = [  # different lengths, so that a batch pads the shorter ones
    "red",
    "a red square moves from left to right",
    "a blue square moves from right to left on black background",
    "green circle grows",
    "a yellow square shrinks",
    "blue",
]


@pytest.fixture(scope="module")
def index(tmp_path_factory, encoder):  # noqa: F811
    root = tmp_path_factory.mktemp("service")
    return build_index(make_video_folder(root / "videos"), root / "videos.index", encoder)


def answers(hits) -> list[tuple]:
    return [(hit.path, hit.start) for hit in hits]


def assert_same_hits(got, expected) -> None:
    """The same hits in the same order, scores equal within 1e-5."""
    assert answers(got) == answers(expected)
    np.testing.assert_allclose([h.score for h in got], [h.score for h in expected], atol=1e-5, rtol=0)


# ------------------------------------------------------------------ batches answer as one query at a time


def test_a_batch_of_texts_is_encoded_as_each_text_alone(index):
    together = index.encode_text(QUERIES)
    alone = np.stack([index.encode_text(text)[0] for text in QUERIES])
    np.testing.assert_allclose(together, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("max_per_video", [None, 1])
def test_a_batch_of_embeddings_is_searched_as_each_alone(index, max_per_video):
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((40, index.manifest.embedding_dim)).astype(np.float32)  # 40: faiss's BLAS path
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    together = index.search_embeddings(queries, k=5, max_per_video=max_per_video)
    for query, hits in zip(queries, together):
        assert_same_hits(hits, index.search_embedding(query, k=5, max_per_video=max_per_video))


@pytest.mark.parametrize("k, one_per_video", [(3, False), (7, False), (3, True)])
def test_the_service_answers_as_index_search(index, k, one_per_video):
    with QueryService(index, batch_size=64, batch_wait_ms=1000) as service:
        futures = [service.submit(text, k, one_per_video) for text in QUERIES]  # one batch: all asked within 1 s
        results = [future.result(timeout=120) for future in futures]
        assert service.stats.batches == 1 and service.stats.largest_batch == len(QUERIES)
    for text, result in zip(QUERIES, results):
        assert result.query == text and result.generation == index.manifest.generation
        assert result.unknown_words == tuple(index.unknown_words(text))
        assert_same_hits(result.hits, index.search(text, k=k, max_per_video=1 if one_per_video else None))


def test_a_batch_forms_under_concurrency(index, monkeypatch):
    encoded_together = []
    encode_text = index.encode_text
    monkeypatch.setattr(index, "encode_text", lambda texts: encoded_together.append(len(texts)) or encode_text(texts))
    expected = {text: index.search(text, k=4) for text in QUERIES}
    encoded_together.clear()
    results, start = {}, threading.Barrier(len(QUERIES) * 2)
    with QueryService(index, batch_size=8, batch_wait_ms=50, cache_size=0) as service:

        def client(text: str) -> None:
            start.wait()
            results.setdefault(text, []).append(service.search(text, k=4))

        threads = [threading.Thread(target=client, args=(text,)) for text in QUERIES * 2]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        stats = service.stats
    assert max(encoded_together) > 1 and sum(encoded_together) == stats.encoded <= len(threads)
    assert stats.largest_batch == max(encoded_together) and stats.queries == len(threads)
    for text, got in results.items():
        assert len(got) == 2 and got[0] == got[1]
        assert_same_hits(got[0].hits, expected[text])


def test_identical_queries_in_flight_share_one_computation(index):
    with QueryService(index, batch_wait_ms=300) as service:
        first, second = service.submit("a red square", 3), service.submit("  a red   square ", 3)
        assert first is second and first.result(timeout=120).query == "a red square"
        assert service.stats.shared == 1 and service.stats.encoded == 1


def test_long_queries_are_cut_before_any_work(index):
    from transformers_tempme.search.index import QUERY_CHARS_PER_TOKEN

    with QueryService(index) as service:
        result = service.search("a red square moves " * 600_000, k=3)  # 11 MB
    assert len(result.query) <= QUERY_CHARS_PER_TOKEN * index.processor.max_words
    assert_same_hits(result.hits, index.search(result.query, k=3))


# ------------------------------------------------------------------ the cache


def test_repeated_queries_come_from_the_cache(index):
    with QueryService(index, cache_size=2) as service:
        first = service.search("a red square", 3)
        assert service.search("a red square", 3) == first and service.stats.cache_hits == 1
        assert service.search(" a  red\tsquare\n", 3) == first and service.stats.cache_hits == 2  # blanks collapsed
        service.search("a red square", 4)  # another k: another answer
        service.search("a red square", 3, one_per_video=True)  # another setting: evicts the oldest (k=3)
        assert service.stats.cache_hits == 2 and service.status()["cache"] == {"size": 2, "entries": 2}
        service.search("a red square", 3)
        assert service.stats.cache_hits == 2 and service.stats.encoded == 4
    with QueryService(index, cache_size=0) as service:
        service.search("a red square", 3)
        service.search("a red square", 3)
        assert service.stats.cache_hits == 0 and service.stats.encoded == 2


def test_a_new_generation_is_never_answered_from_the_cache(tmp_path, encoder):  # noqa: F811
    videos = make_video_folder(tmp_path / "videos")
    index = build_index(videos, tmp_path / "videos.index", encoder)
    served_before = index.video_paths
    assert index.video_paths is served_before  # built once per generation
    with QueryService(index) as service:
        before = service.search("a yellow square moves from left to right", 50)
        assert before.generation == 1 and "yellow.mp4" not in answers(before.hits)
        write_clip(videos / "yellow.mp4", moving_square("yellow", 12))
        VideoSearchIndex.open(tmp_path / "videos.index", *encoder).update(num_workers=0, progress=False)  # elsewhere
        after = service.search("a yellow square moves from left to right", 50)
        assert service.stats.cache_hits == 0 and after.generation == 2
        assert "yellow.mp4" in {hit.path for hit in after.hits} and len(after.hits) == len(before.hits) + 1
        assert service.status()["generation"] == 2 and service.status()["cache"]["entries"] == 1
    assert index.video_paths == served_before | {"yellow.mp4"}


# ------------------------------------------------------------------ errors and settings


def test_a_failed_batch_fails_its_queries_and_the_next_one_runs(index, monkeypatch):
    with QueryService(index) as service:
        monkeypatch.setattr(index, "encode_text", lambda texts: (_ for _ in ()).throw(RuntimeError("broken")))
        with pytest.raises(RuntimeError, match="broken"):
            service.search("a red square", 3)
        monkeypatch.undo()
        assert_same_hits(service.search("a red square", 3).hits, index.search("a red square", k=3))


@pytest.mark.parametrize("query, k, message", [("", 3, "empty"), (" \n\t", 3, "empty"), ("red", 0, "k must be")])
def test_bad_queries_are_refused_before_any_work(index, query, k, message):
    with QueryService(index) as service:
        with pytest.raises(ValueError, match=message):
            service.submit(query, k)
        assert service.stats.queries == 0


@pytest.mark.parametrize("setting", [{"batch_size": 0}, {"batch_wait_ms": -1}, {"cache_size": -1},
                                     {"search_threads": 0}, {"max_clips": 0}])
def test_bad_settings_are_refused(index, setting):
    with pytest.raises(ValueError, match=f"{next(iter(setting))} must be at least"):
        QueryService(index, **setting)


def test_a_closed_service_takes_no_query(index):
    service = QueryService(index)
    service.close()
    with pytest.raises(RuntimeError, match="closed"):
        service.submit("red", 3)


def test_clip_slots_are_bounded(index):
    from transformers_tempme.search.service import ServiceBusyError

    with QueryService(index, max_clips=1) as service:
        with service.clip_slot():
            with pytest.raises(ServiceBusyError):
                with service.clip_slot():
                    pass
        with service.clip_slot():  # released
            pass


@pytest.mark.parametrize(
    "option, value, said",
    [("--batch-size", "0", "must be at least 1"), ("--batch-wait-ms", "-1", "must be at least 0"),
     ("--batch-wait-ms", "nan", "must be at least 0"), ("--cache-size", "x", "is not a number"),
     ("-k", "0", "at least 1")],
)
def test_bad_serve_options_are_usage_errors(option, value, said, capsys):
    from transformers_tempme.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "some.index", option, value])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and said in err


def test_serve_passes_the_engine_settings(tmp_path, encoder, monkeypatch):  # noqa: F811
    from transformers_tempme.cli import main
    from transformers_tempme.search import app

    model, processor = encoder
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    VideoSearchIndex.build(make_video_folder(tmp_path / "videos"), tmp_path / "videos.index", model, processor,
                           model_info={"name_or_path": str(tmp_path / "model")}, num_workers=0, progress=False)
    served = {}
    monkeypatch.setattr(app, "serve", lambda index, **kwargs: served.update(kwargs))
    assert main(["serve", str(tmp_path / "videos.index"), "--batch-size", "8", "--batch-wait-ms", "0",
                 "--cache-size", "0"]) == 0
    assert (served["batch_size"], served["batch_wait_ms"], served["cache_size"]) == (8, 0.0, 0)


# ------------------------------------------------------------------ the load benchmark runs


@pytest.mark.slow
def test_the_load_benchmark_checks_every_answer(tmp_path):
    """`benchmarks/search_load.py` at a tiny size: a real server, every answer compared (no timing asserted)."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "search_load.py"
    spec = importlib.util.spec_from_file_location("search_load", script)  # as `python benchmarks/search_load.py` runs
    search_load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(search_load)

    results = search_load.main(["--tiny", "--segments", "300", "--queries", "12", "--concurrency", "1,6",
                                "--batch-wait-ms", "20", "--output", str(tmp_path / "load.json"),
                                "--markdown", str(tmp_path / "load.md")])
    assert [level["concurrency"] for level in results["levels"]] == [1, 6]
    for level in results["levels"]:
        assert level["answered"] == level["queries"] == 12 and level["wrong"] == level["failed"] == 0
        assert level["queries_per_s"] > 0 and level["p95_ms"] >= level["p50_ms"] > 0
    assert results["cache_hits"] == 0 and results["server_settings"]["batch_wait_ms"] == 20
    assert "flags" in results["machine"]["cpu_features"] and len(results["machine"]["load_average"]) == 3
    assert "--tiny --segments 300" in (tmp_path / "load.md").read_text()
    # What counts as a wrong answer: another order, another score, a hit missing; a float-precision tie may swap.
    expected = [("a.mp4", 0.0, 0.9), ("b.mp4", 10.0, 0.8), ("c.mp4", 0.0, 0.8 + 2e-6)]
    hits = [{"path": p, "start": s, "score": score} for p, s, score in expected]
    assert search_load.is_correct(hits, expected) and search_load.is_correct([hits[0], hits[2], hits[1]], expected)
    assert not search_load.is_correct([hits[1], hits[0], hits[2]], expected)
    assert not search_load.is_correct(hits[:2], expected)
    assert not search_load.is_correct([hits[0], hits[1], {**hits[2], "score": 0.7}], expected)
