"""`optimize_for_inference`: a trained TempMe model, prepared for fast encoding at a chosen precision.

    from transformers_tempme import optimize_for_inference

    fast = optimize_for_inference(model, precision="fp32")  # or "bf16", "int8"
    video_embeds = fast.encode_video(pixel_values).video_embeds
    text_embeds = fast.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output

The result is a separate module with the model's inference API (`encode_video`, `get_video_features`,
`get_image_features`, `get_text_features`, `forward` for similarity logits); these are the model's own methods,
run on inference towers. The model itself is left as it is (parameter names, training, LoRA, saving): the inference
model holds prepared copies of the block weights (fused q/k/v, folded activation scale, bf16 or int8) and shares
the rest (embeddings, layer norms, clip position embeddings, projections) with it. Build it again after the
weights change.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..modeling_tempme import TempMeCLIPModel
from .cpu_features import cpu_features
from .linear import PRECISIONS
from .towers import InferenceTextTransformer, InferenceVisionTransformer


class TempMeInferenceModel(nn.Module):
    """A `TempMeCLIPModel` prepared for inference at one precision (see `optimize_for_inference`).

    Attributes:
        precision: `"fp32"`, `"bf16"` or `"int8"`.
        config: the original model's `TempMeConfig`.
        vision_model, text_model: the inference towers.
    """

    # The model's own encoders and retrieval head, run on the inference towers.
    encode_video = TempMeCLIPModel.encode_video
    get_video_features = TempMeCLIPModel.get_video_features
    get_image_features = TempMeCLIPModel.get_image_features
    get_text_features = TempMeCLIPModel.get_text_features
    forward = TempMeCLIPModel.forward
    _check_video_inputs = TempMeCLIPModel._check_video_inputs
    _check_text_inputs = TempMeCLIPModel._check_text_inputs

    def __init__(self, model: TempMeCLIPModel, precision: str, reduce_range: bool = False):
        super().__init__()
        self.precision = precision
        self.config = model.config
        self.vision_model = InferenceVisionTransformer(model.vision_model, precision, reduce_range)
        self.text_model = InferenceTextTransformer(model.text_model, precision, reduce_range)
        self.visual_projection, self.text_projection = model.visual_projection, model.text_projection
        self.logit_scale = model.logit_scale
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the embeddings this model returns (that of the original model)."""
        return self.logit_scale.dtype

    def train(self, mode: bool = True) -> "TempMeInferenceModel":
        if mode:
            raise RuntimeError(
                "A TempMeInferenceModel is for inference only; train the original model and call "
                "optimize_for_inference on it again afterwards."
            )
        return super().train(False)

    def extra_repr(self) -> str:
        return f"precision={self.precision!r}"


def _unwrap(model: nn.Module) -> TempMeCLIPModel:
    """The TempMe model inside `model` (a `TempMeCLIPModel`, or a peft model around one with merged adapters)."""
    if isinstance(model, TempMeCLIPModel):
        return model
    if hasattr(model, "merge_and_unload") and hasattr(model, "get_base_model"):
        raise ValueError(
            "optimize_for_inference needs the plain model, not a peft model with adapters: merge them first with "
            "`model = model.merge_and_unload()` (load_tempme(..., merge=True) does this when loading an adapter)."
        )
    raise TypeError(f"optimize_for_inference expects a TempMeCLIPModel, got {type(model).__name__}.")


@torch.no_grad()
def optimize_for_inference(model: TempMeCLIPModel, precision: str = "fp32") -> TempMeInferenceModel:
    """A copy of `model` for fast encoding at `precision`; `model` itself is not changed.

    Args:
        model: a `TempMeCLIPModel` (LoRA adapters merged).
        precision:
            - `"fp32"`: float32, features within 1e-5 of the model's own `encode_video`; on a CPU, oneDNN linears
              with the activation and residual add fused, and one fused q/k/v projection per block.
            - `"bf16"`: bfloat16 tokens and weights between the patch embedding and the final layer norm. Fast only
              on CPUs with native bfloat16 (AVX512-BF16 or AMX; `cpu_features()` says) or on GPUs; elsewhere slower
              than float32, and a warning says so.
            - `"int8"`: linear layers quantized to int8 (weights per output channel, activations per tensor at run
              time; CPU only). Activations are quantized to 7 bits on CPUs without VNNI.

    Returns:
        A `TempMeInferenceModel` in eval mode with `encode_video`, `get_text_features` and the other encoders.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; choose one of {', '.join(repr(p) for p in PRECISIONS)}.")
    model = _unwrap(model)
    device = model.logit_scale.device
    features = cpu_features() if device.type == "cpu" else {}
    if precision == "bf16" and device.type == "cpu" and not features["onednn_bf16"]:
        warnings.warn(
            f"This CPU ({features['cpu']}) has no native bfloat16 arithmetic (AVX512-BF16 or AMX): bf16 inference will "
            "be slower than fp32 here. Use precision='int8' or 'fp32'.",
            stacklevel=2,
        )
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"int8 inference runs on CPU only; the model is on {device}. Move it with model.to('cpu').")
    reduce_range = precision == "int8" and not features.get("vnni", False)
    return TempMeInferenceModel(model, precision, reduce_range)


__all__ = ["TempMeInferenceModel", "optimize_for_inference"]
