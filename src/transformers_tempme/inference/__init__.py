"""Fast inference: `optimize_for_inference` (fp32, bf16, int8 in PyTorch) and ONNX export.

- `model`: `optimize_for_inference` and the `TempMeInferenceModel` it returns.
- `towers`, `blocks`, `linear`: the inference vision and text towers, their attention, and the prepared linears.
- `cpu_features`: the CPU flags that decide which precision pays.
- `onnx_export`: `export_onnx` (vision and text graphs, merges included) and `OnnxTempMe` (onnxruntime sessions).
"""

from .cpu_features import cpu_features
from .linear import PRECISIONS
from .model import TempMeInferenceModel, optimize_for_inference

__all__ = ["PRECISIONS", "TempMeInferenceModel", "cpu_features", "optimize_for_inference"]
