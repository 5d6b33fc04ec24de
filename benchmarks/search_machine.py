"""What the search benchmarks record about the machine: CPU, SIMD flags, thread counts and the load average.

The machine the numbers come from may be shared: the load average before and after each measurement is recorded
next to it, so that a reader can tell a quiet run from a busy one.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from benchmark import load_average, machine_description

SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_bf16",
              "amx_int8", "asimd", "sve")


def cpu_flags() -> list[str]:
    """The SIMD flags of the CPU that matter for the matrix kernels (from /proc/cpuinfo)."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in SIMD_FLAGS if flag in present]
    return []


def machine() -> dict:
    """CPU model, core count, SIMD flags, torch and faiss builds, threads, and the load average now."""
    description = {**machine_description(torch.device("cpu")), "cpu_flags": cpu_flags(),
                   "torch_threads": torch.get_num_threads(), "load_average": load_average()}
    with contextlib.suppress(ImportError):
        import faiss

        description["faiss"] = f"{faiss.__version__} ({faiss.get_compile_options()}), {faiss.omp_get_max_threads()} threads"
    return description


def write_results(results: dict, json_path: str, markdown_path: str, table: str) -> None:
    """Write a benchmark's records (JSON, with the load average at the end) and its markdown table, and print it."""
    results["machine"]["load_average_end"] = load_average()
    for path, text in ((json_path, json.dumps(results, indent=2)), (markdown_path, table)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
    print("\n" + table)
    print(f"\nWrote {json_path} and {markdown_path}")


__all__ = ["cpu_flags", "machine", "load_average", "write_results"]
