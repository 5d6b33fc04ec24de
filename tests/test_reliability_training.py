"""The mission path on a tiny model: train -> a save cut short -> rerun resumes -> evaluate -> push --dry-run.

Plus the `tempme train` settings that used to be ignored silently.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_training_scripts import benchmark, train_config, write_config  # noqa: F401 (fixture)

from transformers_tempme import TempMeCLIPModel
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
