"""One update of a video index: plan, decode and encode what changed, then commit (the files: `storage`).

    plan      the main process lists the video folder, compares it with the index (`plan_update`), refuses an
              update that looks like a mistake (another folder, most videos gone), takes the work shards of an earlier
              interrupted attempt as done, and shares the rest among the processes;
    encode    every process decodes its videos in DataLoader workers (`SegmentBatches`) while the model encodes the
              batches, writing finished videos to work shards (`WorkShardWriter`) as it goes; a video whose
              embedding is not finite fails with that reason;
    commit    the main process collects the work shards and commits a new generation (`commit_generation`).

A run killed at any moment leaves the previous generation readable and intact; the next run finishes the job.
Ctrl-C stops encoding after the batch in hand and commits what is encoded (one process; with several, the work
shards keep it for the next run).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..video_io import DEFAULT_DECODE_TIMEOUT_S
from .ann import ANN_KINDS
from .discovery import VideoFile, list_files
from .distributed import ProcessGroup, check_folders_shared, process_group, split_by_size
from .fingerprint import check_fingerprint
from .planning import UpdatePlan, indexed_videos, plan_update
from .results import FailedFile, IndexingReport
from .segment_batches import SegmentBatches
from .segments import DEFAULT_SEGMENT_SECONDS, check_segment_settings
from .storage import (
    METADATA_COLUMNS,
    SEGMENTS_DIR,
    WORK_DIR,
    IndexDamagedError,
    IndexLock,
    IndexManifest,
    IndexNotFoundError,
    IndexSettingsError,
    IndexVersionError,
    SearchIndexError,
    UnsafeRemovalError,
    VectorIndexSettings,
    VideoFolderMismatchError,
    WorkShardWriter,
    highest_generation,
    collect_work,
    is_index_folder,
    commit_generation,
    find_work_shards,
    read_manifest,
    read_report,
    read_segment_rows,
    remove_temporary_files,
)

logger = logging.getLogger(__name__)

NOT_FINITE = ("the model's embedding of it is not finite (NaN or infinity): the model's weights or the decoded "
              "frames are broken")


@dataclass(frozen=True)
class IndexingOptions:
    """Settings of an update. `None` keeps what the index already uses (or the default for a new index).

    Args:
        segment_seconds (`float`): window length; longer videos are cut into windows (default 10 s).
        segment_overlap (`float`): seconds shared by consecutive windows (default 0).
        vector_index (`VectorIndexSettings` or `str`): the vector index (`search/ann.py`). `"auto"` (the default for
            a new index) chooses by the number of segments and `max_memory` (`choose_ann`); `"flat"`, `"hnsw"` or
            `"ivfpq"` with the settings `settings_for` gives for the number of segments; or settings as they are. An
            update with `None` or `"auto"` keeps the index's kind and updates it in place; another kind or other
            settings rebuild the vector index from the stored embeddings (nothing is encoded again).
        max_memory (`int`, *optional*): bytes of RAM the vector index may hold, for `"auto"`.
        verify (`bool`): compare file contents (SHA-256) instead of size and modification time; files are hashed
            only when this is set.
        overwrite (`bool`): re-encode everything (e.g. with another model or other segment settings).
        allow_removals (`bool`): let an update remove every indexed video, or more than half of them (refused
            otherwise: an unmounted drive or a wrong folder looks like that).
        video_dir_moved (`bool`): the video folder moved; index the one given and record it (the index keeps its
            rows: paths are relative to the folder). Without it, indexing another folder is refused.
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
    vector_index: VectorIndexSettings | str | None = None
    max_memory: int | None = None
    verify: bool = False
    overwrite: bool = False
    allow_removals: bool = False
    video_dir_moved: bool = False
    batch_size: int = 16
    num_workers: int = 2
    shard_rows: int = 1024
    commit_seconds: float = 60.0
    table_shard_rows: int = 100_000
    device: str | None = None
    progress: bool = True
    timeout_s: float = DEFAULT_DECODE_TIMEOUT_S
    precision: str | None = "fp32"


@dataclass
class _Plan:
    """What the main process sends to every process."""

    manifest: IndexManifest
    update: UpdatePlan
    shares: list[list[VideoFile]]
    resumed: int
    retried: int = 0
    skipped_before: int = 0


def _new_manifest(video_dir: Path, model_info: dict, processor, embedding_dim: int, options: IndexingOptions,
                  previous: IndexManifest | None) -> IndexManifest:
    """The manifest of the generation this update makes, holding what it keeps of the current one."""
    keep = previous if previous is not None and not options.overwrite else None
    segment_seconds = options.segment_seconds or (keep.segment_seconds if keep else DEFAULT_SEGMENT_SECONDS)
    overlap = options.segment_overlap if options.segment_overlap is not None else (keep.segment_overlap if keep else 0.0)
    check_segment_settings(segment_seconds, overlap)
    vector_index = _requested_vector_index(options, keep)
    return IndexManifest(
        video_dir=str(video_dir),
        model=dict(model_info),
        embedding_dim=embedding_dim,
        num_frames=processor.num_frames,
        frame_sampling=processor.frame_sampling,
        segment_seconds=float(segment_seconds),
        segment_overlap=float(overlap),
        vector_index=vector_index,
        shards=list(keep.shards) if keep else [],
        report=keep.report if keep else None,
        counts=dict(keep.counts) if keep else {"videos": 0, "segments": 0, "failed": 0},
        generation=previous.generation if previous is not None else 0,
        files=dict(keep.files) if keep else {},
    )


def _requested_vector_index(options: IndexingOptions, keep: IndexManifest | None) -> dict:
    """The manifest's `vector_index` for this update: the current one (its file named, so that the commit updates it
    in place) when the options keep it, else a request that the commit sizes and builds (`chosen_vector_settings`)."""
    request = options.vector_index if options.vector_index is not None else "auto"
    if not isinstance(request, VectorIndexSettings) and request not in ("auto", *ANN_KINDS):
        raise IndexSettingsError(f"Unknown vector index {request!r}: choose auto, {', '.join(ANN_KINDS)}.")
    if keep is not None and keep.vector_file is not None:
        current = keep.vector_settings
        if request == "auto" or request == current.kind or (
                isinstance(request, VectorIndexSettings) and request.builds_like(current)):
            settings = request if isinstance(request, VectorIndexSettings) else current
            return {**keep.vector_index, **settings.to_dict()}
    if isinstance(request, VectorIndexSettings):
        return {**request.to_dict(), "file": None}
    if request == "auto":
        return {"kind": "auto", "max_memory": options.max_memory, "file": None}
    return {"kind": request, "sized": True, "file": None}


def _check_compatible(previous: IndexManifest, new: IndexManifest, index_dir: Path, options: IndexingOptions) -> None:
    check_fingerprint(previous.model["fingerprint"], new.model["fingerprint"], index_dir, previous.model["name_or_path"])
    if previous.segment_settings != new.segment_settings:
        raise IndexSettingsError(
            f"The index {index_dir} cuts videos with {previous.segment_settings}; this run asks for "
            f"{new.segment_settings}. Use the index's settings, or pass --overwrite to re-encode every video."
        )
    if Path(previous.video_dir).resolve() != Path(new.video_dir).resolve() and not options.video_dir_moved:
        raise VideoFolderMismatchError(
            f"The index {index_dir} holds the videos of {previous.video_dir}, not of {new.video_dir}. To index "
            f"another folder, use another --index; if the videos moved to {new.video_dir}, pass --video-dir-moved; "
            "to replace the index with this folder's videos, pass --overwrite."
        )


def _check_removals(update: UpdatePlan, indexed: int, index_dir: Path, video_dir: Path,
                    options: IndexingOptions) -> None:
    """Refuse an update that would remove every indexed video, or more than half of them, unless allowed."""
    removed = len(update.removed)
    if options.allow_removals or not removed or (removed < indexed and removed <= indexed / 2):
        return
    share = "all" if removed == indexed else "more than half"
    raise UnsafeRemovalError(
        f"This update would remove {removed} of the {indexed} videos of {index_dir} ({share} of them): their files "
        f"are no longer in {video_dir}. Is the drive mounted and the folder the right one? Nothing was changed. To "
        "remove them from the index, run again with --allow-removals."
    )


def _previous_manifest(index_dir: Path, options: IndexingOptions) -> IndexManifest | None:
    """The current generation's manifest, `None` for a new index (or, with `overwrite`, one that cannot be read)."""
    try:
        return read_manifest(index_dir)
    except IndexNotFoundError:
        return None
    except (IndexDamagedError, IndexVersionError):
        if options.overwrite:
            return None
        raise


def _plan(index_dir: Path, video_dir: Path, model_info: dict, processor, embedding_dim: int,
          options: IndexingOptions, processes: int) -> _Plan:
    for folder in (index_dir, index_dir / SEGMENTS_DIR, index_dir / WORK_DIR):
        remove_temporary_files(folder)
    previous = _previous_manifest(index_dir, options)
    manifest = _new_manifest(video_dir, model_info, processor, embedding_dim, options, previous)
    if previous is None:  # the new generation's files must not reuse the names of a damaged index's files
        manifest.generation = highest_generation(index_dir)
    indexed = {}
    if previous is not None and not options.overwrite:
        _check_compatible(previous, manifest, index_dir, options)
        indexed = indexed_videos(read_segment_rows(index_dir, previous, METADATA_COLUMNS))
    # The index's own folder, and any other index inside the video folder, hold no videos to index.
    files = list_files(video_dir, exclude=[index_dir], skip_folder=is_index_folder)
    update = plan_update(files, indexed, video_dir, verify=options.verify)
    _check_removals(update, len(indexed), index_dir, video_dir, options)
    done = _paths_done_by_earlier_attempt(index_dir, manifest, update)
    remaining = [file for file in update.to_encode if file.path not in done]
    failed_before, skipped_before = _not_indexed_before(index_dir, previous)
    return _Plan(manifest, update, split_by_size(remaining, processes), resumed=len(done),
                 retried=sum(1 for path in update.new if path in failed_before),
                 skipped_before=sum(1 for path in update.new if path in skipped_before))


def _not_indexed_before(index_dir: Path, previous: IndexManifest | None) -> tuple[set[str], set[str]]:
    """Paths the previous update could not index, and those it skipped as not videos (both are probed again)."""
    try:
        report = read_report(index_dir, previous) if previous is not None else None
    except SearchIndexError as error:  # the report only feeds the summary: a damaged one costs nothing else
        logger.warning("%s", error)
        report = None
    return tuple({file["path"] for file in (report or {}).get(kind, [])} for kind in ("failed", "skipped"))


def _work_record(manifest: IndexManifest) -> dict:
    """What every work shard of this update records, and what an interrupted attempt's shards must match."""
    return {
        "fingerprint": manifest.model["fingerprint"],
        "settings": {**manifest.segment_settings, "embedding_dim": manifest.embedding_dim},
        "target_generation": manifest.generation + 1,
        "embedding_dim": manifest.embedding_dim,
    }


def _work_shards(index_dir: Path, manifest: IndexManifest):
    record = _work_record(manifest)
    return find_work_shards(index_dir, record["fingerprint"], record["settings"], record["target_generation"])


def _paths_done_by_earlier_attempt(index_dir: Path, manifest: IndexManifest, update: UpdatePlan) -> set[str]:
    wanted = {(f.path, f.size, f.mtime_ns) for f in update.to_encode}
    done = set()
    for shard in _work_shards(index_dir, manifest):
        for video in [*shard.videos, *shard.failed]:
            if (video["path"], video["size"], video["mtime_ns"]) in wanted:
                done.add(video["path"])
    return done


class _StopOnInterrupt:
    """Ctrl-C while encoding: the first one lets the batch in hand finish and stops (what is encoded is kept); a
    second one interrupts at once. Only the main thread receives signals: elsewhere this does nothing."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nStopping after the videos being encoded (Ctrl-C again to stop at once) ...", file=sys.stderr, flush=True)

    def __enter__(self) -> "_StopOnInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _ignore_interrupts(worker_id: int) -> None:
    """Decoding workers leave Ctrl-C to the main process, which stops them once the batch in hand is encoded."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@torch.inference_mode()
def _encode_share(files: Sequence[VideoFile], model, processor, manifest: IndexManifest, video_dir: Path,
                  writer: WorkShardWriter, options: IndexingOptions, device, progress_bar,
                  stop: _StopOnInterrupt) -> None:
    """Decode (in workers) and encode the videos of `files`, writing finished videos to work shards."""
    if not files:
        return
    dataset = SegmentBatches(
        files, video_dir, processor, manifest.segment_seconds, manifest.segment_overlap, options.batch_size,
        options.timeout_s, hash_files=options.verify,
    )
    workers = min(options.num_workers, len(files))
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, prefetch_factor=2 if workers else None,
                        worker_init_fn=_ignore_interrupts if workers else None)
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
            if video["error"] is None and not all(np.isfinite(row[1]).all() for row in rows):
                video = {**video, "error": NOT_FINITE}
            if video["error"] is not None:
                writer.add_failure(video)
            else:
                writer.add_video(video, [row[0] for row in rows], np.stack([row[1] for row in rows]))
                segments_done += len(rows)
            progress_bar.update(1)
            progress_bar.set_postfix(segments=segments_done, refresh=False)
        writer.maybe_write()
        if stop.requested:
            break
    writer.write()


def _commit(index_dir: Path, plan: _Plan, options: IndexingOptions, processes: int, started: float,
            interrupted: bool = False) -> IndexingReport:
    """Commit the videos the work shards hold. An interrupted run commits those it finished; the videos it did not
    reach stay as they were (a changed video keeps its old rows) for the next run."""
    manifest, update = plan.manifest, plan.update
    wanted = [(f.path, f.size, f.mtime_ns) for f in update.to_encode]
    work = collect_work(index_dir, _work_shards(index_dir, manifest), wanted, manifest.embedding_dim)
    missing = sorted({f.path for f in update.to_encode} - work.encoded - set(work.failed) - set(work.skipped))
    if missing and not interrupted:
        raise RuntimeError(
            f"{len(missing)} videos were neither encoded nor reported as failed (e.g. {missing[:3]}): a process "
            "stopped early. Nothing was committed; run the same command again to finish the update."
        )
    # A file the index held as a video that no longer is one (overwritten, damaged) failed, whatever its name says.
    skipped = {path: reason for path, reason in work.skipped.items() if path not in update.changed}
    failed = {**work.failed, **{path: reason for path, reason in work.skipped.items() if path not in skipped}}
    report = IndexingReport(
        added=sorted(p for p in update.new if p in work.encoded),
        updated=sorted(p for p in update.changed if p in work.encoded),
        removed=list(update.removed),
        unchanged=len(update.unchanged),
        failed=[FailedFile(path, reason) for path, reason in sorted(failed.items())],
        skipped=[FailedFile(path, reason) for path, reason in sorted(skipped.items())],
        warnings=work.warnings,
        segments_encoded=work.rows.num_rows if work.rows is not None else 0,
        seconds=time.perf_counter() - started,
        processes=processes,
        resumed=plan.resumed,
        precision=options.precision,
        interrupted=interrupted,
        pending=len(missing),
    )
    refreshed = {path: {"size": f.size, "mtime_ns": f.mtime_ns, "sha256": f.sha256}
                 for path, f in update.refreshed.items()}
    commit_generation(
        index_dir, manifest, new_rows=work.rows, dropped=set(update.dropped) - set(missing), refreshed=refreshed,
        report=report.to_dict(), failed=len(report.failed), rows_per_shard=options.table_shard_rows,
        progress=options.progress,
    )
    return report


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
    returned on every process. Ctrl-C in a one-process run commits the videos encoded so far and returns a report
    with `interrupted` set; with several processes it raises `KeyboardInterrupt` once each process has written its
    work shards (the next run takes them as done).
    """
    started = time.perf_counter()
    index_dir, video_dir = Path(index_dir).absolute(), Path(video_dir).absolute()
    group = process_group()
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
        check_folders_shared(group, index_dir, video_dir, share)
        # Preparing the inference copy of the weights is only worth it when this process has videos to encode.
        encoder = video_encoder(model, options.precision) if share else model
        writer = WorkShardWriter(index_dir / WORK_DIR, group.rank, _work_record(plan.manifest),
                                 shard_rows=options.shard_rows, commit_seconds=options.commit_seconds)
        show_progress = options.progress and group.is_main
        if show_progress:
            print(_plan_summary(plan, video_dir, group.size))
        description = "Indexing videos" if group.size == 1 else f"Indexing videos (process 1 of {group.size})"
        with tqdm(total=len(share), unit="video", desc=description, disable=not show_progress,
                  dynamic_ncols=True) as bar, _StopOnInterrupt() as stop:
            _encode_share(share, encoder, processor, plan.manifest, video_dir, writer, options, device, bar, stop)
        if stop.requested and group.size > 1:
            raise KeyboardInterrupt  # the processes cannot agree on a commit: the work shards keep what is done
        group.barrier()
        return _on_main(group, lambda: _commit(index_dir, plan, options, group.size, started, stop.requested))
    finally:
        lock.release()


def video_encoder(model, precision: str | None):
    """What encodes the videos: `optimize_for_inference(model, precision)`, or `model` itself for `None`.

    A model the inference path does not implement (deep prompts, unmerged LoRA: `optimize_for_inference` names what it
    cannot run) encodes with its own `encode_video` at fp32; asking it for bf16 or int8 is an error that says so.
    """
    if precision is None:
        return model
    from ..inference import optimize_for_inference

    try:
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
    (the other processes would otherwise wait for a result that never comes), as a `SearchIndexError` when it is
    one (so that every process reports it as the user error it is)."""
    result, error = None, None
    if group.is_main:
        try:
            result = work()
        except Exception as exception:
            if group.size == 1:
                raise
            error = exception
    message = None if error is None else (isinstance(error, SearchIndexError), f"{type(error).__name__}: {error}")
    result, message = group.broadcast((result, message))
    if error is not None:
        raise error
    if message is not None:
        user_error, text = message
        raise (SearchIndexError if user_error else RuntimeError)(f"The main process failed: {text}")
    return result


def _plan_summary(plan: _Plan, video_dir: Path, processes: int) -> str:
    update = plan.update
    text = (
        f"{len(update.to_encode) + len(update.unchanged)} files in {video_dir}: "
        f"{len(update.new) - plan.retried - plan.skipped_before} new, {len(update.changed)} changed, "
        f"{len(update.removed)} removed, {len(update.unchanged)} unchanged"
    )
    if plan.retried:
        text += f", {plan.retried} that failed before (tried again)"
    if plan.skipped_before:
        text += f", {plan.skipped_before} not videos before (probed again)"
    if plan.resumed:
        text += f"; {plan.resumed} already done by an interrupted run"
    if processes > 1:
        text += f"; shared among {processes} processes"
    return text


__all__ = ["IndexingOptions", "run_update", "video_encoder"]
