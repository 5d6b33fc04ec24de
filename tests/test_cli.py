"""The `tempme` command: every subcommand answers --help, the entry point and `python -m` work, and importing the
model alone does not import the training, data or decoding stacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from transformers_tempme.cli import COMMANDS, main


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_help_with_hyphenated_flags(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out.split("\n\n")[0]  # the usage lines, before the option descriptions
    assert usage.startswith(f"usage: tempme {command}")
    flags = [word.strip("[],") for word in usage.split() if word.startswith(("[--", "--"))]
    assert flags and not [flag for flag in flags if "_" in flag.split("=")[0]], flags


def test_top_level_help_lists_commands_and_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert all(command in text for command in COMMANDS)
    assert "examples:" in text and "accelerate launch -m transformers_tempme.cli" in text


def test_unknown_command_is_an_error_naming_the_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["trian"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'trian'" in capsys.readouterr().err


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: tempme" in capsys.readouterr().out


@pytest.mark.slow
def test_console_script_and_module_entry_points_run_the_same_command():
    outputs = []
    console_script = Path(sys.executable).parent / "tempme"
    assert console_script.is_file(), "the tempme console script is not installed (pip install -e .)"
    for command in ([str(console_script)],
                    [sys.executable, "-m", "transformers_tempme.cli"]):
        completed = subprocess.run([*command, "schedule", "--all", "--no-measure"], capture_output=True, text=True,
                                   timeout=120)
        assert completed.returncode == 0, completed.stderr
        outputs.append(completed.stdout)
    assert outputs[0] == outputs[1]
    assert "| tempme-vit-b-32 | 12 | 1 x 97 |" in outputs[0]


@pytest.mark.slow
def test_importing_the_model_does_not_import_trainer_datasets_or_av():
    script = (
        "import sys\n"
        "from transformers_tempme import TempMeCLIPModel, TempMeConfig\n"
        "heavy = [m for m in ('transformers.trainer', 'datasets', 'av', 'peft') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == ""
    # The lazy names still resolve.
    completed = subprocess.run(
        [sys.executable, "-c", "import transformers_tempme as t; print(t.VideoTextDataset.__name__, t.apply_lora.__name__)"],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.stdout.split() == ["VideoTextDataset", "apply_lora"], completed.stderr


def test_a_small_root_and_the_rest_in_subpackages():
    """The root names the model, processor, tuners, loading, inference, search and metrics (and what the README's
    examples import); the rest is imported from the subpackage that defines it."""
    import transformers_tempme as root
    from transformers_tempme.data.video_text import GroupedDataset
    from transformers_tempme.training.trainer import TempMeTrainer

    assert all(getattr(root, name) is not None for name in root.__all__) and len(root.__all__) <= 40
    for name in ("TempMeCLIPModel", "TempMeProcessor", "apply_peft", "load_tempme", "optimize_for_inference",
                 "VideoSearchIndex", "text_video_retrieval_metrics"):
        assert name in root.__all__
    for name, value in (("TempMeTrainer", TempMeTrainer), ("GroupedDataset", GroupedDataset)):
        assert name not in root.__all__ and value.__module__.startswith("transformers_tempme.")
        with pytest.raises(AttributeError):
            getattr(root, name)


# --- one error policy for every command --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_reports_user_errors_the_same_way(command):
    import importlib

    from transformers_tempme.cli.common import reports_user_errors

    module = importlib.import_module(f"transformers_tempme.cli.{COMMANDS[command][0]}")
    assert module.main.__code__ is reports_user_errors(print).__code__, f"{command}: main is not @reports_user_errors"


def raise_(error):
    def command():
        raise error

    return command


def dataloader_error() -> Exception:
    """What a DataLoader re-raises from a worker: the worker's traceback inside the message."""
    from transformers_tempme.data.video_text import TooManyBadVideosError

    return TooManyBadVideosError(
        "Caught TooManyBadVideosError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise TooManyBadVideosError(...)\n'
        "transformers_tempme.data.video_text.TooManyBadVideosError: 3 of the 9 videos of this split do not decode\n"
    )


def strict_error() -> Exception:
    from transformers_tempme import TempMeConfig

    try:
        TempMeConfig(num_frames="4")
    except Exception as error:  # noqa: BLE001 - huggingface_hub's StrictDataclassFieldValidationError
        return error
    raise AssertionError("TempMeConfig accepted a string")


@pytest.mark.parametrize(
    "make_error, code, stderr",
    [
        (lambda: ValueError("max_words=80 is more than\n  the model's 77 text positions"), 2,
         "error: max_words=80 is more than the model's 77 text positions\n"),
        (lambda: FileNotFoundError("No such folder: x"), 2, "error: No such folder: x\n"),
        (dataloader_error, 2, "error: 3 of the 9 videos of this split do not decode\n"),
        (strict_error, 2, "error: Field 'num_frames' expected int, got str (value: '4')\n"),
        (KeyboardInterrupt, 130, "Interrupted.\n"),
    ],
    ids=["value-error-on-two-lines", "os-error", "from-a-dataloader-worker", "strict-config-field", "ctrl-c"],
)
def test_user_errors_are_one_line_with_exit_code_2(make_error, code, stderr, capsys):
    from transformers_tempme.cli.common import run_command

    assert run_command(raise_(make_error())) == code
    assert capsys.readouterr().err == stderr


def test_bugs_keep_their_traceback_and_tempme_traceback_shows_user_errors_too(monkeypatch):
    from transformers_tempme.cli.common import TRACEBACK_ENV, run_command

    with pytest.raises(KeyError):
        run_command(raise_(KeyError("a bug")))
    monkeypatch.setenv(TRACEBACK_ENV, "1")
    with pytest.raises(ValueError, match="a user error"):
        run_command(raise_(ValueError("a user error")))


def test_the_user_error_classes_named_by_module_exist():
    import importlib

    from transformers_tempme.cli.common import _USER_ERROR_CLASSES, user_error_types

    for module, name in _USER_ERROR_CLASSES.items():
        assert isinstance(getattr(importlib.import_module(module), name), type), f"{module}.{name}"
        assert getattr(importlib.import_module(module), name) in user_error_types()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["schedule", "--preset", "tempme-vit-b32"], "argument --preset: invalid choice: 'tempme-vit-b32'"),
        (["push", "folder"], "the following arguments are required: --repo-id"),
        (["search", "index", "query", "-k", "0"], "argument -k/--top-k: must be at least 1, got 0"),
    ],
)
def test_usage_errors_are_one_error_line_too(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.endswith(f" (see `tempme {argv[0]} --help`)\n")
    assert err.count("\n") == 1
