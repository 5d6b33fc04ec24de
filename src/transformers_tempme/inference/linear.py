"""Linear layers prepared once for inference: fp32 and bf16 through oneDNN, int8 through dynamic quantization.

`InferenceLinear` computes `activation(x @ W.T + b)` with

- `"fp32"` / `"bf16"` on a CPU: oneDNN's linear (`torch.ops.mkldnn._linear_pointwise`), which fuses the SiLU
  activation into the matmul's output pass. On this project's CPUs it runs a ViT-B MLP faster than `F.linear` (MKL)
  followed by separate activation kernels (`python tools/kernel_microbench.py` measures both).
- `"int8"`: weights quantized per output channel (symmetric int8), activations quantized per tensor at run time
  (fbgemm's `quantized::linear_dynamic`, the kernel of `torch.ao` dynamic quantization), output in float32.
- elsewhere (CUDA, or a CPU build without oneDNN): `F.linear` and separate activation kernels.

Inputs of another dtype are cast to the layer's (bfloat16 for `"bf16"`, float32 otherwise); outputs are in that
dtype. The prepared weights are plain tensors, not parameters: they do not train, and a module holding them refuses
`state_dict()` (a model prepared for inference is saved as the original model, not as its prepared copy).

`InferenceMLP` is CLIP's `fc1 -> activation -> fc2`, a drop-in for `CLIPMLP`. Quick-GELU, `x * sigmoid(1.702 x)`, is
`silu(1.702 x) / 1.702`: with `fc1` scaled by 1.702 and `fc2` by 1 / 1.702 the activation becomes SiLU, which
oneDNN fuses (it has no quick-GELU), and int8 and the fallback run it as one in-place kernel instead of three.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
QUICK_GELU_SCALE = 1.702
# Activations oneDNN fuses into the linear, by `hidden_act` name: (post-op name, algorithm).
ONEDNN_ACTIVATIONS = {"silu": ("swish", ""), "gelu": ("gelu", "none"), "gelu_new": ("gelu", "tanh")}


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype of activations between the linear layers: bfloat16 for `"bf16"`, float32 otherwise."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def uses_onednn(device: torch.device) -> bool:
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def quantize_weight_int8(weight: torch.Tensor, bias: torch.Tensor | None, reduce_range: bool) -> object:
    """fbgemm's packed form of `weight` `(out, in)` quantized per output channel, symmetric, with its float bias."""
    weight = weight.detach().float()
    scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12).double()
    zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
    # torch warns that quantized tensors are deprecated; this is the one place they are made.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        quantized = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(quantized, None if bias is None else bias.detach().float())


class InferenceLinear(nn.Module):
    """`activation(x @ weight.T + bias)` for one precision, weights prepared at construction.

    Args:
        weight: `(out_features, in_features)`; copied (or quantized), the module never writes to it.
        bias: `(out_features,)` or `None`.
        precision: `"fp32"`, `"bf16"` or `"int8"`.
        activation: `None` or an activation name of `transformers.activations.ACT2FN`.
        reduce_range: int8 only: quantize activations to 7 bits (needed by fbgemm's kernels without VNNI).
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        precision: str,
        activation: str | None = None,
        reduce_range: bool = False,
    ):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
        self.precision, self.activation, self.reduce_range = precision, activation, reduce_range
        self.dtype = compute_dtype(precision)
        self.onednn = precision != "int8" and uses_onednn(weight.device)
        self.fused_activation = ONEDNN_ACTIVATIONS.get(activation) if self.onednn else None
        self.activation_fn = None if activation is None or self.fused_activation else ACT2FN[activation]
        if precision == "int8":
            if weight.device.type != "cpu":
                raise ValueError("int8 inference runs on CPU only (fbgemm); move the model to the CPU first.")
            self.packed = quantize_weight_int8(weight, bias, reduce_range)
            self.weight = self.bias = None
        else:
            self.weight = weight.detach().to(dtype=self.dtype, copy=True)
            self.bias = None if bias is None else bias.detach().to(dtype=self.dtype, copy=True)
        self.register_state_dict_pre_hook(_refuse_state_dict)
        self.train(False)  # for inference only (`forward` refuses training mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError(
                "This model was prepared for inference by optimize_for_inference: its fused and quantized layers do "
                "not train. Call .eval(), or train the original model and prepare it again afterwards."
            )
        x = x.to(self.dtype)
        if self.onednn:
            attr, algorithm = self.fused_activation or ("none", "")
            out = torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, attr, [], algorithm)
        elif self.precision == "int8":
            out = torch.ops.quantized.linear_dynamic(x.contiguous(), self.packed, self.reduce_range)
        else:
            out = F.linear(x, self.weight, self.bias)
        if self.activation_fn is not None:
            out = F.silu(out, inplace=True) if self.activation == "silu" else self.activation_fn(out)
        return out

    def extra_repr(self) -> str:
        return f"precision={self.precision!r}, activation={self.activation!r}"


def _refuse_state_dict(module: nn.Module, prefix: str, keep_vars: bool) -> None:
    raise RuntimeError(
        f"{prefix.rstrip('.') or type(module).__name__} holds weights prepared by optimize_for_inference (fused, "
        "bf16 or int8), which have no place in a checkpoint: save or hash the original model instead "
        "(optimize_for_inference returns a prepared copy and leaves the model as it is)."
    )


class InferenceMLP(nn.Module):
    """CLIP's MLP, `fc2(activation(fc1(x)))`, prepared for inference: a drop-in for `CLIPMLP`.

    Quick-GELU is folded into SiLU (see the module docstring); other activations run as they are.
    """

    def __init__(self, mlp: nn.Module, activation: str, precision: str, reduce_range: bool = False):
        super().__init__()
        fc1_weight, fc1_bias, fc2_weight = mlp.fc1.weight.detach(), mlp.fc1.bias, mlp.fc2.weight.detach()
        if activation == "quick_gelu":
            activation = "silu"
            fc1_weight = fc1_weight * QUICK_GELU_SCALE
            fc1_bias = None if fc1_bias is None else fc1_bias.detach() * QUICK_GELU_SCALE
            fc2_weight = fc2_weight / QUICK_GELU_SCALE
        self.fc1 = InferenceLinear(fc1_weight, fc1_bias, precision, activation, reduce_range)
        self.fc2 = InferenceLinear(fc2_weight, mlp.fc2.bias, precision, None, reduce_range)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(hidden_states))


__all__ = ["PRECISIONS", "InferenceLinear", "InferenceMLP", "compute_dtype", "quantize_weight_int8", "uses_onednn"]
