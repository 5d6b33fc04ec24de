"""Serve a web page to search an index by text, with the hits playing from the matching moment.

    tempme serve videos.index                      # http://127.0.0.1:7860
    tempme serve videos.index --port 8080 -k 12

The page (Gradio) has a query box and shows each hit as a video that starts at its segment, with its score, path
and time. It binds 127.0.0.1 (this machine only) unless --host says otherwise, and serves only the video files that
are in the index. The model the index was built with is loaded from its manifest unless --model / --from-clip
names it.
"""

from __future__ import annotations

import sys

from .common import add_model_arguments, command_parser, open_index_from_arguments, reports_user_errors


def parse_args(argv=None):
    from ..search.app import DEFAULT_HOST, DEFAULT_PORT

    parser = command_parser("serve", __doc__)
    parser.add_argument("index", metavar="INDEX_DIR", help="index folder written by `tempme index`")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("-k", "--top-k", type=int, default=8, help="hits shown at first (default 8)")
    add_model_arguments(parser, "default: the index's")
    return parser.parse_args(argv)


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    return serve_index(parse_args(sys.argv[1:] if argv is None else argv))


def serve_index(args) -> int:
    from ..search.app import serve

    index = open_index_from_arguments(args)
    print(f"Serving {index.manifest.counts['videos']} videos ({len(index)} segments) on http://{args.host}:{args.port}",
          flush=True)
    serve(index, host=args.host, port=args.port, k=args.top_k)
    return 0
