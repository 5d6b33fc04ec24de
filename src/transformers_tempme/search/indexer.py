"""One update of a video index: plan, decode and encode what changed, merge, commit.

    plan      the main process lists the video folder, compares it with the index (`plan_update`), takes the work
              shards of an earlier killed attempt as done, and shares the rest among the processes;
    encode    every process decodes its videos in DataLoader workers (`SegmentBatches`) while the model encodes the
              batches, writing finished videos to work shards (`WorkShardWriter`) as it goes;
    commit    the main process merges the work shards with the kept rows into new segment shards, builds the vector
              index, writes the report, and replaces `index.json` (the commit point); then deletes what the new
              generation no longer names.

A run killed at any moment leaves the previous generation readable and intact; the next run finishes the job.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..video_io import DEFAULT_DECODE_TIMEOUT_S
from .atomic import remove_temporary_files, write_json_atomically
from .discovery import VideoFile, list_files
from .distributed import ProcessGroup, split_by_size
from .fingerprint import check_fingerprint
from .manifest import IndexManifest, IndexSettingsError, manifest_exists, read_manifest, write_manifest
from .planning import UpdatePlan, indexed_videos, plan_update
from .results import FailedFile, IndexingReport
from .segment_batches import SegmentBatches
from .segments import DEFAULT_SEGMENT_SECONDS, check_segment_settings
from .table import METADATA_COLUMNS, embedding_matrix, read_shards, segment_features, write_shard
from .vectors import VectorIndexSettings, build_vector_index, load_vector_index, save_vector_index
from .work_shards import WORK_DIR, WorkShardWriter, find_work_shards

logger = logging.getLogger(__name__)

SEGMENTS_DIR = "segments"
LOCK_NAME = ".lock"


@dataclass(frozen=True)
class IndexingOptions:
    """Settings of an update. `None` keeps what the index already uses (or the default for a new index).

    Args:
        segment_seconds (`float`): window length; longer videos are cut into windows (default 10 s).
        segment_overlap (`float`): seconds shared by consecutive windows (default 0).
        vector_index (`VectorIndexSettings`): exact (`flat`, default) or `hnsw`.
        verify (`bool`): compare file contents (SHA-256) instead of size and modification time.
        overwrite (`bool`): re-encode everything (e.g. with another model or other segment settings).
        batch_size (`int`): segments per forward pass.
        num_workers (`int`): DataLoader processes decoding videos while the model encodes.
        shard_rows (`int`), commit_seconds (`float`): a work shard is written every `shard_rows` segments or
            `commit_seconds`, whichever comes first: the most encoding work a kill can lose.
        table_shard_rows (`int`): rows per segment shard of the index.
        device (`str`): where the model runs (default: the model's device, or the process's GPU under
            `accelerate launch`).
        progress (`bool`): show a progress bar.
        timeout_s (`float`): limit for reading one window of a video.
        precision (`str`): how the videos are encoded (`optimize_for_inference`): `"fp32"` (the default: the fast
            path, the model's own features to 1e-5), `"bf16"` or `"int8"` (faster on CPUs that support them, embeddings
            close to fp32's), or `None` for the model's own `encode_video`. The index keeps
            the model's embedding space whichever is chosen, so updates and queries may use another precision.
    """

    segment_seconds: float | None = None
    segment_overlap: float | None = None
    vector_index: VectorIndexSettings | None = None
    verify: bool = False
    overwrite: bool = False
    batch_size: int = 16
    num_workers: int = 2
    shard_rows: int = 1024
    commit_seconds: float = 60.0
    table_shard_rows: int = 100_000
    device: str | None = None
    progress: bool = True
    timeout_s: float = DEFAULT_DECODE_TIMEOUT_S
    precision: str | None = "fp32"


class IndexLockedError(RuntimeError):
    """Another update holds the index's lock."""


class IndexLock:
    """An exclusive lock on the index folder for the length of an update (released by the OS if the run dies)."""

    def __init__(self, index_dir: Path):
        self.path = index_dir / LOCK_NAME
        self._handle = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks, one run at a time is up to the user
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise IndexLockedError(
                f"Another `tempme index` run is updating {self.path.parent}; wait for it to finish (an index is "
                "updated by one run at a time; `accelerate launch` shares one run among processes)."
            ) from None
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


@dataclass
class _Plan:
    """What the main process sends to every process."""

    manifest: IndexManifest
    update: UpdatePlan
    shares: list[list[VideoFile]]
    resumed: int
    retried: int = 0


def _new_manifest(video_dir: Path, model_info: dict, processor, embedding_dim: int, options: IndexingOptions,
                  previous: IndexManifest | None) -> IndexManifest:
    keep = previous if previous is not None and not options.overwrite else None
    segment_seconds = options.segment_seconds or (keep.segment_seconds if keep else DEFAULT_SEGMENT_SECONDS)
    overlap = options.segment_overlap if options.segment_overlap is not None else (keep.segment_overlap if keep else 0.0)
    check_segment_settings(segment_seconds, overlap)
    vectors = options.vector_index or (
        VectorIndexSettings(**{k: v for k, v in keep.vector_index.items() if k != "file"}) if keep else VectorIndexSettings()
    )
    return IndexManifest(
        video_dir=str(video_dir),
        model=dict(model_info),
        embedding_dim=embedding_dim,
        num_frames=processor.num_frames,
        frame_sampling=processor.frame_sampling,
        segment_seconds=float(segment_seconds),
        segment_overlap=float(overlap),
        # The current vector file stays named so that an update that only adds rows can extend it.
        vector_index={**vectors.to_dict(), "file": keep.vector_index.get("file") if keep else None},
        shards=list(keep.shards) if keep else [],
        report=keep.report if keep else None,
        counts=dict(keep.counts) if keep else {"videos": 0, "segments": 0, "failed": 0},
        generation=previous.generation if previous is not None else 0,
    )


def _check_compatible(previous: IndexManifest, new: IndexManifest, index_dir: Path) -> None:
    check_fingerprint(previous.model["fingerprint"], new.model["fingerprint"], index_dir, previous.model["name_or_path"])
    if previous.segment_settings != new.segment_settings:
        raise IndexSettingsError(
            f"The index {index_dir} cuts videos with {previous.segment_settings}; this run asks for "
            f"{new.segment_settings}. Use the index's settings, or pass --overwrite to re-encode every video."
        )


def _plan(index_dir: Path, video_dir: Path, model_info: dict, processor, embedding_dim: int,
          options: IndexingOptions, processes: int) -> _Plan:
    for folder in (index_dir, index_dir / SEGMENTS_DIR, index_dir / WORK_DIR):
        remove_temporary_files(folder)
    previous = read_manifest(index_dir) if manifest_exists(index_dir) else None
    manifest = _new_manifest(video_dir, model_info, processor, embedding_dim, options, previous)
    if previous is not None and not options.overwrite:
        _check_compatible(previous, manifest, index_dir)
        live = read_shards([index_dir / name for name in previous.shards], embedding_dim, columns=METADATA_COLUMNS)
        indexed = indexed_videos(live)
    else:
        indexed = {}
    files = list_files(video_dir, exclude=[index_dir])
    update = plan_update(files, indexed, video_dir, verify=options.verify)
    done = _paths_done_by_earlier_attempt(index_dir, manifest, update)
    remaining = [file for file in update.to_encode if file.path not in done]
    failed_before = _failed_before(index_dir, previous)
    retried = sum(1 for path in update.new if path in failed_before)
    return _Plan(manifest, update, split_by_size(remaining, processes), resumed=len(done), retried=retried)


def _failed_before(index_dir: Path, previous: IndexManifest | None) -> set[str]:
    """Paths the previous update could not index (they are tried again)."""
    if previous is None or not previous.report or not (index_dir / previous.report).is_file():
        return set()
    report = json.loads((index_dir / previous.report).read_text())
    return {failure["path"] for failure in report.get("failed", [])}


def _work_settings(manifest: IndexManifest) -> dict:
    return {**manifest.segment_settings, "embedding_dim": manifest.embedding_dim}


def _work_shards(index_dir: Path, manifest: IndexManifest):
    return find_work_shards(
        index_dir / WORK_DIR, manifest.model["fingerprint"], _work_settings(manifest), manifest.generation + 1
    )


def _paths_done_by_earlier_attempt(index_dir: Path, manifest: IndexManifest, update: UpdatePlan) -> set[str]:
    wanted = {(f.path, f.size, f.mtime_ns) for f in update.to_encode}
    done = set()
    for shard in _work_shards(index_dir, manifest):
        for video in [*shard.videos, *shard.failed]:
            if (video["path"], video["size"], video["mtime_ns"]) in wanted:
                done.add(video["path"])
    return done


@torch.inference_mode()
def _encode_share(files: Sequence[VideoFile], model, processor, manifest: IndexManifest, video_dir: Path,
                  writer: WorkShardWriter, options: IndexingOptions, device, progress_bar) -> None:
    """Decode (in workers) and encode the videos of `files`, writing finished videos to work shards."""
    if not files:
        return
    dataset = SegmentBatches(
        files, video_dir, processor, manifest.segment_seconds, manifest.segment_overlap, options.batch_size,
        options.timeout_s,
    )
    workers = min(options.num_workers, len(files))
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, prefetch_factor=2 if workers else None)
    pending: dict[str, list] = {}  # segments of videos whose last segment has not arrived yet
    segments_done = 0
    for batch in loader:
        if batch["pixel_values"] is not None:
            pixel_values = batch["pixel_values"].to(device=device, dtype=model.dtype)
            embeds = model.encode_video(pixel_values, batch["video_mask"].to(device)).video_embeds
            embeds = torch.nn.functional.normalize(embeds.float(), dim=-1).cpu().numpy()
            for segment, embedding in zip(batch["segments"], embeds):
                pending.setdefault(segment[0], []).append((tuple(segment), embedding))
        for video in batch["videos"]:
            rows = pending.pop(video["path"], [])
            if video["error"] is not None:
                writer.add_failure(video)
            else:
                writer.add_video(video, [row[0] for row in rows], np.stack([row[1] for row in rows]))
                segments_done += len(rows)
            progress_bar.update(1)
            progress_bar.set_postfix(segments=segments_done, refresh=False)
        writer.maybe_write()
    writer.write()


def _rewrite_kept_shards(index_dir: Path, manifest: IndexManifest, update: UpdatePlan, generation: int) -> list[str]:
    """The current segment shards without the rows of removed and changed videos, refreshed rows updated.

    Shards with nothing to drop or refresh are kept as they are (no rewrite)."""
    dropped = pa.array(sorted(update.dropped), pa.string())
    refreshed = pa.array(sorted(update.refreshed), pa.string())
    kept = []
    for number, name in enumerate(manifest.shards):
        path = index_dir / name
        paths = pq.read_table(path, columns=["path"]).column("path")
        drop = pc.is_in(paths, value_set=dropped)
        touch = pc.is_in(paths, value_set=refreshed)
        if not pc.any(drop).as_py() and not pc.any(touch).as_py():
            kept.append(name)
            continue
        table = pq.read_table(path).filter(pc.invert(drop))
        if update.refreshed:
            files = [update.refreshed.get(p) for p in table.column("path").to_pylist()]
            for column in ("size", "mtime_ns"):
                old = table.column(column).to_pylist()
                new = [getattr(f, column) if f is not None else value for f, value in zip(files, old)]
                table = table.set_column(table.schema.get_field_index(column), column, pa.array(new, pa.int64()))
        if table.num_rows:
            new_name = f"{SEGMENTS_DIR}/segments-{generation:05d}-kept-{number:05d}.parquet"
            write_shard(index_dir / new_name, table)
            kept.append(new_name)
    return kept


def _commit(index_dir: Path, plan: _Plan, options: IndexingOptions, processes: int, started: float) -> IndexingReport:
    manifest, update = plan.manifest, plan.update
    generation = manifest.generation + 1
    wanted = {(f.path, f.size, f.mtime_ns) for f in update.to_encode}
    tables, encoded, failed, warnings = [], set(), {}, []
    for shard in _work_shards(index_dir, manifest):
        videos = [v for v in shard.videos if (v["path"], v["size"], v["mtime_ns"]) in wanted and v["path"] not in encoded]
        if videos:
            table = pq.read_table(shard.path)
            table = table.filter(pc.is_in(table.column("path"), value_set=pa.array([v["path"] for v in videos])))
            tables.append(table.cast(segment_features(manifest.embedding_dim).arrow_schema))
            encoded.update(v["path"] for v in videos)
            warnings.extend(w for v in videos for w in v.get("warnings", []))
        for video in shard.failed:
            if (video["path"], video["size"], video["mtime_ns"]) in wanted:
                failed[video["path"]] = video["error"]
    missing = sorted({f.path for f in update.to_encode} - encoded - set(failed))
    if missing:
        raise RuntimeError(
            f"{len(missing)} videos were neither encoded nor reported as failed (e.g. {missing[:3]}): a process "
            "stopped early. Nothing was committed; run the same command again to finish the update."
        )
    for path in encoded:
        failed.pop(path, None)

    shards = _rewrite_kept_shards(index_dir, manifest, update, generation)
    if tables:
        new_rows = pa.concat_tables(tables).sort_by([("path", "ascending"), ("segment", "ascending")])
        for number, start in enumerate(range(0, new_rows.num_rows, options.table_shard_rows)):
            name = f"{SEGMENTS_DIR}/segments-{generation:05d}-new-{number:05d}.parquet"
            write_shard(index_dir / name, new_rows.slice(start, options.table_shard_rows))
            shards.append(name)

    vector_settings = VectorIndexSettings(**{k: v for k, v in manifest.vector_index.items() if k != "file"})
    vectors, paths = _vectors_for(index_dir, manifest, vector_settings, shards)
    vector_file = f"vectors-{generation:05d}.faiss"
    save_vector_index(vectors, index_dir / vector_file)

    report = IndexingReport(
        added=sorted(p for p in update.new if p in encoded),
        updated=sorted(p for p in update.changed if p in encoded),
        removed=list(update.removed),
        unchanged=len(update.unchanged),
        failed=[FailedFile(path, reason) for path, reason in sorted(failed.items())],
        warnings=warnings,
        segments_encoded=sum(t.num_rows for t in tables),
        seconds=time.perf_counter() - started,
        processes=processes,
        resumed=plan.resumed,
        precision=options.precision,
    )
    report_file = f"report-{generation:05d}.json"
    write_json_atomically(index_dir / report_file, report.to_dict())

    from .. import __version__

    manifest.generation = generation
    manifest.shards = shards
    manifest.vector_index = {**vector_settings.to_dict(), "file": vector_file}
    manifest.report = report_file
    manifest.counts = {"videos": len(set(paths)), "segments": len(paths), "failed": len(report.failed)}
    manifest.package_version = __version__
    manifest.updated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_manifest(index_dir, manifest)
    _delete_unreferenced(index_dir, manifest)
    return report


def _vectors_for(index_dir: Path, manifest: IndexManifest, settings: VectorIndexSettings, shards: list[str]):
    """The vector index of `shards` (vector `i` = row `i`) and the path of every row.

    When every shard of the current generation is kept as it is and in front (an update that only added videos) and
    the vector index settings did not change, the current vector index is loaded and only the new rows are added:
    no full rebuild (which for HNSW on a large library takes long). Otherwise it is built from all rows, one shard
    at a time so that memory holds the vectors once."""
    previous_file = manifest.vector_index.get("file")
    build_time_fields = ("kind", "hnsw_m", "ef_construction")  # ef_search only matters when searching
    reuse = (
        previous_file is not None
        and all(manifest.vector_index.get(name) == getattr(settings, name) for name in build_time_fields)
        and shards[: len(manifest.shards)] == manifest.shards
        and (index_dir / previous_file).is_file()
    )
    if reuse:
        vectors = load_vector_index(index_dir / previous_file, settings)
        new_shards = shards[len(manifest.shards) :]
    else:
        vectors = build_vector_index(np.zeros((0, manifest.embedding_dim), np.float32), settings)
        new_shards = shards
    paths = []
    for name in shards:
        if name in new_shards:
            table = pq.read_table(index_dir / name, columns=["path", "embedding"])
            vectors.add(embedding_matrix(table))
        else:
            table = pq.read_table(index_dir / name, columns=["path"])
        paths.extend(table.column("path").to_pylist())
    if vectors.ntotal != len(paths):
        raise RuntimeError(f"The vector index holds {vectors.ntotal} vectors for {len(paths)} rows; nothing committed.")
    return vectors, paths


def _delete_unreferenced(index_dir: Path, manifest: IndexManifest) -> None:
    """After a commit: drop the previous generation's files and the merged work shards."""
    referenced = {index_dir / name for name in [*manifest.shards, manifest.vector_index["file"], manifest.report]}
    candidates = [
        *index_dir.glob("vectors-*.faiss"),
        *index_dir.glob("report-*.json"),
        *(index_dir / SEGMENTS_DIR).glob("*.parquet"),
        *(index_dir / WORK_DIR).glob("*.parquet"),
    ]
    for path in candidates:
        if path not in referenced:
            path.unlink(missing_ok=True)


def run_update(
    index_dir: str | os.PathLike,
    video_dir: str | os.PathLike,
    model,
    processor,
    model_info: dict,
    options: IndexingOptions = IndexingOptions(),
) -> IndexingReport:
    """Bring the index in `index_dir` up to date with `video_dir` (create it if needed); see the module docstring.

    Under `accelerate launch` every process calls this with the same arguments; the work is shared and the report
    returned on every process.
    """
    started = time.perf_counter()
    index_dir, video_dir = Path(index_dir).absolute(), Path(video_dir).absolute()
    group = ProcessGroup()
    device = torch.device(options.device) if options.device else (group.device or next(model.parameters()).device)
    model = model.to(device).eval()
    embedding_dim = model.config.projection_dim

    lock = IndexLock(index_dir)

    def plan_under_lock() -> _Plan:
        if not video_dir.is_dir():
            raise NotADirectoryError(f"The video folder {video_dir} does not exist or is not a folder.")
        lock.acquire()
        return _plan(index_dir, video_dir, model_info, processor, embedding_dim, options, group.size)

    try:
        plan = _on_main(group, plan_under_lock)
        share = plan.shares[group.rank]
        # Preparing the inference copy of the weights is only worth it when this process has videos to encode.
        encoder = video_encoder(model, options.precision) if share else model
        writer = WorkShardWriter(
            index_dir / WORK_DIR, group.rank,
            {"fingerprint": plan.manifest.model["fingerprint"], "settings": _work_settings(plan.manifest),
             "target_generation": plan.manifest.generation + 1, "embedding_dim": embedding_dim},
            shard_rows=options.shard_rows, commit_seconds=options.commit_seconds,
        )
        show_progress = options.progress and group.is_main
        if show_progress:
            print(_plan_summary(plan, video_dir, group.size))
        description = "Indexing videos" if group.size == 1 else f"Indexing videos (process 1 of {group.size})"
        with tqdm(total=len(share), unit="video", desc=description, disable=not show_progress, dynamic_ncols=True) as bar:
            _encode_share(share, encoder, processor, plan.manifest, video_dir, writer, options, device, bar)
        group.barrier()
        return _on_main(group, lambda: _commit(index_dir, plan, options, group.size, started))
    finally:
        lock.release()


def video_encoder(model, precision: str | None):
    """What encodes the videos: `optimize_for_inference(model, precision)`, or `model` itself for `None`.

    A model the inference path does not implement (e.g. with bottleneck adapters or deep prompts) encodes with its
    own `encode_video` at fp32; asking it for bf16 or int8 is an error that says so.
    """
    if precision is None:
        return model
    from ..inference import optimize_for_inference

    try:
        if hasattr(model, "peft_config"):  # unmerged bottleneck adapters or deep prompts: only the model's forward runs them
            raise NotImplementedError(f"the fast paths do not run the {type(model).__name__}'s adapters or prompts")
        return optimize_for_inference(model, precision)
    except (NotImplementedError, TypeError) as error:
        if precision != "fp32":
            raise IndexSettingsError(
                f"precision={precision!r} is not available for this model ({error}). Index at fp32 (--precision fp32)."
            ) from error
        logger.info("Encoding with the model's own encode_video: %s", error)
        return model


def _on_main(group: ProcessGroup, work):
    """Run `work()` on the main process and hand its result to every process; an error there is raised everywhere
    (the other processes would otherwise wait for a result that never comes)."""
    result, error = None, None
    if group.is_main:
        try:
            result = work()
        except Exception as exception:
            if group.size == 1:
                raise
            error = exception
    result, message = group.broadcast((result, f"{type(error).__name__}: {error}" if error else None))
    if error is not None:
        raise error
    if message is not None:
        raise RuntimeError(f"The main process failed: {message}")
    return result


def _plan_summary(plan: _Plan, video_dir: Path, processes: int) -> str:
    update = plan.update
    text = (
        f"{len(update.to_encode) + len(update.unchanged)} files in {video_dir}: {len(update.new) - plan.retried} new, "
        f"{len(update.changed)} changed, {len(update.removed)} removed, {len(update.unchanged)} unchanged"
    )
    if plan.retried:
        text += f", {plan.retried} that failed before (tried again)"
    if plan.resumed:
        text += f"; {plan.resumed} already done by an interrupted run"
    if processes > 1:
        text += f"; shared among {processes} processes"
    return text


__all__ = ["IndexingOptions", "IndexLock", "IndexLockedError", "run_update", "SEGMENTS_DIR"]
