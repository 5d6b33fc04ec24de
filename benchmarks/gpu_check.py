"""The GPU check: correctness and speed of TempMe on one GPU, in one run of a few minutes, written down as records.

Four parts, each with a time budget (`--budget-*`, seconds; work that would start after its part's budget is spent is
skipped and listed as skipped in the records, never silently left out):

- tests: `python -m pytest -m cuda tests/test_cuda.py` (CPU and CUDA agree, every attention implementation, SDPA's
  flash kernel under merging, half-precision bounds, the compiled tower, a training step, the indexer on CUDA);
- inference: videos/s of `encode_video` for ViT-B/32 and B/16 (random weights at the real shapes), no-merge / ToMe /
  TempMe, at each `--dtypes` and `--batches` (the methods interleaved forward by forward), the attention kernels the
  profiler saw, TempMe with its per-key bias as a float mask beside the default (folded: SDPA keeps its flash kernel),
  and the vision tower compiled whole (inductor, `fullgraph=True`) beside eager at the largest batch, compile time
  recorded;
- training: forward + backward + AdamW step under autocast at the first `--dtypes` (float32 master weights, as
  `tempme train --bf16`), LoRA and full fine-tuning, step time and peak GPU memory of each method against no-merge (the
  paper's Table 5 columns), the methods interleaved step by step;
- indexing: `VideoSearchIndex.build` on generated 1280x720 h264 videos, end to end (decode + encode) with 0, 4, 8
  DataLoader workers, beside the decode time alone and the encode time alone (the decode share).

Every record carries the GPU (name, memory, compute capability), the NVIDIA driver, CUDA, cuDNN and torch versions and
the CPU. Records go to `--out` (default `docs/records/gpu/`): `gpu-check-<gpu>-<UTC time>.json` and `.md`, and the
pytest log and timing log beside them. Nothing here reaches the network.

    benchmarks/gpu_check.sh                                   # on a GPU machine: everything, about 7 minutes on an H100
    benchmarks/gpu_check.sh --out "$OUT" --parts inference    # one part
    python benchmarks/gpu_check.py --dry-run                  # the whole script on a CPU at tiny sizes (minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ElementTree
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent

from transformers_tempme import TempMeCLIPModel, apply_lora, count_gflops
from transformers_tempme.analysis.accounting import token_schedule
from transformers_tempme.analysis.benchmark_records import load_script, machine_description
from transformers_tempme.analysis.paper_figures import PAPER_A100_VIDEOS_PER_S, PAPER_FULL_FINETUNING
from transformers_tempme.inference.optimize import compile_vision_tower
from transformers_tempme.modeling_tempme import TempMeVisionAttention



benchmark = load_script(BENCHMARKS / "benchmark.py")

PARTS = ("tests", "inference", "training", "indexing")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# The targets, checked against this run's figures (see `targets`).
TARGET_INFERENCE_SPEEDUP = 1.6  # TempMe / no-merge, ViT-B/16, 12 frames, bf16 (paper: 45.1 / 30.6 = 1.47)
TARGET_VIDEOS_PER_S_VS_A100 = 3.0  # TempMe videos/s over the paper's A100 45.1 (ViT-B/16)
TARGET_TRAIN_SPEEDUP = 1.6  # TempMe / no-merge training step (paper 1.57 for full fine-tuning)
TARGET_TRAIN_MEMORY = 0.75  # TempMe's peak memory over no-merge's at most (paper 52.7 / 70.1 = 0.752)
# Which attention kernel ran, by words in the names of the CUDA kernels the profiler saw.
KERNEL_FAMILIES = {"flash": ("flash",), "memory-efficient": ("fmha", "efficient", "mem_eff"), "cudnn": ("cudnn_",),
                   "math (bmm + softmax)": ("softmax",)}


# ---------------------------------------------------------------------------------------------------------------
# Budgets and the record
# ---------------------------------------------------------------------------------------------------------------


class Budget:
    """Seconds a part may spend. `allows(what, need)` says whether a piece of work expected to take `need` seconds may
    start (it must end within the budget), and notes it as skipped if not."""

    def __init__(self, part: str, seconds: float, skipped: list[dict]):
        self.part, self.seconds, self.skipped = part, seconds, skipped
        self.start = time.perf_counter()

    def spent(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, what: str, need: float = 0.0) -> bool:
        if self.spent() + need <= self.seconds:
            return True
        reason = f"{self.spent():.0f} s of the part's {self.seconds:.0f} s spent, about {need:.0f} s needed"
        self.skipped.append({"part": self.part, "what": what, "reason": reason})
        log(f"  skipped ({reason}): {what}")
        return False


@dataclass
class Check:
    """Everything one run of the check records."""

    command: str
    started_utc: str
    machine: dict
    settings: dict
    seconds: dict[str, float] = field(default_factory=dict)
    tests: dict = field(default_factory=dict)
    inference: list[dict] = field(default_factory=list)
    training: list[dict] = field(default_factory=list)
    indexing: dict = field(default_factory=dict)
    targets: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def log(message: str) -> None:
    print(message, flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe_machine(device: torch.device) -> dict:
    """`machine_description` (GPU name, memory, capability, driver, CUDA, cuDNN; CPU; torch) and more."""
    import transformers

    description = {**machine_description(device), "transformers": transformers.__version__,
                   "platform": platform.platform(), "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        description["flash_attn"] = _version("flash_attn")
        description["triton"] = _version("triton")
    return description


def _version(module: str) -> str | None:
    with contextlib.suppress(Exception):
        return __import__(module).__version__
    return None


# ---------------------------------------------------------------------------------------------------------------
# (a) the cuda tests
# ---------------------------------------------------------------------------------------------------------------


def run_tests(args: argparse.Namespace, check: Check, out: Path) -> None:
    """`pytest -m cuda tests/test_cuda.py` in a subprocess limited to the part's budget; counts and reasons from its
    JUnit XML."""
    junit = out / "cuda-tests.xml"
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-v", "-rs", "-p", "no:cacheprovider",
               f"--junitxml={junit}", str(ROOT / "tests" / "test_cuda.py"), *args.pytest_args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    try:
        completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                   timeout=args.budget_tests)
        output, returncode, timed_out = completed.stdout + completed.stderr, completed.returncode, False
    except subprocess.TimeoutExpired as expired:
        output = (expired.stdout or b"").decode(errors="replace") if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        returncode, timed_out = None, True
    (out / "cuda-tests.log").write_text(output)
    # pytest writes its JUnit XML at the end: a run stopped at the budget is counted from its verbose log instead.
    summary = junit_summary(junit) if junit.exists() and not timed_out else log_summary(output)
    check.tests = {"command": " ".join(command[1:]), "returncode": returncode, "timed_out": timed_out,
                   "seconds": round(time.perf_counter() - start, 1), **summary}
    summary = check.tests
    log(f"  tests: {summary.get('passed', 0)} passed, {summary.get('failed', 0)} failed, {summary.get('skipped', 0)} "
        f"skipped{' (timed out)' if timed_out else ''}")


def log_summary(output: str) -> dict:
    """`junit_summary` from `pytest -v` lines (`tests/test_cuda.py::name PASSED`), for a run that did not finish."""
    outcomes = re.findall(r"^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR)", output, flags=re.MULTILINE)
    failures = [{"test": name, "message": "see cuda-tests.log"} for name, outcome in outcomes if outcome in ("FAILED", "ERROR")]
    skips = [{"test": name, "reason": "see cuda-tests.log"} for name, outcome in outcomes if outcome == "SKIPPED"]
    passed = sum(outcome == "PASSED" for _, outcome in outcomes)
    return {"passed": passed, "failed": len(failures), "skipped": len(skips), "failures": failures, "skips": skips}


def junit_summary(path: Path) -> dict:
    """Passed / failed / skipped counts, and each failure's and skip's test and message, from a JUnit XML file."""
    root = ElementTree.parse(path).getroot()
    failures, skips, passed = [], [], 0
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        skip = case.find("skipped")
        if problem is not None:
            failures.append({"test": name, "message": (problem.get("message") or "")[:500]})
        elif skip is not None:
            skips.append({"test": name, "reason": (skip.get("message") or "")[:200]})
        else:
            passed += 1
    return {"passed": passed, "failed": len(failures), "skipped": len(skips), "failures": failures, "skips": skips}


# ---------------------------------------------------------------------------------------------------------------
# (b) inference
# ---------------------------------------------------------------------------------------------------------------


def attention_kernels(encode, pixel_values: torch.Tensor, device: torch.device) -> dict[str, list[str]]:
    """The attention kernels one forward launched, by family (see `KERNEL_FAMILIES`), from the profiler."""
    if device.type != "cuda":
        return {}
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as profiler:
        encode(pixel_values)
        synchronize(device)
    names = sorted({event.key for event in profiler.key_averages()})
    found = {}
    for family, words in KERNEL_FAMILIES.items():
        matching = [name[:120] for name in names if any(word in name.lower() for word in words)]
        if matching:
            found[family] = matching[:4]
    return found


def set_key_bias_route(model: torch.nn.Module, route: str | None) -> None:
    for module in model.modules():
        if isinstance(module, TempMeVisionAttention):
            module.key_bias_route = route


def measure_inference(args: argparse.Namespace, check: Check, device: torch.device, out: Path) -> None:
    """Eager at every backbone, dtype and batch first (the methods interleaved), then the compiled towers in
    `compile_order` while the budget lasts."""
    budget = Budget("inference", args.budget_inference, check.skipped)
    timing_log = out / "timing.log"
    configs, base = {}, {}
    for backbone in args.backbones:
        configs[backbone] = {m: benchmark.build_config(m, backbone, 12, "sdpa", args.tiny) for m in args.methods}
        base[backbone] = {m: benchmark.build_model(c, device, torch.float32).eval() for m, c in configs[backbone].items()}
        for dtype_name in args.dtypes:
            dtype = DTYPES[dtype_name]
            models = {method: copy.deepcopy(model).to(dtype) for method, model in base[backbone].items()}
            masked = None
            if "tempme" in models:  # TempMe with its per-key bias passed as a float mask, for comparison
                masked = copy.deepcopy(models["tempme"])
                set_key_bias_route(masked, "mask")
            for batch in args.batches:
                if not budget.allows(f"{backbone} {dtype_name} batch {batch}", need=args.group_seconds):
                    continue
                inputs = {m: benchmark.random_inputs(c, batch, device, dtype)[0] for m, c in configs[backbone].items()}
                paths = {(method, "eager"): encoder_of(model) for method, model in models.items()}
                if masked is not None:
                    paths["tempme", "eager, bias as mask"] = encoder_of(masked)
                rows = time_paths(paths, inputs, configs[backbone], device, args, timing_log)
                for (method, path), row in rows.items():
                    row.update(backbone=backbone, dtype=dtype_name, batch=batch, method=method, path=path,
                               preset=preset_label(method, backbone, args.tiny))
                    if path == "eager":
                        row["attention_kernels"] = attention_kernels(paths[method, path], inputs[method], device)
                        row["peak_memory_mib"] = peak_memory_mib(paths[method, path], inputs[method], device)
                add_ratios(rows)
                check.inference.extend(rows.values())
                log_rows(rows.values())
            del models, masked
            release_memory(device)
    for backbone, method, dtype_name in compile_order(args):
        what = f"{backbone} {method} {dtype_name} compiled, batch {max(args.batches)}"
        if budget.allows(what, need=args.compile_seconds):
            model, config = base[backbone][method], configs[backbone][method]
            compile_and_time(args, check, device, config, model, (backbone, method, dtype_name), timing_log)
    del base
    release_memory(device)


def compile_order(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(backbone, method, dtype) to compile, the headline first: TempMe and no-merge on each backbone, then ToMe."""
    methods = [m for m in ("tempme", "no-merge", "tome") if m in args.methods]
    order = [(b, m, d) for d in args.compile_dtypes for m in methods[:2] for b in args.backbones]
    return order + [(b, m, d) for d in args.compile_dtypes for m in methods[2:] for b in args.backbones]


def preset_label(method: str, backbone: str, tiny: bool) -> str:
    return benchmark.preset_name(method, backbone, 12) + (" (tiny widths)" if tiny else "")


def compile_and_time(args, check: Check, device: torch.device, config, base_model, case: tuple[str, str, str],
                     timing_log: Path) -> None:
    """One method's vision tower compiled whole, timed beside the same model eager at the largest batch."""
    backbone, method, dtype_name = case
    batch, dtype = max(args.batches), DTYPES[dtype_name]
    what = f"{backbone} {method} {dtype_name}, batch {batch}"
    model = copy.deepcopy(base_model).to(dtype)
    compiled = copy.deepcopy(model)
    compile_kwargs = {"backend": args.compile_backend, **({"mode": args.compile_mode} if args.compile_mode else {})}
    compile_vision_tower(compiled, None, **compile_kwargs)
    pixel_values = benchmark.random_inputs(config, batch, device, dtype)[0]
    log(f"  compiling {what} ...")
    try:
        compile_seconds = benchmark.timed(benchmark.inference_step(encoder_of(compiled), pixel_values), device)[0]
    except Exception as error:  # noqa: BLE001 (a compile failure is a finding, recorded)
        check.errors[f"compile {what}"] = f"{type(error).__name__}: {error}"[:2000]
        log(f"  compile failed: {type(error).__name__}: {str(error)[:300]}")
        return
    paths = {(method, "eager"): encoder_of(model), (method, "compiled"): encoder_of(compiled)}
    rows = time_paths(paths, {method: pixel_values}, {method: config}, device, args, timing_log)
    for (m, path), row in rows.items():
        row.update(backbone=backbone, dtype=dtype_name, batch=batch, method=m, path=path,
                   preset=preset_label(m, backbone, args.tiny), compile_backend=args.compile_backend,
                   compile_mode=args.compile_mode,
                   speedup_vs_eager=round(row["videos_per_s"] / rows[method, "eager"]["videos_per_s"], 3))
    rows[method, "compiled"]["compile_seconds"] = round(compile_seconds, 1)
    check.inference.extend(rows.values())
    log_rows(rows.values())


def release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def encoder_of(model: TempMeCLIPModel):
    return lambda pixel_values: model.encode_video(pixel_values).video_embeds


def time_paths(paths: dict, inputs: dict, configs: dict, device: torch.device, args, timing_log: Path) -> dict:
    """Interleaved median times of every path (`benchmark.interleaved_medians`), its per-round log appended to
    `timing_log`; videos/s, GFLOPs and the cosine of every path's embeddings to its method's eager ones."""
    steps = {f"{method}/{path}": benchmark.inference_step(encode, inputs[method]) for (method, path), encode in paths.items()}
    with timing_log.open("a") as stream, contextlib.redirect_stderr(stream):
        times = benchmark.interleaved_medians(steps, device, args.warmup, args.repeats)
    with torch.inference_mode():
        embeddings = {key: encode(inputs[key[0]]).float() for key, encode in paths.items()}
    rows = {}
    for (method, path), encode in paths.items():
        seconds = statistics.median(times[f"{method}/{path}"])
        batch = inputs[method].shape[0]
        clips, tokens = token_schedule(configs[method])[-1]
        reference = embeddings.get((method, "eager"), embeddings[method, path])
        rows[method, path] = {
            "videos_per_s": round(batch / seconds, 2),
            "seconds_per_batch": round(seconds, 5),
            "seconds_per_batch_all": [round(t, 5) for t in times[f"{method}/{path}"]],
            "gflops_per_video": round(count_gflops(configs[method]), 2),
            "output_tokens": f"{clips} x {tokens}",
            "cosine_to_eager_min": round(float(F.cosine_similarity(embeddings[method, path], reference).min()), 6),
        }
    return rows


def peak_memory_mib(encode, pixel_values: torch.Tensor, device: torch.device) -> float | None:
    with torch.inference_mode(), benchmark.PeakMemory(device) as memory:
        encode(pixel_values)
    return None if memory.peak_mb is None else round(memory.peak_mb, 1)


def add_ratios(rows: dict) -> None:
    """Each row's speed-up over no-merge eager of the same group, and the paper's A100 figure where it has one."""
    base = rows.get(("no-merge", "eager"))
    for (method, _), row in rows.items():
        if base is not None:
            row["speedup_vs_no_merge"] = round(row["videos_per_s"] / base["videos_per_s"], 3)
        row["paper_a100_videos_per_s"] = PAPER_A100_VIDEOS_PER_S.get(benchmark.preset_name(method, row["backbone"], 12))


def log_rows(rows) -> None:
    for row in rows:
        log(f"  {row['backbone']} {row['dtype']} batch {row['batch']} {row['method']:8} {row['path']:22} "
            f"{row['videos_per_s']:9.2f} videos/s" + (f"  x{row['speedup_vs_no_merge']:.2f} vs no-merge"
                                                       if "speedup_vs_no_merge" in row else "")
            + (f"  x{row['speedup_vs_eager']:.2f} vs eager" if "speedup_vs_eager" in row else ""))


# ---------------------------------------------------------------------------------------------------------------
# (c) training
# ---------------------------------------------------------------------------------------------------------------


def training_step(model, optimizer, pixel_values, input_ids, device: torch.device, dtype: torch.dtype):
    """One step as `tempme train --bf16` takes it: autocast forward, backward (scaled for float16), AdamW."""
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(input_ids=input_ids, pixel_values=pixel_values, return_loss=True).loss
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return step


def measure_training(args: argparse.Namespace, check: Check, device: torch.device, out: Path) -> None:
    budget = Budget("training", args.budget_training, check.skipped)
    dtype_name = args.dtypes[0]
    dtype = DTYPES[dtype_name]
    for backbone in args.train_backbones:
        configs = {method: benchmark.build_config(method, backbone, 12, "sdpa", args.tiny) for method in args.methods}
        for mode in args.train_modes:
            if not budget.allows(f"{backbone} {mode} training", need=args.train_seconds):
                continue
            steps, rows = {}, {}
            for method, config in configs.items():
                model = benchmark.build_model(config, device, torch.float32).train()
                if mode == "lora":
                    model = apply_lora(model)
                trainable = [p for p in model.parameters() if p.requires_grad]
                optimizer = torch.optim.AdamW(trainable, lr=1e-5, **({"fused": True} if device.type == "cuda" else {}))
                pixel_values, input_ids = benchmark.random_inputs(config, args.train_batch, device, torch.float32)
                step = training_step(model, optimizer, pixel_values, input_ids, device, dtype)
                step()  # optimizer state allocated, kernels chosen
                rows[method] = {"backbone": backbone, "mode": mode, "method": method, "dtype": dtype_name,
                                "batch": args.train_batch, "trainable_parameters": sum(p.numel() for p in trainable),
                                **training_memory(step, device)}
                steps[method] = step
            with (out / "timing.log").open("a") as stream, contextlib.redirect_stderr(stream):
                times = benchmark.interleaved_medians(steps, device, args.train_warmup, args.train_repeats)
            for method, row in rows.items():
                row["step_s"] = round(statistics.median(times[method]), 4)
                row["step_s_all"] = [round(t, 4) for t in times[method]]
                row["videos_per_s"] = round(args.train_batch / row["step_s"], 2)
            base = rows.get("no-merge")
            for method, row in rows.items():
                if base is not None:
                    row["speedup_vs_no_merge"] = round(base["step_s"] / row["step_s"], 3)
                    if base.get("peak_memory_mib"):
                        row["peak_memory_ratio_vs_no_merge"] = round(row["peak_memory_mib"] / base["peak_memory_mib"], 3)
                paper = PAPER_FULL_FINETUNING.get(benchmark.preset_name(method, backbone, 12)) if mode == "full" else None
                if paper:
                    row["paper_train_speedup"] = paper["train_speedup"]
                    row["paper_memory_ratio"] = round(paper["train_memory_gb"] / PAPER_FULL_FINETUNING["clip-vit-b-16"]["train_memory_gb"], 3)
                log(f"  {backbone} {mode:4} {method:8} {row['step_s']:.4f} s/step"
                    + (f"  x{row['speedup_vs_no_merge']:.2f} vs no-merge" if "speedup_vs_no_merge" in row else "")
                    + (f"  peak {row['peak_memory_mib']:.0f} MiB" if row.get("peak_memory_mib") else ""))
            check.training.extend(rows.values())
            del steps, rows
            release_memory(device)


def training_memory(step, device: torch.device) -> dict:
    """Peak memory of one step: the whole process's on the GPU (weights, gradients and optimizer state included, as
    the paper's "Train Memory"), and its rise over the step (activations, gradients, temporaries)."""
    with benchmark.PeakMemory(device) as memory:
        step()
    row = {"peak_rise_mib": None if memory.peak_mb is None else round(memory.peak_mb, 1), "peak_memory_mib": None}
    if device.type == "cuda":
        row["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    else:
        row["peak_memory_mib"] = row["peak_rise_mib"]
    return row


# ---------------------------------------------------------------------------------------------------------------
# (d) indexing
# ---------------------------------------------------------------------------------------------------------------


def generate_videos(folder: Path, count: int, seconds: int) -> float:
    """`count` generated 1280x720 h264 videos (`search_indexing.long_720p_frames` and `write_frames`), written by
    threads (libx264 and numpy release the GIL); returns the seconds it took."""
    search_indexing = benchmark.load_sibling("search_indexing")

    folder.mkdir(parents=True, exist_ok=True)

    def write(index: int) -> None:
        frames = search_indexing.long_720p_frames(seconds)
        search_indexing.write_frames(folder / f"video{index:03d}.mp4", frames, fps=30)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=min(count, os.cpu_count() or 1)) as pool:
        list(pool.map(write, range(count)))
    return time.perf_counter() - start


def measure_indexing(args: argparse.Namespace, check: Check, device: torch.device, out: Path) -> None:
    from transformers_tempme import TempMeProcessor, VideoSearchIndex
    from transformers_tempme.data.word_tokenizer import build_word_level_tokenizer
    from transformers_tempme.search.discovery import list_files
    from transformers_tempme.search.indexer import video_encoder
    from transformers_tempme.search.segment_batches import SegmentBatches

    budget = Budget("indexing", args.budget_indexing, check.skipped)
    config = benchmark.build_config("tempme", "vit-b-32", 12, "sdpa", args.tiny)
    torch.manual_seed(0)
    model = TempMeCLIPModel(config).to(device).eval()
    # The text side does not take part in indexing: a small word-level tokenizer keeps the check free of downloads.
    tokenizer = build_word_level_tokenizer(["a video"], model_max_length=config.text_config.max_position_embeddings)
    processor = TempMeProcessor(tokenizer, num_frames=config.num_frames, image_size=config.vision_config.image_size)
    precision = None if args.index_precision == "model" else args.index_precision
    work = Path(tempfile.mkdtemp(prefix="gpu-check-index-"))
    try:
        videos = work / "videos"
        generate_seconds = generate_videos(videos, args.index_videos, args.index_seconds)
        result = {"model": "tempme-vit-b-32" + (" (tiny widths)" if args.tiny else "") + " (random weights)",
                  "videos": args.index_videos, "seconds_per_video": args.index_seconds, "resolution": "1280x720",
                  "codec": "h264 (libx264, crf 23, keyframe every 2 s), 30 fps", "generate_seconds": round(generate_seconds, 1),
                  "batch_size": args.index_batch, "precision": args.index_precision, "device": str(device),
                  "cpu_count": os.cpu_count(), "end_to_end": []}
        # Decode alone (this process, no worker), then encode those batches alone: the decode share.
        start = time.perf_counter()
        batches = list(SegmentBatches(list_files(videos), videos, processor, 10.0, 0.0, args.index_batch))
        decode = time.perf_counter() - start
        encoder = video_encoder(model, precision)
        segments = sum(len(batch["segments"]) for batch in batches)
        with torch.inference_mode():
            for batch in batches[:1]:  # warm-up: kernels chosen, memory allocated
                encoder.encode_video(batch["pixel_values"].to(device), batch["video_mask"].to(device))
            synchronize(device)
            start = time.perf_counter()
            for batch in batches:
                if batch["pixel_values"] is not None:
                    encoder.encode_video(batch["pixel_values"].to(device), batch["video_mask"].to(device))
            synchronize(device)
            encode = time.perf_counter() - start
        del batches
        result.update(segments=segments, decode_seconds=round(decode, 2), encode_seconds=round(encode, 3),
                      decode_share=round(decode / (decode + encode), 3),
                      decode_only_videos_per_s=round(args.index_videos / decode, 2),
                      encode_only_videos_per_s=round(args.index_videos / encode, 2))
        log(f"  decode alone {decode:.1f} s, encode alone {encode:.2f} s: decode share {result['decode_share']:.2f}")
        for workers in args.index_workers:
            # A run takes about the decode time shared among the workers (at least one process decodes).
            if not budget.allows(f"indexing end to end with {workers} workers", need=decode / max(workers, 1) + encode):
                continue
            index_dir = work / f"index-{workers}"
            start = time.perf_counter()
            index = VideoSearchIndex.build(videos, index_dir, model, processor, num_workers=workers,
                                           batch_size=args.index_batch, progress=False, precision=precision,
                                           device=str(device))
            seconds = time.perf_counter() - start
            run = {"workers": workers, "seconds": round(seconds, 2), "videos_per_s": round(len(index.videos) / seconds, 2),
                   "segments_per_s": round(len(index) / seconds, 2)}
            run["share_of_encode_only_speed"] = round(run["videos_per_s"] / result["encode_only_videos_per_s"], 3)
            result["end_to_end"].append(run)
            log(f"  end to end, {workers} workers: {run['videos_per_s']:.2f} videos/s ({run['segments_per_s']:.2f} segments/s)")
            shutil.rmtree(index_dir, ignore_errors=True)
        check.indexing = result
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# Targets and the report
# ---------------------------------------------------------------------------------------------------------------


def targets(check: Check) -> list[dict]:
    """The issue's targets, each with this run's figure (or why there is none)."""
    found = []

    def inference_row(method: str, path: str = "eager", dtype: str = "bfloat16") -> dict | None:
        rows = [r for r in check.inference if r["backbone"] == "vit-b-16" and r["method"] == method
                and r["path"] == path and r["dtype"] == dtype and "speedup_vs_eager" not in r]
        return max(rows, key=lambda r: r["batch"]) if rows else None

    tempme, no_merge = inference_row("tempme"), inference_row("no-merge")
    ratio = None if not (tempme and no_merge) else tempme["videos_per_s"] / no_merge["videos_per_s"]
    found.append({"target": f"inference ViT-B/16 bf16: TempMe / no-merge >= {TARGET_INFERENCE_SPEEDUP} (paper 1.47)",
                  "measured": None if ratio is None else round(ratio, 3),
                  "met": None if ratio is None else ratio >= TARGET_INFERENCE_SPEEDUP})
    best = max((r["videos_per_s"] for r in check.inference if r["backbone"] == "vit-b-16" and r["method"] == "tempme"
                and r["dtype"] == "bfloat16"), default=None)
    paper = PAPER_A100_VIDEOS_PER_S["tempme-vit-b-16"]
    found.append({"target": f"inference ViT-B/16 bf16: TempMe videos/s >= {TARGET_VIDEOS_PER_S_VS_A100} x the paper's A100 "
                            f"{paper} (best path and batch; the target is for an H100)",
                  "measured": best, "met": None if best is None else best >= TARGET_VIDEOS_PER_S_VS_A100 * paper})
    kernels = tempme.get("attention_kernels") if tempme else None
    found.append({"target": "attention under merging runs SDPA's flash or memory-efficient kernel",
                  "measured": None if kernels is None else sorted(kernels),
                  "met": None if not kernels else bool({"flash", "memory-efficient", "cudnn"} & set(kernels))})
    for mode in ("full", "lora"):
        rows = {r["method"]: r for r in check.training if r["backbone"] == "vit-b-16" and r["mode"] == mode}
        row = rows.get("tempme")
        speedup = row.get("speedup_vs_no_merge") if row else None
        memory = row.get("peak_memory_ratio_vs_no_merge") if row else None
        found.append({"target": f"{mode} fine-tuning ViT-B/16: TempMe step >= {TARGET_TRAIN_SPEEDUP}x no-merge at <= "
                                f"{TARGET_TRAIN_MEMORY:.0%} of its peak memory (paper: 1.57x, 75.2%, full)",
                      "measured": None if row is None else {"speedup": speedup, "memory_ratio": memory},
                      "met": None if speedup is None or memory is None
                      else speedup >= TARGET_TRAIN_SPEEDUP and memory <= TARGET_TRAIN_MEMORY})
    share = check.indexing.get("decode_share")
    runs = check.indexing.get("end_to_end", [])
    found.append({"target": "indexing: decode is not the bottleneck (end to end with the most workers reaches at least "
                            "half the encode-only speed)",
                  "measured": None if not runs else {"decode_share": share,
                                                      "best_share_of_encode_only": max(r["share_of_encode_only_speed"] for r in runs)},
                  "met": None if not runs else max(r["share_of_encode_only_speed"] for r in runs) >= 0.5})
    return found


def markdown(check: Check) -> str:
    m = check.machine
    lines = [f"# GPU check, {check.started_utc}", "", f"`{check.command}`", ""]
    gpu = m.get("gpu") or "no GPU (a dry run)"
    lines.append(f"{gpu} ({m.get('gpu_memory_gib', '—')} GiB, compute capability {m.get('compute_capability', '—')}), "
                 f"driver {m.get('driver') or '—'}, CUDA {m.get('cuda') or '—'}, cuDNN {m.get('cudnn') or '—'}; torch "
                 f"{m['torch']}, transformers {m['transformers']}, flash_attn {m.get('flash_attn') or 'not installed'}; "
                 f"{m['cpu']} ({m['cpu_count']} cores); Python {m['python']}.")
    lines += ["", "Seconds per part: " + ", ".join(f"{part} {seconds:.0f}" for part, seconds in check.seconds.items()) + "."]
    if check.tests:
        t = check.tests
        lines += ["", "## Tests (`-m cuda`)", "",
                  f"{t.get('passed', 0)} passed, {t.get('failed', 0)} failed, {t.get('skipped', 0)} skipped in "
                  f"{t.get('seconds')} s{' (stopped at the budget)' if t.get('timed_out') else ''}."]
        lines += [f"- FAILED {f['test']}: {f['message']}" for f in t.get("failures", [])]
        reasons = sorted({s["reason"] for s in t.get("skips", [])})
        lines += [f"- skipped: {reason}" for reason in reasons]
    if check.inference:
        lines += ["", "## Inference (videos/s of `encode_video`, 12 frames)", "",
                  "| backbone | dtype | batch | method | path | videos/s | vs no-merge | vs eager | paper A100 | GFLOPs "
                  "| output tokens | attention kernels | peak MiB | compile s | cosine to eager |",
                  "|---|---|---:|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|"]
        for r in check.inference:
            kernels = ", ".join(r.get("attention_kernels", {})) or "—"
            lines.append(
                f"| {r['backbone']} | {r['dtype']} | {r['batch']} | {r['method']} | {r['path']} | {r['videos_per_s']:.1f} "
                f"| {_x(r.get('speedup_vs_no_merge'))} | {_x(r.get('speedup_vs_eager'))} "
                f"| {r.get('paper_a100_videos_per_s') or '—'} | {r['gflops_per_video']} | {r['output_tokens']} | {kernels} "
                f"| {r.get('peak_memory_mib') or '—'} | {r.get('compile_seconds') or '—'} | {r['cosine_to_eager_min']:.5f} |")
    if check.training:
        lines += ["", "## Training steps (forward + backward + AdamW, autocast)", "",
                  "| backbone | mode | method | dtype | batch | step s | vs no-merge (paper) | peak MiB | memory vs no-merge "
                  "(paper) | trainable parameters |",
                  "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in check.training:
            lines.append(
                f"| {r['backbone']} | {r['mode']} | {r['method']} | {r['dtype']} | {r['batch']} | {r['step_s']:.4f} "
                f"| {_x(r.get('speedup_vs_no_merge'))} ({_x(r.get('paper_train_speedup'))}) | {r.get('peak_memory_mib') or '—'} "
                f"| {r.get('peak_memory_ratio_vs_no_merge') or '—'} ({r.get('paper_memory_ratio') or '—'}) "
                f"| {r['trainable_parameters']:,} |")
    if check.indexing:
        i = check.indexing
        lines += ["", "## Indexing (`VideoSearchIndex.build`, decode + encode)", "",
                  f"{i['videos']} generated videos of {i['seconds_per_video']} s, {i['resolution']}, {i['codec']}; "
                  f"{i.get('segments', '—')} segments of 10 s; {i['model']}, precision {i['precision']}, batch "
                  f"{i['batch_size']}, on {i['device']}; {i['cpu_count']} CPU cores.", "",
                  f"Decode alone (one process) {i.get('decode_seconds')} s, encode alone {i.get('encode_seconds')} s: "
                  f"decode share {i.get('decode_share')}; encode-only {i.get('encode_only_videos_per_s')} videos/s.", "",
                  "| workers | seconds | videos/s | segments/s | of encode-only speed |", "|---:|---:|---:|---:|---:|"]
        for run in i.get("end_to_end", []):
            lines.append(f"| {run['workers']} | {run['seconds']} | {run['videos_per_s']} | {run['segments_per_s']} "
                         f"| {run['share_of_encode_only_speed']} |")
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for target in check.targets:
        met = {True: "yes", False: "no", None: "not measured"}[target["met"]]
        lines.append(f"| {target['target']} | {json.dumps(target['measured'])} | {met} |")
    if check.skipped:
        lines += ["", "## Skipped", ""] + [f"- {s['part']}: {s['what']} ({s['reason']})" for s in check.skipped]
    if check.errors:
        lines += ["", "## Errors", ""] + [f"- {where}: {error.splitlines()[-1][:300]}" for where, error in check.errors.items()]
    return "\n".join(lines) + "\n"


def _x(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def _list(kind):
    return lambda text: [kind(value.strip()) for value in text.split(",") if value.strip()]


# `--dry-run`: tiny widths and sizes on the CPU, compiled by aot_eager (no C++ build), records in a temporary folder.
DRY_RUN = {
    "device": "cpu", "tiny": True, "backbones": ["vit-b-32"], "train_backbones": ["vit-b-32"], "batches": [1, 2],
    "compile_backend": "aot_eager", "warmup": 0, "repeats": 1, "train_batch": 1, "train_warmup": 0, "train_repeats": 1,
    "index_videos": 2, "index_seconds": 2, "index_workers": [0, 1], "index_batch": 2, "index_precision": "fp32",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:1, ... (cpu: the script's logic only)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "records" / "gpu", help="where the records go")
    parser.add_argument("--parts", type=_list(str), default=list(PARTS), help=f"comma-separated: {', '.join(PARTS)}")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny widths and sizes, the compile by aot_eager, on the CPU unless --device is given, "
                             "records in a temporary folder unless --out is given: the script end to end in minutes")
    parser.add_argument("--tiny", action="store_true", help="narrow layers on the real token schedules")
    group = parser.add_argument_group("budgets (seconds; 405 in all by default, the whole run cut at 480 by gpu_check.sh)")
    group.add_argument("--budget-tests", type=float, default=140)
    group.add_argument("--budget-inference", type=float, default=150)
    group.add_argument("--budget-training", type=float, default=60)
    group.add_argument("--budget-indexing", type=float, default=55)
    group.add_argument("--group-seconds", type=float, default=8,
                       help="expected seconds of one eager group (backbone, dtype, batch): started only if it fits")
    group.add_argument("--compile-seconds", type=float, default=45,
                       help="expected seconds of one compile and its timing: started only if it fits")
    group.add_argument("--train-seconds", type=float, default=25,
                       help="expected seconds of one training mode (three methods): started only if it fits")
    group = parser.add_argument_group("inference")
    group.add_argument("--backbones", type=_list(str), default=["vit-b-16", "vit-b-32"])
    group.add_argument("--methods", type=_list(str), default=list(benchmark.METHODS))
    group.add_argument("--dtypes", type=_list(str), default=["bfloat16", "float16"],
                       help="inference dtypes; the first is the training autocast dtype")
    group.add_argument("--batches", type=_list(int), default=[32, 128], help="videos per forward")
    group.add_argument("--compile-dtypes", type=_list(str), default=["bfloat16"])
    group.add_argument("--compile-backend", default="inductor")
    group.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune")
    group.add_argument("--warmup", type=int, default=2)
    group.add_argument("--repeats", type=int, default=5)
    group = parser.add_argument_group("training")
    group.add_argument("--train-backbones", type=_list(str), default=["vit-b-16"])
    group.add_argument("--train-modes", type=_list(str), default=["full", "lora"])
    group.add_argument("--train-batch", type=int, default=32)
    group.add_argument("--train-warmup", type=int, default=1)
    group.add_argument("--train-repeats", type=int, default=4)
    group = parser.add_argument_group("indexing")
    group.add_argument("--index-videos", type=int, default=8)
    group.add_argument("--index-seconds", type=int, default=20)
    group.add_argument("--index-workers", type=_list(int), default=[0, 4, 8])
    group.add_argument("--index-batch", type=int, default=16)
    group.add_argument("--index-precision", default="bf16", choices=("fp32", "bf16", "model"))
    group = parser.add_argument_group("tests")
    group.add_argument("--pytest-args", type=lambda text: text.split(), default=[],
                       help="more pytest arguments, as one string (e.g. '-x -k flash')")
    args = parser.parse_args(argv)
    if args.dry_run:  # the dry run's sizes, under anything given explicitly
        parser.set_defaults(**DRY_RUN, out=Path(tempfile.mkdtemp(prefix="gpu-check-dry-run-")))
        args = parser.parse_args(argv)
    for name in args.parts:
        if name not in PARTS:
            parser.error(f"unknown part {name!r}: choose from {', '.join(PARTS)}")
    for name in (*args.dtypes, *args.compile_dtypes):
        if name not in DTYPES:
            parser.error(f"unknown dtype {name!r}: choose from {', '.join(DTYPES)}")
    for name in (*args.backbones, *args.train_backbones):
        if name not in benchmark.DEFAULT_BATCH:
            parser.error(f"unknown backbone {name!r}: choose from {', '.join(benchmark.DEFAULT_BATCH)}")
    for name in args.methods:
        if name not in benchmark.METHODS:
            parser.error(f"unknown method {name!r}: choose from {', '.join(benchmark.METHODS)}")
    return args


def main(argv: list[str] | None = None) -> Check:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but torch sees no CUDA device (torch "
                         f"{torch.__version__}, built for CUDA {torch.version.cuda}). Use --dry-run to check the script "
                         "on a CPU.")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 work (the no-merge reference) at the GPU's usual speed
        torch.backends.cudnn.allow_tf32 = True
    args.out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    command = "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv)
    check = Check(command=command.strip(), started_utc=started.strftime("%Y-%m-%d %H:%M UTC"),
                  machine=describe_machine(device), settings={k: str(v) for k, v in vars(args).items()})
    slug = re.sub(r"[^a-z0-9]+", "-", (check.machine.get("gpu") or "cpu-dry-run").lower()).strip("-")
    stem = args.out / f"gpu-check-{slug}-{started.strftime('%Y%m%dT%H%MZ')}"
    log(f"GPU check on {check.machine.get('gpu') or device}: records to {stem}.json / .md")
    measures = {"tests": run_tests, "inference": measure_inference, "training": measure_training,
                "indexing": measure_indexing}
    for part in PARTS:
        if part not in args.parts:
            continue
        log(f"({part})")
        start = time.perf_counter()
        try:
            if part == "tests":
                measures[part](args, check, args.out)
            else:
                measures[part](args, check, device, args.out)
        except Exception:  # noqa: BLE001 (one part failing must not cost the others' figures)
            check.errors[part] = traceback.format_exc()
            log(f"  {part} failed:\n{traceback.format_exc()[-2000:]}")
        check.seconds[part] = round(time.perf_counter() - start, 1)
        write_records(check, stem)  # after every part: a run cut short still leaves what it measured
    log("\n" + markdown(check))
    return check


def write_records(check: Check, stem: Path) -> None:
    check.targets = targets(check)
    for path, text in ((stem.with_suffix(".json"), json.dumps(asdict(check), indent=2, default=str) + "\n"),
                       (stem.with_suffix(".md"), markdown(check))):
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text)
        partial.replace(path)


if __name__ == "__main__":
    main()
