"""ONNX export of a TempMe model (video and text encoders, merges included) and onnxruntime sessions to run it.

    from transformers_tempme.inference.onnx_export import OnnxTempMe, export_onnx

    export_onnx(model, "onnx/", quantize=True)          # or: tempme export-onnx MODEL onnx/ --quantize
    onnx_model = OnnxTempMe("onnx/", int8=True)
    video_embeds = onnx_model.encode_video(pixel_values).video_embeds
    text_embeds = onnx_model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output

The folder holds

- `vision.onnx`: `pixel_values` `(batch, frames, 3, H, W)` float32 and `video_mask` `(batch, frames)` int64 in;
  `video_embeds` `(batch, projection_dim)` and `frame_embeds` `(batch, frames, projection_dim)` out, as
  `encode_video` returns them. The whole TempMe vision tower is in the graph: token counts depend only on the
  config, so every merge (bipartite matching as TopK, merges as Gather / ScatterElements) is a static-shape
  subgraph. The frame count is fixed by the config; the batch is dynamic.
- `text.onnx`: `input_ids` and `attention_mask` `(batch, words)` int64 in; `text_embeds` `(batch, projection_dim)`
  out, as `get_text_features(...).pooler_output` (projected, not normalised). Batch and words are dynamic.
- `vision_int8.onnx`, `text_int8.onnx` with `quantize=True`: onnxruntime's dynamic int8 quantization of the
  MatMul / Gemm weights (per output channel), activations quantized at run time.
- `config.json` (the TempMe config) and `onnx_export.json`: opset, torch and onnxruntime versions, and the largest
  difference to PyTorch measured on random inputs at export (the export fails if it exceeds `atol`).

The graphs are traced from the model's own forward (`torch.onnx.export`, the dynamo exporter, on `encode_video` and
`get_text_features`), so they compute exactly what the model computes; onnxruntime's graph optimisations run when a
session loads. Export the model itself, not a copy prepared by `optimize_for_inference`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..configuration_tempme import TempMeConfig
from ..modeling_tempme import TempMeCLIPModel, TempMeVideoOutput
from .linear import InferenceLinear

DEFAULT_OPSET = 18
VISION_FILE, TEXT_FILE, MANIFEST_FILE = "vision.onnx", "text.onnx", "onnx_export.json"
INT8_SUFFIX = "_int8"


class VideoEncoderGraph(nn.Module):
    """`encode_video` as a module with tensor outputs, for tracing: (video_embeds, frame_embeds)."""

    def __init__(self, model: TempMeCLIPModel):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, video_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.model.encode_video(pixel_values, video_mask)
        return outputs.video_embeds, outputs.frame_embeds


class TextEncoderGraph(nn.Module):
    """`get_text_features(...).pooler_output` as a module with a tensor output, for tracing."""

    def __init__(self, model: TempMeCLIPModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output


def example_video(config, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random pixel values `(batch, frames, 3, size, size)` and an all-ones `video_mask`."""
    size = config.vision_config.image_size
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch, config.num_frames, 3, size, size, generator=generator)
    return pixel_values, torch.ones(batch, config.num_frames, dtype=torch.long)


def example_text(config, batch: int, words: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random captions `(batch, words)` ending in the end-of-text id, the last one padded, and their mask."""
    text = config.text_config
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, text.vocab_size - 2, (batch, words), generator=generator)
    attention_mask = torch.ones(batch, words, dtype=torch.long)
    input_ids[:, -1] = text.eos_token_id
    if words > 2:  # one padded caption, so that the mask is exercised
        input_ids[-1, words // 2] = text.eos_token_id
        input_ids[-1, words // 2 + 1 :] = text.pad_token_id or 0
        attention_mask[-1, words // 2 + 1 :] = 0
    return input_ids, attention_mask


@dataclass
class OnnxExport:
    """What `export_onnx` wrote and how close onnxruntime came to PyTorch on random inputs."""

    output_dir: str
    files: dict[str, str]
    opset: int
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


def _export(module: nn.Module, inputs: tuple, path: Path, input_names, output_names, dynamic, opset: int) -> None:
    # The dynamo exporter prints its progress and warns about unrelated torchvision ops; keep the output short.
    torch.onnx.export(
        module.eval(),
        inputs,
        str(path),
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_shapes=dynamic,
        opset_version=opset,
        external_data=False,
        verbose=False,
    )


def quantize_int8(source: Path, target: Path) -> None:
    """onnxruntime's dynamic int8 quantization of `source`'s MatMul / Gemm weights (per channel) into `target`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source), str(target), op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
        weight_type=QuantType.QInt8,
    )


@torch.no_grad()
def export_onnx(
    model: TempMeCLIPModel,
    output_dir: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    quantize: bool = False,
    verify: bool = True,
    atol: float = 1e-4,
) -> OnnxExport:
    """Write `vision.onnx` and `text.onnx` (and their int8 versions with `quantize`) for `model` to `output_dir`.

    Args:
        model: a `TempMeCLIPModel` on the CPU in float32 (LoRA adapters merged).
        opset: ONNX opset, at least 17.
        quantize: also write `vision_int8.onnx` and `text_int8.onnx`.
        verify: run the float32 graphs with onnxruntime on random inputs (two batch sizes) and raise if an output
            differs from PyTorch by more than `atol`.
    """
    if opset < 17:
        raise ValueError(f"opset {opset} is too old: the export needs at least 17 (LayerNormalization).")
    if not isinstance(model, TempMeCLIPModel):
        raise TypeError(f"export_onnx expects a TempMeCLIPModel (adapters merged), got {type(model).__name__}.")
    if model.dtype != torch.float32 or model.device.type != "cpu":
        raise ValueError("Export a float32 model on the CPU: model.to('cpu', torch.float32).")
    if any(isinstance(module, InferenceLinear) for module in model.modules()):
        raise ValueError(
            "This model was prepared by optimize_for_inference, whose CPU kernels have no ONNX form: export the "
            "original model (onnxruntime applies its own graph optimisations, and quantize=True gives int8 graphs)."
        )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    config = model.config
    batch = torch.export.Dim("batch", min=1, max=4096)
    words = torch.export.Dim("words", min=2, max=config.text_config.max_position_embeddings)

    files = {"vision": VISION_FILE, "text": TEXT_FILE}
    _export(
        VideoEncoderGraph(model), example_video(config, 2), output_dir / VISION_FILE,
        ("pixel_values", "video_mask"), ("video_embeds", "frame_embeds"),
        {"pixel_values": {0: batch}, "video_mask": {0: batch}}, opset,
    )
    text_length = min(8, config.text_config.max_position_embeddings)
    _export(
        TextEncoderGraph(model), example_text(config, 2, text_length), output_dir / TEXT_FILE,
        ("input_ids", "attention_mask"), ("text_embeds",),
        {"input_ids": {0: batch, 1: words}, "attention_mask": {0: batch, 1: words}}, opset,
    )
    if quantize:
        for name in ("vision", "text"):
            quantized = files[name].replace(".onnx", f"{INT8_SUFFIX}.onnx")
            quantize_int8(output_dir / files[name], output_dir / quantized)
            files[f"{name}_int8"] = quantized
    config.save_pretrained(output_dir)

    import onnxruntime

    result = OnnxExport(
        str(output_dir), files, opset, versions={"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    )
    if verify:
        result.max_abs_diff = compare_with_pytorch(model, output_dir)
        worst = max(result.max_abs_diff.values())
        if worst > atol:
            raise RuntimeError(
                f"The ONNX graphs differ from PyTorch by up to {worst:.2e} (tolerance {atol:.0e}): "
                f"{result.max_abs_diff}. Please report this with the model's config."
            )
    (output_dir / MANIFEST_FILE).write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


@torch.no_grad()
def compare_with_pytorch(model: TempMeCLIPModel, output_dir: str | os.PathLike) -> dict[str, float]:
    """Largest absolute difference between the float32 graphs in `output_dir` and `model`, over two batch sizes
    (so that the dynamic batch is exercised) and two caption lengths."""
    onnx_model = OnnxTempMe(output_dir, threads=torch.get_num_threads())
    config, diffs = model.config, {}
    for batch in (1, 3):
        pixel_values, video_mask = example_video(config, batch, seed=batch)
        video_mask[-1, -1] = 0  # a padded frame
        ours = model.encode_video(pixel_values, video_mask)
        theirs = onnx_model.encode_video(pixel_values, video_mask)
        diffs[f"video_embeds_batch{batch}"] = float((ours.video_embeds - theirs.video_embeds).abs().max())
        diffs[f"frame_embeds_batch{batch}"] = float((ours.frame_embeds - theirs.frame_embeds).abs().max())
        words = min(4 + 3 * batch, config.text_config.max_position_embeddings)
        input_ids, attention_mask = example_text(config, batch + 1, words, seed=batch)
        text = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        theirs = onnx_model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        diffs[f"text_embeds_batch{batch + 1}_words{words}"] = float((text - theirs).abs().max())
    return diffs


class OnnxTempMe:
    """The exported encoders run by onnxruntime (CPU execution provider), with the model's encoder API: torch
    tensors in, `encode_video` -> `TempMeVideoOutput` (`video_embeds`, `frame_embeds`) and `get_text_features` ->
    `.pooler_output`.

    Args:
        folder: a folder written by `export_onnx`.
        int8: run the int8 graphs (`export_onnx(..., quantize=True)`).
        threads: onnxruntime intra-op threads (default: onnxruntime's choice, one per core).
    """

    def __init__(self, folder: str | os.PathLike, int8: bool = False, threads: int | None = None):
        import onnxruntime

        folder = Path(folder)
        self.config = TempMeConfig.from_pretrained(folder)
        self.precision = "int8" if int8 else "fp32"
        suffix = INT8_SUFFIX if int8 else ""
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sessions = {}
        for name, file in (("vision", VISION_FILE), ("text", TEXT_FILE)):
            path = folder / file.replace(".onnx", f"{suffix}.onnx")
            if not path.exists():
                hint = " (export with quantize=True / --quantize for the int8 graphs)" if int8 else ""
                raise FileNotFoundError(f"{path} does not exist{hint}.")
            self.sessions[name] = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )

    def encode_video(self, pixel_values: torch.Tensor, video_mask: torch.Tensor | None = None) -> TempMeVideoOutput:
        """`(batch, frames, 3, H, W)` -> video embeddings `(batch, projection_dim)` and frame embeddings."""
        if video_mask is None:
            video_mask = torch.ones(pixel_values.shape[:2], dtype=torch.long)
        video_embeds, frame_embeds = self.sessions["vision"].run(
            None,
            {
                "pixel_values": np.ascontiguousarray(pixel_values.detach().cpu().numpy(), dtype=np.float32),
                "video_mask": video_mask.detach().cpu().numpy().astype(np.int64),
            },
        )
        return TempMeVideoOutput(video_embeds=torch.from_numpy(video_embeds), frame_embeds=torch.from_numpy(frame_embeds))

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> BaseModelOutputWithPooling:
        """Text embeddings `(batch, projection_dim)` in `pooler_output`, projected, not normalised (as the model's)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        (text_embeds,) = self.sessions["text"].run(
            None,
            {
                "input_ids": input_ids.detach().cpu().numpy().astype(np.int64),
                "attention_mask": attention_mask.detach().cpu().numpy().astype(np.int64),
            },
        )
        return BaseModelOutputWithPooling(pooler_output=torch.from_numpy(text_embeds))


__all__ = ["OnnxExport", "OnnxTempMe", "compare_with_pytorch", "export_onnx", "quantize_int8"]
