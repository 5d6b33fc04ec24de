"""Speed and memory of no-merge CLIP, ToMe and TempMe on the paper's backbones, measured side by side.

For every backbone (ViT-B/32, ViT-B/16 shapes, random weights: cost does not depend on the values) this builds
the three presets `clip-vit-b-*` (no merging: the paper's LoRA row with the adapters folded in), `tome-vit-b-*`
and `tempme-vit-b-*`, and measures

- inference: videos/s of `encode_video`, the methods interleaved forward by forward in one loop so that the load of
  a shared machine hits them alike; warm-up rounds discarded, the median of the repeats kept;
- training steps (unless `--no-train`): forward + backward of the symmetric InfoNCE loss (`model(...,
  return_loss=True)` on random texts) with LoRA (`apply_lora`) and with full fine-tuning, again interleaved:
  median step time and peak memory of the step.

Peak memory of a training step is `torch.cuda.max_memory_allocated` above the memory held before the step on
CUDA. On CPU it is the rise of the process's peak resident set (VmHWM) over the step: free heap pages are handed
back to the system (`malloc_trim`) and the peak is reset (`/proc/self/clear_refs`) first, so that the figure is the
memory the step itself touched: saved activations, gradients and temporaries, not the weights. Because it counts
pages, not tensors, it is also reported with `saved_activation_mb`: the bytes of the distinct tensors autograd
saves for the backward pass (exact and independent of the allocator), which is what merging reduces.

Inference paths (`--paths`, for the methods in `--path-methods`, TempMe by default) run beside the models as they
are ("eager"), interleaved in the same rounds: the vision tower compiled whole by inductor at the model's dtype
("compile") and at bfloat16 ("compile-bf16", `optimize_for_inference(model, "bf16", compile=True)`), both compiled
before the rounds (`compile_seconds` records how long), `optimize_for_inference` at `fp32`, `bf16` and `int8`, and the
exported ONNX graphs in onnxruntime (`ort`, `ort-int8`; the export takes minutes for ViT-B). Each row records
the min and mean cosine of its video embeddings to the eager float32 ones on the same inputs. With
`--authors-code PATH` (a checkout of the authors' TempMe code, not a dependency; skipped with a warning when the
folder does not hold it) their `get_video_feat` runs on the same weights and inputs as another row ("authors"),
after a check that it computes the same features; every row then also has its speed-up over it.

GFLOPs are the analytic count of `transformers_tempme.count_gflops` (the paper's convention: one multiply-add
is one FLOP), output tokens are clips x tokens per clip leaving the last block. Achieved GMAC/s (GFLOPs per video
times videos/s) is compared with the machine's fp32 matmul peak, measured in the same rounds by a probe: a
4096x768 @ 768x3072 matmul through `torch.mm` (MKL) and through oneDNN's linear, the faster of the two taken as
the peak. Besides wall-clock time, every step's process CPU time is recorded: on a machine shared with other jobs
a one-thread step's CPU time does not count the time it waited to be scheduled, so its ratios are the steadier.
Every record carries the CPU flags that decide the low-precision paths (`cpu_features`) and the load average.

    python benchmarks/benchmark.py --backbones vit-b-32,vit-b-16 --threads 2 --json outputs/benchmark.json
    python benchmarks/benchmark.py --backbones vit-b-32 --methods tempme --paths eager,fp32,bf16,int8,ort,ort-int8 \
        --authors-code ../TempMe --threads 1 --no-train
    python benchmarks/benchmark.py --backbones vit-b-32 --frames 64 --no-train
    python benchmarks/benchmark.py --backbones vit-b-32 --methods no-merge,tempme --paths compile,compile-bf16,fp32,bf16 \
        --authors-code ../TempMe --threads 1 --no-train
    python benchmarks/benchmark.py --backbones vit-b-16 --device cuda --dtype bfloat16 --batch 32 --paths compile

Prints a markdown table with the paper's figures beside ours and writes the records as JSON (and the table as
markdown with `--markdown PATH`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from transformers_tempme import PRESETS, TempMeCLIPModel, TempMeConfig, apply_lora, count_gflops
from transformers_tempme.analysis.accounting import token_schedule
from transformers_tempme.analysis.benchmark_records import load_average, load_script, machine_description
from transformers_tempme.inference import cpu_features, optimize_for_inference
from transformers_tempme.inference.cpu_features import RELEVANT_FLAGS
from transformers_tempme.inference.optimize import compile_vision_tower
from transformers_tempme.analysis.paper_figures import (
    PAPER_A100_VIDEOS_PER_S,
    PAPER_FULL_FINETUNING,
    PAPER_GFLOPS,
    PAPER_OUTPUT_TOKENS,
)

METHODS: tuple[str, ...] = ("no-merge", "tome", "tempme")
# How a model is run: as it is, prepared by optimize_for_inference, or exported to onnxruntime.
PATHS: tuple[str, ...] = ("eager", "compile", "compile-bf16", "fp32", "bf16", "int8", "ort", "ort-int8")
COMPILED_PATHS: tuple[str, ...] = ("compile", "compile-bf16")
ATTENTION_IMPLEMENTATIONS: tuple[str, ...] = ("eager", "sdpa", "flex_attention", "flash_attention_2")
AUTHORS = "authors"
PROBE_SHAPE = (4096, 768, 3072)  # rows x inner x columns of the peak probe: a ViT-B MLP matmul
PRESET_PREFIX = {"no-merge": "clip", "tome": "tome", "tempme": "tempme"}
DEFAULT_BATCH = {"vit-b-32": 8, "vit-b-16": 4}

def paper_reference(backbone: str, frames: int) -> dict[str, dict[str, float | str]]:
    """The paper's figures for each method at this backbone and frame count (from `paper_figures`): GFLOPs and
    output tokens (Table 1), A100 videos/s (Table 4) and full fine-tuning speed and memory (Table 5)."""
    reference = {}
    for method, prefix in PRESET_PREFIX.items():
        name = f"{prefix}-{backbone}" + ("" if frames == 12 else f"-{frames}f")
        figures: dict[str, float | str] = {}
        if name in PAPER_GFLOPS:
            figures["gflops"] = PAPER_GFLOPS[name]
        if name in PAPER_OUTPUT_TOKENS:
            clips, tokens = PAPER_OUTPUT_TOKENS[name]
            figures["output_tokens"] = f"{clips} x {tokens}"
        if name in PAPER_A100_VIDEOS_PER_S:
            figures["videos_per_s_a100"] = PAPER_A100_VIDEOS_PER_S[name]
        if name in PAPER_FULL_FINETUNING:
            figures["full_train_speedup"] = PAPER_FULL_FINETUNING[name]["train_speedup"]
            figures["full_train_memory_gb"] = PAPER_FULL_FINETUNING[name]["train_memory_gb"]
        if figures:
            reference[method] = figures
    return reference


# `--tiny`: the real token schedules (12 blocks, 224x224 frames, the presets' patch sizes) on very narrow layers.
# For tests of this script: everything runs, in seconds, but the figures mean nothing.
TINY_OVERRIDES = {
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2},
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1},
    "projection_dim": 16,
}
TEXT_LENGTH = 32  # words per caption, as the paper trains on MSR-VTT


@dataclass
class Record:
    """One (backbone, frames, method) row of the benchmark; `None` where a measurement was not taken."""

    method: str
    path: str
    backbone: str
    frames: int
    preset: str
    gflops: float
    output_tokens: int
    output_tokens_layout: str
    batch: int
    device: str
    dtype: str
    attn: str
    threads: int
    videos_per_s: float
    seconds_per_batch: float
    seconds_per_batch_all: list[float]
    cpu_seconds_per_batch: float | None = None
    cpu_seconds_per_batch_all: list[float] = field(default_factory=list)
    gmacs_per_s: float | None = None
    gmacs_per_cpu_s: float | None = None
    fraction_of_matmul_peak: float | None = None
    fraction_of_matmul_peak_cpu: float | None = None
    speedup_vs_no_merge: float | None = None
    speedup_per_round: list[float] = field(default_factory=list)
    speedup_vs_authors: float | None = None
    speedup_vs_authors_per_round: list[float] = field(default_factory=list)
    speedup_vs_authors_cpu: float | None = None
    compile_seconds: float | None = None
    cosine_to_fp32_min: float | None = None
    cosine_to_fp32_mean: float | None = None
    max_abs_diff_to_fp32: float | None = None
    train_batch: int | None = None
    lora_step_s: float | None = None
    lora_step_s_all: list[float] = field(default_factory=list)
    lora_speedup_vs_no_merge: float | None = None
    lora_peak_mb: float | None = None
    lora_peak_ratio_vs_no_merge: float | None = None
    lora_saved_activation_mb: float | None = None
    full_step_s: float | None = None
    full_step_s_all: list[float] = field(default_factory=list)
    full_speedup_vs_no_merge: float | None = None
    full_peak_mb: float | None = None
    full_peak_ratio_vs_no_merge: float | None = None
    full_saved_activation_mb: float | None = None
    memory_measure: str = ""
    paper: dict = field(default_factory=dict)
    machine: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------
# Models and inputs
# ---------------------------------------------------------------------------------------------------------------


def preset_name(method: str, backbone: str, frames: int) -> str:
    """The `TempMeConfig` preset of `method` on `backbone`; TempMe has its own preset for 64 frames."""
    name = f"{PRESET_PREFIX[method]}-{backbone}"
    if method == "tempme" and frames != 12:
        name = f"{name}-{frames}f"
        if name not in PRESETS:
            raise SystemExit(
                f"No TempMe preset for {backbone} at {frames} frames (presets: {', '.join(PRESETS)}). "
                f"Use --frames 12, or --frames 64 with --backbones vit-b-32."
            )
    return name


def build_config(method: str, backbone: str, frames: int, attn: str, tiny: bool) -> TempMeConfig:
    overrides = dict(TINY_OVERRIDES) if tiny else {}
    # The 12-frame presets of no-merge and ToMe have no clip schedule, so any frame count is only an override.
    overrides["num_frames"] = frames
    config = TempMeConfig.from_preset(preset_name(method, backbone, frames), **overrides)
    config._attn_implementation = attn
    return config


def build_model(config: TempMeConfig, device: torch.device, dtype: torch.dtype) -> TempMeCLIPModel:
    torch.manual_seed(0)
    return TempMeCLIPModel(config).to(device=device, dtype=dtype)


def random_inputs(
    config: TempMeConfig, batch: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel values `(batch, frames, 3, H, W)` and caption ids `(batch, TEXT_LENGTH)` ending in the EOS id."""
    generator = torch.Generator().manual_seed(0)
    size = config.vision_config.image_size
    pixel_values = torch.randn(batch, config.num_frames, 3, size, size, generator=generator)
    text = config.text_config
    words = torch.randint(1, text.vocab_size - 2, (batch, TEXT_LENGTH), generator=generator)
    words[:, -1] = text.vocab_size - 1  # CLIP pools at the largest id, the end-of-text token
    return pixel_values.to(device=device, dtype=dtype), words.to(device)


# ---------------------------------------------------------------------------------------------------------------
# Timing and memory
# ---------------------------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def process_cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (onnxruntime's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(function: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call, with the device's queue drained before and after."""
    synchronize(device)
    start, cpu_start = time.perf_counter(), process_cpu_seconds()
    function()
    synchronize(device)
    return time.perf_counter() - start, process_cpu_seconds() - cpu_start


def interleaved_medians(
    steps: dict[str, Callable[[], object]],
    device: torch.device,
    warmup: int,
    repeats: int,
    cpu_times: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Run every step once per round, `warmup + repeats` rounds; return each step's kept wall times (warm-up
    dropped), and fill `cpu_times` with the CPU times of the same calls when given."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(warmup + repeats):
        for name, step in steps.items():
            seconds, cpu_seconds = timed(step, device)
            kind = "warm-up" if round_index < warmup else "timed"
            print(
                f"  {name}: {kind} round {round_index + 1}, {seconds:.3f} s (CPU {cpu_seconds:.3f} s)",
                file=sys.stderr,
                flush=True,
            )
            if round_index >= warmup:
                times[name].append(seconds)
                if cpu_times is not None:
                    cpu_times.setdefault(name, []).append(cpu_seconds)
    return times


def _process_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_memory() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory of a block above what was held when it started, in MiB (`None` where it cannot be measured)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb: float | None = None

    @staticmethod
    def describe(device: torch.device) -> str:
        if device.type == "cuda":
            return "torch.cuda.max_memory_allocated during the step minus memory_allocated before it"
        return "rise of the process's peak resident set (VmHWM) over the step, after malloc_trim and a peak reset"

    def __enter__(self) -> "PeakMemory":
        _release_free_memory()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._start = None
            try:
                with open("/proc/self/clear_refs", "w") as clear_refs:
                    clear_refs.write("5")  # reset VmHWM to the current resident set
                self._start = _process_status_kb("VmRSS")
            except OSError:
                pass
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20
        elif self._start is not None:
            peak = _process_status_kb("VmHWM")
            self.peak_mb = None if peak is None else (peak - self._start) / 1024


def training_step(model: torch.nn.Module, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> Callable[[], None]:
    """Forward + backward of the contrastive loss; gradients are dropped afterwards (no optimiser state)."""

    def step() -> None:
        loss = model(input_ids=input_ids, pixel_values=pixel_values, return_loss=True).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def saved_activation_mb(model: torch.nn.Module, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> float:
    """MiB of activations autograd saves in one forward (weights excluded: they are not activations)."""
    parameters = {parameter.untyped_storage().data_ptr() for parameter in model.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(input_ids=input_ids, pixel_values=pixel_values, return_loss=True).loss
    del loss
    model.zero_grad(set_to_none=True)
    return sum(seen.values()) / 2**20


# ---------------------------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------------------------


def matmul_probe(device: torch.device, dtype: torch.dtype) -> dict[str, Callable[[], object]]:
    """Steps that time one `PROBE_SHAPE` matmul through `torch.mm` and, on a CPU with oneDNN, its linear."""
    rows, inner, columns = PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(rows, inner, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(inner, columns, generator=generator).to(device=device, dtype=dtype)
    steps = {"probe/torch.mm": lambda: torch.mm(a, b)}
    if device.type == "cpu" and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        weight = b.t().contiguous()
        steps["probe/onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(a, weight, None, "none", [], "")
    return steps


def probe_gmacs(times: dict[str, list[float]]) -> dict[str, float]:
    rows, inner, columns = PROBE_SHAPE
    return {
        name.removeprefix("probe/"): rows * inner * columns / statistics.median(values) / 1e9
        for name, values in times.items()
        if name.startswith("probe/")
    }


def inference_step(encode: Callable[[torch.Tensor], torch.Tensor], pixel_values: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            return encode(pixel_values)

    return run


def prepare_path(model: TempMeCLIPModel, path: str, work_dir: Path) -> Callable:
    """`pixel_values -> video_embeds` for `model` run along `path` (see `PATHS`)."""
    if path == "eager":
        return lambda pixel_values: model.encode_video(pixel_values).video_embeds
    if path == "compile":
        compiled = copy.deepcopy(model)
        compile_vision_tower(compiled)
        return lambda pixel_values: compiled.encode_video(pixel_values).video_embeds
    if path == "compile-bf16":
        fast = optimize_for_inference(model, "bf16", compile=True)
        return lambda pixel_values: fast.encode_video(pixel_values).video_embeds
    if path in ("fp32", "bf16", "int8"):
        fast = optimize_for_inference(model, path)
        return lambda pixel_values: fast.encode_video(pixel_values).video_embeds
    from transformers_tempme.inference.onnx_export import OnnxTempMe, export_onnx

    folder = work_dir / f"onnx-{model.config.num_frames}f-{id(model)}"
    if not (folder / "vision.onnx").exists():
        print(f"  exporting to ONNX in {folder} (minutes for ViT-B) ...", file=sys.stderr, flush=True)
        export_onnx(model, folder, quantize=True)
    session = OnnxTempMe(folder, int8=path == "ort-int8", threads=torch.get_num_threads())
    return lambda pixel_values: session.encode_video(pixel_values).video_embeds


def load_sibling(name: str):
    """The script `benchmarks/<name>.py` as a module (`load_script`)."""
    return load_script(Path(__file__).resolve().parent / f"{name}.py")


def prepare_authors(model: TempMeCLIPModel, args: argparse.Namespace, pixel_values: torch.Tensor):
    """The authors' code on `model`'s weights, after checking that it computes the same video features."""
    authors_code = load_sibling("authors_code")
    try:
        authors = authors_code.AuthorsTempMe(args.authors_code, model)
    except authors_code.AuthorsCodeError as error:
        print(f"warning: not running the authors' code: {error}", file=sys.stderr)
        return None
    with torch.inference_mode():
        ours = model.encode_video(pixel_values).video_embeds
        theirs = authors.encode_video(pixel_values)
    difference = float((ours - theirs).abs().max())
    print(f"  the authors' code computes our video features to {difference:.1e}", file=sys.stderr, flush=True)
    if difference > 1e-4:
        raise SystemExit(f"The authors' code and ours disagree by {difference:.2e} on the same weights: not timing it.")
    return authors.encode_video


def benchmark_backbone(backbone: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> list[Record]:
    frames, batch = args.frames, args.batch or DEFAULT_BATCH[backbone]
    configs = {method: build_config(method, backbone, frames, args.attn, args.tiny) for method in args.methods}
    machine = {
        **machine_description(device),
        "threads": torch.get_num_threads(),
        "cpu_features": cpu_features() if device.type == "cpu" else {},
        "load_average_before": load_average(),
    }
    paper = paper_reference(backbone, frames)

    # Inference: all models and paths live at once and take turns, forward by forward, with the matmul probe.
    models = {method: build_model(config, device, dtype).eval() for method, config in configs.items()}
    inputs = {method: random_inputs(config, batch, device, dtype) for method, config in configs.items()}
    encoders: dict[tuple[str, str], Callable] = {}
    with tempfile.TemporaryDirectory(prefix="tempme-bench-") as work_dir:
        compile_seconds: dict[tuple[str, str], float] = {}
        for method, model in models.items():
            paths = args.paths if method in args.path_methods else ["eager"]
            for path in dict.fromkeys(["eager", *paths]):
                encoders[method, path] = prepare_path(model, path, Path(work_dir))
                if path in COMPILED_PATHS:
                    print(f"  compiling {method}/{path} ...", file=sys.stderr, flush=True)
                    compile_seconds[method, path] = timed(inference_step(encoders[method, path], inputs[method][0]), device)[0]
        if args.authors_code is not None:
            if "tempme" in models and not args.tiny:
                authors = prepare_authors(models["tempme"], args, inputs["tempme"][0])
                if authors is not None:
                    encoders["tempme", AUTHORS] = authors
            else:
                print("warning: the authors' code runs TempMe at ViT-B shapes only: skipped", file=sys.stderr)

        print(f"{backbone}, {frames} frames: inference, batch {batch}", file=sys.stderr, flush=True)
        steps = {f"{method}/{path}": inference_step(encode, inputs[method][0]) for (method, path), encode in encoders.items()}
        steps.update(matmul_probe(device, dtype))
        cpu_times: dict[str, list[float]] = {}
        times = interleaved_medians(steps, device, args.warmup, args.repeats, cpu_times)
        embeddings = {key: inference_step(encode, inputs[key[0]][0])() for key, encode in encoders.items()}
    del models, encoders
    _release_free_memory()
    machine["matmul_probe_gmacs_per_s"] = probe_gmacs(times)
    machine["matmul_probe_gmacs_per_cpu_s"] = probe_gmacs(cpu_times)

    records: list[Record] = []
    for method, path in embeddings:
        config, name = configs[method], f"{method}/{path}"
        seconds = statistics.median(times[name])
        clips, tokens = token_schedule(config)[-1]
        record = Record(
            method=method,
            path=path,
            backbone=backbone,
            frames=frames,
            preset=preset_name(method, backbone, frames) + (" (tiny widths)" if args.tiny else ""),
            gflops=round(count_gflops(config), 2),
            output_tokens=clips * tokens,
            output_tokens_layout=f"{clips} x {tokens}",
            batch=batch,
            device=str(device),
            dtype=args.dtype,
            attn=args.attn,
            threads=torch.get_num_threads(),
            videos_per_s=batch / seconds,
            seconds_per_batch=seconds,
            seconds_per_batch_all=[round(t, 4) for t in times[name]],
            cpu_seconds_per_batch=statistics.median(cpu_times[name]),
            cpu_seconds_per_batch_all=[round(t, 4) for t in cpu_times[name]],
            memory_measure=PeakMemory.describe(device),
            compile_seconds=compile_seconds.get((method, path)),
            paper=paper.get(method, {}),
            machine=machine,
        )
        add_efficiency(record, machine)
        reference, ours = embeddings[method, "eager"].float(), embeddings[method, path].float()
        cosine = F.cosine_similarity(ours, reference, dim=-1)
        record.cosine_to_fp32_min, record.cosine_to_fp32_mean = float(cosine.min()), float(cosine.mean())
        record.max_abs_diff_to_fp32 = float((ours - reference).abs().max())
        records.append(record)

    eager = {record.method: record for record in records if record.path == "eager"}
    if not args.no_train:
        for mode in ("lora", "full"):
            measure_training(mode, configs, eager, args, device, dtype)

    baseline = eager.get("no-merge")
    authors = next((record for record in records if record.path == AUTHORS), None)
    for record in records:
        record.machine = {**record.machine, "load_average_after": load_average()}
        if authors is not None:
            record.speedup_vs_authors = authors.seconds_per_batch / record.seconds_per_batch
            record.speedup_vs_authors_cpu = authors.cpu_seconds_per_batch / record.cpu_seconds_per_batch
            record.speedup_vs_authors_per_round = per_round_ratios(authors, record)
        if baseline is None:
            continue
        record.speedup_vs_no_merge = record.videos_per_s / baseline.videos_per_s
        # Within a round the methods ran back to back under nearly the same load: a check on the ratio of medians.
        record.speedup_per_round = per_round_ratios(baseline, record)
        for mode in ("lora", "full"):
            step, base_step = getattr(record, f"{mode}_step_s"), getattr(baseline, f"{mode}_step_s")
            if step is not None and base_step is not None:
                setattr(record, f"{mode}_speedup_vs_no_merge", base_step / step)
            peak, base_peak = getattr(record, f"{mode}_peak_mb"), getattr(baseline, f"{mode}_peak_mb")
            if peak is not None and base_peak:
                setattr(record, f"{mode}_peak_ratio_vs_no_merge", peak / base_peak)
    return records


def per_round_ratios(reference: Record, record: Record) -> list[float]:
    return [round(base / ours, 3) for base, ours in zip(reference.seconds_per_batch_all, record.seconds_per_batch_all)]


def add_efficiency(record: Record, machine: dict) -> None:
    """Achieved GMAC/s (the FLOP count per video is in multiply-adds) and its fraction of the probe's peak."""
    record.gmacs_per_s = record.gflops * record.videos_per_s
    record.gmacs_per_cpu_s = record.gflops * record.batch / record.cpu_seconds_per_batch
    peak, peak_cpu = machine["matmul_probe_gmacs_per_s"], machine["matmul_probe_gmacs_per_cpu_s"]
    if peak:
        record.fraction_of_matmul_peak = record.gmacs_per_s / max(peak.values())
    if peak_cpu:
        record.fraction_of_matmul_peak_cpu = record.gmacs_per_cpu_s / max(peak_cpu.values())


def measure_training(
    mode: str,
    configs: dict[str, TempMeConfig],
    records: dict[str, Record],
    args: argparse.Namespace,
    device: torch.device,
    dtype: torch.dtype,
) -> None:
    """LoRA (`mode="lora"`) or full fine-tuning step times and peak memory, the methods interleaved."""
    models, steps = {}, {}
    for method, config in configs.items():
        model = build_model(config, device, dtype).train()
        if mode == "lora":
            model = apply_lora(model)
        models[method] = model
        pixel_values, input_ids = random_inputs(config, args.train_batch, device, dtype)
        steps[method] = training_step(model, pixel_values, input_ids)
        records[method].train_batch = args.train_batch
        saved = saved_activation_mb(model, pixel_values, input_ids)
        setattr(records[method], f"{mode}_saved_activation_mb", round(saved, 2))

    print(f"{mode} training steps, batch {args.train_batch}", file=sys.stderr, flush=True)
    times = interleaved_medians(steps, device, args.warmup, args.train_repeats)
    for method, step in steps.items():
        with PeakMemory(device) as memory:
            step()
        record = records[method]
        setattr(record, f"{mode}_step_s", statistics.median(times[method]))
        setattr(record, f"{mode}_step_s_all", [round(t, 4) for t in times[method]])
        setattr(record, f"{mode}_peak_mb", None if memory.peak_mb is None else round(memory.peak_mb, 1))
    del models, steps
    _release_free_memory()


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------


def _format(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else 100 * fraction


def paper_ratio(record: Record, key: str) -> float | None:
    """The paper's figure for `record.method` over its no-merge figure, where the paper has both."""
    reference = paper_reference(record.backbone, record.frames)
    ours, base = reference.get(record.method, {}).get(key), reference.get("no-merge", {}).get(key)
    return None if ours is None or base is None else ours / base


def markdown_table(records: list[Record]) -> str:
    """Inference rows, then training rows where measured, ours beside the paper's (its throughput is an A100's)."""
    lines = [
        "| backbone | frames | method | path | output tokens (paper) | GFLOPs (paper) | videos/s | speed-up (paper) "
        "| vs authors (CPU time) | GMAC/s (of peak; CPU time) | cosine to fp32 min / mean |",
        "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        paper = r.paper
        lines.append(
            f"| {r.backbone} | {r.frames} | {r.method} | {r.path} "
            f"| {r.output_tokens_layout} ({paper.get('output_tokens', '—')}) "
            f"| {r.gflops:.1f} ({_format(paper.get('gflops'), '.1f')}) | {r.videos_per_s:.3f} "
            f"| {_format(r.speedup_vs_no_merge, '.2f', 'x')} "
            f"({_format(paper_ratio(r, 'videos_per_s_a100'), '.2f', 'x')}) "
            f"| {_format(r.speedup_vs_authors, '.2f', 'x')} ({_format(r.speedup_vs_authors_cpu, '.2f', 'x')}) "
            f"| {_format(r.gmacs_per_s, '.1f')} ({_format(_percent(r.fraction_of_matmul_peak), '.0f', '%')}; "
            f"{_format(_percent(r.fraction_of_matmul_peak_cpu), '.0f', '%')}) "
            f"| {_format(r.cosine_to_fp32_min, '.5f')} / {_format(r.cosine_to_fp32_mean, '.5f')} |"
        )
    records = [r for r in records if r.path == "eager"]
    if not any(r.lora_step_s is not None or r.full_step_s is not None for r in records):
        return "\n".join(lines)
    lines += [
        "",
        "| backbone | method | LoRA step s | LoRA speed-up | LoRA peak MiB (ratio) | LoRA saved activations MiB "
        "| full step s | full speed-up (paper) | full peak MiB (ratio; paper) | full saved activations MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        lines.append(
            f"| {r.backbone} | {r.method} | {_format(r.lora_step_s)} | {_format(r.lora_speedup_vs_no_merge, '.2f', 'x')} "
            f"| {_format(r.lora_peak_mb, '.0f')} ({_format(r.lora_peak_ratio_vs_no_merge)}) "
            f"| {_format(r.lora_saved_activation_mb, '.0f')} "
            f"| {_format(r.full_step_s)} | {_format(r.full_speedup_vs_no_merge, '.2f', 'x')} "
            f"({_format(r.paper.get('full_train_speedup'), '.2f', 'x')}) "
            f"| {_format(r.full_peak_mb, '.0f')} ({_format(r.full_peak_ratio_vs_no_merge)}; "
            f"{_format(paper_ratio(r, 'full_train_memory_gb'))}) | {_format(r.full_saved_activation_mb, '.0f')} |"
        )
    return "\n".join(lines)


def report(records: list[Record], command: str) -> str:
    first = records[0]
    machine = first.machine
    where = f"{machine['cpu']} ({machine['cpu_count']} cores)"
    if machine.get("gpu"):
        where = (f"{machine['gpu']} (driver {machine.get('driver') or 'unknown'}, CUDA {machine.get('cuda')}, cuDNN "
                 f"{machine.get('cudnn')}) on {where}")
    loads = []
    for record in records:
        for load in (record.machine.get("load_average_before"), record.machine.get("load_average_after")):
            if load and load not in loads:
                loads.append(load)
    header = (
        f"`{command}`\n\n{where}, {first.threads} threads, torch {machine['torch']}, {first.dtype}, attention "
        f"{first.attn}, inference batch {', '.join(sorted({f'{r.backbone}: {r.batch}' for r in records}))}, "
        f"training batch {first.train_batch or '—'}; load average (1, 5, 15 min) during the run: "
        f"{', '.join(str(load) for load in loads if load)}.\n\n"
        "Speed-ups and memory ratios are against no-merge in the same run. The paper's videos/s are an A100's "
        "(Table 4); its full fine-tuning speed-up and memory ratio are Table 5's. Peak memory: "
        f"{first.memory_measure}.\n"
    )
    features = machine.get("cpu_features") or {}
    if features:
        header += (
            f"\nCPU flags: {' '.join(features['flags']) or 'none of ' + ', '.join(RELEVANT_FLAGS)}; torch CPU capability "
            f"{features['torch_cpu_capability']}; oneDNN native bf16: {features['onednn_bf16']}.\n"
        )
    rows, inner, columns = PROBE_SHAPE
    for backbone in dict.fromkeys(record.backbone for record in records):
        machine = next(record.machine for record in records if record.backbone == backbone)
        probe, probe_cpu = machine.get("matmul_probe_gmacs_per_s"), machine.get("matmul_probe_gmacs_per_cpu_s", {})
        if probe:
            header += (
                f"{backbone} run: fp32 matmul peak ({rows}x{inner} @ {inner}x{columns}, median over the rounds) "
                + ", ".join(f"{name} {value:.1f} GMAC/s ({probe_cpu.get(name, 0):.1f} per CPU second)" for name, value in probe.items())
                + ".\n"
            )
    header += (
        "\nGMAC/s: GFLOPs per video (multiply-adds) times videos/s, as a share of the faster probe (wall clock; CPU "
        "time). Cosine: every video embedding of the row against the same model's eager float32 one. vs authors: "
        "speed-up over the authors' code on the same weights and inputs, wall clock (CPU time).\n"
    )
    return header + "\n" + markdown_table(records) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="vit-b-32,vit-b-16", help="comma-separated: vit-b-32, vit-b-16")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated: no-merge, tome, tempme")
    parser.add_argument("--frames", type=int, default=12, help="frames per video: 12, or 64 (ViT-B/32 only)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--attn", default="sdpa", choices=ATTENTION_IMPLEMENTATIONS, help="attention implementation")
    parser.add_argument("--batch", type=int, default=None, help="videos per forward (default: 8 for B/32, 4 for B/16)")
    parser.add_argument("--train-batch", type=int, default=2, help="videos (and captions) per training step")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=5, help="timed inference rounds (median kept)")
    parser.add_argument("--train-repeats", type=int, default=2, help="timed training rounds (median kept)")
    parser.add_argument("--warmup", type=int, default=1, help="rounds run first and discarded")
    parser.add_argument("--no-train", action="store_true", help="inference only")
    parser.add_argument(
        "--paths",
        default="eager",
        help=f"comma-separated inference paths beside eager for --path-methods: {', '.join(PATHS)}",
    )
    parser.add_argument("--path-methods", default="tempme", help="methods the --paths apply to (comma-separated)")
    parser.add_argument(
        "--authors-code", type=Path, default=None, help="a checkout of the authors' TempMe code to time beside ours"
    )
    parser.add_argument("--tiny", action="store_true", help="narrow layers, real token schedules: for tests")
    parser.add_argument("--json", type=Path, default=None, help="write the records here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the table here")
    args = parser.parse_args(argv)
    args.backbones = [name.strip() for name in args.backbones.split(",") if name.strip()]
    args.methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    args.paths = [name.strip() for name in args.paths.split(",") if name.strip()]
    args.path_methods = [name.strip() for name in args.path_methods.split(",") if name.strip()]
    for path in args.paths:
        if path not in PATHS:
            parser.error(f"unknown path {path!r}: choose from {', '.join(PATHS)}")
    for backbone in args.backbones:
        if backbone not in DEFAULT_BATCH:
            parser.error(f"unknown backbone {backbone!r}: choose from {', '.join(DEFAULT_BATCH)}")
    for method in args.methods:
        if method not in METHODS:
            parser.error(f"unknown method {method!r}: choose from {', '.join(METHODS)}")
    if args.repeats < 1 or args.train_repeats < 1 or args.warmup < 0:
        parser.error("--repeats and --train-repeats must be at least 1, --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> list[Record]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but torch sees no CUDA device. Use --device cpu.")
    dtype = getattr(torch, args.dtype)
    if device.type == "cpu" and dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        print(
            "warning: this CPU has no native bfloat16 matmuls (oneDNN reports no bf16 support), so bfloat16 runs "
            "through a slow fallback and is far slower than float32 here.",
            file=sys.stderr,
        )

    records = []
    for backbone in args.backbones:
        records.extend(benchmark_backbone(backbone, args, device, dtype))

    command = "python benchmarks/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv)
    publish(report(records, command.strip()), [asdict(record) for record in records], args.markdown, args.json)
    return records


def publish(text: str, records: object, markdown: Path | None, json_path: Path | None) -> None:
    """Print the report and write it (markdown) and the records (JSON) where asked."""
    print(text)
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(text)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(records, indent=2) + "\n")


if __name__ == "__main__":
    main()
