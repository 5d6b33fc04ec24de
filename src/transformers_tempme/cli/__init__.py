"""The `tempme` command: one entry point, one subcommand per job.

    tempme schedule --all
    tempme train configs/msrvtt_vit_b32.json --output-dir runs/msrvtt
    accelerate launch -m transformers_tempme.cli train configs/msrvtt_vit_b32.json

Each subcommand lives in a module of this package with a `main(argv) -> int` and is imported only when it runs,
so that `tempme schedule` does not load the Trainer and `tempme --help` answers at once. What the commands share
(parser, model options, device, the error policy: a user error is one `error:` line and exit code 2) is in
`common`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .common import CommandParser, command_parser

# name -> (module in this package, one-line description). The order is the order of `tempme --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "fine-tune TempMe for text-video retrieval with the Trainer (LoRA by default)"),
    "evaluate": ("evaluate", "retrieval metrics (R@1/5/10, MdR, MnR) of a model on a benchmark split"),
    "push": ("push", "publish a model or adapter folder on the Hub with its model card"),
    "card": ("card", "render the model card of a model or adapter folder from evaluation/benchmark JSON"),
    "visualize": ("visualize", "draw which patches ToMe and TempMe merge on a video's frames"),
    "schedule": ("schedule", "token counts and GFLOPs of the presets, block by block or as one table"),
    "make-synthetic": ("make_synthetic", "write the synthetic temporal benchmark (mp4 files + annotations)"),
    "build-tokenizer": ("build_tokenizer", "save OpenAI CLIP's tokenizer, built offline, to a folder"),
    "index": ("index", "index a folder of videos for search by text (or update an index)"),
    "search": ("search", "find the moments of indexed videos that match a text query"),
    "serve": ("serve", "a web page to search an index, hits playing from the matching moment"),
    "export-onnx": ("export_onnx", "export the video and text encoders to ONNX (merges included), checked with onnxruntime"),
}

EXAMPLES = """\
examples:
  tempme schedule --all
  tempme make-synthetic data/synthetic --train-pairs 200 --test-pairs 50
  tempme train configs/msrvtt_vit_b32.json --output-dir runs/msrvtt --max-steps 100
  tempme evaluate --model runs/msrvtt --dataset msrvtt --annotations-dir data/msrvtt --videos-dir data/msrvtt/videos
  tempme push runs/msrvtt --repo-id you/tempme-msrvtt --eval-json runs/msrvtt/retrieval_test.json --dry-run staged/
  tempme index videos/ --model runs/msrvtt --index videos.index
  tempme search videos.index "a dog catches a frisbee" -k 5

Run `tempme COMMAND --help` for a command's options. Several processes:
  accelerate launch -m transformers_tempme.cli train CONFIG.json ...
A mistake in the input is one `error:` line (exit code 2); TEMPME_TRACEBACK=1 shows its traceback.
"""


def _top_level_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="tempme",
        description="TempMe (Temporal Token Merging) for efficient text-video retrieval.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, description) in COMMANDS.items():
        commands.add_parser(name, help=description, add_help=False)
    return parser


def _version() -> str:
    from .. import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run `tempme ARGV`; returns the exit code (0 success, 2 bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        parser = _top_level_parser()
        if not argv:
            parser.print_help()
            return 2
        parser.parse_args(argv)  # --help / --version exit here; an unknown command is an error naming the choices
        return 2
    module_name, _ = COMMANDS[argv[0]]
    module = importlib.import_module(f".{module_name}", __name__)
    code = module.main(argv[1:])
    return int(code or 0)


__all__ = ["COMMANDS", "command_parser", "main"]
