"""Sharing an indexing run among processes started by `accelerate launch` (one machine or several).

The main process plans the run and sends the plan to the others; every process encodes its share of the videos
and writes its own work shards; the main process then merges them into the index. Collectives go through
Accelerate's `PartialState` (gloo on CPU, NCCL on GPUs) with a long timeout, since processes that finish their
share early wait at the final barrier for the slowest one.

A process launched on its own (no `WORLD_SIZE` above 1 in the environment) is a group of one and never touches
`torch.distributed`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from .discovery import VideoFile

# Time a process may wait at a barrier for the others to finish their share.
COLLECTIVE_TIMEOUT = timedelta(hours=48)


class ProcessGroup:
    """Rank, size and the three collectives an indexing run needs."""

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
            self._state.wait_for_everyone()

    def broadcast(self, value: Any) -> Any:
        """The main process's `value`, on every process (any picklable object)."""
        if self._state is None:
            return value
        from accelerate.utils import broadcast_object_list

        box = [value]
        broadcast_object_list(box, from_process=0)
        return box[0]


@functools.cache
def process_group() -> ProcessGroup:
    """The processes of this run, built once (Accelerate's state belongs to the process anyway)."""
    return ProcessGroup()


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


__all__ = ["COLLECTIVE_TIMEOUT", "ProcessGroup", "process_group", "split_by_size"]
