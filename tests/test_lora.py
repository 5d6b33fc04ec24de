"""LoRA through peft: placement, parameter counts, adapter contents and merging back."""

import pytest
import torch
from safetensors.torch import load_file

from conftest import random_text, random_video, tiny_config
from transformers_tempme import TempMeCLIPModel, TempMeConfig, apply_lora


def perturb_trainable(model) -> None:
    """Make every trainable tensor non-zero so that adapters and position embeddings change the outputs."""
    with torch.no_grad():
        for _, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.normal_(std=0.1)


@pytest.mark.slow
@pytest.mark.parametrize(
    "target_modules, lora_parameters",
    [
        # 24 attention layers x (q, k, v) x (A: 8 x D, B: D x 8); D = 768 (vision) or 512 (text)
        (("q_proj", "k_proj", "v_proj"), 12 * 3 * 2 * 8 * (768 + 512)),
        # the paper's count (its shared-A fused qkv LoRA has the same size as this)
        (("q_proj", "v_proj"), 491_520),
    ],
)
def test_trainable_parameters_at_vit_b_32_shape(target_modules, lora_parameters):
    model = apply_lora(TempMeCLIPModel(TempMeConfig.from_preset("tempme-vit-b-32")), target_modules=target_modules)
    trainable, _ = model.get_nb_trainable_parameters()
    clip_position_parameters = (12 + 6 + 3) * 768
    assert trainable == lora_parameters + clip_position_parameters
    assert not model.base_model.model.logit_scale.requires_grad


def test_lora_is_in_both_towers_with_scaling_one():
    model = apply_lora(TempMeCLIPModel(tiny_config()), r=4)
    names = [name for name, _ in model.named_parameters() if "lora_A" in name]
    assert sum("vision_model" in n for n in names) == 4 * 3 and sum("text_model" in n for n in names) == 2 * 3
    q_proj = model.base_model.model.vision_model.encoder.layers[0].self_attn.q_proj
    assert q_proj.scaling["default"] == 1.0


def test_adapter_holds_lora_and_clip_position_embeddings(tmp_path):
    model = apply_lora(TempMeCLIPModel(tiny_config()), r=4)
    perturb_trainable(model)
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "adapter_model.safetensors")
    assert sum("clip_position_embedding" in key for key in weights) == 2
    assert sum("lora_" in key for key in weights) == 2 * (4 + 2) * 3


def test_merge_and_unload_gives_the_same_outputs():
    model = apply_lora(TempMeCLIPModel(tiny_config()), r=4).eval()
    perturb_trainable(model)
    input_ids, pixel_values = random_text(2, model.config), random_video(2, 4, model.config)
    with torch.no_grad():
        expected = model(input_ids=input_ids, pixel_values=pixel_values).logits_per_text
        merged = model.merge_and_unload()
        actual = merged(input_ids=input_ids, pixel_values=pixel_values).logits_per_text
    assert isinstance(merged, TempMeCLIPModel)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
