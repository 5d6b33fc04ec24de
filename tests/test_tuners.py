"""Bottleneck adapters and deep prompts: placement, parameter counts (the paper's Table 13), what the prompts do to
merging and attention, saving and loading as adapter folders, and their cost in GFLOPs."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import random_video, tiny_config, tiny_inputs, tiny_model
from safetensors.torch import load_file
from torch.utils.flop_counter import FlopCounterMode

from transformers_tempme import (
    TempMeCLIPModel,
    TempMeConfig,
    apply_adapter,
    apply_prompt,
    count_gflops,
    load_tempme,
    save_adapter,
)
from transformers_tempme.analysis.accounting import count_flops
from transformers_tempme.tuners.adapter import AdaptedMLP
from transformers_tempme.tuners.prompt import PromptedTextLayer, PromptedVisionAttention, PromptedVisionLayer
from transformers_tempme.tuners.tuner_model import TempMeTunerModel

CLIP_POSITION_PARAMETERS = (12 + 6 + 3) * 768  # TempMe's clip position embeddings at ViT-B/32, 12 frames
SCHEDULES = ["clip", "tome", "tempme"]


def perturb_trainable(model, seed: int = 3) -> None:
    """Stand-in for training: move every trainable tensor away from its initial value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits_per_text


# ---------------------------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize(
    "apply, preset, expected",
    [
        # 24 blocks x (down D x 8 + 8, up 8 x D + D); D = 768 (vision) or 512 (text): the paper's 0.26M
        (apply_adapter, "clip-vit-b-32", 12 * (2 * 768 * 8 + 8 + 768) + 12 * (2 * 512 * 8 + 8 + 512)),
        (apply_adapter, "tome-vit-b-32", 261_312),
        (apply_adapter, "tempme-vit-b-32", 261_312 + CLIP_POSITION_PARAMETERS),  # 277,440: the paper's 0.28M
        # 24 blocks x 5 prompts x D: the paper's 0.08M
        (apply_prompt, "clip-vit-b-32", 12 * 5 * 768 + 12 * 5 * 512),
        (apply_prompt, "tempme-vit-b-32", 76_800 + CLIP_POSITION_PARAMETERS),  # 92,928: the paper's 0.09M
    ],
)
def test_trainable_parameters_at_vit_b_32_shape(apply, preset, expected):
    with torch.device("meta"):  # shapes only
        model = apply(TempMeCLIPModel(TempMeConfig.from_preset(preset)))
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == expected
    assert total == sum(p.numel() for p in model.parameters())
    assert not model.get_base_model().logit_scale.requires_grad


def test_print_trainable_parameters(capsys):
    model = apply_adapter(tiny_model())
    model.print_trainable_parameters()
    trainable, total = model.get_nb_trainable_parameters()
    assert capsys.readouterr().out.startswith(f"trainable params: {trainable:,d} || all params: {total:,d} ||")


def test_only_the_tuner_and_the_clip_position_embeddings_train():
    for model in (apply_adapter(tiny_model()), apply_prompt(tiny_model())):
        trainable = [name for name, p in model.named_parameters() if p.requires_grad]
        assert trainable and all(
            ".adapter." in name or name.endswith(".prompt") or ".clip_position_embedding." in name for name in trainable
        ), trainable
        assert sum(".clip_position_embedding." in name for name in trainable) == 2


# ---------------------------------------------------------------------------------------------- adapters


def test_an_adapter_in_every_block_of_both_towers_starts_as_the_identity():
    for schedule in SCHEDULES:
        base = tiny_model(schedule)
        inputs = tiny_inputs(base.config)
        expected = logits(base, inputs)
        model = apply_adapter(base, bottleneck=4)
        vision, text = model.vision_model.encoder.layers, model.text_model.encoder.layers
        assert all(isinstance(layer.mlp, AdaptedMLP) for layer in [*vision, *text])
        assert [layer.mlp.adapter.down_proj.out_features for layer in vision] == [4] * 4
        torch.testing.assert_close(logits(model, inputs), expected, rtol=0, atol=0)
        perturb_trainable(model)
        assert not torch.allclose(logits(model, inputs), expected, atol=1e-3)


def test_adapter_on_one_tower_only():
    model = apply_adapter(tiny_model(), towers=("vision",))
    assert all(isinstance(layer.mlp, AdaptedMLP) for layer in model.vision_model.encoder.layers)
    assert not any(isinstance(layer.mlp, AdaptedMLP) for layer in model.text_model.encoder.layers)


def test_unload_gives_back_the_base_model_with_its_parameter_names():
    base = tiny_model()
    names = list(base.state_dict())
    for apply in (apply_adapter, apply_prompt):
        model = apply(base)
        assert any("base_layer" in name for name in model.get_base_model().state_dict())
        base = model.unload()
        assert isinstance(base, TempMeCLIPModel) and list(base.state_dict()) == names


def test_adapters_and_prompts_cannot_be_merged_and_say_why():
    with pytest.raises(NotImplementedError, match="non-linear"):
        apply_adapter(tiny_model()).merge_and_unload()
    with pytest.raises(NotImplementedError, match="extra keys and values"):
        apply_prompt(tiny_model()).merge_and_unload()


def test_a_tuned_model_cannot_be_tuned_twice():
    with pytest.raises(ValueError, match="already has a tuner"):
        apply_prompt(apply_adapter(tiny_model()))


# ---------------------------------------------------------------------------------------------- prompts


def test_prompts_in_every_block_of_both_towers():
    model = apply_prompt(tiny_model(), num_prompts=3)
    vision, text = model.vision_model.encoder.layers, model.text_model.encoder.layers
    assert all(isinstance(layer, PromptedVisionLayer) for layer in vision)
    assert all(isinstance(layer.self_attn, PromptedVisionAttention) for layer in vision)
    assert all(isinstance(layer, PromptedTextLayer) for layer in text)
    assert [tuple(layer.prompt.shape) for layer in vision] == [(3, 64)] * 4
    assert [tuple(layer.prompt.shape) for layer in text] == [(3, 32)] * 2


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_prompts_are_never_merged(schedule):
    """Prompts change what merges with what, never how many tokens there are or which tokens are merged."""
    base = tiny_model(schedule)
    pixel_values = random_video(2, 4, base.config)
    with torch.no_grad():
        plain = base.encode_video(pixel_values, output_merge_sources=True)
    model = apply_prompt(base, num_prompts=3)
    with torch.no_grad():
        prompted = model.encode_video(pixel_values, output_merge_sources=True)
    assert prompted.token_counts == plain.token_counts
    sources = prompted.vision_model_output.merge_sources
    # Columns are the input tokens of the frames (frames x tokens per frame): no prompt among them ...
    assert sources.shape == plain.vision_model_output.merge_sources.shape
    assert sources.shape[-1] == 4 * base.config.tokens_per_frame
    # ... and every one of them is held by exactly one output token of its video.
    per_video = sources.reshape(2, -1, sources.shape[-1]).sum(dim=1)
    torch.testing.assert_close(per_video, torch.ones_like(per_video), rtol=0, atol=0)
    # The CLS tokens lead every clip, one per frame, each holding only itself.
    clips, tokens = prompted.token_counts[-1]
    num_cls = 4 // clips
    cls_rows = sources[:, :num_cls].reshape(2, 4, -1)
    frame_cls = torch.arange(4) * base.config.tokens_per_frame
    assert torch.equal(cls_rows.argmax(dim=-1), frame_cls.expand(2, -1)) and torch.equal(cls_rows.sum(-1), torch.ones(2, 4))


def test_vision_prompts_are_deep_prompt_tokens_run_through_each_block():
    """Without merging, attending to the prompts' keys and values is exactly VPT-deep: every frame's sequence with
    the block's prompts appended, run through the whole block, the prompts' outputs dropped."""
    base = tiny_model("clip")
    pixel_values = random_video(2, 4, base.config)
    model = apply_prompt(base, num_prompts=3)
    with torch.no_grad():
        perturb_trainable(model)
        actual = model.encode_video(pixel_values).frame_embeds

        vision = model.vision_model
        prompts = [layer.prompt for layer in vision.encoder.layers]
        plain = copy.deepcopy(model).unload().vision_model
        hidden = vision.pre_layrnorm(vision.embeddings(pixel_values.flatten(0, 1)))
        for layer, prompt, step in zip(plain.encoder.layers, prompts, base.config.merge_plan()):
            tokens = hidden.shape[1]
            with_prompts = torch.cat([hidden, prompt.expand(hidden.shape[0], -1, -1)], dim=1)
            hidden = layer(with_prompts, None, step)[0][:, :tokens]
        frames = vision.post_layernorm(hidden[:, 0]).view(2, 4, -1)
        expected = model.visual_projection(frames)
        expected = expected / expected.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("copies", [1, 2, 3])
@pytest.mark.parametrize("with_bias", [False, True])
def test_attention_to_prompt_copies(copies, with_bias):
    """A clip of `c` frames holds `c` copies of the prompts: one copy with log(c) on its logits is the same."""
    model = tiny_model(attn_implementation="eager")
    attention = model.vision_model.encoder.layers[0].self_attn
    prompted = PromptedVisionAttention(attention)
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 7, 64, generator=generator)
    prompts = torch.randn(5, 64, generator=generator)
    bias = torch.randn(3, 1, 1, 7, generator=generator) if with_bias else None
    with torch.no_grad():
        actual, metric = prompted(hidden, bias, return_key_metric=True, prompt_states=prompts, prompt_copies=copies)
        tokens = torch.cat([hidden, prompts.repeat(copies, 1).expand(3, -1, -1)], dim=1)
        token_bias = torch.cat([bias if with_bias else torch.zeros(3, 1, 1, 7), torch.zeros(3, 1, 1, 5 * copies)], -1)
        expected, expected_metric = attention(tokens, token_bias, return_key_metric=True)
        # Without prompts the wrapper is the attention it wraps.
        torch.testing.assert_close(prompted(hidden, bias)[0], attention(hidden, bias)[0], rtol=0, atol=0)
    torch.testing.assert_close(actual, expected[:, :7], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(metric, expected_metric[:, :7])  # the merge metric holds the tokens' keys only


def text_states(model, input_ids, attention_mask=None) -> torch.Tensor:
    with torch.no_grad():
        return model.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def test_text_prompts_keep_the_causal_order_and_every_attention_implementation_agrees():
    base = tiny_model()
    input_ids = tiny_inputs(base.config, words=7)["input_ids"]
    model = apply_prompt(base, num_prompts=3)
    perturb_trainable(model)
    states = text_states(model, input_ids)
    assert not torch.allclose(states, text_states(model.unload(), input_ids), atol=1e-3)
    model = apply_prompt(tiny_model(), num_prompts=3)
    perturb_trainable(model)
    states = text_states(model, input_ids)

    # A word sees the prompts and the words before it, not those after it.
    changed = input_ids.clone()
    changed[:, 4] = (changed[:, 4] + 1) % 100 + 1
    torch.testing.assert_close(text_states(model, changed)[:, :4], states[:, :4], rtol=0, atol=0)
    assert not torch.allclose(text_states(model, changed)[:, 4:], states[:, 4:])

    # Padding masks: sdpa's boolean mask, eager's additive one, and no mask at all give the same words.
    mask = torch.ones_like(input_ids)
    mask[1, 5:] = 0
    results = {}
    for implementation in ("sdpa", "eager"):
        model.get_base_model().text_model.config._attn_implementation = implementation
        results[implementation] = text_states(model, input_ids, mask)
    torch.testing.assert_close(results["sdpa"], results["eager"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results["eager"][0], states[0], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- saving and loading


@pytest.mark.parametrize("apply, peft_type", [(apply_adapter, "HOULSBY_ADAPTER"), (apply_prompt, "DEEP_PROMPT")])
def test_adapter_folder_round_trip(tmp_path, apply, peft_type):
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    tiny_model().save_pretrained(base_dir)
    model = apply(TempMeCLIPModel.from_pretrained(base_dir)).eval()
    perturb_trainable(model)
    inputs = tiny_inputs(model.config)
    trained = logits(model, inputs)
    save_adapter(model, adapter_dir)

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == peft_type and config["base_model_name_or_path"] == str(base_dir)
    assert config["modules_to_save"] == ["clip_position_embedding"]
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    trainable = {name for name, p in model.get_base_model().named_parameters() if p.requires_grad}
    assert set(weights) == trainable and sum(".clip_position_embedding." in name for name in weights) == 2
    assert sum(t.numel() for t in weights.values()) == model.get_nb_trainable_parameters()[0]

    loaded = load_tempme(adapter=adapter_dir)
    assert isinstance(loaded, TempMeTunerModel) and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    torch.testing.assert_close(logits(loaded, inputs), trained, rtol=0, atol=0)
    with pytest.raises(NotImplementedError, match="cannot be merged"):
        load_tempme(adapter=adapter_dir, merge=True)
    trainable_again = TempMeTunerModel.from_pretrained(TempMeCLIPModel.from_pretrained(base_dir), adapter_dir,
                                                       is_trainable=True)
    assert trainable_again.get_nb_trainable_parameters() == model.get_nb_trainable_parameters()


def test_loading_an_adapter_on_the_wrong_base_names_the_problem(tmp_path):
    model = apply_adapter(tiny_model())
    model.save_pretrained(tmp_path)
    other = tiny_model("clip")  # no clip merging, so no clip position embeddings for the adapter's
    with pytest.raises(ValueError, match="does not fit this model"):
        TempMeTunerModel.from_pretrained(other, tmp_path)


def test_gradients_reach_every_trainable_parameter():
    for model in (apply_adapter(tiny_model()), apply_prompt(tiny_model())):
        perturb_trainable(model)  # adapters start at zero: make every path carry a gradient
        model(**tiny_inputs(model.config), return_loss=True).loss.backward()
        for name, parameter in model.named_parameters():
            assert (parameter.grad is not None) == parameter.requires_grad, name
            if parameter.requires_grad:
                assert parameter.grad.abs().sum() > 0, name


# ---------------------------------------------------------------------------------------------- cost


def test_the_papers_prompt_cost_is_five_prompts_per_frame_run_through_every_block():
    """Table 1: Prompt costs 58.2 GFLOPs at ViT-B/32 without merging (LoRA: 53.0); 5 prompts is the only length
    within 0.5%, and its 0.08M parameters agree."""
    config = TempMeConfig.from_preset("clip-vit-b-32")
    paper = count_gflops(config, num_prompts=5, prompts_as_tokens=True)
    assert paper == pytest.approx(58.2, rel=0.005)
    close = [p for p in range(1, 20) if count_gflops(config, num_prompts=p, prompts_as_tokens=True) == pytest.approx(58.2, rel=0.005)]
    assert close == [5]
    # Table 4, ViT-B/16: Prompt 216.8, Adapter 211.7 (LoRA: 211.3).
    b16 = TempMeConfig.from_preset("clip-vit-b-16")
    assert count_gflops(b16, num_prompts=5, prompts_as_tokens=True) == pytest.approx(216.8, rel=0.005)
    assert count_gflops(b16, adapter_bottleneck=8) == pytest.approx(211.7, rel=0.005)
    assert count_gflops(config, adapter_bottleneck=8) == pytest.approx(53.1, rel=0.005)


def test_this_implementation_of_prompts_computes_less_than_the_papers():
    config = TempMeConfig.from_preset("clip-vit-b-32")
    with torch.device("meta"):
        model = apply_prompt(TempMeCLIPModel(config))
    assert count_gflops(model) == count_gflops(config, num_prompts=5)
    assert count_gflops(config) < count_gflops(model) < 0.92 * count_gflops(config, num_prompts=5, prompts_as_tokens=True)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("apply", [apply_adapter, apply_prompt])
def test_flop_count_of_a_tuned_model_is_what_it_computes(schedule, apply):
    config = tiny_config(schedule, attn_implementation="eager")
    model = apply(TempMeCLIPModel(config).eval())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:  # 2 FLOPs per multiply-add, no LayerNorm
        model.encode_video(random_video(1, 4, config))
    expected = count_flops(model)
    assert counter.get_total_flops() // 2 == expected.matmul + expected.matching
    assert expected.total > count_flops(config).total


@pytest.mark.parametrize("apply, says", [(apply_adapter, "a bottleneck of width 8"), (apply_prompt, "5 learned prompts")])
def test_adapter_folders_push_with_a_card_that_names_the_method(tmp_path, apply, says):
    from transformers_tempme.cli import main

    tiny_model().save_pretrained(tmp_path / "base")
    save_adapter(apply(TempMeCLIPModel.from_pretrained(tmp_path / "base")), tmp_path / "adapter")
    assert main(["push", str(tmp_path / "adapter"), "--repo-id", "owner/tuned", "--dry-run", str(tmp_path / "staged")]) == 0
    assert sorted(path.name for path in (tmp_path / "staged").iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors"
    ]
    card = (tmp_path / "staged" / "README.md").read_text()
    assert says in card and 'load_tempme(adapter="owner/tuned")' in card
    assert "LoRA" not in card and "PeftModel" not in card and "library_name" not in card


@pytest.mark.parametrize("apply", [apply_adapter, apply_prompt])
def test_gradient_checkpointing_gives_the_same_gradients(apply):
    gradients = []
    for checkpointing in (False, True):
        model = apply(tiny_model()).train()
        perturb_trainable(model)
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(**tiny_inputs(model.config), return_loss=True).loss.backward()
        gradients.append({name: p.grad for name, p in model.named_parameters() if p.requires_grad})
    assert gradients[0].keys() == gradients[1].keys()
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, rtol=1e-5, atol=1e-6, msg=name)


def test_schedule_command_prints_the_cost_of_each_tuner(capsys):
    from transformers_tempme.cli import main

    assert main(["schedule", "--tuners"]) == 0
    table = capsys.readouterr().out
    assert "| Prompt, 5 prompts run as tokens (the paper's convention) | 58.18 | 45.37 | 40.01 |" in table
    assert "| Adapter, bottleneck 8 | 53.05 | 40.24 | 34.82 |" in table


def test_the_core_model_knows_no_tuner():
    """Tuners change a model by swapping its modules; the remote-code model has no argument or code for any of them."""
    import re

    from transformers_tempme import modeling_tempme

    source = open(modeling_tempme.__file__).read()
    assert not re.findall(r"prompt|adapter|lora|peft|tuner", source, flags=re.IGNORECASE)
