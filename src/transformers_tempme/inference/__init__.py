"""Fast inference: `optimize_for_inference` (fp32, bf16, int8 in PyTorch) and ONNX export.

- `optimize`: `optimize_for_inference`, which swaps a model's attention, MLP and patch embedding for prepared ones.
- `modules`, `linear`: the modules it swaps in (fused q/k/v attention, patch embedding as a matmul, prepared linears).
- `cpu_features`: the CPU flags that decide which precision pays.
- `onnx_export`: `export_onnx` (vision and text graphs, merges included) and `OnnxTempMe` (onnxruntime sessions).
"""

from .cpu_features import cpu_features
from .linear import PRECISIONS
from .optimize import optimize_for_inference

__all__ = ["PRECISIONS", "cpu_features", "optimize_for_inference"]
