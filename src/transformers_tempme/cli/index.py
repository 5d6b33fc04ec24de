"""Index a folder of videos for search by text, or bring an existing index up to date.

    tempme index videos/ --model path/to/tempme-model --index videos.index
    tempme index videos/ --index videos.index                      # later: encode only what changed
    tempme index --check --index videos.index                      # read every file, compare with index.json
    tempme index --repair --index videos.index                     # rebuild damaged derived files, no re-encoding
    tempme index videos/ --model path/to/tempme-model --index videos.index --precision int8   # faster on CPU
    tempme index videos/ --model path/to/tempme-model --index videos.index --ann auto --max-memory 4G
    tempme index videos/ --from-clip openai/clip-vit-base-patch32 --preset tempme-vit-b-32 --index videos.index
    accelerate launch -m transformers_tempme.cli index videos/ --model ... --index videos.index

Every file under VIDEO_DIR is probed (hidden files and index folders inside it are left out); videos longer than
--segment-seconds are cut into windows, each sampled to the model's frame count as in training. The summary at the
end, and the index's report, list with the reason the videos that failed (a file named like a video that cannot be
read counts here) apart from the files skipped as not videos (images, text, sound), and warn about videos indexed
only in part (a truncated file, windows that do not decode). A run that is interrupted (even killed) resumes where it stopped when run again;
Ctrl-C commits the videos encoded so far (exit code 130). Without VIDEO_DIR an existing index updates the folder it
was built from. An update that names another folder, or would remove all videos or more than half of them, is
refused (--video-dir-moved, --allow-removals). --check exits with 1 when it finds a problem.

--ann picks the vector index: auto (the default) chooses by the number of segments and --max-memory (exact `flat`
for small libraries, `hnsw` up to 1M segments, compressed `ivfpq` beyond or when the budget says so); an update keeps
the index's kind with auto and adds to it in place; naming another kind rebuilds it from the stored embeddings.

--model takes a folder written by `TempMeCLIPModel.save_pretrained` (with the processor saved next to it), a Hub
id, or a LoRA adapter folder; --from-clip a plain CLIP checkpoint turned into zero-shot TempMe with --preset.
Without either, an existing index uses the model it was built with.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .common import (
    add_model_arguments,
    command_parser,
    default_device,
    load_model_from_arguments,
    positive_int,
    reports_user_errors,
)

DEFAULT_NUM_WORKERS = 2
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


def memory_size(text: str) -> int:
    """An argparse type: bytes from `512M`, `4G`, `1.5GiB`, `800000000` (K, M, G, T in powers of 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write it like 512M or 4G")
    number, unit = float(match.group(1)), match.group(2).upper()
    value = int(number * 1024 ** "_KMGT".index(unit or "_"))
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is no memory at all: write it like 512M or 4G")
    return value


def parse_args(argv=None):
    parser = command_parser("index", __doc__)
    parser.add_argument("video_dir", metavar="VIDEO_DIR", nargs="?", default=None,
                        help="folder of videos (searched recursively); default: the one the index was built from")
    parser.add_argument("--index", required=True, metavar="INDEX_DIR", help="index folder to create or update")
    upkeep = parser.add_argument_group("checking and repairing (no model, no encoding)").add_mutually_exclusive_group()
    upkeep.add_argument("--check", action="store_true",
                        help="read every file of the index and compare it with index.json (exit code 1 on a problem)")
    upkeep.add_argument("--repair", action="store_true",
                        help="rebuild damaged or missing derived files (vectors from the Parquet rows, counts, "
                        "index.json from its newest intact copy) and drop unreadable shards")
    add_model_arguments(parser, "required for a new index")
    segments = parser.add_argument_group("segments")
    segments.add_argument("--segment-seconds", type=float, default=None, help="window length (default 10, or the index's)")
    segments.add_argument("--segment-overlap", type=float, default=None, help="seconds shared by consecutive windows (default 0)")
    vectors = parser.add_argument_group("vector index")
    vectors.add_argument("--ann", choices=("auto", "flat", "hnsw", "ivfpq"), default=None,
                         help="auto: chosen by size and --max-memory (default; an update keeps the index's kind); "
                         "flat: exact; hnsw: graph, approximate; ivfpq: compressed codes re-ranked exactly, for "
                         "millions of segments")
    vectors.add_argument("--max-memory", type=memory_size, default=None, metavar="SIZE",
                         help="RAM the vector index may hold, e.g. 512M or 4G (for --ann auto)")
    vectors.add_argument("--hnsw-m", type=positive_int, default=None, help="HNSW links per vector (default 32)")
    vectors.add_argument("--ef-construction", type=positive_int, default=None,
                         help="HNSW candidate list while building (default 200)")
    vectors.add_argument("--ef-search", type=positive_int, default=None,
                         help="HNSW candidate list while searching (default 256)")
    run = parser.add_argument_group("run")
    run.add_argument("--verify", action="store_true", help="detect changed files by content hash, not size and time")
    run.add_argument("--overwrite", action="store_true", help="re-encode every video (other model or settings)")
    run.add_argument("--allow-removals", action="store_true",
                     help="let an update remove all indexed videos, or more than half of them (refused otherwise)")
    run.add_argument("--video-dir-moved", action="store_true",
                     help="the indexed videos moved to VIDEO_DIR: keep their rows and record the new folder")
    run.add_argument("--batch-size", type=int, default=16, help="segments per forward pass")
    run.add_argument("--num-workers", type=int, default=DEFAULT_NUM_WORKERS, help="decoding processes")
    run.add_argument("--shard-rows", type=int, default=1024, help="segments per work shard (the most a kill can lose)")
    run.add_argument("--commit-seconds", type=float, default=60.0, help="write finished videos at least this often")
    run.add_argument("--precision", choices=("fp32", "bf16", "int8", "model"), default="fp32",
                     help="fp32: fast path, same features (default); bf16 / int8: faster on CPUs that support them; "
                     "model: the model's own encode_video")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.ann != "hnsw" and any(value is not None for value in (args.hnsw_m, args.ef_construction, args.ef_search)):
        parser.error("--hnsw-m, --ef-construction and --ef-search need --ann hnsw")
    if args.max_memory is not None and args.ann not in (None, "auto"):
        parser.error(f"--max-memory is for --ann auto, not --ann {args.ann}")
    return args


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return index_videos(args)
    except KeyboardInterrupt:
        print("\nInterrupted. The index is whole, as of its last commit; run the same command again to resume (videos "
              "already encoded are not encoded again).", file=sys.stderr)
        return 130


def check_or_repair(args) -> int:
    """`--check`: print every problem found (exit code 1 when there is one); `--repair`: what was repaired."""
    from ..search.storage import check_index, repair_index

    check = (repair_index if args.repair else check_index)(args.index)
    manifest = check.manifest
    if check.ok:
        print(f"{args.index}: generation {manifest.generation}, {manifest.counts['videos']} videos, "
              f"{manifest.counts['segments']} segments; {check.files_checked} files read in full, every one as "
              "index.json recorded it" + ("; nothing to repair" if args.repair else ""))
        return 0
    for problem in check.problems:
        print(f"{problem.name}: {problem.problem}\n  {'repaired' if args.repair else 'with --repair'}: {problem.repair}")
    if args.repair:
        if check.repaired is not None:
            print(f"{args.index}: repaired as generation {check.repaired.generation}")
        return 0
    print(f"error: {len(check.problems)} problem(s) in {args.index}: run `tempme index --repair --index {args.index}`",
          file=sys.stderr)
    return 1


def recorded_index(args):
    """The manifest of the index at `--index`, for what the command leaves out (VIDEO_DIR, --model): an update takes
    the folder and the model the index was built from."""
    from ..search.storage import IndexNotFoundError, read_manifest

    try:
        return read_manifest(args.index)
    except IndexNotFoundError:
        needed = "name the VIDEO_DIR to index (and the --model)" if args.video_dir is None else \
            "pass --model (or --from-clip) to build one"
        raise IndexNotFoundError(f"{args.index} holds no index yet: {needed}.") from None


def requested_vector_index(args):
    """What `--ann` and the HNSW options ask for: a kind (`auto`, or one sized when the segments are counted), HNSW
    settings when any of them is given, or `None` (the index's own, or `auto` for a new index)."""
    from dataclasses import replace

    from ..search.ann import settings_for

    hnsw = {name: value for name, value in (("hnsw_m", args.hnsw_m), ("ef_construction", args.ef_construction),
                                            ("ef_search", args.ef_search)) if value is not None}
    return replace(settings_for("hnsw", 0), **hnsw) if hnsw else args.ann


def index_videos(args) -> int:
    from ..search import IndexingOptions, VideoSearchIndex

    if args.check or args.repair:
        return check_or_repair(args)
    model_given = bool(args.model or args.from_clip)
    recorded = recorded_index(args) if args.video_dir is None or not model_given else None
    video_dir = args.video_dir if args.video_dir is not None else recorded.video_dir
    if model_given:
        model, processor, model_info = load_model_from_arguments(args)
    else:
        from ..hub.loading import load_from_model_info

        model, processor = load_from_model_info(recorded.model, args.index)
        model_info = recorded.model
    options = IndexingOptions(
        segment_seconds=args.segment_seconds, segment_overlap=args.segment_overlap,
        vector_index=requested_vector_index(args), max_memory=args.max_memory,
        verify=args.verify, overwrite=args.overwrite, allow_removals=args.allow_removals,
        video_dir_moved=args.video_dir_moved, batch_size=args.batch_size, num_workers=args.num_workers,
        shard_rows=args.shard_rows, commit_seconds=args.commit_seconds, device=default_device(args.device),
        progress=not args.no_progress, precision=None if args.precision == "model" else args.precision,
    )
    index = VideoSearchIndex.build(video_dir, args.index, model, processor, model_info=model_info, options=options)
    from ..search.distributed import process_group

    report = index.last_report
    if process_group().is_main:
        print(f"Index {Path(args.index)}: {len(index.videos)} videos, {len(index)} segments "
              f"({report.segments_encoded} encoded in {report.seconds:.1f} s, precision {args.precision})")
        print(report.summary())
        print(f"Report: {Path(args.index) / index.manifest.report}")
    if report.interrupted:
        if process_group().is_main:
            print(f"Interrupted: the videos encoded so far are committed; {report.pending} not indexed yet. Resume "
                  f"with the same command: tempme index {video_dir} --index {args.index}", file=sys.stderr)
        return 130
    return 0
