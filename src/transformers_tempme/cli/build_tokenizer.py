"""Save OpenAI CLIP's tokenizer, built offline from the `open-clip-torch` wheel's BPE file, to a folder.

    tempme build-tokenizer OUTDIR [--cache-dir .cache/wheels]

The folder then loads with `CLIPTokenizer.from_pretrained(OUTDIR)` / `AutoTokenizer.from_pretrained(OUTDIR)`.
"""

from __future__ import annotations

from ..data.tokenizer import build_clip_tokenizer
from . import command_parser


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("build-tokenizer", __doc__)
    parser.add_argument("outdir")
    parser.add_argument("--cache-dir", default=None, help="folder holding (or receiving) open_clip_torch-*.whl")
    parser.add_argument("--no-download", action="store_true", help="fail instead of running pip download")
    args = parser.parse_args(argv)
    tokenizer = build_clip_tokenizer(args.cache_dir, download=not args.no_download)
    tokenizer.save_pretrained(args.outdir)
    ids = tokenizer("a photo of a cat")["input_ids"]
    print(f"Saved CLIP tokenizer ({len(tokenizer)} tokens) to {args.outdir}; 'a photo of a cat' -> {ids}")
    return 0

