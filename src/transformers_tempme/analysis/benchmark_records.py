"""What every benchmark records next to its figures: the machine it ran on, the load average, and its files.

Timings mean little without the machine: the CPU and the instruction-set flags that decide the low-precision paths
(`inference.cpu_features`), the cores and torch's threads, the torch and Python builds, the GPU, driver, CUDA and
cuDNN where one ran, and the faiss build for search. The machine may be shared: the load average before and after
each measurement is recorded next to it, so that a reader can tell a quiet run from a busy one.

Used by `benchmarks/*.py`, `tools/*.py` and `examples/demo.py`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from ..inference.cpu_features import cpu_features


def load_script(path: str | Path):
    """The script at `path` (a sibling benchmark or the demo) as a module, imported by its path: a script that
    imports its siblings this way runs from any folder, where a bare `import sibling` works only from its own."""
    path = Path(path).resolve()
    spec = importlib.util.spec_from_file_location(f"tempme_script_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none): near 0 on an idle machine."""
    with contextlib.suppress(OSError, AttributeError):
        return [round(value, 2) for value in os.getloadavg()]
    return None


def gpu_description(device: torch.device) -> dict:
    """The GPU's name, memory and compute capability, the NVIDIA driver (from `nvidia-smi`, where it runs) and the
    CUDA and cuDNN versions torch was built with."""
    properties = torch.cuda.get_device_properties(device)
    description = {
        "gpu": properties.name,
        "gpu_memory_gib": round(properties.total_memory / 2**30, 1),
        "compute_capability": f"{properties.major}.{properties.minor}",
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "driver": None,
    }
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        index = device.index if device.index is not None else torch.cuda.current_device()
        query = ["nvidia-smi", f"--id={index}", "--query-gpu=driver_version", "--format=csv,noheader"]
        description["driver"] = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip() or None
    return description


def faiss_build() -> str | None:
    """faiss's version, compile options (the SIMD level of its kernels) and OpenMP threads; None without faiss."""
    try:
        import faiss
    except ImportError:
        return None
    return f"{faiss.__version__} ({faiss.get_compile_options()}), {faiss.omp_get_max_threads()} threads"


def machine_description(device: torch.device | str = "cpu", *, faiss: bool = False) -> dict:
    """Where a measurement runs: `cpu` (model name), `cpu_count`, `cpu_features` (`inference.cpu_features`),
    `torch`, `python`, `torch_threads`; with a CUDA `device` the GPU (`gpu_description`), with `faiss=True` the
    faiss build. The load average is not in it: record `load_average()` before and after each measurement."""
    device = torch.device(device)
    features = cpu_features()
    description = {
        "cpu": features["cpu"],
        "cpu_count": os.cpu_count(),
        "cpu_features": features,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        description.update(gpu_description(device))
    if faiss:
        description["faiss"] = faiss_build()
    return description


def describe_machine(machine: dict) -> str:
    """One line for a report: the GPU (with driver, CUDA, cuDNN) on the CPU where a GPU ran, else the CPU."""
    where = f"{machine['cpu']} ({machine['cpu_count']} cores)"
    if machine.get("gpu"):
        where = (f"{machine['gpu']} (driver {machine.get('driver') or 'unknown'}, CUDA {machine.get('cuda')}, cuDNN "
                 f"{machine.get('cudnn')}) on {where}")
    return where


def write_results(results: dict, json_path: str | Path, markdown_path: str | Path, table: str) -> None:
    """Write a benchmark's records (JSON, with the load average at the end added to `results["machine"]`) and its
    markdown table, and print the table."""
    results["machine"]["load_average_end"] = load_average()
    for path, text in ((json_path, json.dumps(results, indent=2)), (markdown_path, table)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
    print("\n" + table)
    print(f"\nWrote {json_path} and {markdown_path}")


__all__ = ["describe_machine", "faiss_build", "gpu_description", "load_average", "machine_description", "write_results"]
