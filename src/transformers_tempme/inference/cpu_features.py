"""What the CPU offers the low-precision paths: the instruction-set flags that decide whether bf16 and int8 pay.

- bf16 pays only with native bfloat16 dot products: AVX512-BF16 (`avx512_bf16`) or AMX (`amx_bf16`). Without them
  oneDNN emulates bfloat16 and it is slower than float32.
- int8 (dynamic quantization, fbgemm) runs everywhere with AVX2, fastest with VNNI (`avx512_vnni`, `avx_vnni`) or
  AMX (`amx_int8`). Without VNNI its kernels saturate on 8-bit products, so activations are quantized to 7 bits
  (`reduce_range`).
"""

from __future__ import annotations

import platform

import torch

# The flags that matter here, as /proc/cpuinfo spells them.
RELEVANT_FLAGS: tuple[str, ...] = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "avx_vnni",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
)


def _cpuinfo() -> tuple[str, set[str]]:
    """CPU model name and flags from /proc/cpuinfo (Linux); empty elsewhere."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def cpu_features() -> dict:
    """The CPU model, its relevant flags and what torch makes of them, for benchmark records and path choices.

    Returns a dict with `cpu` (model name), `flags` (the `RELEVANT_FLAGS` present), `torch_cpu_capability` (the
    vector ISA torch's kernels use), `onednn_bf16` (oneDNN computes bfloat16 natively), `native_bf16` and
    `vnni` (booleans).
    """
    model, flags = _cpuinfo()
    present = [flag for flag in RELEVANT_FLAGS if flag in flags]
    try:
        onednn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        onednn_bf16 = False
    return {
        "cpu": model,
        "flags": present,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_bf16": onednn_bf16,
        "native_bf16": bool({"avx512_bf16", "amx_bf16"} & flags),
        "vnni": bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags),
    }


__all__ = ["RELEVANT_FLAGS", "cpu_features"]
