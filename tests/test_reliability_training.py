"""The mission path on a tiny model: train -> a save cut short -> rerun resumes -> evaluate -> push --dry-run.

Plus the `tempme train` settings that used to be ignored silently.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_training_scripts import benchmark, train_config, write_config  # noqa: F401 (fixture)

from transformers_tempme import TempMeCLIPModel
from transformers_tempme.cli import main as cli_main
from transformers_tempme.cli import push
from transformers_tempme.cli.evaluate import evaluate
from transformers_tempme.cli.train import main, parse_arguments, train


def test_train_kill_during_a_save_resume_evaluate_push(benchmark, tmp_path, caplog, capsys):  # noqa: F811
    run = tmp_path / "run"
    config = write_config(tmp_path / "config.json", train_config(benchmark, run, do_eval=False))  # LoRA, random init
    train([config])
    uninterrupted = load_file(run / "model.safetensors")

    # A kill -9 while checkpoint-4 was being written: its adapter file cut short, nothing after it, no final save.
    for entry in run.iterdir():
        if entry.name not in ("checkpoint-2", "checkpoint-4"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    adapter = run / "checkpoint-4" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[: adapter.stat().st_size // 3])
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"):
        (run / "checkpoint-4" / name).unlink()

    # The same command again: it skips the partial checkpoint, says so, and resumes from the complete one.
    with caplog.at_level(logging.WARNING, logger="transformers_tempme"):
        train([config])
    assert f"Skipping {run / 'checkpoint-4'}: it has no trainer_state.json" in caplog.text
    assert f"Resuming from {run / 'checkpoint-2'}" in caplog.text
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    # Nothing lost: the resumed run ends with the weights of the uninterrupted one.
    resumed = load_file(run / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)

    # A random-init LoRA run saved the full model, so evaluate loads the output folder itself.
    metrics = evaluate([
        "--model", str(run), "--annotations-dir", str(benchmark / "annotations"),
        "--videos-dir", str(benchmark / "videos"), "--batch-size", "4",
    ])
    assert (run / "retrieval_test.json").exists() and 0 <= metrics["text_to_video"]["R@1"] <= 100

    # And push stages it with a card, leaving the training state behind.
    staged = tmp_path / "staged"
    capsys.readouterr()
    code = push.main([str(run), "--repo-id", "owner/tempme-tiny", "--base-model", "none",
                      "--eval-json", str(run / "retrieval_test.json"),
                      "--dry-run", str(staged)])
    assert code == 0, capsys.readouterr().err
    published = {path.name for path in staged.iterdir()}
    assert {"README.md", "model.safetensors", "config.json", "modeling_tempme.py", "tokenizer.json"} <= published
    assert not published & {"training_args.bin", "trainer_state.json", "retrieval_test.json", "checkpoint-2"}
    card = (staged / "README.md").read_text()
    assert "model-index" in card and "none, trained from a random initialisation" in card
    assert TempMeCLIPModel.from_pretrained(staged).config.num_frames == 4


# --- settings that used to be ignored ---------------------------------------------------------------------------------


def test_a_misspelt_key_in_the_train_config_file(tmp_path):
    config = write_config(tmp_path / "c.json", {"learning_rte": 1e-3, "output_dir": str(tmp_path / "out")})
    with pytest.raises(ValueError, match=r"Unknown settings in the config file: 'learning_rte' \(did you mean 'learning_rate'\?\)"):
        parse_arguments([config])


def test_a_misspelt_command_line_option(tmp_path):
    with pytest.raises(ValueError, match=r"--learning-rte \(did you mean '--learning-rate'\?\)"):
        parse_arguments(["--output-dir", str(tmp_path), "--learning-rte", "1e-3"])


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--schedule-overrides", '{"img_merge_R": 4}', r"--schedule-overrides takes merge schedule fields; 'img_merge_R' "
                                                        r"\(did you mean 'img_merge_r'\?\) is not one"),
        ("--schedule-overrides", '{"projection_dim": 8}', r"'projection_dim' is not one .* go in --config-overrides"),
        ("--config-overrides", '{"img_merge_R": 4}', r"TempMeConfig has no field 'img_merge_R' \(did you mean 'img_merge_r'\?\)"),
        ("--config-overrides", '{"vision_config": {"num_hidden_layer": 2}}', r"did you mean 'num_hidden_layers'"),
        ("--config-overrides", "{img_merge_r: 4}", r"--config-overrides is not valid JSON"),
        ("--schedule-overrides", '{"num_frames": "4"}', r"'num_frames' expected int, got str"),
    ],
)
def test_overrides_are_checked_before_training(benchmark, tmp_path, option, value, message):  # noqa: F811
    config = write_config(tmp_path / "c.json", train_config(benchmark, tmp_path / "out"))
    with pytest.raises(Exception, match=message):
        train([config, option, value])
    assert not list((tmp_path / "out").glob("checkpoint-*"))


def test_the_command_reports_bad_settings_in_one_line(benchmark, tmp_path, capsys):  # noqa: F811
    config = write_config(tmp_path / "c.json", train_config(benchmark, tmp_path / "out"))
    assert main([config, "--config-overrides", '{"img_merge_R": 4}']) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "did you mean 'img_merge_r'" in err and "Traceback" not in err
    missing = write_config(tmp_path / "m.json", {**train_config(benchmark, tmp_path / "out"),
                                                 "annotations_dir": str(tmp_path / "nowhere")})
    assert main([missing]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("checkpoint-*"))


# --- `tempme train` does what the user means, and says why not in one line ---------------------------------------------


def error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("error:")]


def run_config(benchmark, tmp_path, **overrides) -> str:  # noqa: F811
    """A config file of the tiny run, with `do_train` / `do_eval` left out unless given (None drops a key)."""
    config = {key: value for key, value in train_config(benchmark, tmp_path / "out").items()
              if key not in ("do_train", "do_eval")}
    config.update(overrides)
    return write_config(tmp_path / "c.json", {key: value for key, value in config.items() if value is not None})


def test_a_dataset_given_means_train_then_evaluate(benchmark, tmp_path, capsys):  # noqa: F811
    assert cli_main(["train", run_config(benchmark, tmp_path, save_strategy="no")]) == 0, capsys.readouterr().err
    out = tmp_path / "out"
    assert (out / "model.safetensors").is_file() and "train_loss" in json.loads((out / "train_results.json").read_text())
    assert "eval_rsum" in json.loads((out / "eval_results.json").read_text())


def test_without_the_eval_split_it_trains_and_says_it_does_not_evaluate(benchmark, tmp_path, caplog):  # noqa: F811
    annotations = Path(shutil.copytree(benchmark / "annotations", tmp_path / "annotations"))
    (annotations / "MSRVTT_JSFUSION_test.csv").unlink()
    config = run_config(benchmark, tmp_path, save_strategy="no", annotations_dir=str(annotations))
    with caplog.at_level(logging.WARNING, logger="transformers_tempme"):
        results = train([config])
    assert "train_loss" in results and not any(key.startswith("eval_") for key in results)
    assert "Not evaluating: the dataset has no test split" in caplog.text
    # Asked for, a missing split is an error.
    with pytest.raises(FileNotFoundError, match="MSRVTT_JSFUSION_test.csv"):
        train([config, "--do-eval", "true"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"dataset_name": "msrvt"}, r"Unknown benchmark 'msrvt' \(did you mean 'msrvtt'\?\)"),
        ({"dataset_name": "MSRVT", "do_train": False}, r"did you mean 'msrvtt'"),
        ({"annotations_dir": None, "videos_dir": None}, r"Loading msrvtt needs annotations_dir and videos_dir"),
        ({"do_train": False, "do_eval": False}, r"Nothing to do: --do-train and --do-eval are both off"),
        ({"num_frames": 5}, r"The processor samples 5 frames per video, which the model's merge schedule cannot take "
                            r"\(The merge schedule does not divide the frame count"),
        ({"max_words": 32}, r"max_words=32 is more than the model's 16 text positions"),
        ({"schedule_overrides": '{"num_frames": "4"}'}, r"Field 'num_frames' expected int, got str"),
        ({"model_name_or_path": "/nonexistent/model"}, r"No such folder: /nonexistent/model"),
        ({"model_name_or_path": "{videos}"}, r"videos is not a model folder: it has no config\.json"),
    ],
    ids=["misspelt-dataset", "misspelt-dataset-without-training", "no-folders", "both-off", "frames", "max-words",
         "type", "missing-model", "videos-as-model"],
)
def test_what_cannot_run_is_one_error_line_before_training(benchmark, tmp_path, capsys, overrides, message):  # noqa: F811
    overrides = {key: value.format(videos=benchmark / "videos") if isinstance(value, str) and key == "model_name_or_path"
                 else value for key, value in overrides.items()}
    assert cli_main(["train", run_config(benchmark, tmp_path, **overrides)]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and re.search(message, lines[0]), lines
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_nothing_to_do_without_a_dataset_on_the_command_line(tmp_path, capsys):
    assert cli_main(["train", "--output-dir", str(tmp_path / "out")]) == 2
    assert error_lines(capsys) == [
        "error: Nothing to do: no dataset is given. Give a dataset to train on (--dataset, --annotations-dir, "
        "--videos-dir); training and evaluating on it is the default."
    ]


def test_too_many_videos_that_do_not_decode_is_one_error_line(benchmark, tmp_path, capsys):  # noqa: F811
    videos = Path(shutil.copytree(benchmark / "videos", tmp_path / "videos"))
    for video in sorted(videos.iterdir())[:4]:
        video.write_bytes(b"not a video")
    config = run_config(benchmark, tmp_path, videos_dir=str(videos), do_eval=False, save_strategy="no")
    assert cli_main(["train", config]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and "of this split do not decode" in lines[0] and "raise max_skipped_videos" in lines[0]


def test_help_shows_our_options_and_the_common_trainer_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "--help"])
    assert exit_info.value.code == 0
    short = capsys.readouterr().out
    for option in ("--model", "--peft", "--dataset", "--annotations-dir", "--num-frames", "--output-dir",
                   "--learning-rate", "--num-train-epochs", "--per-device-train-batch-size", "--do-train"):
        assert option in short, option
    assert "--adam-beta1" not in short and "--help-all" in short
    with pytest.raises(SystemExit):
        cli_main(["train", "--help-all"])
    full = capsys.readouterr().out
    assert "--adam-beta1" in full and len(full.splitlines()) > 3 * len(short.splitlines())
    # Hidden options still parse.
    _, _, training_args = parse_arguments(["--output-dir", "x", "--adam-beta1", "0.8"])
    assert training_args.adam_beta1 == 0.8


def test_warnings_that_change_the_meaning_of_a_run_come_first(benchmark, tmp_path, caplog):  # noqa: F811
    with caplog.at_level(logging.INFO):
        train([run_config(benchmark, tmp_path, save_strategy="no", do_eval=False, max_steps=1)])
    records = [record for record in caplog.records if record.levelno >= logging.INFO]
    assert records[0].getMessage().startswith("No --model: training starts from random weights")
    assert records[1].getMessage().startswith("LoRA on random weights trains only its own small matrices")
    assert all(record.levelno == logging.WARNING for record in records[:2])


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "--max-steps", "many"])
    assert exit_info.value.code == 2
    assert error_lines(capsys) == [
        "error: argument --max-steps/--max_steps: invalid int value: 'many' (see `tempme train --help`)"
    ]
