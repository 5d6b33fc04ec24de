"""`tempme train --peft` and `tempme evaluate --peft` with adapters and prompts on the tiny synthetic benchmark."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file
from test_training_scripts import TINY_MODEL, benchmark, train_config, write_config  # noqa: F401 (a fixture)
from transformers import AutoTokenizer

from transformers_tempme import TempMeCLIPModel, TempMeConfig
from transformers_tempme.cli.evaluate import evaluate
from transformers_tempme.cli.train import train


@pytest.fixture
def base_model(benchmark, tmp_path):  # noqa: F811
    """A saved tiny TempMe model to train adapters on (an adapter names its base, which must exist to evaluate it)."""
    tokenizer = AutoTokenizer.from_pretrained(benchmark / "tokenizer")
    text = {**TINY_MODEL["text_config"], "vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id}
    torch.manual_seed(0)
    TempMeCLIPModel(TempMeConfig.from_preset("tempme-vit-b-32", **{**TINY_MODEL, "text_config": text})).save_pretrained(
        tmp_path / "base")
    return str(tmp_path / "base")


def evaluate_run(benchmark, output_dir, *extra) -> dict:  # noqa: F811
    return evaluate([
        "--model", str(output_dir), "--tokenizer", str(benchmark / "tokenizer"),
        "--annotations-dir", str(benchmark / "annotations"), "--videos-dir", str(benchmark / "videos"),
        "--num-frames", "4", "--max-words", "16", "--frame-sampling", "uniform", "--batch-size", "4",
        "--output-file", str(output_dir / "retrieval.json"), *extra,
    ])


@pytest.mark.parametrize("peft, peft_type, key", [("adapter", "HOULSBY_ADAPTER", ".adapter."), ("prompt", "DEEP_PROMPT", ".prompt")])
def test_train_and_evaluate_with_adapters_and_prompts(benchmark, base_model, tmp_path, peft, peft_type, key):  # noqa: F811
    output_dir = tmp_path / peft
    config = train_config(benchmark, output_dir, peft=peft, model_name_or_path=base_model, save_strategy="no",
                          save_merged_model=True)
    del config["config_overrides"]
    results = train([write_config(tmp_path / "config.json", config)])
    assert results["train_loss"] > 0
    assert json.loads((output_dir / "adapter_config.json").read_text())["peft_type"] == peft_type
    assert not (output_dir / "model.safetensors").exists() and not (output_dir / "merged").exists()
    weights = load_file(output_dir / "adapter_model.safetensors")
    assert any(key in name for name in weights) and any("clip_position_embedding" in name for name in weights)

    metrics = evaluate_run(benchmark, output_dir, "--peft", peft)
    # The same weights evaluated alone and inside training.
    assert metrics["text_to_video"]["R@1"] == pytest.approx(results["eval_text_to_video_R@1"])
    assert metrics["gflops"] > 0
    with pytest.raises(ValueError, match="expects a LORA adapter"):
        evaluate_run(benchmark, output_dir, "--peft", "lora")


def prompt_run_config(benchmark, output_dir, base_model, **overrides) -> dict:  # noqa: F811
    config = train_config(benchmark, output_dir, peft="prompt", model_name_or_path=base_model, do_eval=False, **overrides)
    del config["config_overrides"]
    return config


def test_resuming_a_prompt_run_ends_where_an_uninterrupted_run_ends(benchmark, base_model, tmp_path):  # noqa: F811
    straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
    train([write_config(tmp_path / "straight.json", prompt_run_config(benchmark, straight_dir, base_model))])
    resumed_dir.mkdir()
    subprocess.run(["cp", "-r", str(straight_dir / "checkpoint-2"), str(resumed_dir)], check=True)
    resumed = prompt_run_config(benchmark, resumed_dir, base_model, resume_from_checkpoint=str(resumed_dir / "checkpoint-2"))
    train([write_config(tmp_path / "resumed.json", resumed)])
    final_straight = load_file(straight_dir / "adapter_model.safetensors")
    final_resumed = load_file(resumed_dir / "adapter_model.safetensors")
    assert final_straight.keys() == final_resumed.keys()
    for name, tensor in final_straight.items():
        torch.testing.assert_close(final_resumed[name], tensor, rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("peft", ["adapter", "prompt"])
def test_adapters_and_prompts_refuse_a_random_initialisation_before_training(benchmark, tmp_path, peft):  # noqa: F811
    output_dir = tmp_path / peft
    config = train_config(benchmark, output_dir, peft=peft)
    with pytest.raises(ValueError, match="random initialisation.*--model FOLDER"):
        train([write_config(tmp_path / "config.json", config)])
    assert not output_dir.exists() or not any(output_dir.glob("checkpoint-*"))
