"""Find the moments of an indexed video folder that match a text query (or an example clip).

    tempme search videos.index "a dog catches a frisbee" -k 10
    tempme search videos.index "a dog catches a frisbee" --json
    tempme search videos.index --like clip.mp4 -k 5

Prints rank, score (cosine similarity), path (relative to the indexed folder; quoted with escapes when it holds a
newline or another unprintable character) and the segment's start-end time.
`--json` prints a JSON list, best first, of objects with `rank`, `path`, `start`, `end` (seconds), `score` and
`video_path` (absolute). Words of the query that the model's vocabulary does not hold (read as unknown) are named on
stderr. The model the index was built with is loaded from the index's manifest unless --model /
--from-clip names it (it must be the same model: another one is refused).

The query is encoded by the model's text tower prepared at --query-precision (default auto: on a CPU the fastest of
int8, bf16 and fp32 whose embeddings stay within cosine 0.999 of the model's own; docs/search.md, "Query precision").

--like cuts the clip into the index's windows (its --segment-seconds and overlap) and encodes each as indexing
does; a clip longer than one segment is searched by the mean of its windows' embeddings, re-normalised (a note on
stderr says how many windows).
"""

from __future__ import annotations

import json
import sys

from .common import (
    add_model_arguments,
    add_query_precision_argument,
    command_parser,
    open_index_from_arguments,
    positive_int,
    reports_user_errors,
)


def parse_args(argv=None):
    parser = command_parser("search", __doc__)
    parser.add_argument("index", metavar="INDEX_DIR", help="index folder written by `tempme index`")
    parser.add_argument("query", nargs="?", default=None, help="what happens in the moment you are looking for")
    parser.add_argument("--like", default=None, metavar="VIDEO",
                        help="search by an example video clip instead (cut into the index's windows, their mean)")
    parser.add_argument("-k", "--top-k", type=positive_int, default=10, help="hits to show (default 10)")
    parser.add_argument("--max-per-video", type=positive_int, default=None, help="at most this many hits from one video")
    parser.add_argument("--json", action="store_true", help="print the hits as a JSON list")
    add_model_arguments(parser, "default: the index's")
    add_query_precision_argument(parser)
    args = parser.parse_args(argv)
    if (args.query is None) == (args.like is None):
        parser.error("give a text QUERY or --like VIDEO (one of them)")
    return args


def printable_path(path: str) -> str:
    """`path` as one line of a table: as it is, or quoted with escapes (`'a\\nb.mp4'`) when it holds a newline or
    another unprintable character."""
    return path if path.isprintable() else repr(path)


def format_hits(hits) -> str:
    lines = [f"{'rank':>4}  {'score':>6}  {'time':<17}  path"]
    for hit in hits:
        lines.append(f"{hit.rank:>4}  {hit.score:6.3f}  {hit.time_range:<17}  {printable_path(hit.path)}")
    return "\n".join(lines)


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    return search_index(parse_args(sys.argv[1:] if argv is None else argv))


def search_index(args) -> int:
    from ..search.index import combine_windows

    index = open_index_from_arguments(args)
    if args.like is not None:
        embeddings, windows = index.encode_video_windows(args.like)
        if len(windows) > 1:
            print(f"note: {args.like} lasts {windows[-1][1]:.1f} s: searching by the mean of its {len(windows)} windows "
                  f"of {index.manifest.segment_seconds:g} s (cut as the index cuts videos)", file=sys.stderr)
        hits = index.search_embedding(combine_windows(embeddings), k=args.top_k, max_per_video=args.max_per_video)
    else:
        hits = index.search(args.query, k=args.top_k, max_per_video=args.max_per_video)
        note = unknown_words_note(index, args.query)
        if note:
            print(note, file=sys.stderr)
    print(json.dumps([hit.to_dict() for hit in hits], indent=2) if args.json else format_hits(hits))
    return 0


def unknown_words_note(index, query: str) -> str:
    """The lines (on stderr) naming the query's words the model cannot read, and its vocabulary when it is small."""
    unknown = index.unknown_words(query)
    if not unknown:
        return ""
    lines = [f"note: not in the model's vocabulary, so read as unknown: {', '.join(map(repr, unknown))}; the hits "
             "match the rest of the query."]
    known = index.known_words()
    if known is not None:
        lines.append(f"note: this model knows only these {len(known)} words: {' '.join(known)}")
    return "\n".join(lines)
