"""The index on disk (`search/storage.py`): checksummed files checked when written and read, generations kept for
readers, a reader that loses the race with a commit, an open index following new generations, `check_index` and
`repair_index` on every kind of damage, and one clear error for each damaged or impossible state."""

from __future__ import annotations

import errno
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from search_helpers import FAST_INDEXING as FAST
from search_helpers import FPS, VIDEOS, flip_bytes, hits_of, moving_square, save_tiny_search_model, write_clip
from search_helpers import build_index as build
from search_helpers import encoder, videos  # noqa: F401 - fixtures

from transformers_tempme import VideoSearchIndex, load_search_model
from transformers_tempme.search import indexer, storage
from transformers_tempme.search.ann import AnnIndex
from transformers_tempme.search.storage import (
    IndexDamagedError,
    IndexFileError,
    IndexVersionError,
    SearchIndexError,
    check_index,
    read_manifest,
    repair_index,
)


@pytest.fixture
def index_dir(videos, tmp_path, encoder):
    build(videos, tmp_path / "index", encoder)
    return tmp_path / "index"


def open_index(index_dir, encoder):
    return VideoSearchIndex.open(index_dir, *encoder)


def damage_column(path, column: str) -> None:
    """Flip the bytes at the start of a Parquet column's first page (its header and data)."""
    row_group = pq.ParquetFile(path).metadata.row_group(0)
    chunk = next(row_group.column(i) for i in range(row_group.num_columns)
                 if row_group.column(i).path_in_schema.split(".")[0] == column)
    flip_bytes(path, count=32, offset=chunk.data_page_offset)


def test_every_file_the_manifest_names_carries_its_size_and_sha256(index_dir):
    from transformers_tempme.search.discovery import file_sha256

    manifest = read_manifest(index_dir)
    vector_folder = manifest.vector_file  # the flat vector index: its faiss file and its description
    assert manifest.vector_files == [f"{vector_folder}/ann.json", f"{vector_folder}/index.faiss"]
    assert sorted(manifest.files) == sorted(manifest.file_names) and len(manifest.files) == 4
    for name, record in manifest.files.items():
        assert record["size"] == (index_dir / name).stat().st_size
        assert record["sha256"] == file_sha256(index_dir / name)
    assert json.loads((index_dir / vector_folder / "ann.json").read_text())["slots"] == manifest.counts["segments"] == 7
    # Each generation's manifest is kept as a copy (what --repair restores a damaged index.json from).
    assert json.loads((index_dir / "index-00001.json").read_text()) == json.loads((index_dir / "index.json").read_text())
    check = check_index(index_dir)
    assert check.ok and check.files_checked == 4


# ------------------------------------------------------------------------------------------ damaged vector file


def test_flipped_bytes_in_the_vector_file_are_caught_and_repaired(index_dir, encoder):
    before = hits_of(open_index(index_dir, encoder))
    vector_file = read_manifest(index_dir).vector_file
    flip_bytes(index_dir / vector_file / "index.faiss")

    with pytest.raises(IndexDamagedError, match=rf"{vector_file}/index.faiss is damaged: .*SHA-256.*tempme index --repair"):
        open_index(index_dir, encoder)
    check = check_index(index_dir)
    assert [problem.name for problem in check.problems] == [f"{vector_file}/index.faiss"]
    assert "rebuilt from the Parquet rows" in check.problems[0].repair

    repaired = repair_index(index_dir)
    assert repaired.repaired.generation == 2 and check_index(index_dir).ok
    after = open_index(index_dir, encoder)
    assert hits_of(after) == before and all(score <= 1 + 1e-6 for _, _, score in before)
    assert repair_index(index_dir).ok  # nothing left to repair: no new generation
    assert read_manifest(index_dir).generation == 2


def test_the_next_update_does_not_carry_a_damaged_vector_file_forward(videos, index_dir, encoder, tmp_path):
    flip_bytes(index_dir / read_manifest(index_dir).vector_file / "index.faiss")
    write_clip(videos / "zz_yellow.mp4", moving_square("yellow", 3 * FPS))
    index = VideoSearchIndex.build(videos, index_dir, *encoder, **FAST)  # an update that only adds a video
    assert index.last_report.added == ["zz_yellow.mp4"] and check_index(index_dir).ok
    fresh = build(videos, tmp_path / "fresh", encoder)
    assert sorted(hits_of(index, k=8)) == sorted(hits_of(fresh, k=8))


def test_a_score_above_one_is_never_returned(index_dir, encoder):
    """Vectors damaged where no checksum can see it (the record rewritten to match, as an index of format 1 would
    have none) still cannot give a cosine similarity above 1."""
    manifest = read_manifest(index_dir)
    garbage = np.random.default_rng(0).normal(scale=12.0, size=(7, manifest.embedding_dim)).astype(np.float32)
    damaged = AnnIndex.build(garbage, manifest.vector_settings)
    manifest.files.update(storage.save_vector_index(index_dir, damaged, "vectors-garbage"))
    manifest.vector_index["file"] = "vectors-garbage"
    storage.write_manifest(index_dir, manifest)
    index = open_index(index_dir, encoder)
    with pytest.raises(IndexDamagedError, match=r"gives a score of [\d.]+ where a cosine similarity is at most 1"):
        index.search("a red square moves from left to right")


def test_a_vector_file_cut_short_while_written_is_never_committed(videos, index_dir, encoder, monkeypatch):
    """faiss reports a failed close only on stderr: the file read back before the rename catches the short write."""
    before = hits_of(open_index(index_dir, encoder))
    import faiss

    real_write = faiss.write_index

    def write_cut_short(index, path):
        real_write(index, path)
        with open(path, "r+b") as handle:
            handle.truncate(100)

    monkeypatch.setattr(faiss, "write_index", write_cut_short)
    write_clip(videos / "yellow.mp4", moving_square("yellow", 3 * FPS))
    with pytest.raises(IndexFileError, match=r"vectors-00002 was cut short.*nothing was committed"):
        build(videos, index_dir, encoder)
    monkeypatch.undo()
    assert read_manifest(index_dir).generation == 1 and not list(index_dir.glob(".tmp-*"))
    assert hits_of(open_index(index_dir, encoder)) == before
    assert "yellow.mp4" in build(videos, index_dir, encoder).videos


# ------------------------------------------------------------------------------------------- damaged shards


def test_a_damaged_segment_shard_is_named_then_dropped_by_repair_and_re_encoded(videos, index_dir, encoder, tmp_path):
    shard = read_manifest(index_dir).shards[0]
    damage_column(index_dir / shard, "path")
    with pytest.raises(IndexDamagedError, match=rf"{shard} is damaged"):
        open_index(index_dir, encoder)
    with pytest.raises(IndexDamagedError, match="--repair"):  # an update does not build on it either
        build(videos, index_dir, encoder)

    check = repair_index(index_dir)
    assert [problem.name for problem in check.problems] == [shard]
    assert len(open_index(index_dir, encoder)) == 0  # the only shard held every row
    report = build(videos, index_dir, encoder).last_report
    assert sorted(report.added) == sorted(VIDEOS)  # encoded again
    assert sorted(hits_of(open_index(index_dir, encoder))) == sorted(hits_of(build(videos, tmp_path / "fresh", encoder)))


def update_killed_before_commit(videos, index_dir, encoder, monkeypatch) -> list:
    """Three new videos encoded into work shards (one each) by an update that dies before committing; returns those
    shards."""
    for colour in ("yellow", "green", "blue"):
        write_clip(videos / f"new_{colour}.mp4", moving_square(colour, 3 * FPS))

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(indexer, "commit_generation", killed)
        with pytest.raises(RuntimeError, match="killed"):
            build(videos, index_dir, encoder, shard_rows=1, batch_size=1)
    work = sorted((index_dir / "work").glob("g*.parquet"))
    return [path for path in work if storage.read_shard_record(path)["videos"]]


def test_a_damaged_work_shard_neither_blocks_reruns_nor_multiplies(videos, index_dir, encoder, tmp_path, monkeypatch):
    work = update_killed_before_commit(videos, index_dir, encoder, monkeypatch)
    assert len(work) == 3
    damage_column(work[1], "path")
    assert [problem.name for problem in check_index(index_dir).problems] == [f"work/{work[1].name}"]

    report = build(videos, index_dir, encoder, shard_rows=1).last_report
    assert sorted(report.added) == ["new_blue.mp4", "new_green.mp4", "new_yellow.mp4"]
    # Every file of the update (3 videos, 3 bad files) but the damaged shard's video was taken from the work shards.
    assert report.resumed == 5
    assert not list((index_dir / "work").glob("*")) and check_index(index_dir).ok
    fresh = build(videos, tmp_path / "fresh", encoder)  # the same hits (sorted: two videos hold the same frames)
    assert sorted(hits_of(open_index(index_dir, encoder), k=10)) == sorted(hits_of(fresh, k=10))


def test_repair_deletes_a_damaged_work_shard_and_keeps_the_others(videos, index_dir, encoder, monkeypatch):
    work = update_killed_before_commit(videos, index_dir, encoder, monkeypatch)
    damage_column(work[0], "embedding")
    check = repair_index(index_dir)
    assert [problem.name for problem in check.problems] == [f"work/{work[0].name}"] and check.repaired is None
    assert not work[0].exists() and work[1].exists() and work[2].exists()
    assert build(videos, index_dir, encoder).last_report.resumed >= 2


# ------------------------------------------------------------------------------------------------- index.json


@pytest.mark.parametrize("damage, message", [
    (lambda text: "", "it is empty"),
    (lambda text: text[: len(text) // 2], "not valid JSON"),
    (lambda text: "[1, 2]", "does not hold a JSON object"),
    (lambda text: text.replace('"shards"', '"shards_"'), "fields this version does not know"),
])
def test_a_damaged_index_json_is_one_clear_error_and_repair_restores_it(index_dir, encoder, damage, message):
    before = hits_of(open_index(index_dir, encoder))
    manifest_path = index_dir / "index.json"
    manifest_path.write_text(damage(manifest_path.read_text()))
    with pytest.raises(SearchIndexError, match=message):
        open_index(index_dir, encoder)
    if "does not know" in message:  # another version's file is not damage: nothing to repair
        with pytest.raises(IndexVersionError, match="Upgrade transformers-tempme"):
            repair_index(index_dir)
        return
    with pytest.raises(IndexDamagedError, match=r"index\.json is damaged.*--repair.*--overwrite"):
        open_index(index_dir, encoder)
    check = repair_index(index_dir)
    assert "restored from index-00001.json" in check.problems[0].repair
    assert hits_of(open_index(index_dir, encoder)) == before


def test_a_damaged_index_json_does_not_block_overwrite(videos, index_dir, encoder):
    (index_dir / "index.json").write_text("")
    for copy in index_dir.glob("index-*.json"):
        copy.write_text("{")
    with pytest.raises(IndexDamagedError, match="rebuild the index"):
        repair_index(index_dir)
    index = build(videos, index_dir, encoder, overwrite=True)
    assert len(index) == 7 and index.manifest.generation == 2  # after the damaged generation's file names
    assert check_index(index_dir).ok


def test_an_index_from_a_newer_version_is_refused_by_name(index_dir):
    data = json.loads((index_dir / "index.json").read_text())
    (index_dir / "index.json").write_text(json.dumps({**data, "format_version": 99, "package_version": "9.0.0"}))
    with pytest.raises(IndexVersionError, match=r"written by transformers-tempme 9\.0\.0 \(index format 99\)"):
        read_manifest(index_dir)


# ------------------------------------------------------------------------------------- the system says no


@pytest.mark.parametrize("code, hint", [
    (errno.ENOSPC, "the disk is full: free some space and run the same command again"),
    (errno.EACCES, "permission denied"),
])
def test_a_write_the_system_refuses_names_the_file_and_commits_nothing(videos, index_dir, encoder, monkeypatch,
                                                                       code, hint):
    before = hits_of(open_index(index_dir, encoder))
    real_replace = storage.os.replace

    def refuse_vectors(source, destination):
        if str(destination).endswith("vectors-00002"):
            raise OSError(code, errno.errorcode[code])
        real_replace(source, destination)

    monkeypatch.setattr(storage.os, "replace", refuse_vectors)
    write_clip(videos / "yellow.mp4", moving_square("yellow", 3 * FPS))
    with pytest.raises(IndexFileError, match=rf"Cannot write .*vectors-00002: {hint}"):
        build(videos, index_dir, encoder)
    monkeypatch.undo()
    assert hits_of(open_index(index_dir, encoder)) == before and not list(index_dir.glob(".tmp-*"))


def test_an_index_json_the_system_will_not_read_is_named(index_dir, monkeypatch):
    real_read_text = storage.Path.read_text

    def refuse(path, *args, **kwargs):
        if path.name == "index.json":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_read_text(path, *args, **kwargs)

    monkeypatch.setattr(storage.Path, "read_text", refuse)
    with pytest.raises(IndexFileError, match=r"Cannot read .*index\.json: permission denied"):
        VideoSearchIndex.open(index_dir)


# ----------------------------------------------------------------------------------- generations and readers


def test_the_previous_generation_stays_for_readers_that_opened_it(videos, index_dir, encoder):
    first = read_manifest(index_dir)
    write_clip(videos / "yellow.mp4", moving_square("yellow", 3 * FPS))
    build(videos, index_dir, encoder)
    # A reader that read index.json just before that commit still opens generation 1 whole.
    rows = storage.read_segment_rows(index_dir, first, storage.SEARCH_COLUMNS)
    assert storage.load_vector_index(index_dir, first, rows.num_rows).live == 7
    (videos / "yellow.mp4").unlink()
    build(videos, index_dir, encoder)  # generation 3: generation 1 goes, 2 stays
    names = {path.relative_to(index_dir).as_posix() for path in index_dir.rglob("*") if path.is_file()}
    second, third = storage._parse_manifest(index_dir, "index-00002.json"), read_manifest(index_dir)
    assert names == {".lock", "index.json", "index-00002.json", "index-00003.json", *second.file_names,
                     *third.file_names}
    assert not set(first.file_names) & names - set(second.file_names) - set(third.file_names)


def test_a_reader_that_loses_the_race_with_commits_opens_the_new_generation(videos, index_dir, encoder, monkeypatch):
    stale = read_manifest(index_dir)
    for colour in ("yellow", "green"):
        write_clip(videos / f"{colour}_new.mp4", moving_square(colour, 3 * FPS))
        build(videos, index_dir, encoder)  # two commits: generation 1's files are deleted
    real_read_manifest = storage.read_manifest
    calls = []

    def slow_reader(index_dir):
        calls.append(index_dir)
        return stale if len(calls) == 1 else real_read_manifest(index_dir)

    monkeypatch.setattr(storage, "read_manifest", slow_reader)
    generation = storage.open_generation(index_dir)
    assert generation.manifest.generation == 3 and generation.rows.num_rows == 9


def test_an_open_index_follows_new_generations(videos, tmp_path):
    index_dir = tmp_path / "index"
    first = load_search_model(save_tiny_search_model(tmp_path / "model"))

    def update(loaded, **options):
        model, processor, info = loaded
        VideoSearchIndex.build(videos, index_dir, model, processor, model_info=info, **{**FAST, **options})

    update(first)
    reader = VideoSearchIndex.open(index_dir)  # as `tempme serve` holds it: the index's own model, loaded from it
    assert reader.refresh() is False and len(reader.search("a yellow square", k=10)) == 7
    write_clip(videos / "yellow.mp4", moving_square("yellow", 3 * FPS))
    update(first)
    assert len(reader.search("a yellow square", k=10)) == 8  # noticed before searching
    assert reader.manifest.generation == 2 and reader.refresh() is False

    # A newer generation that cannot be loaded leaves the reader on the one it has.
    write_clip(videos / "blue_new.mp4", moving_square("blue", 3 * FPS))
    update(first)
    flip_bytes(index_dir / read_manifest(index_dir).vector_file / "index.faiss")
    assert len(reader.search("a yellow square", k=10)) == 8 and reader.manifest.generation == 2
    with pytest.raises(IndexDamagedError):
        VideoSearchIndex.open(index_dir)
    repair_index(index_dir)
    assert reader.refresh() is True and len(reader.search("a yellow square", k=10)) == 9

    # A newer generation from another model: the reader loads that model for the next query.
    second = load_search_model(save_tiny_search_model(tmp_path / "other", seed=5))
    update(second, overwrite=True)
    assert reader.refresh() is True
    assert reader.search("a yellow square", k=1)[0].score == pytest.approx(
        VideoSearchIndex.open(index_dir, second[0], second[1]).search("a yellow square", k=1)[0].score, abs=1e-5)


def write_old_format(index_dir, format_version: int, kind: str = "flat") -> None:
    """Turn the index into one as versions before the vector folder wrote it: one `.faiss` file (`IndexFlatIP` or
    `IndexHNSWFlat`, vector i = row i), its record in `files` (format 2) or no records at all (format 1)."""
    import shutil

    import faiss

    manifest = read_manifest(index_dir)
    embeddings = storage.embedding_matrix(storage.read_segment_rows(index_dir, manifest, ["embedding"]))
    index = faiss.IndexFlatIP(embeddings.shape[1]) if kind == "flat" else \
        faiss.IndexHNSWFlat(embeddings.shape[1], 8, faiss.METRIC_INNER_PRODUCT)
    index.add(embeddings)
    faiss.write_index(index, str(index_dir / "vectors-00001.faiss"))
    shutil.rmtree(index_dir / manifest.vector_file)
    data = json.loads((index_dir / "index.json").read_text())
    data["vector_index"] = {"kind": kind, "hnsw_m": 8, "ef_construction": 40, "ef_search": 128,
                            "file": "vectors-00001.faiss"}
    files = {name: record for name, record in data["files"].items() if not name.startswith(manifest.vector_file)}
    files["vectors-00001.faiss"] = {**storage.file_record(index_dir / "vectors-00001.faiss"), "rows": 7}
    data.update(files=files, format_version=format_version)
    if format_version == 1:
        del data["files"]
    (index_dir / "index.json").write_text(json.dumps(data))


def test_index_folder_of_format_1_is_read_and_repair_records_checksums(index_dir, encoder):
    before = hits_of(open_index(index_dir, encoder))
    write_old_format(index_dir, 1)
    assert hits_of(open_index(index_dir, encoder)) == before
    check = check_index(index_dir)
    assert len(check.problems) == 1 and "no size and SHA-256 recorded" in check.problems[0].problem
    repair_index(index_dir)
    assert check_index(index_dir).ok and read_manifest(index_dir).format_version == storage.FORMAT_VERSION
    assert hits_of(open_index(index_dir, encoder)) == before


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_an_index_with_one_faiss_file_opens_and_updates_into_the_folder_format(videos, index_dir, encoder, kind):
    """Indexes written before the vector folder (format 2: flat or HNSW in `vectors-NNNNN.faiss`) open as they are;
    the next update carries their vectors into a folder (the faiss index loaded and extended, not rebuilt)."""
    before = hits_of(open_index(index_dir, encoder))
    write_old_format(index_dir, 2, kind)
    assert hits_of(open_index(index_dir, encoder)) == before and check_index(index_dir).ok
    write_clip(videos / "yellow.mp4", moving_square("yellow", 3 * FPS))
    index = build(videos, index_dir, encoder)
    manifest = read_manifest(index_dir)
    assert manifest.vector_file == "vectors-00002" and manifest.vector_settings.kind == kind
    assert manifest.format_version == storage.FORMAT_VERSION and len(index) == 8 and check_index(index_dir).ok
