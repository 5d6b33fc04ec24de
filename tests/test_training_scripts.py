"""`tempme train` and `tempme evaluate` on a tiny synthetic benchmark and a tiny random-weight TempMe."""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from transformers_tempme import TempMeCLIPModel
from transformers_tempme.cli import main as cli_main
from transformers_tempme.cli import push
from transformers_tempme.cli.evaluate import evaluate
from transformers_tempme.cli.train import main, parse_arguments, train
from transformers_tempme.data.synthetic_video import make_synthetic_benchmark
from transformers_tempme.data.word_tokenizer import build_word_level_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = {
    "num_frames": 4,
    "projection_dim": 16,
    "vision_config": {"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                      "num_hidden_layers": 2, "num_attention_heads": 2},
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                    "max_position_embeddings": 16},
    "img_merge_r": 1,
    "clip_merge_layers": [1],
    "clip_merge_groups": [2],
    "clip_position_embedding_init_std": 0.02,
}


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_benchmark(root, num_train_pairs=6, num_test_pairs=3, frames_per_video=8, size=32, seed=0)
    captions = [s["caption"] for s in json.loads((root / "annotations" / "MSRVTT_data.json").read_text())["sentences"]]
    build_word_level_tokenizer(captions, model_max_length=16).save_pretrained(root / "tokenizer")
    return root


def train_config(benchmark: Path, output_dir: Path, **overrides) -> dict:
    config = {
        "preset": "tempme-vit-b-32",
        "config_overrides": json.dumps(TINY_MODEL),
        "tokenizer_name_or_path": str(benchmark / "tokenizer"),
        "dataset_name": "msrvtt",
        "annotations_dir": str(benchmark / "annotations"),
        "videos_dir": str(benchmark / "videos"),
        "num_frames": 4,
        "max_words": 16,
        "frame_sampling": "uniform",
        "augment": False,
        "output_dir": str(output_dir),
        "do_train": True,
        "do_eval": True,
        "max_steps": 4,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "learning_rate": 1e-3,
        "weight_decay": 0.2,
        "adam_epsilon": 1e-6,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.1,
        "max_grad_norm": 1.0,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 2,
        "report_to": "none",
        "use_cpu": True,
        "seed": 0,
        "dataloader_drop_last": True,
        "disable_tqdm": True,
    }
    config.update(overrides)
    return config


def write_config(path: Path, config: dict) -> str:
    path.write_text(json.dumps(config))
    return str(path)


def test_train_then_evaluate_end_to_end(benchmark, tmp_path):
    output_dir = tmp_path / "run"
    config = write_config(tmp_path / "config.json", train_config(benchmark, output_dir, save_merged_model=True))
    results = train([config])

    assert results["train_loss"] > 0
    assert 0 <= results["eval_text_to_video_R@1"] <= 100 and "eval_video_to_text_MdR" in results
    # A random initialisation is no base an adapter could load onto: the output is the model, LoRA folded in.
    weights = load_file(output_dir / "model.safetensors")
    assert not (output_dir / "adapter_config.json").exists() and not any("lora_" in name for name in weights)
    assert any("clip_position_embedding" in name for name in weights), "clip position embeddings must be saved"
    assert (output_dir / "merged" / "config.json").exists()

    metrics_file = tmp_path / "metrics.json"
    metrics = evaluate([
        "--model", str(output_dir / "merged"),
        "--tokenizer", str(benchmark / "tokenizer"),
        "--annotations-dir", str(benchmark / "annotations"),
        "--videos-dir", str(benchmark / "videos"),
        "--num-frames", "4", "--max-words", "16", "--frame-sampling", "uniform",
        "--batch-size", "4", "--output-file", str(metrics_file),
    ])
    written = json.loads(metrics_file.read_text())
    assert written == metrics
    expected_keys = {"dataset", "split", "model", "command", "text_to_video", "video_to_text", "rsum", "gflops",
                     "output_tokens", "videos_per_s"}
    assert expected_keys <= written.keys()
    # The benchmark is the synthetic one, in the MSR-VTT layout: its results are not labelled MSR-VTT.
    assert (written["dataset"], written["synthetic"], written["annotation_layout"]) == ("synthetic-temporal", True, "msrvtt")
    assert set(written["text_to_video"]) == {"R@1", "R@5", "R@10", "MdR", "MnR"}
    assert written["gflops"] > 0 and written["videos_per_s"] > 0 and written["output_tokens"] > 0
    # The merged model, evaluated on its own, reproduces the in-training evaluation of the same weights.
    assert written["text_to_video"]["R@1"] == pytest.approx(results["eval_text_to_video_R@1"])
    assert written["rsum"] == pytest.approx(results["eval_rsum"])


def final_weights(output_dir: Path) -> dict[str, torch.Tensor]:
    """The trained weights a run saved: its adapter, or its full model."""
    adapter = output_dir / "adapter_model.safetensors"
    return load_file(adapter if adapter.exists() else output_dir / "model.safetensors")


def assert_same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        torch.testing.assert_close(second[name], tensor, rtol=0, atol=1e-6, msg=name)


def test_augmented_runs_with_the_same_seed_give_identical_weights(benchmark, tmp_path):
    runs = {
        "first": {},
        "second, decoding in 2 worker processes": {"dataloader_num_workers": 2},
        "without augmentation": {"augment": False},
    }
    weights = {}
    for name, overrides in runs.items():
        output_dir = tmp_path / name.split(",")[0].replace(" ", "_")
        config = train_config(benchmark, output_dir, **{"augment": True, "do_eval": False, "save_strategy": "no",
                                                         **overrides})
        train([write_config(tmp_path / f"{output_dir.name}.json", config)])
        weights[name] = final_weights(output_dir)
    assert_same_weights(weights["first"], weights["second, decoding in 2 worker processes"])
    # The augmentation is on and changes what the model learns.
    differs = [not torch.equal(weights["first"][k], weights["without augmentation"][k]) for k in weights["first"]]
    assert any(differs)


@pytest.mark.parametrize(
    "use_lora, max_train_samples",
    [(True, None), (False, 12)],
    ids=["lora-resumed-mid-epoch", "full-resumed-mid-epoch-then-next-epoch"],
)
def test_resume_ends_where_an_uninterrupted_run_ends(benchmark, tmp_path, use_lora, max_train_samples):
    """With augmentation on: the resumed run skips the batches it already trained on without loading them, and the
    samples after them are augmented exactly as in the uninterrupted run."""
    settings = {"use_lora": use_lora, "do_eval": False, "augment": True, "max_train_samples": max_train_samples}
    straight_dir = tmp_path / "straight"
    train([write_config(tmp_path / "straight.json", train_config(benchmark, straight_dir, **settings))])

    # The run interrupted after step 2: start again from the checkpoint it wrote there, in a new folder.
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    subprocess.run(["cp", "-r", str(straight_dir / "checkpoint-2"), str(resumed_dir)], check=True)
    resumed = train_config(benchmark, resumed_dir, resume_from_checkpoint=str(resumed_dir / "checkpoint-2"), **settings)
    train([write_config(tmp_path / "resumed.json", resumed)])

    assert_same_weights(final_weights(straight_dir), final_weights(resumed_dir))
    state_straight = json.loads((straight_dir / "trainer_state.json").read_text())
    state_resumed = json.loads((resumed_dir / "trainer_state.json").read_text())
    losses = lambda state: [entry["loss"] for entry in state["log_history"] if "loss" in entry]  # noqa: E731
    assert losses(state_resumed)[-1] == pytest.approx(losses(state_straight)[-1], rel=1e-6)
    assert state_resumed["global_step"] == state_straight["global_step"] == 4


@pytest.mark.slow
def test_two_processes_under_accelerate_launch(benchmark, tmp_path):
    output_dir = tmp_path / "ddp"
    config = write_config(tmp_path / "ddp.json", train_config(benchmark, output_dir, max_steps=2, per_device_train_batch_size=2,
                                                             save_strategy="no", log_level="info"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    # `--multi_gpu` is Accelerate's multi-process launcher; without GPUs the processes join over gloo on the CPU.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "transformers_tempme.cli", "train", config]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    # 2 processes x 2 samples: the loss of every step is over a global batch of 4.
    assert "Total train batch size (w. parallel, distributed & accumulation) = 4" in completed.stdout + completed.stderr
    eval_results = json.loads((output_dir / "eval_results.json").read_text())
    assert "eval_rsum" in eval_results


@pytest.mark.parametrize("config_file", sorted((ROOT / "configs").glob("*.json")), ids=lambda p: p.stem)
def test_paper_configs_parse_with_the_paper_settings(config_file):
    model_args, data_args, training_args = parse_arguments([str(config_file)])
    paragraphs = data_args.dataset_name in ("activitynet", "didemo")
    assert (data_args.num_frames, data_args.max_words) == ((64, 64) if paragraphs else (12, 32))
    assert model_args.use_lora and model_args.lora_r == 8 and model_args.freeze_logit_scale
    assert data_args.global_train_batch_size == 128 and training_args.num_train_epochs == 5
    assert (training_args.learning_rate, training_args.weight_decay, training_args.adam_epsilon) == (6e-4, 0.2, 1e-6)
    assert training_args.lr_scheduler_type == "cosine" and training_args.warmup_steps == 0.1
    assert training_args.max_grad_norm == 1.0


# --- the whole path on a tiny model: train, a save cut short, the rerun resumes, evaluate, push --dry-run -------------


def test_train_kill_during_a_save_resume_evaluate_push(benchmark, tmp_path, caplog, capsys):
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


# --- settings are checked before training -----------------------------------------------------------------------------


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
def test_overrides_are_checked_before_training(benchmark, tmp_path, option, value, message):
    config = write_config(tmp_path / "c.json", train_config(benchmark, tmp_path / "out"))
    with pytest.raises(Exception, match=message):
        train([config, option, value])
    assert not list((tmp_path / "out").glob("checkpoint-*"))


def test_the_command_reports_bad_settings_in_one_line(benchmark, tmp_path, capsys):
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


def run_config(benchmark, tmp_path, **overrides) -> str:
    """A config file of the tiny run, with `do_train` / `do_eval` left out unless given (None drops a key)."""
    config = {key: value for key, value in train_config(benchmark, tmp_path / "out").items()
              if key not in ("do_train", "do_eval")}
    config.update(overrides)
    return write_config(tmp_path / "c.json", {key: value for key, value in config.items() if value is not None})


def test_a_dataset_given_means_train_then_evaluate(benchmark, tmp_path, capsys):
    assert cli_main(["train", run_config(benchmark, tmp_path, save_strategy="no")]) == 0, capsys.readouterr().err
    out = tmp_path / "out"
    assert (out / "model.safetensors").is_file() and "train_loss" in json.loads((out / "train_results.json").read_text())
    assert "eval_rsum" in json.loads((out / "eval_results.json").read_text())


def test_without_the_eval_split_it_trains_and_says_it_does_not_evaluate(benchmark, tmp_path, caplog):
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
def test_what_cannot_run_is_one_error_line_before_training(benchmark, tmp_path, capsys, overrides, message):
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


def test_too_many_videos_that_do_not_decode_is_one_error_line(benchmark, tmp_path, capsys):
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


def test_warnings_that_change_the_meaning_of_a_run_come_first(benchmark, tmp_path, caplog):
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
