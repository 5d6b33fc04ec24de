"""optimize_for_inference: the same model class with prepared modules swapped in; the fast fp32 path computes the
model's features (to 1e-5), bf16 and int8 stay close, and the model itself is left as it was (names, LoRA, training)."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from conftest import random_text, random_video, tiny_config
from transformers.models.clip.modeling_clip import CLIPAttention, CLIPMLP

from transformers_tempme import (
    TempMeCLIPModel,
    TempMeConfig,
    apply_adapter,
    apply_lora,
    apply_prompt,
    optimize_for_inference,
)
from transformers_tempme.inference import cpu_features, linear, optimize
from transformers_tempme.inference.modules import FusedQKVAttention, InferencePatchEmbeddings

SCHEDULES = ["clip", "tome", "tempme"]


def tiny_model(schedule: str = "tempme", attn: str = "sdpa", **overrides) -> TempMeCLIPModel:
    config = tiny_config(schedule, **overrides)
    config._attn_implementation = attn
    torch.manual_seed(0)
    return TempMeCLIPModel(config).eval()


def padded_text(config, batch: int = 3, length: int = 10):
    input_ids = random_text(batch, config, length=length)
    attention_mask = torch.ones_like(input_ids)
    eos = config.text_config.eos_token_id
    input_ids[0, 5], input_ids[0, 6:], attention_mask[0, 6:] = eos, 0, 0  # a caption shorter than the others
    return input_ids, attention_mask


@torch.no_grad()
def features(model, pixel_values, video_mask, input_ids, attention_mask):
    video = model.encode_video(pixel_values, video_mask)
    text = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
    return video, text


def prepared(model, precision: str):
    """`optimize_for_inference`, without the warning bf16 gives on CPUs without native bfloat16."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optimize_for_inference(model, precision)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_fp32_fast_path_matches_the_model(schedule, attn):
    model = tiny_model(schedule, attn)
    pixel_values = random_video(3, 4, model.config)
    video_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]])
    input_ids, attention_mask = padded_text(model.config)
    expected_video, expected_text = features(model, pixel_values, video_mask, input_ids, attention_mask)
    video, text = features(optimize_for_inference(model, "fp32"), pixel_values, video_mask, input_ids, attention_mask)

    assert video.token_counts == expected_video.token_counts
    torch.testing.assert_close(video.video_embeds, expected_video.video_embeds, atol=1e-5, rtol=0)
    torch.testing.assert_close(video.frame_embeds, expected_video.frame_embeds, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        video.vision_model_output.token_sizes, expected_video.vision_model_output.token_sizes
    )
    torch.testing.assert_close(text, expected_text, atol=1e-5, rtol=1e-5)


def test_fp32_fallback_without_onednn_matches_the_model(monkeypatch):
    monkeypatch.setattr(linear, "uses_onednn", lambda device: False)
    model = tiny_model()
    fast = optimize_for_inference(model, "fp32")
    assert not any(module.onednn for module in fast.modules() if isinstance(module, linear.InferenceLinear))
    pixel_values, input_ids = random_video(2, 4, model.config), random_text(2, model.config)
    expected_video, expected_text = features(model, pixel_values, None, input_ids, None)
    video, text = features(fast, pixel_values, None, input_ids, None)
    torch.testing.assert_close(video.video_embeds, expected_video.video_embeds, atol=1e-5, rtol=0)
    torch.testing.assert_close(text, expected_text, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_low_precision_embeddings_stay_close(schedule, precision):
    model = tiny_model(schedule)
    pixel_values = random_video(4, 4, model.config)
    input_ids, attention_mask = padded_text(model.config)
    expected_video, expected_text = features(model, pixel_values, None, input_ids, attention_mask)
    fast = prepared(model, precision)
    video, text = features(fast, pixel_values, None, input_ids, attention_mask)
    assert video.video_embeds.dtype == torch.float32 and text.dtype == torch.float32
    assert video.token_counts == expected_video.token_counts
    assert F.cosine_similarity(video.video_embeds, expected_video.video_embeds).min() > 0.99
    assert F.cosine_similarity(text, expected_text).min() > 0.99


def test_int8_with_seven_bit_activations_for_cpus_without_vnni(monkeypatch):
    no_vnni = {**cpu_features(), "vnni": False}
    monkeypatch.setattr(optimize, "cpu_features", lambda: no_vnni)
    model = tiny_model()
    fast = optimize_for_inference(model, "int8")
    prepared = [module for module in fast.modules() if isinstance(module, linear.InferenceLinear)]
    assert prepared and all(module.reduce_range for module in prepared)
    pixel_values = random_video(2, 4, model.config)
    expected = model.encode_video(pixel_values).video_embeds.detach()
    assert F.cosine_similarity(fast.encode_video(pixel_values).video_embeds, expected).min() > 0.99


def test_similarity_logits_match_the_model():
    model = tiny_model()
    pixel_values, input_ids = random_video(2, 4, model.config), random_text(3, model.config)
    with torch.no_grad():
        expected = model(input_ids=input_ids, pixel_values=pixel_values).logits_per_text
        logits = optimize_for_inference(model)(input_ids=input_ids, pixel_values=pixel_values).logits_per_text
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_image_features_match_the_model(schedule):
    model = tiny_model(schedule)
    images = random_video(3, 1, model.config)[:, 0]
    with torch.no_grad():
        expected = model.get_image_features(images).pooler_output
        embeds = optimize_for_inference(model).get_image_features(images).pooler_output
    torch.testing.assert_close(embeds, expected, atol=1e-5, rtol=0)


def test_the_prepared_model_is_the_same_class_with_modules_swapped_in():
    model = tiny_model()
    fast = optimize_for_inference(model, "int8")
    assert type(fast) is TempMeCLIPModel and fast is not model and not fast.training
    vision, text = fast.vision_model.encoder.layers, fast.text_model.encoder.layers
    assert isinstance(fast.vision_model.embeddings, InferencePatchEmbeddings)
    for layer in [*vision, *text]:
        assert type(layer.self_attn) is FusedQKVAttention and type(layer.mlp) is linear.InferenceMLP
        assert layer.self_attn.qkv_proj.precision == "int8"
    # What is not swapped is a copy of the model's own, not the model's modules.
    assert fast.vision_model.encoder.layers[2].clip_position_embedding is not model.vision_model.encoder.layers[2].clip_position_embedding
    torch.testing.assert_close(fast.visual_projection.weight, model.visual_projection.weight, rtol=0, atol=0)
    assert fast.visual_projection.weight is not model.visual_projection.weight


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_text_tower_alone_is_prepared_and_the_vision_tower_shared(precision):
    """`towers=("text",)`, as video search prepares it for queries: text features as with both towers prepared, the
    vision tower the model's own modules' weights (not copies)."""
    model = tiny_model()
    fast = optimize_for_inference(model, precision, towers=("text",))
    assert all(type(layer.mlp) is linear.InferenceMLP for layer in fast.text_model.encoder.layers)
    assert all(type(layer.mlp) is CLIPMLP for layer in fast.vision_model.encoder.layers)
    assert fast.vision_model.encoder.layers[0].mlp.fc1.weight is model.vision_model.encoder.layers[0].mlp.fc1.weight
    assert fast.text_model.final_layer_norm.weight is not model.text_model.final_layer_norm.weight  # a copy
    input_ids, attention_mask = padded_text(model.config)
    both = optimize_for_inference(model, precision)
    with torch.no_grad():
        text = fast.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        expected = both.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
    torch.testing.assert_close(text, expected, atol=0, rtol=0)
    # Parameters the fast path cannot run are refused only in the towers prepared.
    with pytest.raises(NotImplementedError, match=r"run text_model\.encoder\.layers\.0\.prompt, text_model[^,]*prompt:"):
        optimize_for_inference(apply_prompt(tiny_model()), precision, towers=("text",))  # vision prompts not named
    with pytest.raises(ValueError, match="towers must name"):
        optimize_for_inference(model, precision, towers=("audio",))
    with pytest.raises(ValueError, match="compiles the vision tower"):
        optimize_for_inference(model, "fp32", towers="text", compile=True)


def test_inplace_swaps_the_modules_of_the_model_itself():
    model = tiny_model()
    pixel_values = random_video(2, 4, model.config)
    with torch.no_grad():
        expected = model.encode_video(pixel_values).video_embeds
    fast = optimize_for_inference(model, "fp32", inplace=True)
    assert fast is model and type(model.vision_model.encoder.layers[0].self_attn) is FusedQKVAttention
    with torch.no_grad():
        torch.testing.assert_close(model.encode_video(pixel_values).video_embeds, expected, atol=1e-5, rtol=0)


def test_the_model_is_left_as_it_was():
    model = tiny_model()
    names = list(model.state_dict())
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    optimize_for_inference(model, "int8")
    assert list(model.state_dict()) == names
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert all(type(layer.self_attn).__name__ == "TempMeVisionAttention" for layer in model.vision_model.encoder.layers)
    assert all(type(layer.self_attn) is CLIPAttention and type(layer.mlp) is CLIPMLP for layer in model.text_model.encoder.layers)
    # peft still finds the projections it adapts, and the model still trains.
    lora = apply_lora(model)
    assert any("q_proj.lora_A" in name for name, _ in lora.named_parameters())
    loss = lora(input_ids=random_text(2, model.config), pixel_values=random_video(2, 4, model.config), return_loss=True).loss
    loss.backward()


def test_prepared_model_neither_trains_nor_saves_and_keeps_the_models_checks(tmp_path):
    model = tiny_model()
    fast = optimize_for_inference(model)
    with pytest.raises(RuntimeError, match="prepared for inference"):
        fast.train().encode_video(random_video(1, 4, model.config))
    fast.eval()
    with pytest.raises(RuntimeError, match="save or hash the original model"):
        fast.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="exactly 4 frames"):
        fast.encode_video(random_video(1, 3, model.config))
    with pytest.raises(ValueError, match="already prepared"):
        optimize_for_inference(fast, "int8")


def test_merge_sources_are_the_models():
    """The prepared model runs the model's own loop, merge-source tracking included."""
    model = tiny_model()
    pixel_values = random_video(2, 4, model.config)
    with torch.no_grad():
        expected = model.encode_video(pixel_values, output_merge_sources=True).vision_model_output
        actual = optimize_for_inference(model).encode_video(pixel_values, output_merge_sources=True).vision_model_output
    assert torch.equal(actual.merge_sources, expected.merge_sources)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_attention_implementation_of_the_prepared_model(attn):
    model = tiny_model(attn="sdpa" if attn == "eager" else "eager")
    pixel_values, input_ids = random_video(2, 4, model.config), random_text(2, model.config)
    fast = optimize_for_inference(model, attn_implementation=attn)
    assert fast.config._attn_implementation == attn and model.config._attn_implementation != attn
    assert fast.text_model.config._attn_implementation == attn
    expected_video, expected_text = features(model, pixel_values, None, input_ids, None)
    video, text = features(fast, pixel_values, None, input_ids, None)
    torch.testing.assert_close(video.video_embeds, expected_video.video_embeds, atol=1e-5, rtol=0)
    torch.testing.assert_close(text, expected_text, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("precision, atol, min_cosine", [("fp32", 1e-5, None), ("bf16", None, 0.99), ("int8", None, 0.99)])
def test_bottleneck_adapters_run_on_the_prepared_model(precision, atol, min_cosine):
    tuned = apply_adapter(tiny_model(), bottleneck=4)
    with torch.no_grad():
        for parameter in tuned.parameters():
            if parameter.requires_grad:
                parameter.add_(0.2 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)))
    pixel_values = random_video(3, 4, tuned.config)
    input_ids, attention_mask = padded_text(tuned.config)
    expected_video, expected_text = features(tuned, pixel_values, None, input_ids, attention_mask)
    fast = prepared(tuned, precision)
    assert type(fast) is TempMeCLIPModel
    assert type(fast.vision_model.encoder.layers[0].mlp.base_layer) is linear.InferenceMLP
    video, text = features(fast, pixel_values, None, input_ids, attention_mask)
    if atol is not None:
        torch.testing.assert_close(video.video_embeds, expected_video.video_embeds, atol=atol, rtol=0)
        torch.testing.assert_close(text, expected_text, atol=atol, rtol=1e-5)
    else:
        assert F.cosine_similarity(video.video_embeds, expected_video.video_embeds).min() > min_cosine
        assert F.cosine_similarity(text, expected_text).min() > min_cosine


def test_modules_the_fast_path_does_not_know_are_refused():
    with pytest.raises(NotImplementedError, match=r"layers\.0\.prompt.*deep prompts"):
        optimize_for_inference(apply_prompt(tiny_model()))
    lora = apply_lora(tiny_model())
    with pytest.raises(ValueError, match="merge_and_unload"):
        optimize_for_inference(lora)
    # LoRA layers inside a plain model (peft's inject_adapter_in_model, no PeftModel around it) are refused too.
    with pytest.raises(NotImplementedError, match="lora_A"):
        optimize_for_inference(lora.base_model.model)


def test_bad_arguments_name_the_fix():
    model = tiny_model()
    with pytest.raises(ValueError, match="fp16.*choose one of 'fp32', 'bf16', 'int8'"):
        optimize_for_inference(model, "fp16")
    with pytest.raises(TypeError, match="expects a TempMeCLIPModel"):
        optimize_for_inference(torch.nn.Linear(2, 2))


def test_bf16_warns_on_cpus_without_native_bfloat16(monkeypatch):
    no_bf16 = {**cpu_features(), "onednn_bf16": False, "native_bf16": False}
    monkeypatch.setattr(optimize, "cpu_features", lambda: no_bf16)
    with pytest.warns(UserWarning, match="no native bfloat16"):
        optimize_for_inference(tiny_model(), "bf16")


def test_cpu_features_report_flags():
    features = cpu_features()
    assert set(features) >= {"cpu", "flags", "torch_cpu_capability", "onednn_bf16", "native_bf16", "vnni"}
    assert isinstance(features["flags"], list)


@pytest.mark.slow
def test_fp32_fast_path_matches_the_model_on_vit_b_32_shapes():
    config = TempMeConfig.from_preset("tempme-vit-b-32")
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = TempMeCLIPModel(config).eval()
    pixel_values = random_video(2, 12, config)
    input_ids, attention_mask = padded_text(config, batch=2, length=32)
    expected_video, expected_text = features(model, pixel_values, None, input_ids, attention_mask)
    video, text = features(optimize_for_inference(model), pixel_values, None, input_ids, attention_mask)
    assert video.token_counts == expected_video.token_counts
    assert video.token_counts[-1] == (1, 97)
    torch.testing.assert_close(video.video_embeds, expected_video.video_embeds, atol=1e-5, rtol=0)
    torch.testing.assert_close(text, expected_text, atol=1e-5, rtol=1e-5)


def test_attention_kernels_come_from_transformers_registry():
    """A kernel registered with transformers' AttentionInterface runs in every block of the model and of its prepared
    copy, chosen by `attn_implementation` alone."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    calls = []

    def counting_sdpa(module, query, key, value, attention_mask, **kwargs):
        calls.append(tuple(query.shape))
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("tempme_test_counting_sdpa", counting_sdpa)
    model = tiny_model()
    pixel_values = random_video(2, 4, model.config)
    with torch.no_grad():
        expected = model.encode_video(pixel_values).video_embeds
        model.set_attn_implementation("tempme_test_counting_sdpa")
        torch.testing.assert_close(model.encode_video(pixel_values).video_embeds, expected, rtol=0, atol=0)
        assert [shape[2] for shape in calls] == [step.tokens_attention for step in model.config.merge_plan()]
        calls.clear()
        fast = optimize_for_inference(model)
        torch.testing.assert_close(fast.encode_video(pixel_values).video_embeds, expected, atol=1e-5, rtol=0)
    assert len(calls) == 4


# ---------------------------------------------------------------------------------------------- compiled whole


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-5), ("bf16", None)])
def test_compile_keeps_the_model_and_compiles_its_vision_tower_whole(precision, tolerance):
    """`compile=` swaps nothing: the copy's vision tower is one graph (fullgraph) at the precision, the final layer norm
    and projections at the model's. aot_eager here (seconds); inductor runs in `tests/test_compile.py` and `tests/test_benchmark_script.py`."""
    torch._dynamo.reset()  # a fresh compile cache: earlier tests' graphs must not count towards its recompile limit
    model = tiny_model("tempme")
    pixel_values, mask = random_video(2, 4, model.config), torch.ones(2, 4)
    input_ids, attention_mask = padded_text(model.config)
    compiled = optimize_for_inference(model, precision, compile={"backend": "aot_eager"})
    assert type(compiled) is TempMeCLIPModel and compiled is not model
    assert not any(isinstance(module, (linear.InferenceLinear, FusedQKVAttention)) for module in compiled.modules())
    dtype = linear.compute_dtype(precision)
    assert compiled.vision_model.encoder.layers[0].mlp.fc1.weight.dtype == dtype
    assert compiled.vision_model.post_layernorm.weight.dtype == torch.float32
    assert model.vision_model.encoder.layers[0].mlp.fc1.weight.dtype == torch.float32  # the model is left as it was
    (video, text), (expected_video, expected_text) = (
        features(m, pixel_values, mask, input_ids, attention_mask) for m in (compiled, model)
    )
    assert video.video_embeds.dtype == torch.float32
    torch.testing.assert_close(text, expected_text, rtol=0, atol=0)  # the text tower runs as the model's
    if tolerance is not None:
        torch.testing.assert_close(video.video_embeds, expected_video.video_embeds, rtol=tolerance, atol=tolerance)
    else:
        assert F.cosine_similarity(video.video_embeds, expected_video.video_embeds).min() > 0.99
    # Another batch size compiles once more (the batch dimension then dynamic), fullgraph still.
    with torch.no_grad():
        three = compiled.encode_video(random_video(3, 4, model.config, seed=2)).video_embeds
        expected = model.encode_video(random_video(3, 4, model.config, seed=2)).video_embeds
    assert F.cosine_similarity(three, expected).min() > (0.9999 if precision == "fp32" else 0.99)


def test_compile_refuses_int8():
    with pytest.raises(ValueError, match="compile=True runs precision='fp32' or 'bf16'"):
        optimize_for_inference(tiny_model(), "int8", compile=True)
