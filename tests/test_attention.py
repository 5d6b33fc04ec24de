"""Attention kernels under merging: every `attn_implementation` and every route of the per-key bias (proportional
attention, copies of deep prompts) computes eager attention's features and gradients, for no-merge, ImgMe and ClipMe
schedules and every tuner."""

from __future__ import annotations

import pytest
import torch
import transformers.integrations.flex_attention as transformers_flex
from conftest import tiny_config, tiny_inputs
from torch.nn.attention.flex_attention import flex_attention
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from transformers_tempme import TempMeCLIPModel, apply_adapter, apply_lora, apply_prompt, optimize_for_inference
from transformers_tempme.merging import fold_key_bias, folded_head_dim
from transformers_tempme.modeling_tempme import KEY_BIAS_ROUTES, TempMeVisionAttention, key_bias_route

SCHEDULES = ["clip", "tome", "tempme"]  # no merging, ImgMe only, ImgMe + ClipMe

# A kernel with flash attention's contract: no mask at all, equal head dimensions for q, k and v, and the softmax scale
# given explicitly. It stands in for `flash_attention_2` (a CUDA-only package) on the CPU.
MASKLESS = "tempme_test_flash_contract"
maskless_calls: list[int] = []


def maskless_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    assert attention_mask is None and "position_bias" not in kwargs, "a mask reached a kernel that takes none"
    assert query.shape[-1] == key.shape[-1] == value.shape[-1] and query.shape[-1] % 8 == 0
    assert scaling is not None
    maskless_calls.append(query.shape[-1])
    return sdpa_attention_forward(module, query, key, value, None, scaling=scaling, **kwargs)


AttentionInterface.register(MASKLESS, maskless_attention)


@pytest.fixture(autouse=True)
def _uncompiled_flex(monkeypatch):
    """transformers compiles FlexAttention with inductor on its first call (minutes per shape on a small CPU); the
    unfused implementation computes the same scores with the same `score_mod`. `tests/test_compile.py` runs the
    compiled one."""
    monkeypatch.setattr(
        transformers_flex,
        "compile_friendly_flex_attention",
        lambda query, key, value, training=False, **kwargs: flex_attention(query, key, value, **kwargs),
    )


def with_kernel(model: torch.nn.Module, implementation: str, route: str | None) -> torch.nn.Module:
    """`model` with its attention implementation set and every vision attention's bias routed by `route`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.config._attn_implementation = implementation
    base.text_model.config._attn_implementation = "eager" if implementation == MASKLESS else implementation
    for module in model.modules():
        if isinstance(module, TempMeVisionAttention):
            module.key_bias_route = route
    return model


# (attn_implementation, forced route or None for the implementation's own): every way a bias reaches a kernel.
KERNELS = [
    ("sdpa", None),
    ("sdpa", "fold"),
    ("eager", "fold"),
    ("flex_attention", None),
    ("flex_attention", "score_mod"),
    (MASKLESS, None),
]
KERNEL_IDS = [f"{implementation}-{route or 'own'}" for implementation, route in KERNELS]


def tiny(schedule: str, seed: int = 0) -> TempMeCLIPModel:
    torch.manual_seed(seed)
    return TempMeCLIPModel(tiny_config(schedule, clip_position_embedding_init_std=0.02))


def embeddings(model, inputs) -> torch.Tensor:
    """Text and video embeddings, one row each."""
    with torch.no_grad():
        outputs = model.eval()(**inputs)
    return torch.cat([outputs.text_embeds, outputs.video_embeds])


def gradients(model, inputs) -> dict[str, torch.Tensor]:
    model.train().zero_grad()
    model(**inputs, return_loss=True).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


# ---------------------------------------------------------------------------------------------- the fold itself


@pytest.mark.parametrize("head_dim", [8, 16, 63, 64])
def test_folding_a_key_bias_into_queries_and_keys_is_exact(head_dim):
    generator = torch.Generator().manual_seed(head_dim)
    queries, keys, values = (torch.randn(3, 11, 2, head_dim, generator=generator) for _ in range(3))
    key_bias = torch.rand(3, 1, 1, 11, generator=generator).mul(6).log1p()  # log sizes up to log 7
    scale = head_dim**-0.5
    folded = fold_key_bias(queries, keys, values, key_bias, scale)
    assert all(tensor.shape[-1] == folded_head_dim(head_dim) for tensor in folded)
    assert folded_head_dim(64) == 72 and folded_head_dim(63) == 64 and folded_head_dim(8) == 16
    transposed = [tensor.transpose(1, 2) for tensor in folded]
    output = torch.nn.functional.scaled_dot_product_attention(*transposed, scale=scale).transpose(1, 2)
    expected = torch.nn.functional.scaled_dot_product_attention(
        queries.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2), attn_mask=key_bias, scale=scale
    ).transpose(1, 2)
    torch.testing.assert_close(output[..., :head_dim], expected, rtol=1e-5, atol=1e-5)
    assert output[..., head_dim:].abs().max() == 0


@pytest.mark.parametrize(
    "implementation, device, route",
    [
        ("eager", "cpu", "mask"),
        ("sdpa", "cpu", "mask"),  # the CPU's flash kernel takes a mask; folding would only add work
        ("sdpa", "cuda", "fold"),  # a float mask rules out SDPA's flash backend on CUDA
        ("eager", "cuda", "mask"),
        ("flash_attention_2", "cuda", "fold"),
        ("flash_attention_3", "cuda", "fold"),
        ("flex_attention", "cuda", "score_mod"),
        ("flex_attention", "cpu", "fold"),  # torch's CPU kernel cannot build the score_mod under dynamic shapes
        ("someone_elses_kernel", "cuda", "mask"),
    ],
)
def test_each_kernel_gets_the_bias_by_the_route_that_keeps_it_fast(implementation, device, route):
    assert key_bias_route(implementation, torch.device(device)) == route
    assert route in KEY_BIAS_ROUTES


# ---------------------------------------------------------------------------------------------- the model


@pytest.mark.parametrize("implementation, route", KERNELS, ids=KERNEL_IDS)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_kernel_computes_eager_attentions_features(schedule, implementation, route):
    inputs = tiny_inputs(tiny_config(schedule), batch=2)
    expected = embeddings(with_kernel(tiny(schedule), "eager", "mask"), inputs)
    maskless_calls.clear()
    actual = embeddings(with_kernel(tiny(schedule), implementation, route), inputs)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    if implementation == MASKLESS:
        assert len(maskless_calls) == 4  # every vision block ran the mask-less kernel


@pytest.mark.parametrize(
    "implementation, route", [kernel for kernel in KERNELS if kernel[0] != "flex_attention"], ids=lambda value: value
)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_kernel_trains_with_eager_attentions_gradients(schedule, implementation, route):
    """FlexAttention has no backward on a CPU: `tests/test_cuda.py` checks its gradients on a GPU."""
    inputs = tiny_inputs(tiny_config(schedule), batch=3)
    expected = gradients(with_kernel(tiny(schedule), "eager", "mask"), inputs)
    actual = gradients(with_kernel(tiny(schedule), implementation, route), inputs)
    assert actual.keys() == expected.keys() and len(actual) > 0
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)


TUNERS = {
    "lora": apply_lora,
    "adapter": apply_adapter,
    "prompt": lambda model: apply_prompt(model, num_prompts=3),
}


def perturbed(model: torch.nn.Module, seed: int = 3) -> torch.nn.Module:
    """Move every trainable tensor away from its initial value (LoRA starts as the identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model


@pytest.mark.parametrize(
    "implementation, route", [("sdpa", "fold"), (MASKLESS, None), ("flex_attention", "score_mod")], ids=lambda value: value
)
@pytest.mark.parametrize("tuner", list(TUNERS))
def test_every_tuner_runs_every_kernel(tuner, implementation, route):
    """Deep prompts' keys carry log(copies) per key: their bias folds (or is a score_mod) like the tokens'."""
    inputs = tiny_inputs(tiny_config("tempme"), batch=2)
    reference = with_kernel(perturbed(TUNERS[tuner](tiny("tempme"))), "eager", "mask")
    model = with_kernel(perturbed(TUNERS[tuner](tiny("tempme"))), implementation, route)
    torch.testing.assert_close(embeddings(model, inputs), embeddings(reference, inputs), rtol=1e-5, atol=1e-5)
    if implementation == "flex_attention":
        return  # no backward on a CPU
    expected, actual = gradients(reference, inputs), gradients(model, inputs)
    assert actual.keys() == expected.keys() and len(actual) > 0
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("implementation, route", [("sdpa", "fold"), (MASKLESS, None)])
def test_the_prepared_model_routes_the_bias_as_the_model_does(implementation, route):
    """`optimize_for_inference` swaps a fused q/k/v attention in: it keeps the route and folds the same way."""
    model = tiny("tempme").eval()
    inputs = tiny_inputs(model.config, batch=2)
    expected = embeddings(model, inputs)
    fast = optimize_for_inference(with_kernel(model, implementation, route))
    vision_attentions = [m for m in fast.vision_model.modules() if isinstance(m, TempMeVisionAttention)]
    assert len(vision_attentions) == 4 and all(module.key_bias_route == route for module in vision_attentions)
    maskless_calls.clear()
    torch.testing.assert_close(embeddings(fast, inputs), expected, rtol=1e-5, atol=1e-5)
    assert len(maskless_calls) == (4 if implementation == MASKLESS else 0)


def test_without_proportional_attention_no_bias_reaches_any_kernel():
    model = with_kernel(TempMeCLIPModel(tiny_config("tempme", proportional_attention=False)), MASKLESS, None)
    maskless_calls.clear()
    embeddings(model, tiny_inputs(model.config))
    assert maskless_calls == [16] * 4  # the tiny model's own head dimension: nothing folded
