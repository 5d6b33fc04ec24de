"""Every parameter-efficient method through `apply_peft`, table-driven over tiny models: train a step, save, load
in a fresh model (same outputs), merge where the method can; the clip position embeddings train and save with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_inputs, tiny_model
from peft import IA3Config, LoHaConfig, LoKrConfig, LoraConfig, OFTConfig, PeftModel, PromptTuningConfig, VeraConfig
from safetensors.torch import load_file

from transformers_tempme import (
    DeepPromptConfig,
    HoulsbyAdapterConfig,
    TempMeCLIPModel,
    TempMeConfig,
    apply_peft,
    load_tempme,
    save_adapter,
)
from transformers_tempme.cli.train import parse_arguments, peft_config
from transformers_tempme.tuners.peft_methods import parse_peft_option
from transformers_tempme.tuners.tuner_model import TempMeTunerModel

# name: (config, whether merge_and_unload folds it into the weights)
METHODS = {
    "lora": (LoraConfig(r=4), True),
    "dora": (LoraConfig(r=4, use_dora=True), True),
    "ia3": (IA3Config(), True),
    "loha": (LoHaConfig(r=4), True),
    "lokr": (LoKrConfig(r=4), True),
    "oft": (OFTConfig(oft_block_size=8), True),
    "vera": (VeraConfig(r=8), True),
    "adapter": (HoulsbyAdapterConfig(bottleneck=4), False),
    "prompt": (DeepPromptConfig(num_prompts=2), False),
}


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits_per_text


def train_one_step(model, inputs) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**inputs, return_loss=True).loss.backward()
    optimizer.step()


@pytest.mark.parametrize("method", list(METHODS))
def test_train_save_reload_merge(tmp_path, method):
    config, mergeable = METHODS[method]
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    tiny_model().save_pretrained(base_dir)
    model = apply_peft(TempMeCLIPModel.from_pretrained(base_dir), config)
    inputs = tiny_inputs(model.config)
    before = logits(model, inputs)
    clip_position = next(p for n, p in model.named_parameters() if "clip_position_embedding" in n and p.requires_grad)
    clip_position_before = clip_position.detach().clone()

    train_one_step(model, inputs)
    model.eval()
    trained = logits(model, inputs)
    assert not torch.allclose(trained, before, atol=1e-4), "one step must change the outputs"
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any("clip_position_embedding" in name for name in trainable)
    assert not any(name.endswith("logit_scale") for name in trainable)
    assert not torch.equal(clip_position.detach(), clip_position_before), "clip position embeddings must train"

    save_adapter(model, adapter_dir)
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base_dir)
    saved = load_file(adapter_dir / "adapter_model.safetensors")
    assert sum("clip_position_embedding" in name for name in saved) == 2

    reloaded = load_tempme(adapter=adapter_dir)  # a fresh base model from base_dir, then the adapter
    assert isinstance(reloaded, TempMeTunerModel if method in ("adapter", "prompt") else PeftModel)
    torch.testing.assert_close(logits(reloaded, inputs), trained, rtol=0, atol=0)

    if mergeable:
        merged = load_tempme(adapter=adapter_dir, merge=True)
        assert type(merged) is TempMeCLIPModel
        torch.testing.assert_close(logits(merged, inputs), trained, rtol=1e-4, atol=1e-4)
    else:
        with pytest.raises(NotImplementedError, match="cannot be merged"):
            load_tempme(adapter=adapter_dir, merge=True)


def test_apply_peft_fills_in_targets_and_keeps_the_callers_config():
    config = LoraConfig(r=4)
    model = apply_peft(tiny_model(), config)
    used = model.peft_config["default"]
    assert set(used.target_modules) == {"q_proj", "k_proj", "v_proj"}
    assert used.modules_to_save == ["clip_position_embedding"]
    assert config.target_modules is None and config.modules_to_save is None
    # Given targets and modules to save stay; the clip position embeddings join them.
    model = apply_peft(tiny_model(), LoraConfig(r=4, target_modules=["fc1"], modules_to_save=["post_layernorm"]))
    used = model.peft_config["default"]
    assert set(used.target_modules) == {"fc1"} and used.modules_to_save == ["post_layernorm", "clip_position_embedding"]


def test_peft_prompt_learning_methods_are_refused_with_the_alternative():
    with pytest.raises(ValueError, match="DeepPromptConfig"):
        apply_peft(tiny_model(), PromptTuningConfig(num_virtual_tokens=4, task_type="FEATURE_EXTRACTION"))


@pytest.mark.parametrize(
    "option, expected",
    [
        ("lora", {"peft_type": "LORA", "r": 8, "lora_alpha": 8}),
        ("adapter", {"peft_type": "HOULSBY_ADAPTER", "bottleneck": 8}),
        ("prompt", {"peft_type": "DEEP_PROMPT", "num_prompts": 5}),
        ('{"peft_type": "LORA", "r": 4, "use_dora": true}', {"peft_type": "LORA", "r": 4, "use_dora": True}),
        ('{"peft_type": "DEEP_PROMPT", "num_prompts": 3}', {"peft_type": "DEEP_PROMPT", "num_prompts": 3}),
    ],
)
def test_peft_option(option, expected):
    config = parse_peft_option(option)
    values = {key: getattr(config, key) for key in expected}
    values["peft_type"] = getattr(config.peft_type, "value", config.peft_type)  # peft's are enum members
    assert values == expected


def test_peft_option_from_a_file_and_errors(tmp_path):
    path = tmp_path / "ia3.json"
    path.write_text(json.dumps({"peft_type": "IA3", "target_modules": ["k_proj", "v_proj"]}))
    assert isinstance(parse_peft_option(str(path)), IA3Config)
    with pytest.raises(ValueError, match="none of lora, adapter, prompt"):
        parse_peft_option("lorra")
    with pytest.raises(ValueError, match="Unknown peft_type 'HOULSBY'"):
        parse_peft_option('{"peft_type": "HOULSBY"}')
    with pytest.raises(ValueError, match="Unknown HOULSBY_ADAPTER settings"):
        parse_peft_option('{"peft_type": "HOULSBY_ADAPTER", "rank": 8}')


# ---------------------------------------------------------------------------------------------- Table 13 configs

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Trainable parameters at ViT-B/32 of every Table 13 row (the paper: Prompt 0.08 / 0.08 / 0.09M, Adapter 0.26 / 0.26 /
# 0.28M, LoRA 0.49 / 0.49 / 0.50M; our LoRA adapts q, k and v separately, see the README); the clip position
# embeddings (16,128) only exist with TempMe.
TABLE_13 = {
    "prompt": {"nomerge": 76_800, "tome": 76_800, "tempme": 92_928},
    "adapter": {"nomerge": 261_312, "tome": 261_312, "tempme": 277_440},
    "lora": {"nomerge": 737_280, "tome": 737_280, "tempme": 753_408},
}
PRESET_OF = {"nomerge": "clip-vit-b-32", "tome": "tome-vit-b-32", "tempme": "tempme-vit-b-32"}


@pytest.mark.parametrize("method, schedule", [(m, s) for m in TABLE_13 for s in TABLE_13[m]])
def test_table_13_configs(method, schedule):
    model_args, data_args, training_args = parse_arguments([str(CONFIGS / f"table13_{method}_{schedule}.json")])
    assert model_args.preset == PRESET_OF[schedule] and model_args.peft == method
    assert (data_args.dataset_name, data_args.num_frames, training_args.learning_rate) == ("msrvtt", 12, 6e-4)
    with torch.device("meta"):  # shapes only
        model = apply_peft(TempMeCLIPModel(TempMeConfig.from_preset(model_args.preset)), peft_config(model_args))
    assert model.get_nb_trainable_parameters()[0] == TABLE_13[method][schedule]
