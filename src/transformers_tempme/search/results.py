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
    """A file of the video folder that is not in the index, and why (the reason of its `VideoDecodeError`): a video
    that failed, or a file that is not a video (`IndexingReport.skipped`)."""

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
        failed (`list[FailedFile]`): videos that could not be indexed, with the reason (a file named like a video
            that FFmpeg cannot open counts here; see `discovery`).
        skipped (`list[FailedFile]`): files that are not videos (still images, text, audio), with the reason.
        warnings (`list[str]`): videos indexed with something left out: windows whose frames did not decode, or
            the part of a truncated file past what can be read.
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
    skipped: list[FailedFile] = field(default_factory=list)
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
            "skipped": len(self.skipped),
        }

    def summary(self, max_lines: int = 5) -> str:
        """One line of counts, then the first `max_lines` failures, warnings and skipped files, each with its reason.
        """
        lines = [", ".join(f"{name} {count}" for name, count in self.counts.items())]
        if self.skipped:
            lines[0] += " (not videos)"
        if self.resumed:
            lines[0] += f" ({self.resumed} finished by an interrupted run)"
        if self.interrupted:
            lines[0] += f"; interrupted, {self.pending} not reached yet"
        lines += _first(max_lines, [f"  failed: {f.path}: {f.reason}" for f in self.failed], "failures")
        lines += _first(max_lines, [f"  warning: {warning}" for warning in self.warnings], "warnings")
        lines += _first(max_lines, [f"  skipped, not a video: {f.path}: {f.reason}" for f in self.skipped],
                        "files skipped")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {**asdict(self), "counts": self.counts}

    @classmethod
    def from_dict(cls, data: dict) -> "IndexingReport":
        fields = {key: value for key, value in data.items() if key != "counts"}
        for kind in ("failed", "skipped"):
            fields[kind] = [FailedFile(**failure) for failure in fields.get(kind, [])]
        return cls(**fields)


def _first(count: int, lines: list[str], what: str) -> list[str]:
    """The first `count` lines, and one saying how many more the report holds."""
    more = [f"  ... and {len(lines) - count} more {what} (all of them in the report)"] if len(lines) > count else []
    return lines[:count] + more


__all__ = ["SearchHit", "FailedFile", "IndexingReport", "format_clock"]
