"""Sharing an indexing run among processes started by `accelerate launch` (one machine or several).

The main process plans the run and sends the plan to the others; every process encodes its share of the videos
and writes its own work shards; the main process then merges them into the index. Collectives go through
Accelerate's `PartialState` (gloo on CPU, NCCL on GPUs) with a long timeout, since processes that finish their
share early wait at the final barrier for the slowest one.

The processes exchange only the plan and small reports: the videos, the work shards and the index itself travel
through the filesystem. So on several machines the video folder and the index folder must be on a filesystem every
machine shares (NFS, a cluster filesystem), at the same path on each; `check_folders_shared` makes sure of it before
any video is encoded.

A process launched on its own (no `WORLD_SIZE` above 1 in the environment) is a group of one and never touches
`torch.distributed`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from .discovery import VideoFile
from .storage import TEMP_PREFIX, WORK_DIR, SearchIndexError

# Time a process may wait at a barrier for the others to finish their share.
COLLECTIVE_TIMEOUT = timedelta(hours=48)


class ProcessGroup:
    """Rank, size and the collectives an indexing run needs."""

    def __init__(self):
        self._state = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch
            from accelerate import PartialState

            # Without GPUs, Accelerate joins the processes over gloo only when told to run on the CPU.
            self._state = PartialState(cpu=not torch.cuda.is_available(), timeout=COLLECTIVE_TIMEOUT)

    @property
    def rank(self) -> int:
        return self._state.process_index if self._state is not None else 0

    @property
    def size(self) -> int:
        return self._state.num_processes if self._state is not None else 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self):
        """The device Accelerate assigns this process (its GPU), or `None` when launched alone."""
        return self._state.device if self._state is not None else None

    def barrier(self) -> None:
        if self._state is not None:
            with _reporting_lost_processes():
                self._state.wait_for_everyone()

    def broadcast(self, value: Any) -> Any:
        """The main process's `value`, on every process (any picklable object)."""
        if self._state is None:
            return value
        from accelerate.utils import broadcast_object_list

        box = [value]
        with _reporting_lost_processes():
            broadcast_object_list(box, from_process=0)
        return box[0]

    def gather(self, value: Any) -> list:
        """Every process's `value` (any picklable object), in rank order, on every process."""
        if self._state is None:
            return [value]
        from accelerate.utils import gather_object

        with _reporting_lost_processes():
            return gather_object([value])


class ProcessLostError(SearchIndexError):
    """Another process of the run stopped (its machine died, or it failed or was killed) while this one waited."""


@contextlib.contextmanager
def _reporting_lost_processes():
    """A collective that fails because another process is gone (gloo: "Connection closed by peer"; NCCL: a
    `DistBackendError`, a `RuntimeError` too) becomes a `ProcessLostError` that says what to do."""
    try:
        yield
    except RuntimeError as error:
        raise ProcessLostError(
            "Another process of this run stopped before the others (its machine died, or it failed or was killed: see "
            "its log). Nothing was committed; the work shards written so far are kept. Run the same command again, "
            "with any number of processes, to finish the update."
        ) from error


@functools.cache
def process_group() -> ProcessGroup:
    """The processes of this run, built once (Accelerate's state belongs to the process anyway)."""
    return ProcessGroup()


class FolderNotSharedError(SearchIndexError):
    """A process of a run on several machines does not see the index folder or the video folder of the main process."""


def _share_problem(video_dir: Path, share: Sequence[VideoFile]) -> str | None:
    """What this process lacks of the video folder: the folder itself, or every file of its share.

    A few missing files are not a sharing problem (a file deleted since the plan fails as usual); all of them are.
    """
    if not video_dir.is_dir():
        return f"has no video folder {video_dir}"
    if share and not any((video_dir / file.path).is_file() for file in share):
        return f"finds none of the {len(share)} videos of its share in {video_dir} (e.g. {share[0].path})"
    return None


def check_folders_shared(group: ProcessGroup, index_dir: Path, video_dir: Path,
                         share: Sequence[VideoFile]) -> None:
    """Make sure every process sees the main process's index folder and video folder, before any work is done.

    The main process writes a file with a new name in the index's `work/` folder (a new name: a network filesystem
    may cache an old one's absence), every other process looks for it and for the videos of its share, and the
    answers are gathered: a process that misses either raises `FolderNotSharedError` on every process, naming each
    process and its host. Without this check a process on another machine would write its work shards where the main
    process never finds them, or report every video of its share as failed.
    """
    if group.size == 1:
        return
    probe, problem = None, None
    if group.is_main:
        probe = index_dir / WORK_DIR / f"{TEMP_PREFIX}shared-{uuid.uuid4().hex}"
        try:
            probe.parent.mkdir(parents=True, exist_ok=True)
            probe.write_text(socket.gethostname())
        except OSError as error:
            problem = f"cannot write in {probe.parent} ({error})"
            probe = None
    name = group.broadcast(probe.name if probe is not None else None)  # written before any process looks
    problems = []
    if not group.is_main:
        if name is not None and not (index_dir / WORK_DIR / name).is_file():
            problems.append(f"does not see the index folder {index_dir} that the main process writes to")
        problems.append(_share_problem(video_dir, share))
    problem = problem or "; ".join(filter(None, problems)) or None
    reports = group.gather((group.rank, socket.gethostname(), problem, str(video_dir), str(index_dir)))
    if probe is not None:
        probe.unlink(missing_ok=True)
    failing = [f"process {rank} of {group.size} (host {host}) {problem}" for rank, host, problem, *_ in reports
               if problem]
    if failing:
        _, host, _, main_videos, main_index = reports[0]
        raise FolderNotSharedError(
            "; ".join(failing) + ". Indexing on several machines needs the video folder and the index folder on a "
            "filesystem every machine shares (NFS, a cluster filesystem), at the same absolute path on each (the main "
            f"process, host {host}, uses {main_videos} and {main_index}). Nothing was encoded."
        )


def split_by_size(files: Sequence[VideoFile], parts: int) -> list[list[VideoFile]]:
    """Share `files` among `parts` processes so that each decodes about as many bytes (largest first, greedily).

    Deterministic: the same files always give the same shares. Each share is sorted by path.
    """
    shares: list[list[VideoFile]] = [[] for _ in range(parts)]
    loads = [0] * parts
    for file in sorted(files, key=lambda f: (-f.size, f.path)):
        lightest = min(range(parts), key=lambda i: (loads[i], i))
        shares[lightest].append(file)
        loads[lightest] += max(file.size, 1)
    return [sorted(share, key=lambda f: f.path) for share in shares]


__all__ = ["COLLECTIVE_TIMEOUT", "FolderNotSharedError", "ProcessGroup", "ProcessLostError", "check_folders_shared",
           "process_group", "split_by_size"]
