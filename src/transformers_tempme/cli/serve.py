"""Serve a web page and a JSON API to search an index, with the hits playing from the matching moment.

    tempme serve videos.index                      # http://127.0.0.1:7860
    tempme serve videos.index --port 8080 -k 12
    tempme serve videos.index --host 0.0.0.0 --allowed-host videos.home.arpa    # other machines too
    curl 'http://127.0.0.1:7860/api/search?q=a+dog+catches+a+frisbee&k=5'       # the JSON API

The page (Gradio) has a query box and shows each hit as a video that starts at its segment, with its score, path
and time; `/api/search`, `/api/search_like` and `/api/status` answer JSON. It binds 127.0.0.1 (this machine only)
unless --host says otherwise, serves only the video files that are in the index, and answers only requests
addressed to it: `Host` must be localhost, the bound address or a name given with --allowed-host. Queries arriving
together are encoded as one batch (--batch-size, --batch-wait-ms) and repeated ones answered from a cache
(--cache-size). Text queries are encoded by the model's text tower prepared at --query-precision (default auto;
docs/search.md, "Query precision"). The model the index was built with is loaded from its manifest unless --model / --from-clip names
it.
"""

from __future__ import annotations

import argparse
import sys

from .common import (
    add_model_arguments,
    add_query_precision_argument,
    command_parser,
    open_index_from_arguments,
    positive_int,
    reports_user_errors,
)


def _host_name(text: str) -> str:
    from ..search.request_gate import host_name

    try:
        return host_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _at_least_zero(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value >= 0:  # NaN too
            raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
        return value

    return parse


def parse_args(argv=None):
    from ..search.app import DEFAULT_HOST, DEFAULT_PORT
    from ..search.service import DEFAULT_BATCH_SIZE, DEFAULT_BATCH_WAIT_MS, DEFAULT_CACHE_SIZE

    parser = command_parser("serve", __doc__)
    parser.add_argument("index", metavar="INDEX_DIR", help="index folder written by `tempme index`")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to bind (default {DEFAULT_HOST}: this machine only; 0.0.0.0: every network)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME", type=_host_name,
                        help="a name the page is reached under besides localhost and the bound address (repeatable)")
    parser.add_argument("-k", "--top-k", type=positive_int, default=8, help="hits shown at first (default 8)")
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
                        help=f"most text queries encoded in one batch (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--batch-wait-ms", type=_at_least_zero(float), default=DEFAULT_BATCH_WAIT_MS, metavar="MS",
                        help="how long a batch waits for more queries after its first one (default "
                        f"{DEFAULT_BATCH_WAIT_MS:g}; 0: only those already waiting)")
    parser.add_argument("--cache-size", type=_at_least_zero(int), default=DEFAULT_CACHE_SIZE,
                        help=f"answers kept for repeated queries (default {DEFAULT_CACHE_SIZE}; 0: none)")
    add_model_arguments(parser, "default: the index's")
    add_query_precision_argument(parser)
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
    print(f"Serving {index.manifest.counts['videos']} videos ({len(index)} segments) on http://{address}:{args.port}; "
          f"{index.query_encoder.describe()}", flush=True)
    serve(index, host=args.host, port=args.port, k=args.top_k, allowed_hosts=args.allowed_host,
          batch_size=args.batch_size, batch_wait_ms=args.batch_wait_ms, cache_size=args.cache_size)
    return 0
