"""The vision tower compiles whole: `torch.compile(model.vision_model, fullgraph=True)` captures every preset's schedule
at its frame count in one graph (the merge plan is static: no data-dependent shape, no `.item()`, no host sync), and
the compiled tower computes the eager one's outputs and gradients."""

from __future__ import annotations

import pytest
import torch
from conftest import random_video, tiny_config

from transformers_tempme import PRESETS, TempMeCLIPModel, TempMeConfig

# Each preset's real token schedule (its blocks, frame size, patch size and frame count) on narrow layers.
NARROW = {
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2},
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1},
    "projection_dim": 16,
}
# Every TempMe preset, and one of each other kind (ToMe and no-merge run the same blocks with other counts).
CAPTURED_PRESETS = [name for name in PRESETS if name.startswith("tempme-")] + ["tome-vit-b-16", "clip-vit-l-14"]


def narrow_model(preset: str, attn_implementation: str = "sdpa") -> TempMeCLIPModel:
    torch.manual_seed(0)
    config = TempMeConfig.from_preset(preset, **NARROW, attn_implementation=attn_implementation)
    config.clip_position_embedding_init_std = 0.02
    return TempMeCLIPModel(config).eval()


def preset_video(config: TempMeConfig, batch: int = 1) -> torch.Tensor:
    return random_video(batch, config.num_frames, config)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def assert_same_outputs(actual, expected, atol: float) -> None:
    assert actual.token_counts == expected.token_counts
    torch.testing.assert_close(actual.pooler_output, expected.pooler_output, rtol=0, atol=atol)
    torch.testing.assert_close(actual.token_sizes, expected.token_sizes, rtol=0, atol=0)


def test_every_preset_is_in_this_table_or_shares_its_blocks():
    for name in PRESETS:
        assert name in CAPTURED_PRESETS or name.split("-", 1)[0] in ("tome", "clip")


@pytest.mark.parametrize("preset", CAPTURED_PRESETS)
def test_every_preset_is_captured_as_one_graph(preset):
    """Dynamo captures the whole tower (fullgraph: a graph break would raise) with static shapes."""
    model = narrow_model(preset)
    pixel_values = preset_video(model.config)
    compiled = torch.compile(model.vision_model, fullgraph=True, dynamic=False, backend="eager")
    with torch.no_grad():
        assert_same_outputs(compiled(pixel_values), model.vision_model(pixel_values), atol=1e-6)


@pytest.mark.parametrize("schedule", ["clip", "tome", "tempme"])
def test_the_compiled_tower_trains_with_the_eager_gradients(schedule):
    """AOTAutograd traces forward and backward of the captured graph: merging's gathers and scatters included."""
    torch.manual_seed(0)
    model = TempMeCLIPModel(tiny_config(schedule, clip_position_embedding_init_std=0.02, attn_implementation="sdpa"))
    pixel_values = random_video(2, 4, model.config)
    compiled = torch.compile(model.vision_model, fullgraph=True, dynamic=False, backend="aot_eager")
    grads = []
    for tower in (model.vision_model, compiled):
        model.zero_grad()
        tower(pixel_values).pooler_output.square().sum().backward()
        grads.append({name: p.grad.clone() for name, p in model.vision_model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("route", ["mask", "fold"])
def test_every_bias_route_is_captured_as_one_graph(route):
    model = TempMeCLIPModel(tiny_config("tempme", attn_implementation="sdpa")).eval()
    for module in model.vision_model.modules():
        if hasattr(module, "key_bias_route"):
            module.key_bias_route = route
    pixel_values = random_video(2, 4, model.config)
    compiled = torch.compile(model.vision_model, fullgraph=True, dynamic=False, backend="eager")
    with torch.no_grad():
        assert_same_outputs(compiled(pixel_values), model.vision_model(pixel_values), atol=1e-5)


@pytest.mark.slow
@pytest.mark.inductor
def test_inductor_compiles_a_real_preset_schedule_to_the_eager_outputs():
    """Inductor (C++ kernels on a CPU): the ViT-B/32 TempMe schedule, 12 frames. Every layer holds another number of
    tokens, so every layer compiles kernels of its own: 50 to 100 s on a 2-core machine with a cold inductor cache,
    which is why it runs only when asked (`-m inductor`). Every run compiles the same schedule with inductor in
    bfloat16 (`test_benchmark_script.py`: the compiled path beside eager, its cosine checked)."""
    model = narrow_model("tempme-vit-b-32")
    pixel_values = preset_video(model.config, batch=2)
    compiled = torch.compile(model.vision_model, fullgraph=True, dynamic=False)
    with torch.no_grad():
        assert_same_outputs(compiled(pixel_values), model.vision_model(pixel_values), atol=1e-5)


@pytest.mark.slow
def test_compiled_flex_attention_computes_the_eager_features():
    """transformers' FlexAttention compiles its kernel with inductor; proportional attention is its `score_mod`."""
    torch.manual_seed(0)
    model = TempMeCLIPModel(tiny_config("tempme", attn_implementation="flex_attention")).eval()
    pixel_values = random_video(2, 4, model.config)
    with torch.no_grad():
        actual = model.vision_model(pixel_values)
        model.config._attn_implementation = "eager"
        expected = model.vision_model(pixel_values)
    assert_same_outputs(actual, expected, atol=1e-5)
