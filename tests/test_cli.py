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
        [sys.executable, "-c", "import transformers_tempme as t; print(t.TempMeTrainer.__name__, t.apply_lora.__name__)"],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.stdout.split() == ["TempMeTrainer", "apply_lora"], completed.stderr
