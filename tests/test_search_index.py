"""`VideoSearchIndex`: building, the stored table and manifest, searching, incremental updates, model checks and
an index that stays readable when an update fails."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from search_helpers import (
    BAD_FILES,
    FPS,
    NOT_VIDEOS,
    VIDEOS,
    moving_square,
    save_tiny_search_model,
    tiny_search_model,
    write_clip,
    write_truncated_mp4,
)

from transformers_tempme import (
    EmbeddingSpaceMismatchError,
    SearchHit,
    TempMeCLIPModel,
    TempMeProcessor,
    VectorIndexSettings,
    VideoSearchIndex,
)
from transformers_tempme.search import storage
from transformers_tempme.search.fingerprint import model_fingerprint
from transformers_tempme.search.storage import read_manifest
from search_helpers import FAST_INDEXING as FAST
from search_helpers import build_index as build
from search_helpers import encoder, videos  # noqa: F401 - fixtures
from search_helpers import make_video_folder

def table_rows(index: VideoSearchIndex) -> tuple[list[tuple], np.ndarray]:
    """(path, segment, start, end, size, mtime_ns) of every stored row, sorted, and their embeddings in that order."""
    dataset = index.to_dataset()
    keys = list(zip(dataset["path"], dataset["segment"], dataset["start"], dataset["end"], dataset["size"],
                    dataset["mtime_ns"]))
    order = sorted(range(len(keys)), key=lambda i: keys[i])
    embeddings = np.asarray(dataset.with_format("numpy")["embedding"], dtype=np.float32)
    return [keys[i] for i in order], embeddings[order]


def test_build_indexes_every_video_and_reports_bad_files(videos, tmp_path, encoder):
    index = build(videos, tmp_path / "index", encoder)
    assert index.videos == sorted(VIDEOS)
    assert len(index) == 4 + 3  # four short clips, and the 25 s video in three 10 s windows
    report = index.last_report
    assert sorted(report.added) == sorted(VIDEOS) and report.segments_encoded == 7
    failed = {failure.path: failure.reason for failure in report.failed}
    assert sorted(failed) == sorted(set(BAD_FILES) - set(NOT_VIDEOS))  # named like videos, and broken
    assert failed["empty.mp4"] == "file is empty"
    assert [(f.path, f.reason) for f in report.skipped] == [("thumbnail.png", "a still image (png_pipe)")]
    summary = report.summary()
    assert "failed 2, skipped 1 (not videos)" in summary and "failed: empty.mp4: file is empty" in summary
    assert "skipped, not a video: thumbnail.png: a still image (png_pipe)" in summary
    # The report is stored with the index, and reopening reads it back.
    stored = VideoSearchIndex.open(tmp_path / "index", *encoder).report
    assert (stored.failed, stored.skipped) == (report.failed, report.skipped)


def test_the_report_keeps_files_that_are_not_videos_apart_from_failures(videos, tmp_path, encoder):
    """What a real folder holds beside its videos: notes, an image, sound, an index of it, a download cut short."""
    from test_search_segments import write_audio

    (videos / "notes.txt").write_text("where each clip was filmed\n")
    write_audio(videos / "sound.wav")
    build(videos, videos / "videos.index", encoder)  # an index inside the folder it indexes
    build(videos / "sub", videos / "sub" / "old.index", encoder)  # and another one, of a subfolder
    write_truncated_mp4(videos / "cut.mp4", seconds=30, keep=0.8)
    index = build(videos, videos / "videos.index", encoder)
    report = index.last_report
    assert report.added == ["cut.mp4"] and report.unchanged == len(VIDEOS)
    assert sorted(f.path for f in report.failed) == ["empty.mp4", "notes.mp4"]
    assert sorted(f.path for f in report.skipped) == sorted(["notes.txt", "sound.wav", *NOT_VIDEOS])
    assert not any(".index/" in path for path in index.videos)  # no file of either index was probed
    # The truncated file is indexed up to its last readable frame, and the report says so.
    duration = index.to_dataset().filter(lambda row: row["path"] == "cut.mp4")["duration"][0]
    assert 10 < duration < 25
    assert report.warnings == [f"cut.mp4: indexed up to {duration:.1f} s of the 30.0 s its header states (the rest "
                               "cannot be read: the file looks truncated or damaged)"]
    assert f"warning: {report.warnings[0]}" in report.summary()
    # Files that are not videos are probed again by the next update, which says so.
    assert index.update(**FAST).skipped == report.skipped


def test_the_index_folder_is_open_data(videos, tmp_path, encoder):
    model, processor = encoder
    build(videos, tmp_path / "index", encoder)
    manifest = json.loads((tmp_path / "index" / "index.json").read_text())
    assert manifest["embedding_dim"] == model.config.projection_dim == 16
    assert manifest["num_frames"] == processor.num_frames and manifest["frame_sampling"] == "fps"
    assert (manifest["segment_seconds"], manifest["segment_overlap"]) == (10.0, 0.0)
    assert manifest["counts"] == {"videos": 5, "segments": 7, "failed": 2}
    assert manifest["model"]["fingerprint"] == model_fingerprint(model, processor)
    assert manifest["model"]["schedule"]["clip_merge_layers"] == [2, 3]
    assert manifest["vector_index"]["kind"] == "flat" and manifest["package_version"]

    # Plain Parquet with datasets features: any reader sees the columns, the embeddings are unit vectors.
    from datasets import load_dataset

    files = [str(tmp_path / "index" / name) for name in manifest["shards"]]
    dataset = load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf_cache"))
    assert set(dataset.column_names) == {"path", "segment", "start", "end", "duration", "size", "mtime_ns",
                                         "sha256", "embedding"}
    long_rows = sorted((row["segment"], row["start"], row["end"]) for row in dataset if row["path"] == "long.mp4")
    assert long_rows == [(0, 0.0, 10.0), (1, 10.0, 20.0), (2, 15.0, 25.0)]
    embeddings = np.asarray(dataset["embedding"], dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    red = next(row for row in dataset if row["path"] == "red_right.mp4")
    assert red["size"] == os.path.getsize(videos / "red_right.mp4") and red["duration"] == pytest.approx(3.0)


def test_segment_embeddings_are_the_model_embeddings_of_the_segment(videos, tmp_path, encoder):
    model, processor = encoder
    index = build(videos, tmp_path / "index", encoder)
    row = next(r for r in index.to_dataset() if r["path"] == "red_right.mp4")
    inputs = processor(videos=str(videos / "red_right.mp4"), return_tensors="pt")
    with torch.no_grad():
        expected = model.encode_video(inputs["pixel_values"], inputs["video_mask"]).video_embeds[0]
    np.testing.assert_allclose(row["embedding"], (expected / expected.norm()).numpy(), atol=1e-5)


def test_search_returns_typed_hits_best_first(videos, tmp_path, encoder):
    index = build(videos, tmp_path / "index", encoder)
    hits = index.search("a red square moves from left to right", k=5)
    assert len(hits) == 5 and all(isinstance(hit, SearchHit) for hit in hits)
    assert [hit.rank for hit in hits] == [1, 2, 3, 4, 5]
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    text = index.encode_text("a red square moves from left to right")[0]
    stored = {(r["path"], r["start"]): np.asarray(r["embedding"]) for r in index.to_dataset()}
    for hit in hits:
        assert hit.score == pytest.approx(float(text @ stored[(hit.path, hit.start)]), abs=1e-5)
        assert hit.video_path == str(videos / hit.path) and hit.end > hit.start
    assert len(index.search("a red square", k=100)) == len(index)  # k beyond the index: every segment once


def test_search_like_finds_the_example_clip_first(videos, tmp_path, encoder):
    index = build(videos, tmp_path / "index", encoder)
    hits = index.search_like(videos / "sub" / "blue_right.mp4", k=3)
    assert hits[0].path == "sub/blue_right.mp4" and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_search_like_cuts_a_long_clip_into_the_index_windows_and_takes_their_mean(videos, tmp_path, encoder):
    index = build(videos, tmp_path / "index", encoder)
    embeddings, windows = index.encode_video_windows(videos / "long.mp4")
    assert windows == [(0.0, 10.0), (10.0, 20.0), (15.0, 25.0)]  # the windows indexing cut it into
    stored = {(row["path"], row["start"]): row["embedding"] for row in index.to_dataset()}
    np.testing.assert_allclose(embeddings, [stored[("long.mp4", start)] for start, _ in windows], atol=1e-5)
    # The query: the mean of the windows' unit embeddings, re-normalised.
    mean = embeddings.mean(axis=0)
    np.testing.assert_allclose(index.encode_video(videos / "long.mp4")[0], mean / np.linalg.norm(mean), atol=1e-6)
    hits = index.search_like(videos / "long.mp4", k=len(index))
    assert [hit.score for hit in hits if hit.path == "long.mp4"] == pytest.approx(
        sorted((float(e @ mean / np.linalg.norm(mean)) for e in embeddings), reverse=True), abs=1e-5)
    # With other segment settings the same clip is cut otherwise: 5 s windows.
    other = build(videos, tmp_path / "index5", encoder, segment_seconds=5.0)
    assert len(other.encode_video_windows(videos / "long.mp4")[1]) == 5


@pytest.mark.parametrize("name, error", [("thumbnail.png", "NotAVideoError"), ("notes.mp4", "VideoDecodeError"),
                                         ("missing.mp4", "VideoDecodeError")])
def test_search_like_names_what_is_wrong_with_the_clip(videos, tmp_path, encoder, name, error):
    from transformers_tempme.video_io import VideoDecodeError

    index = build(videos, tmp_path / "index", encoder)
    with pytest.raises(VideoDecodeError) as raised:
        index.search_like(videos / name)
    assert type(raised.value).__name__ == error and str(videos / name) in str(raised.value)


def test_combine_windows_is_the_normalised_mean():
    from transformers_tempme.search.index import combine_windows

    one = np.array([[0.6, 0.8]], np.float32)
    np.testing.assert_allclose(combine_windows(one), one[0])  # one window: its own embedding
    np.testing.assert_allclose(combine_windows(np.array([[1, 0], [0, 1]], np.float32)), [2**-0.5, 2**-0.5], rtol=1e-6)


def test_max_per_video_gives_distinct_videos(videos, tmp_path, encoder):
    index = build(videos, tmp_path / "index", encoder)
    hits = index.search("a green square", k=5, max_per_video=1)
    assert sorted(hit.path for hit in hits) == sorted(VIDEOS)


def test_decoding_workers_give_the_same_index(videos, tmp_path, encoder):
    serial = build(videos, tmp_path / "serial", encoder, num_workers=0, batch_size=3)
    parallel = build(videos, tmp_path / "parallel", encoder, num_workers=2, batch_size=5)
    rows_serial, embeddings_serial = table_rows(serial)
    rows_parallel, embeddings_parallel = table_rows(parallel)
    assert rows_serial == rows_parallel
    np.testing.assert_allclose(embeddings_parallel, embeddings_serial, rtol=0, atol=1e-6)


def test_update_encodes_only_what_changed(videos, tmp_path, encoder):
    index = build(videos, tmp_path / "index", encoder)
    before = {r["path"]: r["embedding"] for r in index.to_dataset()}

    write_clip(videos / "new" / "yellow.mp4", moving_square("yellow", 3 * FPS))  # added
    write_clip(videos / "red_right.mp4", moving_square("green", 5 * FPS))  # changed: 5 s now
    (videos / "sub" / "blue_right.mp4").unlink()  # removed
    report = index.update(**FAST)

    assert report.added == ["new/yellow.mp4"]
    assert report.updated == ["red_right.mp4"]
    assert report.removed == ["sub/blue_right.mp4"]
    assert report.unchanged == 3 and report.segments_encoded == 2
    assert index.videos == sorted(["green_clip", "long.mp4", "red_left.mp4", "red_right.mp4", "new/yellow.mp4"])
    after = {r["path"]: r for r in index.to_dataset()}
    assert after["red_right.mp4"]["end"] == pytest.approx(5.0)
    assert after["red_left.mp4"]["embedding"] == before["red_left.mp4"]  # kept as stored, not re-encoded
    assert index.manifest.generation == 2 and index.manifest.counts["videos"] == 5

    again = index.update(**FAST)
    assert (again.added, again.updated, again.removed, again.unchanged) == ([], [], [], 5)


def test_files_are_hashed_only_with_verify(videos, tmp_path, encoder, monkeypatch):
    from transformers_tempme.search import discovery, planning, segment_batches

    hashed = []

    def counting_sha256(path):
        hashed.append(path)
        return discovery.file_sha256(path)

    monkeypatch.setattr(planning, "file_sha256", counting_sha256)
    monkeypatch.setattr(segment_batches, "file_sha256", counting_sha256)
    index = build(videos, tmp_path / "index", encoder)
    assert hashed == [] and set(index.to_dataset()["sha256"]) == {""}
    # A verifying update of that index compares sizes and times (there is no hash to compare) and records hashes.
    report = index.update(verify=True, **FAST)
    assert (report.updated, report.unchanged, report.segments_encoded) == ([], 5, 0)
    assert len(hashed) == len(VIDEOS) + len(BAD_FILES)  # the files that failed are tried (and hashed) again
    for row in index.to_dataset():
        assert row["sha256"] == discovery.file_sha256(videos / row["path"])


def test_verify_compares_contents_not_times(videos, tmp_path, encoder):
    index = build(videos, tmp_path / "index", encoder, verify=True)
    os.utime(videos / "red_left.mp4", ns=(10**18, 10**18))  # touched, same content
    assert index.update(verify=True, **FAST).updated == []
    assert index.update(**FAST).updated == []  # the new time was recorded: size + time agree now
    data = (videos / "long.mp4").read_bytes()
    stat = os.stat(videos / "long.mp4")
    write_clip(videos / "long.mp4", moving_square("blue", 25 * FPS))  # changed content ...
    os.utime(videos / "long.mp4", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ... time put back
    assert (videos / "long.mp4").read_bytes() != data
    assert index.update(verify=True, **FAST).updated == ["long.mp4"]


def test_a_file_that_stops_decoding_leaves_the_index(videos, tmp_path, encoder):
    index = build(videos, tmp_path / "index", encoder)
    (videos / "green_clip").write_bytes(b"garbage" * 100)
    report = index.update(**FAST)
    assert [failure.path for failure in report.failed if failure.path == "green_clip"] == ["green_clip"]
    assert "green_clip" not in index.videos


def test_another_model_is_refused(videos, tmp_path, encoder):
    build(videos, tmp_path / "index", encoder)
    _, processor = encoder
    other_weights, _ = tiny_search_model(seed=1)
    with pytest.raises(EmbeddingSpaceMismatchError, match="different model"):
        VideoSearchIndex.open(tmp_path / "index", other_weights, processor)
    with pytest.raises(EmbeddingSpaceMismatchError, match="rebuild"):
        build(videos, tmp_path / "index", (other_weights, processor))
    model, _ = encoder
    eight_frames = TempMeProcessor(processor.tokenizer, num_frames=8, max_words=processor.max_words,
                                   image_size=processor.image_size)
    with pytest.raises(EmbeddingSpaceMismatchError):
        VideoSearchIndex.open(tmp_path / "index", model, eight_frames)
    # --overwrite re-encodes the index with the other model.
    rebuilt = build(videos, tmp_path / "index", (other_weights, processor), overwrite=True)
    assert rebuilt.last_report.added == sorted(VIDEOS) and len(rebuilt) == 7


def test_the_fingerprint_survives_saving_and_loading(tmp_path, encoder):
    model, processor = encoder
    folder = save_tiny_search_model(tmp_path / "model")
    reloaded = TempMeCLIPModel.from_pretrained(folder).eval()
    assert model_fingerprint(reloaded, TempMeProcessor.from_pretrained(folder)) == model_fingerprint(model, processor)


def test_other_segment_settings_need_overwrite(videos, tmp_path, encoder):
    build(videos, tmp_path / "index", encoder)
    with pytest.raises(ValueError, match="--overwrite"):
        build(videos, tmp_path / "index", encoder, segment_seconds=5.0)
    index = build(videos, tmp_path / "index", encoder, segment_seconds=5.0, segment_overlap=1.0, overwrite=True)
    long_rows = sorted(r["start"] for r in index.to_dataset() if r["path"] == "long.mp4")
    assert long_rows == [0.0, 4.0, 8.0, 12.0, 16.0, 20.0]


def test_hnsw_finds_the_same_hits_on_a_small_index(videos, tmp_path, encoder):
    exact = build(videos, tmp_path / "exact", encoder)
    hnsw = build(videos, tmp_path / "hnsw", encoder, vector_index=VectorIndexSettings("hnsw", hnsw_m=8))
    assert read_manifest(tmp_path / "hnsw").vector_index["kind"] == "hnsw"
    query = "a blue square moves from right to left"
    assert [(h.path, h.start) for h in hnsw.search(query, k=7)] == [(h.path, h.start) for h in exact.search(query, k=7)]


def test_an_update_that_fails_leaves_the_previous_index_readable(videos, tmp_path, encoder, monkeypatch):
    index = build(videos, tmp_path / "index", encoder)
    hits = [(h.path, h.start, h.score) for h in index.search("a red square", k=7)]
    write_clip(videos / "yellow.mp4", moving_square("yellow", 3 * FPS))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(storage, "write_manifest", crash)  # dies at the commit point, new files written
    with pytest.raises(OSError, match="disk full"):
        index.update(**FAST)
    reopened = VideoSearchIndex.open(tmp_path / "index", *encoder)
    assert reopened.manifest.generation == 1 and "yellow.mp4" not in reopened.videos
    assert [(h.path, h.start, h.score) for h in reopened.search("a red square", k=7)] == hits
    monkeypatch.undo()
    report = reopened.update(**FAST)
    assert report.added == ["yellow.mp4"] and "yellow.mp4" in reopened.videos


def test_one_update_at_a_time(videos, tmp_path, encoder):
    from transformers_tempme.search.storage import IndexLock, IndexLockedError

    lock = IndexLock(tmp_path / "index")
    lock.acquire()
    try:
        with pytest.raises(IndexLockedError, match="Another `tempme index` run"):
            build(videos, tmp_path / "index", encoder)
    finally:
        lock.release()


def test_clear_errors_for_bad_input(tmp_path, encoder):
    from transformers_tempme.search import IndexNotFoundError

    with pytest.raises(IndexNotFoundError, match="tempme index"):
        VideoSearchIndex.open(tmp_path / "nothing")
    with pytest.raises(NotADirectoryError, match="does not exist"):
        build(tmp_path / "no_videos", tmp_path / "index", encoder)
    assert not (tmp_path / "index" / "index.json").exists()


def test_an_empty_folder_gives_an_empty_index(tmp_path, encoder):
    (tmp_path / "videos").mkdir()
    index = build(tmp_path / "videos", tmp_path / "index", encoder)
    assert len(index) == 0 and index.search("anything", k=3) == []


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_an_update_that_only_adds_videos_extends_the_vector_index(videos, tmp_path, encoder, monkeypatch, kind):
    settings = VectorIndexSettings(kind, hnsw_m=8)
    index = build(videos, tmp_path / "index", encoder, vector_index=settings)
    write_clip(videos / "zz_yellow.mp4", moving_square("yellow", 3 * FPS))

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the vector index was rebuilt from scratch")

    monkeypatch.setattr(storage, "build_vector_index", no_rebuild)
    assert index.update(**FAST).added == ["zz_yellow.mp4"]
    monkeypatch.undo()
    fresh = build(videos, tmp_path / "fresh", encoder, vector_index=settings)
    query = "a yellow square moves from left to right"
    assert [(h.path, h.start, round(h.score, 5)) for h in index.search(query, k=8)] == \
        [(h.path, h.start, round(h.score, 5)) for h in fresh.search(query, k=8)]


@pytest.mark.parametrize("precision", [None, "int8", "bf16"])
def test_every_precision_keeps_the_embedding_space(videos, tmp_path, encoder, precision):
    """The default fast fp32 path and the model's own encode_video store the same rows; int8 and bf16 stay close."""
    reference = build(videos, tmp_path / "fp32", encoder)
    other = build(videos, tmp_path / str(precision), encoder, precision=precision)
    assert reference.last_report.precision == "fp32" and other.last_report.precision == precision
    rows_reference, embeddings_reference = table_rows(reference)
    rows_other, embeddings_other = table_rows(other)
    assert rows_other == rows_reference
    cosine = (embeddings_reference * embeddings_other).sum(axis=1)
    assert cosine.min() > (0.999999 if precision is None else 0.99)
    # The fingerprint is the model's, so either index can be updated and searched at any precision.
    assert read_manifest(other.index_dir).model["fingerprint"] == read_manifest(reference.index_dir).model["fingerprint"]


def test_a_precision_the_model_cannot_run_is_an_error(videos, tmp_path, encoder, monkeypatch):
    def unsupported(model, precision):
        raise NotImplementedError("vision block 0 has parameters the inference path does not implement")

    monkeypatch.setattr("transformers_tempme.inference.optimize_for_inference", unsupported)
    with pytest.raises(ValueError, match=r"precision='int8' is not available.*--precision fp32"):
        build(videos, tmp_path / "int8", encoder, precision="int8")
    # At fp32 the model's own encode_video takes over.
    assert len(build(videos, tmp_path / "fp32", encoder)) == 7


@pytest.mark.parametrize("query_precision", ["model", "fp32"])  # the others: tests/test_search_query.py
def test_query_embeddings_are_the_model_text_features(videos, tmp_path, encoder, query_precision):
    """Queries are encoded without the padding after the longest one: the same embeddings as the padded batch."""
    model, processor = encoder
    index = build(videos, tmp_path / "index", encoder)
    index.query_precision = query_precision
    queries = ["a red square moves from left to right", "blue"]
    input_ids, attention_mask = processor.encode_text(queries)
    assert attention_mask.sum(axis=1).max() < attention_mask.shape[1]  # the processor pads: there is padding to drop
    with torch.no_grad():
        expected = model.get_text_features(
            input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask)
        ).pooler_output
    expected = torch.nn.functional.normalize(expected, dim=-1).numpy()
    np.testing.assert_allclose(index.encode_text(queries), expected, atol=1e-5)


def test_another_video_folder_is_refused_unless_it_moved(videos, tmp_path, encoder):
    from transformers_tempme.search import VideoFolderMismatchError

    index = build(videos, tmp_path / "index", encoder)
    other = make_video_folder(tmp_path / "other")
    with pytest.raises(VideoFolderMismatchError, match=rf"holds the videos of {videos}, not of {other}.*--video-dir-moved"):
        build(other, tmp_path / "index", encoder)
    assert read_manifest(tmp_path / "index").generation == 1

    moved = tmp_path / "moved"
    videos.rename(moved)
    report = index.update(moved, video_dir_moved=True, **FAST)
    assert (report.added, report.removed, report.unchanged) == ([], [], 5)  # the rows stay: paths are relative
    assert index.video_dir == moved and index.search("a red square", k=1)[0].video_path.startswith(str(moved))
    assert build(other, tmp_path / "index", encoder, overwrite=True).last_report.added == sorted(VIDEOS)


@pytest.mark.parametrize("deleted, refused", [(VIDEOS, True), (VIDEOS[:3], True), (VIDEOS[:2], False)])
def test_an_update_removing_all_or_most_videos_stops(videos, tmp_path, encoder, deleted, refused):
    from transformers_tempme.search import UnsafeRemovalError

    index = build(videos, tmp_path / "index", encoder)
    before = [(h.path, h.start, h.score) for h in index.search("a red square", k=7)]
    for path in deleted:
        (videos / path).unlink()
    if not refused:
        assert sorted(index.update(**FAST).removed) == sorted(deleted)
        return
    share = "all" if len(deleted) == len(VIDEOS) else "more than half"
    with pytest.raises(UnsafeRemovalError, match=rf"remove {len(deleted)} of the 5 videos .*\({share} of them\).*"
                                                 r"Nothing was changed.*--allow-removals"):
        index.update(**FAST)
    reopened = VideoSearchIndex.open(tmp_path / "index", *encoder)
    assert reopened.manifest.generation == 1 and [(h.path, h.start, h.score) for h in reopened.search("a red square", k=7)] == before
    assert sorted(index.update(allow_removals=True, **FAST).removed) == sorted(deleted)


def test_embeddings_that_are_not_finite_fail_their_video(videos, tmp_path, encoder):
    from transformers_tempme.search import SearchIndexError

    model, processor = tiny_search_model()
    with torch.no_grad():
        model.visual_projection.weight[0, 0] = float("nan")
    index = build(videos, tmp_path / "index", (model, processor))
    report = index.last_report
    assert report.added == [] and len(index) == 0
    reasons = {failure.path: failure.reason for failure in report.failed}
    assert sorted(reasons) == sorted(set(VIDEOS + BAD_FILES) - set(NOT_VIDEOS))
    assert all("not finite (NaN or infinity)" in reasons[path] for path in VIDEOS)
    with pytest.raises(SearchIndexError, match="not finite"):
        index.search_embedding(np.full(16, np.nan, np.float32))
