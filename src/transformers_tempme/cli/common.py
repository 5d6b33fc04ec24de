"""What every `tempme` command shares: its parser, the model options, the device, and one error policy.

The error policy: a mistake in what the user gave (a setting, a path, a file's content, an unreachable Hub) is
reported as one `error: ...` line on stderr with exit code 2, in every command; argparse's own errors take the same
form. Anything else is a bug and keeps its traceback. `TEMPME_TRACEBACK=1` shows the traceback of user errors too.
Ctrl-C ends a command with exit code 130 and no traceback.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable

# Errors that mean "what you gave me is wrong", by the module that defines them. They are looked up in sys.modules
# when an error is reported (an instance can only exist once its module was imported), so that reporting an error
# imports nothing.
_USER_ERROR_CLASSES = {
    "transformers_tempme.data.video_text": "TooManyBadVideosError",
    # A config field of the wrong type or a schedule that does not fit (`@strict` validation); its cause says which.
    "huggingface_hub.errors": "StrictDataclassError",
}
TRACEBACK_ENV = "TEMPME_TRACEBACK"
EXIT_USER_ERROR, EXIT_INTERRUPTED = 2, 130


class OneLineErrors:
    """An argparse parser mixin: usage errors are one `error:` line (exit code 2) like every other user error."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"error: {message} (see `{self.prog} --help`)\n")


class CommandParser(OneLineErrors, argparse.ArgumentParser):
    """The parser of a `tempme` command."""


def command_parser(name: str, doc: str | None, **kwargs) -> argparse.ArgumentParser:
    """The parser of `tempme NAME`: the module docstring's first paragraph as description, the rest as epilog."""
    description, _, rest = (doc or "").strip().partition("\n\n")
    return CommandParser(
        prog=f"tempme {name}",
        description=description,
        epilog=rest or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# ---------------------------------------------------------------------------------------------------------------
# One error policy
# ---------------------------------------------------------------------------------------------------------------


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types reported as user errors: `ValueError` (a wrong value or file content), `OSError` (a
    missing or unreadable file, an unreachable Hub) and this package's errors about the user's data."""
    found = [getattr(sys.modules[module], name, None) for module, name in _USER_ERROR_CLASSES.items()
             if module in sys.modules]
    return (ValueError, OSError, *filter(None, found))


def error_line(error: BaseException) -> str:
    """`error: MESSAGE` on one line. An error re-raised from a DataLoader worker carries the worker's traceback in
    its message: only its last line, the original error, is kept."""
    if type(error).__name__.startswith("StrictDataclass") and error.__cause__ is not None:
        error = error.__cause__  # "Validation error for field 'x': TypeError: ..." -> the TypeError's message
    message = str(error) or type(error).__name__
    if "Original Traceback" in message:
        message = message.rstrip().splitlines()[-1].partition(": ")[2] or message
    return "error: " + " ".join(message.split())


def run_command(command: Callable[..., int | None], *args) -> int:
    """`command(*args)` under the error policy of the module docstring; returns the exit code."""
    try:
        return int(command(*args) or 0)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if not isinstance(error, user_error_types()) or os.environ.get(TRACEBACK_ENV):
            raise
        # One write of the whole line: processes launched together (accelerate) share stderr, often unbuffered, and
        # print's separate write of the newline would let their lines run into each other.
        sys.stderr.write(error_line(error) + "\n")
        sys.stderr.flush()
        return EXIT_USER_ERROR


def reports_user_errors(main: Callable[..., int | None]) -> Callable[..., int]:
    """Decorate a command's `main(argv)` with `run_command`'s error policy."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        return run_command(functools.partial(main, *args, **kwargs))

    return wrapped


# ---------------------------------------------------------------------------------------------------------------
# The model and the device
# ---------------------------------------------------------------------------------------------------------------


def add_model_arguments(parser: argparse.ArgumentParser, required_help: str) -> None:
    """--model / --from-clip / --preset / --revision / --device, shared by `tempme index`, `search` and `serve`."""
    from ..configuration_tempme import DEFAULT_PRESET

    group = parser.add_argument_group("model")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument("--model", default=None, help=f"TempMe model folder, Hub id or adapter folder ({required_help})")
    choice.add_argument("--from-clip", default=None, metavar="CLIP_ID",
                        help="a plain CLIP checkpoint (folder or Hub id), turned into TempMe with --preset")
    group.add_argument("--preset", default=DEFAULT_PRESET, help="TempMe schedule applied with --from-clip")
    group.add_argument("--revision", default=None, help="Hub revision of the model")
    group.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: GPU if available)")


def load_model_from_arguments(args):
    """`(model, processor, model_info)` from --model / --from-clip (`load_search_model`), or `None` without either."""
    from ..hub.loading import load_search_model

    if args.from_clip:
        return load_search_model(args.from_clip, from_clip=True, preset=args.preset, revision=args.revision)
    if args.model:
        return load_search_model(args.model, revision=args.revision)
    return None


def add_query_precision_argument(parser: argparse.ArgumentParser) -> None:
    """--query-precision, shared by `tempme search` and `serve`."""
    from ..search.query_encoding import QUERY_PRECISIONS

    parser.add_argument("--query-precision", default="auto", choices=QUERY_PRECISIONS,
                        help="how text queries are encoded (default auto: on a CPU the fastest of int8, bf16 and fp32 "
                        "whose embeddings stay within cosine 0.999 of the model's own; model: the model as it is)")


def open_index_from_arguments(args):
    """The index at `args.index`, with the model of --model / --from-clip when given (checked against the index's
    fingerprint), else the index's own model, loaded now, and its query encoder (--query-precision) prepared."""
    from ..search import VideoSearchIndex

    index = VideoSearchIndex.open(args.index, device=default_device(args.device),
                                  query_precision=getattr(args, "query_precision", "auto"))
    loaded = load_model_from_arguments(args)
    if loaded is not None:
        index.set_model(loaded[0], loaded[1])
    index.query_encoder  # noqa: B018 - loads the model (the index's own unless given) and prepares its text tower
    return index


def load_model_option(model: str, base_model: str | None = None, **kwargs):
    """The model of a `--model` option (a model, an adapter, a CLIP checkpoint with a schedule), put on
    `--base-model` when given (`load_tempme`). An adapter that cannot be merged where `merge=True` asks for it is a
    user error (`ValueError`)."""
    from ..hub.loading import load_tempme

    try:
        if base_model:
            return load_tempme(base_model, adapter=model, **kwargs)
        return load_tempme(model, **kwargs)
    except NotImplementedError as error:  # bottleneck adapters and deep prompts: merge_and_unload says why
        raise ValueError(f"{model}: {error}") from None


def default_device(requested: str | None) -> str:
    """`requested`, else the GPU when there is one, else the CPU."""
    import torch

    return requested or ("cuda" if torch.cuda.is_available() else "cpu")


__all__ = [
    "CommandParser",
    "OneLineErrors",
    "command_parser",
    "positive_int",
    "user_error_types",
    "error_line",
    "run_command",
    "reports_user_errors",
    "add_model_arguments",
    "load_model_from_arguments",
    "add_query_precision_argument",
    "open_index_from_arguments",
    "load_model_option",
    "default_device",
]
