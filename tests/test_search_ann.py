"""`search.ann`: flat, HNSW and IVF-PQ indexes over slots: build, search with exact re-ranking, incremental add and
remove, compaction, save/load with memory-mapped float16 vectors, `choose_ann`; and the structured benchmark data
of `benchmarks/search_scale.py`. Small sizes (64 dimensions, 12k vectors) so that the whole file runs in seconds."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from transformers_tempme.search.ann import (
    FLAT_MAX_VALUES,
    HNSW_MAX_VECTORS,
    AnnIndex,
    VectorIndexSettings,
    choose_ann,
    estimated_bytes_per_vector,
    settings_for,
)

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "search_scale.py"
DIM = 64
COUNT = 12_000  # PQ codebooks of 256 centroids want at least 39 * 256 training vectors


def load_scale_script():
    spec = importlib.util.spec_from_file_location("search_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


scale = load_scale_script()

# Each kind at test size. Text-like queries are far from every stored vector, which makes a small library hard:
# IVF-PQ scans 16 of its 64 cells (about 190 vectors each) and re-ranks 100 candidates (200 with the coarser
# 8-byte codes that keep OPQ's training short); HNSW needs efSearch 256. IVF-PQ is trained once per module
# (`built`); the other tests reuse its training (`trained=`), as an update does.
SETTINGS = {
    "flat": VectorIndexSettings("flat"),
    "hnsw": VectorIndexSettings("hnsw", hnsw_m=16, ef_construction=64, ef_search=256),
    "ivfpq": VectorIndexSettings("ivfpq", nlist=64, pq_m=16, opq=False, nprobe=16, rerank=100, train_size=COUNT),
    "ivfpq-opq": VectorIndexSettings("ivfpq", nlist=64, pq_m=8, opq=True, nprobe=16, rerank=200, train_size=COUNT),
}


@pytest.fixture(scope="module")
def library():
    """Structured vectors (videos of near-duplicate windows, clustered by topic), text-like queries, exact top-10."""
    structured = scale.StructuredLibrary(COUNT, dim=DIM, seed=3)
    vectors = np.concatenate([rows for _, rows in structured.blocks()])
    queries = structured.text_queries(vectors, 40)
    return vectors, queries, scale.exact_top_k(vectors, queries)[1]


@pytest.fixture(scope="module")
def built(library):
    import faiss

    import transformers_tempme.search.ann as ann

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # k-means threads spinning against other processes make training many times slower
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ann, "OPQ_ITERATIONS", 3)  # the rotation is trained all the same, in seconds
        indexes = {name: AnnIndex.build(library[0], settings) for name, settings in SETTINGS.items()}
    faiss.omp_set_num_threads(threads)
    return indexes


# -------------------------------------------------------------------------------------------------- settings


def test_settings_round_trip_and_checks():
    settings = VectorIndexSettings("ivfpq", nlist=128, pq_m=16, nprobe=12, rerank=50)
    assert VectorIndexSettings.from_dict({**settings.to_dict(), "file": "vectors-00003"}) == settings
    assert settings.builds_like(VectorIndexSettings("ivfpq", nlist=128, pq_m=16, nprobe=99, rerank=7))
    assert not settings.builds_like(VectorIndexSettings("ivfpq", nlist=256, pq_m=16))
    with pytest.raises(ValueError, match="Unknown vector index 'ivf'"):
        VectorIndexSettings("ivf")
    with pytest.raises(ValueError, match="nprobe must be at least 1"):
        VectorIndexSettings("ivfpq", nprobe=0)
    with pytest.raises(ValueError, match="pq_m=48 must divide the embedding dimension 64"):
        AnnIndex.build(np.eye(64, dtype=np.float32), VectorIndexSettings("ivfpq", pq_m=48))


@pytest.mark.parametrize(
    "segments, budget, kind, pq_m",
    [
        (1_000, None, "flat", None),
        (FLAT_MAX_VALUES // 512, None, "flat", None),
        (FLAT_MAX_VALUES // 512 + 1, None, "hnsw", None),
        (HNSW_MAX_VECTORS, None, "hnsw", None),
        (HNSW_MAX_VECTORS + 1, None, "ivfpq", 64),
        (100_000, 100 * 2**20, "ivfpq", 64),  # flat needs 200 MiB: over the budget
        (1_000_000, 1 * 2**30, "ivfpq", 64),  # HNSW needs about 2.3 GiB
        (10_000_000, 4 * 2**30, "ivfpq", 64),
        (10_000_000, 600 * 2**20, "ivfpq", 32),  # 64-byte codes, ids and tables need 950 MiB: 32-byte codes
        (100_000_000, 4 * 2**30, "ivfpq", 32),
    ],
)
def test_choose_ann_rules(segments, budget, kind, pq_m):
    settings = choose_ann(segments, 512, budget)
    assert settings.kind == kind
    if pq_m is not None:
        assert settings.pq_m == pq_m
    if budget is not None:
        assert estimated_bytes_per_vector(settings, segments, 512) * segments <= budget


def test_choose_ann_refuses_a_budget_nothing_fits():
    with pytest.raises(ValueError, match=r"100,000,000 segments need at least .* MiB .* raise the memory limit"):
        choose_ann(100_000_000, 512, 2**30)


@pytest.mark.parametrize("segments, nlist, nprobe", [(100_000, 256, 16), (1_000_000, 1024, 20), (10_000_000, 4096, 82),
                                                     (5_000, 64, 16)])
def test_ivfpq_settings_scale_with_the_library(segments, nlist, nprobe):
    settings = settings_for("ivfpq", segments, 512)
    assert (settings.nlist, settings.nprobe, settings.pq_m) == (nlist, nprobe, 64)
    assert settings.train_size >= min(segments, 39 * settings.nlist)
    bytes_per_vector = estimated_bytes_per_vector(settings, segments, 512)
    if segments >= 1_000_000:
        assert bytes_per_vector <= 150


# --------------------------------------------------------------------------------------------------- search


@pytest.mark.parametrize("name, minimum_recall", [("flat", 1.0), ("hnsw", 0.95), ("ivfpq", 0.95), ("ivfpq-opq", 0.95)])
def test_recall_against_exact_search_on_structured_data(library, built, name, minimum_recall):
    _, queries, exact = library
    scores, slots = built[name].search(queries, 10)
    assert scale.recall_at_k(slots, exact) >= minimum_recall
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first


@pytest.mark.parametrize("name", ["ivfpq", "ivfpq-opq"])
def test_ivfpq_scores_are_exact_cosines_of_the_stored_vectors(library, built, name):
    vectors, queries, _ = library
    scores, slots = built[name].search(queries * 3.0, 10)  # queries of any length: cosines all the same
    rows = vectors[slots].astype(np.float16).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=2, keepdims=True)
    cosines = np.einsum("qkd,qd->qk", rows, queries / np.linalg.norm(queries, axis=1, keepdims=True))
    np.testing.assert_allclose(scores, cosines, atol=1e-5)
    assert scores.max() <= 1.0


def test_a_query_for_a_stored_vector_finds_it_with_cosine_one(library, built):
    vectors = library[0]
    for index in built.values():
        scores, slots = index.search(vectors[[17, 4000]], 3)
        assert slots[:, 0].tolist() == [17, 4000]
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=2e-3)  # float16 storage: within its rounding


@pytest.mark.parametrize("name", list(SETTINGS))
def test_fewer_vectors_than_k_pad_with_minus_one(library, built, name):
    vectors = library[0]
    settings = SETTINGS[name]
    index = AnnIndex.build(vectors[:5], settings, trained=built[name])  # IVF-PQ: trained on all, holding 5
    scores, slots = index.search(vectors[0], 8)
    assert slots.shape == (1, 8) and sorted(slots[0, :5].tolist()) == [0, 1, 2, 3, 4]
    assert slots[0, 5:].tolist() == [-1, -1, -1] and np.isneginf(scores[0, 5:]).all()


# ------------------------------------------------------------------------------------------------ incremental


@pytest.mark.parametrize("name", ["flat", "ivfpq", "ivfpq-opq"])
def test_adding_equals_building_on_the_union(library, built, name):
    """1% more vectors added to an index give the results of the same training over all of them at once."""
    vectors, queries, _ = library
    first = len(vectors) - len(vectors) // 100
    full = built[name]
    incremental = AnnIndex.build(vectors[:first], SETTINGS[name], trained=full)
    new_slots = incremental.add(vectors[first:])
    assert new_slots.tolist() == list(range(first, len(vectors)))
    rebuilt = AnnIndex.build(vectors, SETTINGS[name], trained=full)
    for index in (incremental, rebuilt):
        scores, slots = index.search(queries, 10)
        expected_scores, expected_slots = full.search(queries, 10)
        np.testing.assert_array_equal(slots, expected_slots)
        np.testing.assert_allclose(scores, expected_scores, atol=1e-6)


def test_adding_to_hnsw_extends_the_graph(library, built):
    vectors, queries, exact = library
    first = len(vectors) - len(vectors) // 100
    index = AnnIndex.build(vectors[:first], SETTINGS["hnsw"])
    index.add(vectors[first:])  # inserted into the graph
    assert index.index.ntotal == len(vectors)
    assert scale.recall_at_k(index.search(queries, 10)[1], exact) >= 0.95
    scores, slots = index.search(vectors[first:], 1)  # the added vectors are found
    assert slots[:, 0].tolist() == list(range(first, len(vectors)))


@pytest.mark.parametrize("name", list(SETTINGS))
def test_removed_vectors_are_never_returned_and_the_rest_is_exact(library, built, name):
    vectors, queries, _ = library
    index = AnnIndex.build(vectors, SETTINGS[name], trained=built[name])
    removed = np.arange(5000, 5300)  # whole videos: neighbouring windows
    assert index.remove(np.concatenate([removed, removed[:10]])) == len(removed)
    assert index.remove(removed[:10]) == 0  # removing twice counts once
    assert (index.slots, index.live) == (len(vectors), len(vectors) - len(removed))
    near_removed = vectors[removed[::30]]
    _, slots = index.search(np.concatenate([queries, near_removed]), 10)
    assert not np.isin(slots, removed).any()
    kept = np.setdiff1d(np.arange(len(vectors)), removed)
    exact_rows = kept[scale.exact_top_k(vectors[kept], queries)[1]]
    assert scale.recall_at_k(slots[: len(queries)], exact_rows) >= (1.0 if name == "flat" else 0.95)
    with pytest.raises(ValueError, match="Slots out of range"):
        index.remove([len(vectors)])


@pytest.mark.parametrize("name", list(SETTINGS))
def test_compaction_renumbers_densely_and_keeps_results(library, built, tmp_path, name):
    vectors, queries, _ = library
    index = AnnIndex.build(vectors, replace_ratio(SETTINGS[name], 0.01), trained=built[name])
    removed = np.arange(100, 400)
    index.remove(removed)
    assert index.needs_compaction
    before_scores, before_slots = index.search(queries, 10)
    old_to_new = index.compact()
    assert not index.needs_compaction and (index.slots, index.live) == (len(vectors) - 300, len(vectors) - 300)
    assert (old_to_new[removed] == -1).all()
    assert old_to_new[400] == 100 and old_to_new[99] == 99 and old_to_new[-1] == len(vectors) - 301
    after_scores, after_slots = index.search(queries, 10)
    if name == "hnsw":  # a new graph: the same vectors, found alike
        assert scale.recall_at_k(after_slots, old_to_new[before_slots]) >= 0.95
    else:
        np.testing.assert_array_equal(after_slots, old_to_new[before_slots])
        np.testing.assert_allclose(after_scores, before_scores, atol=1e-6)
    index.save(tmp_path / "compacted")  # the rewritten float16 vectors are saved with it
    np.testing.assert_array_equal(AnnIndex.load(tmp_path / "compacted").search(queries, 10)[1], after_slots)


def replace_ratio(settings: VectorIndexSettings, ratio: float) -> VectorIndexSettings:
    return VectorIndexSettings.from_dict({**settings.to_dict(), "compact_ratio": ratio})


# ----------------------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("name", list(SETTINGS))
def test_save_and_load_round_trip(library, built, tmp_path, name):
    vectors, queries, _ = library
    index = built[name]
    names = index.save(tmp_path / "index")
    assert sorted(os.listdir(tmp_path / "index")) == sorted(names)
    loaded = AnnIndex.load(tmp_path / "index")
    assert (loaded.settings, loaded.dim, loaded.slots, loaded.live) == (index.settings, DIM, len(vectors), len(vectors))
    for got, expected in zip(loaded.search(queries, 10), index.search(queries, 10)):
        np.testing.assert_array_equal(got, expected)
    state = json.loads((tmp_path / "index" / "ann.json").read_text())
    assert state["settings"] == index.settings.to_dict() and state["slots"] == len(vectors)
    with pytest.raises(FileExistsError, match="already holds a vector index"):
        loaded.save(tmp_path / "index")


@pytest.mark.parametrize("change", ["search", "add", "remove", "save"])
def test_a_single_faiss_file_is_searched_as_it_is_and_id_mapped_by_its_first_change(library, built, tmp_path,
                                                                                        change):
    """A flat index of one `.faiss` file (written before the vector folder) is searched without copying its
    vectors; adding, removing or saving first gives it the id map that the folder format keeps."""
    import faiss

    vectors, queries, _ = library
    bare = faiss.IndexFlatIP(DIM)
    bare.add(vectors)
    faiss.write_index(bare, str(tmp_path / "vectors-00001.faiss"))
    index = AnnIndex.from_faiss_file(tmp_path / "vectors-00001.faiss", SETTINGS["flat"])
    for got, expected in zip(index.search(queries, 10), built["flat"].search(queries, 10)):
        np.testing.assert_array_equal(got, expected)
    assert not isinstance(index.index, faiss.IndexIDMap)
    removed = np.arange(5000, 5300)
    if change == "add":
        np.testing.assert_array_equal(index.add(vectors[:3]), len(vectors) + np.arange(3))
        assert index.search(vectors[:1], 2)[1][0].tolist() in ([0, len(vectors)], [len(vectors), 0])
    elif change == "remove":
        assert index.remove(removed) == len(removed)
        assert not np.isin(index.search(queries, 10)[1], removed).any()
    elif change == "save":
        index.save(tmp_path / "folder")
        loaded = AnnIndex.load(tmp_path / "folder")
        assert isinstance(loaded.index, faiss.IndexIDMap)
        loaded.remove(removed)  # the loaded index maps ids: its slots stay where they were
        assert loaded.live == len(vectors) - len(removed) and not np.isin(loaded.search(queries, 10)[1], removed).any()
    assert isinstance(index.index, faiss.IndexIDMap) == (change != "search")


def test_ivfpq_vectors_are_float16_files_read_through_memory_maps(library, built, tmp_path):
    vectors, queries, _ = library
    index = built["ivfpq"]
    index.save(tmp_path / "one")
    loaded = AnnIndex.load(tmp_path / "one", replace_ratio(index.settings, 0.5))  # a search-time setting changed
    (path, array), = loaded.vectors.files
    assert isinstance(array, np.memmap) and array.dtype == np.float16 and array.shape == (len(vectors), DIM)
    np.testing.assert_array_equal(np.load(path), vectors.astype(np.float16))
    with pytest.raises(ValueError, match="built with other settings"):
        AnnIndex.load(tmp_path / "one", VectorIndexSettings("ivfpq", nlist=32, pq_m=16, opq=False))

    # saving after an update links the unchanged file and writes only the added vectors
    loaded.add(vectors[:50])
    loaded.remove([3])
    names = loaded.save(tmp_path / "two")
    assert "removed.npy" in names and [n for n in names if n.startswith("vectors-")] == ["vectors-00000.npy",
                                                                                           "vectors-00001.npy"]
    assert os.stat(tmp_path / "one" / "vectors-00000.npy").st_ino == os.stat(tmp_path / "two" / "vectors-00000.npy").st_ino
    assert np.load(tmp_path / "two" / "vectors-00001.npy").shape == (50, DIM)
    again = AnnIndex.load(tmp_path / "two")
    assert (again.slots, again.live, again.removed.tolist()) == (len(vectors) + 50, len(vectors) + 49, [3])
    _, slots = again.search(vectors[[3, 5]], 2)
    assert 3 not in slots and slots[:, 0].tolist() == [len(vectors) + 3, 5]  # its copy, added after


def test_build_writes_float16_files_as_they_fill(library, built, tmp_path, monkeypatch):
    """With a folder, a build from a memory map holds one file's worth of float16 vectors at most."""
    import transformers_tempme.search.ann as ann

    monkeypatch.setattr(ann, "CHUNK_ROWS", 5000)
    vectors = library[0]
    np.save(tmp_path / "input.npy", vectors.astype(np.float16))
    index = AnnIndex.build(np.load(tmp_path / "input.npy", mmap_mode="r"), SETTINGS["ivfpq"], folder=tmp_path / "out",
                           trained=built["ivfpq"])
    assert [path.name for path, _ in index.vectors.files] == ["vectors-00000.npy", "vectors-00001.npy"]
    assert sum(len(array) for array in index.vectors.pending) == COUNT - 10_000
    names = index.save(tmp_path / "out")
    assert [n for n in names if n.startswith("vectors-")] == ["vectors-00000.npy", "vectors-00001.npy",
                                                             "vectors-00002.npy"]
    np.testing.assert_array_equal(AnnIndex.load(tmp_path / "out").vectors.gather(np.array([11_999]))[0],
                                  index.vectors.gather(np.array([11_999]))[0])


# ------------------------------------------------------------------------------------------ benchmark data


def test_structured_library_has_the_structure_it_describes():
    structured = scale.StructuredLibrary(20_000, dim=256, seed=0)
    vectors = np.concatenate([rows for _, rows in structured.blocks()])
    assert vectors.shape == (20_000, 256)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    neighbours = np.sum(vectors[1:] * vectors[:-1], axis=1)  # mostly windows of one video
    rng = np.random.default_rng(0)
    pairs = rng.integers(len(vectors), size=(2, 5000))
    unrelated = np.sum(vectors[pairs[0]] * vectors[pairs[1]], axis=1)
    assert np.median(neighbours) > 0.9 and 0.2 < np.median(unrelated) < 0.4
    text = structured.text_queries(vectors, 50) @ vectors.T
    clip = structured.clip_queries(vectors, 50) @ vectors.T
    assert 0.3 < np.median(text.max(axis=1)) < 0.6 and np.median(clip.max(axis=1)) > 0.9


def test_structured_library_rows_do_not_depend_on_chunking(tmp_path):
    structured = scale.StructuredLibrary(7_000, dim=32, seed=1)
    written = structured.write(tmp_path / "rows.npy")
    assert written.dtype == np.float16 and written.shape == (7_000, 32)
    shorter = np.concatenate([rows for _, rows in scale.StructuredLibrary(7_000, dim=32, seed=1).blocks()])
    np.testing.assert_array_equal(written, shorter.astype(np.float16))
    # a longer library with as many topics starts with the same videos
    longer = np.concatenate([rows for _, rows in scale.StructuredLibrary(9_000, dim=32, seed=1).blocks()])
    np.testing.assert_array_equal(longer[:7_000], shorter)


def test_exact_top_k_matches_a_full_sort(tmp_path, monkeypatch):
    monkeypatch.setattr(scale, "CHUNK", 1000)
    vectors = scale.write_random(tmp_path / "random.npy", 3500, dim=16)
    queries = scale.random_queries(7, dim=16)
    scores, rows = scale.exact_top_k(vectors, queries, k=5)
    full = queries @ np.asarray(vectors, np.float32).T
    np.testing.assert_array_equal(rows, np.argsort(-full, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(scores, np.sort(full, axis=1)[:, ::-1][:, :5], rtol=1e-6)
    assert scale.recall_at_k(rows, rows) == 1.0 and scale.recall_at_k(rows[:, ::-1], rows) == 1.0


def test_building_shows_a_progress_bar(library, capsys):
    AnnIndex.build(library[0][:100], SETTINGS["flat"], progress=True)
    assert "Adding to the exact index" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ in the video index
# The storage commits generations whose vector index is an AnnIndex folder. Rows here are synthetic (10 segments per
# video), committed with `storage.commit_generation` as an update does, without a model.

import threading  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import replace  # noqa: E402

from search_helpers import flip_bytes  # noqa: E402

from transformers_tempme.search import storage  # noqa: E402
from transformers_tempme.search.index import VideoSearchIndex  # noqa: E402

PER_VIDEO = 10
# IVF-PQ trained on fewer vectors (faiss warns; recall is not what these tests measure): each build takes seconds.
IN_INDEX = {**SETTINGS, "ivfpq": replace(SETTINGS["ivfpq"], train_size=2560)}


@pytest.fixture(autouse=True)
def one_faiss_thread():
    """k-means threads spinning against other processes make training many times slower."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def segment_rows(vectors: np.ndarray, first_video: int = 0):
    count = len(vectors)
    columns = {
        "path": [f"v{first_video + i // PER_VIDEO:05d}.mp4" for i in range(count)],
        "segment": [i % PER_VIDEO for i in range(count)], "start": [10.0 * (i % PER_VIDEO) for i in range(count)],
        "end": [10.0 * (i % PER_VIDEO) + 10 for i in range(count)], "duration": [100.0] * count,
        "size": [1] * count, "mtime_ns": [1] * count, "sha256": [""] * count,
    }
    return storage.segment_table(columns, vectors)


def new_index(index_dir, vectors, vector_index: dict):
    """Generation 1 of an index of `vectors` (row i = vectors[i]) with the vector index `vector_index` asks for."""
    base = storage.IndexManifest(video_dir="/videos", model={"name_or_path": "synthetic", "fingerprint": "f"},
                                 embedding_dim=vectors.shape[1], num_frames=12, frame_sampling="fps",
                                 segment_seconds=10.0, segment_overlap=0.0, vector_index={**vector_index, "file": None})
    index_dir.mkdir(parents=True, exist_ok=True)
    return storage.commit_generation(index_dir, base, new_rows=segment_rows(vectors))


def update(index_dir, new_vectors=None, first_video=0, dropped=()):
    """The next generation: `new_vectors` as the rows of new videos, the videos `dropped` removed."""
    base = storage.read_manifest(index_dir)
    rows = segment_rows(new_vectors, first_video) if new_vectors is not None else None
    return storage.commit_generation(index_dir, base, new_rows=rows, dropped=set(dropped))


def search_rows(index_dir, queries, k=10):
    """(path, start) of the hits per query, as `VideoSearchIndex` answers (no model needed for embeddings)."""
    index = VideoSearchIndex.open(index_dir, auto_refresh=False)
    return [[(hit.path, hit.start) for hit in hits] for hits in index.search_embeddings(queries, k)]


def live_codes(ann) -> dict[int, bytes]:
    """{slot: its IVF-PQ code} over every inverted list."""
    import faiss

    lists, codes = faiss.extract_index_ivf(ann.index).invlists, {}
    for number in range(lists.nlist):
        size = lists.list_size(number)
        ids = faiss.rev_swig_ptr(lists.get_ids(number), size).copy()
        data = faiss.rev_swig_ptr(lists.get_codes(number), size * lists.code_size).copy().reshape(size, -1)
        codes.update({int(slot): row.tobytes() for slot, row in zip(ids, data)})
    return codes


@contextmanager
def refusing_rebuilds():
    """Fail any vector index build or faiss training: an update must add to (and remove from) the index it has."""
    import faiss

    def refuse(*args, **kwargs):
        raise AssertionError("the vector index was built or trained again")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(storage, "build_vector_index", refuse)
        patch.setattr(AnnIndex, "build", classmethod(refuse))
        patch.setattr(faiss.Index, "train", refuse)
        yield


@pytest.mark.parametrize("name", ["flat", "hnsw", "ivfpq"])
def test_an_update_adding_one_percent_adds_to_the_vector_index(library, tmp_path, name):
    vectors, queries, _ = library
    first, extra = vectors[: COUNT - 120], vectors[COUNT - 120 :]  # 1% more: 12 videos
    manifest = new_index(tmp_path / "index", first, IN_INDEX[name].to_dict())
    before = storage.load_vector_index(tmp_path / "index", manifest, len(first))
    with refusing_rebuilds():
        second = update(tmp_path / "index", extra, first_video=(COUNT - 120) // PER_VIDEO)
    assert second.counts["segments"] == COUNT and second.vector_settings == manifest.vector_settings
    after = storage.load_vector_index(tmp_path / "index", second, COUNT)
    assert after.slots == COUNT and after.live == COUNT
    if name == "ivfpq":
        old, new = live_codes(before), live_codes(after)
        assert all(new[slot] == code for slot, code in old.items())  # the rows already indexed are not re-encoded
        first_file = f"{manifest.vector_file}/vectors-00000.npy"
        assert os.path.samefile(tmp_path / "index" / first_file, tmp_path / "index" / second.vector_file /
                                "vectors-00000.npy")  # a hard link, its record carried over
        assert second.files[f"{second.vector_file}/vectors-00000.npy"] == manifest.files[first_file]
        assert storage.check_index(tmp_path / "index").ok
    if name == "flat":  # exact: the same answers as an index built from scratch
        new_index(tmp_path / "fresh", vectors, IN_INDEX[name].to_dict())
        assert search_rows(tmp_path / "index", queries) == search_rows(tmp_path / "fresh", queries)


@pytest.mark.parametrize("name", ["flat", "hnsw", "ivfpq"])
def test_removing_videos_needs_no_rebuild_and_rows_follow(library, tmp_path, name):
    vectors, queries, _ = library
    manifest = new_index(tmp_path / "index", vectors, IN_INDEX[name].to_dict())
    dropped = {f"v{video:05d}.mp4" for video in (3, 40, 41, 700)}
    with refusing_rebuilds():
        second = update(tmp_path / "index", dropped=dropped)
    assert second.counts["segments"] == COUNT - 40
    state = json.loads((tmp_path / "index" / second.vector_file / "ann.json").read_text())
    assert state["slots"] == COUNT and state["removed"] == 40 and manifest.vector_file != second.vector_file
    # A query equal to a stored vector after the removed rows finds its own row (slots map to the rows that moved).
    kept = [row for row in range(COUNT) if f"v{row // PER_VIDEO:05d}.mp4" not in dropped]
    probes = [kept[5000], kept[-1], 25]
    found = search_rows(tmp_path / "index", vectors[probes], k=1)
    assert found == [[(f"v{row // PER_VIDEO:05d}.mp4", 10.0 * (row % PER_VIDEO))] for row in probes]
    hits = search_rows(tmp_path / "index", queries)
    assert not {path for query in hits for path, _ in query} & dropped
    if name == "flat":
        fresh = new_index(tmp_path / "fresh", vectors[kept], IN_INDEX[name].to_dict())
        assert fresh.counts["segments"] == len(kept)
        expected = search_rows(tmp_path / "fresh", queries)
        # the fresh index names videos by position: map them back to the kept rows' videos
        rename = {f"v{i // PER_VIDEO:05d}.mp4": f"v{row // PER_VIDEO:05d}.mp4" for i, row in enumerate(kept)}
        assert hits == [[(rename[path], start) for path, start in query] for query in expected]


def test_removing_many_videos_compacts_the_vector_index(library, tmp_path):
    vectors, queries, _ = library
    new_index(tmp_path / "index", vectors, IN_INDEX["ivfpq"].to_dict())
    dropped = {f"v{video:05d}.mp4" for video in range(0, COUNT // PER_VIDEO, 4)}  # 25% > compact_ratio 20%
    second = update(tmp_path / "index", dropped=dropped)
    state = json.loads((tmp_path / "index" / second.vector_file / "ann.json").read_text())
    assert state["removed"] == 0 and state["slots"] == second.counts["segments"] == COUNT - COUNT // 4
    kept = [row for row in range(COUNT) if f"v{row // PER_VIDEO:05d}.mp4" not in dropped]
    assert search_rows(tmp_path / "index", vectors[kept[-3:]], k=1) == [
        [(f"v{row // PER_VIDEO:05d}.mp4", 10.0 * (row % PER_VIDEO))] for row in kept[-3:]]
    assert storage.check_index(tmp_path / "index").ok


def test_a_reader_of_an_older_generation_keeps_searching_through_commits(library, tmp_path):
    vectors, queries, _ = library
    first = vectors[: COUNT - 200]
    new_index(tmp_path / "index", first, IN_INDEX["ivfpq"].to_dict())
    reader = storage.open_generation(tmp_path / "index")  # memory maps of generation 1's float16 files
    answer = reader.vectors.search(queries, 10)
    update(tmp_path / "index", vectors[COUNT - 200 : COUNT - 100], first_video=(COUNT - 200) // PER_VIDEO)
    update(tmp_path / "index", vectors[COUNT - 100 :], first_video=(COUNT - 100) // PER_VIDEO)
    assert not (tmp_path / "index" / reader.manifest.vector_file).exists()  # generation 1's folder is gone
    again = reader.vectors.search(queries, 10)
    assert np.array_equal(again[1], answer[1]) and np.allclose(again[0], answer[0])
    assert storage.open_generation(tmp_path / "index").vectors.live == COUNT


def test_auto_chooses_by_size_and_memory_and_is_stored_in_the_manifest(library, tmp_path):
    vectors = library[0]
    manifest = new_index(tmp_path / "auto", vectors, {"kind": "auto", "max_memory": None})
    assert manifest.vector_settings.kind == "flat" and manifest.vector_index["max_memory"] is None
    budget = 12_000 * 100  # flat needs 4 * 64 + 8 bytes per vector: over; IVF-PQ fits
    manifest = new_index(tmp_path / "small", vectors, {"kind": "auto", "max_memory": budget})
    assert manifest.vector_settings.kind == "ivfpq" and manifest.vector_index["max_memory"] == budget
    assert manifest.vector_settings == choose_ann(COUNT, DIM, budget)
    with pytest.raises(storage.IndexSettingsError, match="raise the memory limit.*kept"):
        new_index(tmp_path / "none", vectors, {"kind": "auto", "max_memory": 1000})
    with pytest.raises(storage.IndexSettingsError, match="at least 256 .* this index has 100.*--ann flat"):
        new_index(tmp_path / "few", vectors[:100], {"kind": "ivfpq", "sized": True})


@pytest.mark.parametrize("damage, caught", [
    ("index.faiss", "open"), ("ann.json", "open"), ("vectors-00000.npy", "search"), ("removed.npy", "open"),
    ("checksums-00000.npy", "open"),
])
def test_flipped_bytes_in_each_file_of_the_vector_index_are_caught(library, tmp_path, monkeypatch, damage, caught):
    """Small files are hashed when the index opens; float16 vector files past `HASH_ON_OPEN_MAX_BYTES` (0 here) only
    have their size checked there, each row a search re-ranks is checked against its checksum (one flipped byte is
    enough), and --check reads every byte."""
    vectors, queries, _ = library
    index_dir = tmp_path / "index"
    new_index(index_dir, vectors, IN_INDEX["ivfpq"].to_dict())
    manifest = update(index_dir, dropped={"v00001.mp4"})  # a removed.npy
    if caught == "search":
        monkeypatch.setattr(storage, "HASH_ON_OPEN_MAX_BYTES", 0)
    path = index_dir / manifest.vector_file / damage
    row = 5000
    if damage == "vectors-00000.npy":  # one byte of one value of one row: its length hardly changes
        header = path.stat().st_size - COUNT * DIM * 2
        flip_bytes(path, count=1, offset=header + row * DIM * 2 + 2 * 7)
    else:
        flip_bytes(path, count=min(16, path.stat().st_size // 2))
    if caught == "open":
        with pytest.raises(storage.IndexDamagedError, match=rf"{damage} is damaged: .*SHA-256.*--repair"):
            VideoSearchIndex.open(index_dir)
    else:
        index = VideoSearchIndex.open(index_dir, auto_refresh=False)  # sizes only: no read of the 1 GiB files
        assert len(index.search_embeddings(queries[:3], 5)[0]) == 5  # rows not damaged: answered
        with pytest.raises(storage.IndexDamagedError, match=rf"{damage} is damaged: row {row} does not match its "
                                                            "checksum"):
            index.search_embeddings(vectors[row][None, :], 5)
    check = storage.check_index(index_dir)
    assert [problem.name for problem in check.problems] == [f"{manifest.vector_file}/{damage}"]
    storage.repair_index(index_dir)
    assert storage.check_index(index_dir).ok
    assert search_rows(index_dir, vectors[[row]], k=1) == [[(f"v{row // PER_VIDEO:05d}.mp4", 10.0 * (row % 10))]]


@pytest.mark.parametrize("name", ["hnsw", "ivfpq"])
def test_searches_from_threads_pass_their_own_settings(library, built, name):
    """efSearch, nprobe and rerank travel with each call: threads searching with different ones at once each get
    what a lone search with theirs gets, and the shared index is left as it was."""
    import faiss

    vectors, queries, _ = library
    ann = built[name]
    ann.remove(np.arange(0, 200))  # HNSW's filter of removed slots is shared by the threads too
    try:
        options = [{"ef_search": 16}, {"ef_search": 512}] if name == "hnsw" else \
            [{"nprobe": 1, "rerank": 10}, {"nprobe": 64, "rerank": 300}]
        expected = [ann.search(queries, 10, **option) for option in options]
        assert not np.array_equal(expected[0][1], expected[1][1])  # the settings matter at this size
        ann._live_bitmap = None  # built again by the first thread that needs it
        barrier = threading.Barrier(8)

        def search(number):
            barrier.wait()
            return number % 2, [ann.search(queries, 10, **options[number % 2]) for _ in range(5)]

        with ThreadPoolExecutor(8) as pool:
            for which, answers in pool.map(search, range(8)):
                for scores, slots in answers:
                    assert np.array_equal(slots, expected[which][1])
        if name == "hnsw":
            assert ann.index.hnsw.efSearch == faiss.IndexHNSWFlat(DIM, 16).hnsw.efSearch  # never written
        else:
            assert faiss.extract_index_ivf(ann.index).nprobe == 1  # faiss' default, never written
    finally:
        ann.removed = np.zeros(0, np.int64)  # the module's index as it was (flat and IVF-PQ removed for real)
        if name == "ivfpq":
            built[name] = AnnIndex.build(library[0], SETTINGS[name], trained=ann)
        ann._live_bitmap = None


@pytest.mark.slow
def test_the_scale_benchmark_runs_end_to_end_at_a_tiny_size(tmp_path):
    """`benchmarks/search_scale.py` as the lead runs it, at a size that takes seconds (no timing asserted): a
    finished vectors file is reused by the next run, whose recall is exact for `flat`."""
    import subprocess
    import sys

    command = [sys.executable, str(SCRIPT), "--sizes", "2000", "--queries", "5", "--kinds", "flat", "--data",
               "structured", "--no-text", "--quiet", "--threads", "1", "--work-dir", str(tmp_path / "work"), "--keep",
               "--output", str(tmp_path / "out.json"), "--markdown", str(tmp_path / "out.md")]
    subprocess.run(command, check=True, capture_output=True, text=True)
    (tmp_path / "work" / "structured-2000-queries.npz").unlink()  # the vectors alone are reused
    subprocess.run(command, check=True, capture_output=True, text=True)
    record = json.loads((tmp_path / "out.json").read_text())
    result = record["results"][0]
    assert result["reused_vectors"].endswith("structured-2000.npy") and record["machine"]["cpu_features"]["flags"]
    assert [query["recall_at_10"] for query in result["kinds"][0]["searches"][0]["queries"].values()] == [1.0, 1.0]
    assert "| structured | 2,000 | flat | exact | text | 1.000 |" in (tmp_path / "out.md").read_text()
