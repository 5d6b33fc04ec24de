"""Save OpenAI CLIP's tokenizer, built offline from the `open-clip-torch` wheel's BPE file, to a folder.

    tempme build-tokenizer OUTDIR [--cache-dir .cache/wheels] [--download]

The folder then loads with `CLIPTokenizer.from_pretrained(OUTDIR)` / `AutoTokenizer.from_pretrained(OUTDIR)`.
"""

from __future__ import annotations

from ..data.tokenizer import build_clip_tokenizer
from .common import command_parser, reports_user_errors


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    parser = command_parser("build-tokenizer", __doc__)
    parser.add_argument("outdir")
    parser.add_argument("--cache-dir", default=None, help="folder holding (or receiving) open_clip_torch-*.whl")
    parser.add_argument("--download", action="store_true", help="fetch the wheel with pip download when it is missing")
    args = parser.parse_args(argv)
    tokenizer = build_clip_tokenizer(args.cache_dir, download=args.download)
    tokenizer.save_pretrained(args.outdir)
    ids = tokenizer("a photo of a cat")["input_ids"]
    print(f"Saved CLIP tokenizer ({len(tokenizer)} tokens) to {args.outdir}; 'a photo of a cat' -> {ids}")
    return 0

