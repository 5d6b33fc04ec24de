"""TempMe on a CUDA GPU: the same features and gradients as on the CPU (tiny and ViT-B shapes), every attention
implementation, SDPA's flash kernel under merging, bfloat16 / float16 bounds, the compiled tower (CUDA graphs included)
without host syncs, mixed-precision training through `tempme train`, and `tempme index --device cuda`.

Every test here is marked `cuda` and skipped, with the reason, where torch sees no GPU. Run them with
`python -m pytest -m cuda tests/test_cuda.py` (`benchmarks/gpu_check.sh` does, first).
"""

from __future__ import annotations

import copy
import importlib.util
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import random_text, random_video, tiny_config, tiny_inputs
from test_training_scripts import benchmark, record_training_steps, train_config, write_config  # noqa: F401 (a fixture)

from transformers_tempme import TempMeCLIPModel, TempMeConfig, optimize_for_inference
from transformers_tempme.modeling_tempme import TempMeVisionAttention

CUDA = torch.cuda.is_available()
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU: torch sees none")]
HAS_FLASH_ATTN = importlib.util.find_spec("flash_attn") is not None


@pytest.fixture(autouse=True)
def _exact_float32():
    """TF32 matmuls and convolutions would put CUDA's float32 ~1e-3 away from the CPU's: off while comparing."""
    if not CUDA:
        yield
        return
    matmul, convolution = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, convolution


def tiny(schedule: str = "tempme", seed: int = 0, **overrides) -> TempMeCLIPModel:
    torch.manual_seed(seed)
    return TempMeCLIPModel(tiny_config(schedule, clip_position_embedding_init_std=0.02, **overrides))


def vit_b(preset: str, seed: int = 0) -> TempMeCLIPModel:
    """A preset at its real shapes with random weights (cost and numerics do not depend on their values)."""
    torch.manual_seed(seed)
    config = TempMeConfig.from_preset(preset, clip_position_embedding_init_std=0.02, attn_implementation="sdpa")
    return TempMeCLIPModel(config)


def on(inputs: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {name: tensor.to(device) for name, tensor in inputs.items()}


def embeddings(model, inputs) -> torch.Tensor:
    """Text and video embeddings, one row each, in float32 on the CPU."""
    with torch.no_grad():
        outputs = model.eval()(**inputs)
    return torch.cat([outputs.text_embeds, outputs.video_embeds]).float().cpu()


def gradients(model, inputs) -> dict[str, torch.Tensor]:
    model.train().zero_grad()
    model(**inputs, return_loss=True).loss.backward()
    return {name: p.grad.float().cpu() for name, p in model.named_parameters() if p.grad is not None}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm().clamp(min=1e-12))


def vit_b_inputs(config: TempMeConfig, batch: int = 2) -> dict[str, torch.Tensor]:
    return {
        "input_ids": random_text(batch, config, length=32),
        "pixel_values": random_video(batch, config.num_frames, config),
    }


def set_kernel(model, implementation: str, route: str | None = None):
    model.config._attn_implementation = implementation
    model.text_model.config._attn_implementation = "sdpa" if "flash" in implementation else implementation
    for module in model.modules():
        if isinstance(module, TempMeVisionAttention):
            module.key_bias_route = route
    return model


# ---------------------------------------------------------------------------------------------- CPU and CUDA agree


@pytest.mark.parametrize("schedule", ["clip", "tome", "tempme"])
def test_cpu_and_cuda_agree_on_tiny_models(schedule):
    model = tiny(schedule)
    inputs = tiny_inputs(model.config, batch=3)
    expected, expected_gradients = embeddings(model, inputs), gradients(model, inputs)
    gpu = copy.deepcopy(model).cuda()
    torch.testing.assert_close(embeddings(gpu, on(inputs, "cuda")), expected, rtol=1e-4, atol=1e-5)
    actual_gradients = gradients(gpu, on(inputs, "cuda"))
    assert actual_gradients.keys() == expected_gradients.keys()
    for name, gradient in expected_gradients.items():
        torch.testing.assert_close(actual_gradients[name], gradient, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("preset", ["tempme-vit-b-32", "tempme-vit-b-16", "tome-vit-b-16", "clip-vit-b-16"])
def test_cpu_and_cuda_agree_at_vit_b_shapes(preset):
    """Merge decisions could in principle flip on a near-tie between the devices' roundings: bounds, not equality."""
    model = vit_b(preset)
    inputs = vit_b_inputs(model.config)
    expected, expected_gradients = embeddings(model, inputs), gradients(model, inputs)
    gpu = copy.deepcopy(model).cuda()
    with torch.no_grad():
        counts = gpu.eval().encode_video(inputs["pixel_values"].cuda()).token_counts
    assert counts == model.eval().encode_video(inputs["pixel_values"]).token_counts
    assert F.cosine_similarity(embeddings(gpu, on(inputs, "cuda")), expected).min() > 0.9999
    actual_gradients = gradients(gpu, on(inputs, "cuda"))
    worst = max(relative_error(actual_gradients[name], g) for name, g in expected_gradients.items() if g.norm() > 0)
    assert worst < 1e-2


# ---------------------------------------------------------------------------------------------- attention kernels


ATTENTION_CASES = [
    ("sdpa", None),  # folded on CUDA
    ("sdpa", "mask"),
    ("flex_attention", None),  # score_mod on CUDA
    ("eager", "fold"),
]


@pytest.mark.parametrize("implementation, route", ATTENTION_CASES, ids=lambda value: str(value))
@pytest.mark.parametrize("schedule", ["tome", "tempme"])
def test_every_attention_implementation_computes_eager_features_and_gradients(schedule, implementation, route):
    inputs = on(tiny_inputs(tiny_config(schedule), batch=3), "cuda")
    reference = set_kernel(tiny(schedule).cuda(), "eager", "mask")
    model = set_kernel(tiny(schedule).cuda(), implementation, route)
    torch.testing.assert_close(embeddings(model, inputs), embeddings(reference, inputs), rtol=1e-4, atol=1e-5)
    expected, actual = gradients(reference, inputs), gradients(model, inputs)
    for name, gradient in expected.items():
        torch.testing.assert_close(actual[name], gradient, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.skipif(not HAS_FLASH_ATTN, reason="flash_attn is not installed")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_flash_attention_2_runs_proportional_attention_folded(dtype):
    model = vit_b("tempme-vit-b-32").cuda()
    inputs = on(vit_b_inputs(model.config), "cuda")
    expected = embeddings(model, inputs)
    flash = set_kernel(copy.deepcopy(model).to(dtype), "flash_attention_2")
    assert F.cosine_similarity(embeddings(flash, {**inputs, "pixel_values": inputs["pixel_values"].to(dtype)}),
                               expected).min() > 0.99


def attention_kernel_names(model, pixel_values) -> set[str]:
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CUDA]) as profiler:
        model.encode_video(pixel_values)
        torch.cuda.synchronize()
    names = {event.key for event in profiler.key_averages()}
    return {name for name in names if any(word in name.lower() for word in ("flash", "fmha", "efficient", "cudnn"))}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_folded_bias_keeps_sdpas_flash_kernel(dtype):
    """A float mask rules SDPA's flash backend out; folded into q and k (head dim 64 -> 72), flash runs."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = vit_b("tempme-vit-b-32").cuda().to(dtype).eval()
    pixel_values = random_video(2, 12, model.config).cuda().to(dtype)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        assert any("flash" in name.lower() for name in attention_kernel_names(model, pixel_values))
        set_kernel(model, "sdpa", "mask")
        with pytest.raises(RuntimeError):
            with torch.no_grad():
                model.encode_video(pixel_values)


# ---------------------------------------------------------------------------------------------- lower precisions


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("preset", ["tempme-vit-b-32", "tempme-vit-b-16"])
def test_half_precision_stays_close_to_float32(preset, dtype):
    """The model cast whole, `optimize_for_inference` (bf16) and the compiled tower (bf16), against float32."""
    model = vit_b(preset).cuda().eval()
    pixel_values = random_video(4, 12, model.config).cuda()
    with torch.no_grad():
        expected = model.encode_video(pixel_values).video_embeds
        half = copy.deepcopy(model).to(dtype)
        cast = half.encode_video(pixel_values.to(dtype)).video_embeds.float()
    assert F.cosine_similarity(cast, expected).min() > 0.99
    if dtype == torch.bfloat16:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Compiling takes a while: the ViT-B/32 schedule only.
            for compile in (False, True) if preset == "tempme-vit-b-32" else (False,):
                fast = optimize_for_inference(model, "bf16", compile=compile)
                with torch.no_grad():
                    actual = fast.encode_video(pixel_values).video_embeds.float()
                assert F.cosine_similarity(actual, expected).min() > 0.99, f"compile={compile}"


# ---------------------------------------------------------------------------------------------- the compiled tower


@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_the_tower_compiles_whole_on_cuda(mode):
    """Inductor's Triton kernels, and with "reduce-overhead" the whole tower replayed as one CUDA graph."""
    torch._dynamo.reset()
    model = set_kernel(tiny("tempme").cuda().eval(), "sdpa")
    pixel_values = random_video(2, 4, model.config).cuda()
    compiled = torch.compile(model.vision_model, fullgraph=True, dynamic=False, mode=mode)
    with torch.no_grad():
        expected = model.vision_model(pixel_values).pooler_output
        for _ in range(3):  # CUDA graphs record on a later call than the first
            actual = compiled(pixel_values).pooler_output.clone()
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_merging_makes_no_host_sync():
    """Token counts come from the plan: the forward never waits for the GPU (a sync would raise here)."""
    model = vit_b("tempme-vit-b-16").cuda().eval()
    pixel_values = random_video(2, 12, model.config).cuda()
    with torch.inference_mode():
        model.vision_model(pixel_values)  # first call: lazy initialisations may sync
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            model.vision_model(pixel_values)
        finally:
            torch.cuda.set_sync_debug_mode("default")


# ---------------------------------------------------------------------------------------------- training and indexing


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_mixed_precision_training_step_through_tempme_train(benchmark, tmp_path, monkeypatch, precision):  # noqa: F811
    from transformers_tempme.cli.train import train

    seen, scalers = record_training_steps(monkeypatch, "cuda")
    settings = {precision: True, "use_cpu": False, "gradient_checkpointing": True, "do_eval": False,
                "save_strategy": "no"}
    config = write_config(tmp_path / "config.json", train_config(benchmark, tmp_path / "run", **settings))
    results = train([config])
    assert results["train_loss"] > 0 and torch.isfinite(torch.tensor(results["train_loss"]))
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    expected = {"device": "cuda", "autocast": dtype, "checkpointed": True, "sizes": torch.float32}
    assert seen and all(step == expected for step in seen), seen
    assert scalers and all(scaler == ("GradScaler" if precision == "fp16" else None) for scaler in scalers)


def test_the_search_indexer_on_cuda(tmp_path, capsys):
    from search_helpers import make_video_folder, save_tiny_search_model, stored_rows

    from transformers_tempme import VideoSearchIndex
    from transformers_tempme.cli import main

    model_dir = save_tiny_search_model(tmp_path / "model")
    videos = make_video_folder(tmp_path / "videos")
    for device in ("cuda", "cpu"):
        assert main(["index", str(videos), "--model", str(model_dir), "--index", str(tmp_path / f"{device}.index"),
                     "--device", device, "--num-workers", "1", "--no-progress"]) == 0
    assert "5 videos, 7 segments" in capsys.readouterr().out
    (gpu_rows, gpu_vectors), (cpu_rows, cpu_vectors) = (
        stored_rows(VideoSearchIndex.open(tmp_path / f"{device}.index")) for device in ("cuda", "cpu")
    )
    assert gpu_rows == cpu_rows
    assert F.cosine_similarity(torch.from_numpy(gpu_vectors), torch.from_numpy(cpu_vectors)).min() > 0.9999
