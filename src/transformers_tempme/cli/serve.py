"""Serve a web page to search an index by text, with the hits playing from the matching moment.

    tempme serve videos.index                      # http://127.0.0.1:7860
    tempme serve videos.index --port 8080 -k 12
    tempme serve videos.index --host 0.0.0.0 --allowed-host videos.home.arpa    # other machines too

The page (Gradio) has a query box and shows each hit as a video that starts at its segment, with its score, path
and time. It binds 127.0.0.1 (this machine only) unless --host says otherwise, serves only the video files that
are in the index, and answers only requests addressed to it: `Host` must be localhost, the bound address or a name
given with --allowed-host. The model the index was built with is loaded from its manifest unless --model /
--from-clip names it.
"""

from __future__ import annotations

import argparse
import sys

from .common import add_model_arguments, command_parser, open_index_from_arguments, reports_user_errors


def _host_name(text: str) -> str:
    from ..search.request_gate import host_name

    try:
        return host_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args(argv=None):
    from ..search.app import DEFAULT_HOST, DEFAULT_PORT

    parser = command_parser("serve", __doc__)
    parser.add_argument("index", metavar="INDEX_DIR", help="index folder written by `tempme index`")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to bind (default {DEFAULT_HOST}: this machine only; 0.0.0.0: every network)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME", type=_host_name,
                        help="a name the page is reached under besides localhost and the bound address (repeatable)")
    parser.add_argument("-k", "--top-k", type=int, default=8, help="hits shown at first (default 8)")
    add_model_arguments(parser, "default: the index's")
    return parser.parse_args(argv)


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    return serve_index(parse_args(sys.argv[1:] if argv is None else argv))


def serve_index(args) -> int:
    from ..search.app import exposure_warning, serve

    index = open_index_from_arguments(args)
    warning = exposure_warning(args.host, args.port, index, args.allowed_host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    address = f"[{args.host}]" if ":" in args.host else args.host
    print(f"Serving {index.manifest.counts['videos']} videos ({len(index)} segments) on http://{address}:{args.port}",
          flush=True)
    serve(index, host=args.host, port=args.port, k=args.top_k, allowed_hosts=args.allowed_host)
    return 0
