"""Typed results of the search layer: a search hit, a file that could not be indexed, the report of an update."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class SearchHit:
    """One moment of a video that matches a query.

    Attributes:
        rank (`int`): 1 for the best hit.
        path (`str`): the video's path relative to the indexed folder, as found there (`/` separators).
        start (`float`), end (`float`): the matching segment, in seconds from the start of the video.
        score (`float`): cosine similarity of the query and the segment embeddings, in [-1, 1].
        video_path (`str`): the video's absolute path on this machine.
    """

    rank: int
    path: str
    start: float
    end: float
    score: float
    video_path: str

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def time_range(self) -> str:
        """The segment as `0:10.0-0:20.0` (`h:mm:ss.s` past an hour)."""
        return f"{format_clock(self.start)}-{format_clock(self.end)}"


def format_clock(seconds: float) -> str:
    """`1:05.0`, or `1:02:05.0` past an hour."""
    minutes, secs = divmod(max(0.0, seconds), 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes}:{secs:04.1f}"


@dataclass(frozen=True)
class FailedFile:
    """A file of the video folder that is not in the index, and why (the `VideoDecodeError` message)."""

    path: str
    reason: str


@dataclass
class IndexingReport:
    """What one `tempme index` run did.

    Attributes:
        added (`list[str]`): videos indexed for the first time.
        updated (`list[str]`): videos re-encoded because they changed.
        removed (`list[str]`): videos dropped because they were deleted (or stopped decoding).
        unchanged (`int`): videos kept as they were.
        failed (`list[FailedFile]`): files skipped, with the reason.
        warnings (`list[str]`): videos indexed with some windows left out (their frames did not decode).
        segments_encoded (`int`): segments encoded by this run.
        seconds (`float`): wall time of the run.
        processes (`int`): processes that shared the work.
        resumed (`int`): files of this update finished by an earlier, interrupted run of it (taken from its work
            shards, not encoded again).
        precision (`str`, *optional*): the inference precision the videos were encoded at (`None`: the model's
            own `encode_video`).
        interrupted (`bool`): the run was stopped (Ctrl-C) and committed only the videos it had encoded.
        pending (`int`): files an interrupted run did not reach (the next run encodes them).
    """

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    failed: list[FailedFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    segments_encoded: int = 0
    seconds: float = 0.0
    processes: int = 1
    resumed: int = 0
    precision: str | None = "fp32"
    interrupted: bool = False
    pending: int = 0

    @property
    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "updated": len(self.updated),
            "removed": len(self.removed),
            "unchanged": self.unchanged,
            "failed": len(self.failed),
        }

    def summary(self, max_failures: int = 5) -> str:
        """One line of counts, then the first `max_failures` failures with their reasons."""
        lines = [", ".join(f"{name} {count}" for name, count in self.counts.items())]
        if self.resumed:
            lines[0] += f" ({self.resumed} finished by an interrupted run)"
        if self.interrupted:
            lines[0] += f"; interrupted, {self.pending} not reached yet"
        for failure in self.failed[:max_failures]:
            lines.append(f"  failed: {failure.path}: {failure.reason}")
        if len(self.failed) > max_failures:
            lines.append(f"  ... and {len(self.failed) - max_failures} more failures (all of them in the report)")
        for warning in self.warnings[:max_failures]:
            lines.append(f"  warning: {warning}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {**asdict(self), "counts": self.counts}

    @classmethod
    def from_dict(cls, data: dict) -> "IndexingReport":
        fields = {key: value for key, value in data.items() if key != "counts"}
        fields["failed"] = [FailedFile(**failure) for failure in fields.get("failed", [])]
        return cls(**fields)


__all__ = ["SearchHit", "FailedFile", "IndexingReport", "format_clock"]
