"""Speed of this checkout's inference paths against another revision's, interleaved forward by forward in one run.

    python benchmarks/compare_revisions.py --baseline 52c4789 --threads 1 --repeats 8 --json outputs/compare.json

Each side runs in a worker process of its own: the baseline imports the package as it is at `--baseline` (a commit,
branch or tag; `git archive` of its `src/transformers_tempme` unpacked to a temporary folder), the other one this
checkout's `src/`. Both load the same weights (random, at the preset's shapes, written once by this process) and encode
the same videos. The workers take turns, forward by forward: in every round each path runs once on each side, the side
that goes first alternating from round to round, so that the load of a shared machine hits both alike. A forward is
timed inside its worker (wall clock and process CPU time), warm-up rounds are dropped.

For every (method, path) the report has the median videos/s of both sides, the median over rounds of the per-round
speed ratio (this checkout / baseline: above 1 is faster) with every round's ratio, and the largest difference and
smallest cosine between the two sides' video embeddings. Paths: `eager` (`encode_video` of the model itself),
`fp32`, `bf16`, `int8` (`optimize_for_inference`) and `compile`, `compile-bf16` (`optimize_for_inference(model,
precision, compile=True)`, compiled by one forward before the rounds; both revisions must have it). Every record carries the CPU flags (`cpu_features`), the commits and
the load average. `--tiny` runs the real token schedules on narrow layers, for tests of this script only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PATHS = ("eager", "fp32", "bf16", "int8", "compile", "compile-bf16")
SIDES = ("baseline", "checkout")


# ---------------------------------------------------------------------------------------------------------------
# Worker: one revision of the package, answering timing requests on stdin / stdout
# ---------------------------------------------------------------------------------------------------------------


def run_worker(work_dir: Path, threads: int | None, attn: str, methods: list[str], paths: list[str]) -> None:
    """Load the model of every method, prepare every path, then time one forward per request.

    Requests are JSON lines on stdin: `{"step": "tempme/fp32"}` -> `{"seconds": ..., "cpu_seconds": ...}`;
    `{"embeddings": FILE}` writes every step's video embeddings to FILE; `{"quit": true}` ends the worker.
    """
    import resource
    import warnings

    import torch

    protocol, sys.stdout = sys.stdout, sys.stderr  # library output must not mix with the replies
    if threads is not None:
        torch.set_num_threads(threads)
    import transformers_tempme
    from transformers_tempme import TempMeCLIPModel, TempMeConfig, optimize_for_inference

    def reply(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    def cpu_seconds() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    encoders, inputs = {}, {}
    for method in methods:
        config = TempMeConfig.from_pretrained(work_dir / method)
        config._attn_implementation = attn
        model = TempMeCLIPModel(config).eval()
        model.load_state_dict(torch.load(work_dir / method / "weights.pt"))
        inputs[method] = torch.load(work_dir / method / "pixel_values.pt")
        for path in paths:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # bf16 warns on CPUs without native bfloat16
                encoders[f"{method}/{path}"] = prepare_path(model, path, optimize_for_inference)
            if path.startswith("compile"):
                with torch.inference_mode():
                    encoders[f"{method}/{path}"].encode_video(inputs[method])  # compiles, before any timed round
    reply({"ready": True, "package": str(Path(transformers_tempme.__file__).parent), "threads": torch.get_num_threads()})

    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            return
        with torch.inference_mode():
            if "embeddings" in request:
                embeddings = {
                    step: encoder.encode_video(inputs[step.split("/")[0]]).video_embeds.float()
                    for step, encoder in encoders.items()
                }
                torch.save(embeddings, request["embeddings"])
                reply({"done": True})
                continue
            step = request["step"]
            encoder, pixel_values = encoders[step], inputs[step.split("/")[0]]
            start, cpu_start = time.perf_counter(), cpu_seconds()
            encoder.encode_video(pixel_values)
            reply({"seconds": time.perf_counter() - start, "cpu_seconds": cpu_seconds() - cpu_start})


def prepare_path(model, path: str, optimize_for_inference):
    """The model run along `path`: itself, `optimize_for_inference` at a precision, or compiled whole."""
    if path == "eager":
        return model
    if not path.startswith("compile"):
        return optimize_for_inference(model, path)
    precision = "bf16" if path == "compile-bf16" else "fp32"
    try:
        return optimize_for_inference(model, precision, compile=True)
    except TypeError:
        raise SystemExit(f"This revision's optimize_for_inference cannot compile (no compile=): drop the {path} path.") from None


class Worker:
    """A worker process importing the package from `src`, and the requests it answers."""

    def __init__(self, side: str, src: Path, args: argparse.Namespace, work_dir: Path):
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--work-dir", str(work_dir),
                   "--attn", args.attn, "--methods", ",".join(args.methods), "--paths", ",".join(args.paths)]
        if args.threads is not None:
            command += ["--threads", str(args.threads)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        self.side = side
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
        self.ready = self.receive()
        if not self.ready["package"].startswith(str(src)):
            raise SystemExit(f"The {side} worker imported transformers_tempme from {self.ready['package']}, not {src}.")

    def receive(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"The {self.side} worker stopped (exit code {self.process.wait()}); its errors are above.")
        return json.loads(line)

    def ask(self, request: dict) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self.receive()

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.process.stdin.write(json.dumps({"quit": True}) + "\n")
            self.process.stdin.close()
        self.process.wait(timeout=60)


# ---------------------------------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """One (method, path): both sides' timings, their ratio and how far apart their embeddings are."""

    method: str
    path: str
    preset: str
    batch: int
    videos_per_s: dict[str, float]
    seconds_all: dict[str, list[float]]
    cpu_seconds_all: dict[str, list[float]]
    speed_ratio: float
    speed_ratio_per_round: list[float]
    cpu_speed_ratio: float
    max_abs_diff: float
    min_cosine: float
    machine: dict = field(default_factory=dict)


def git(*arguments: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *arguments], check=True, capture_output=True, text=True).stdout.strip()


def export_revision(revision: str, target: Path) -> Path:
    """Unpack `src/transformers_tempme` as it is at `revision` into `target`; returns the `src` folder to import from."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", revision, "src/transformers_tempme"],
        check=True, capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target / "src"


def load_benchmark_script():
    """`benchmarks/benchmark.py`, for its presets, inputs and report files (imported by path)."""
    from transformers_tempme.analysis.benchmark_records import load_script

    return load_script(Path(__file__).resolve().parent / "benchmark.py")


def write_models(args: argparse.Namespace, work_dir: Path, benchmark) -> dict[str, str]:
    """The weights, config and inputs of every method, for both workers to load; returns the preset names."""
    import torch

    presets = {}
    for method in args.methods:
        config = benchmark.build_config(method, args.backbone, args.frames, args.attn, args.tiny)
        model = benchmark.build_model(config, torch.device("cpu"), torch.float32)
        folder = work_dir / method
        config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "weights.pt")
        pixel_values, _ = benchmark.random_inputs(config, args.batch, torch.device("cpu"), torch.float32)
        torch.save(pixel_values, folder / "pixel_values.pt")
        presets[method] = benchmark.preset_name(method, args.backbone, args.frames) + (" (tiny widths)" if args.tiny else "")
    return presets


def compare(args: argparse.Namespace, benchmark) -> list[Comparison]:
    """Run both workers interleaved (see the module docstring); `benchmark` is `benchmarks/benchmark.py`."""
    import torch
    import torch.nn.functional as F

    from transformers_tempme.analysis.benchmark_records import load_average, machine_description

    steps = [f"{method}/{path}" for method in args.methods for path in args.paths]
    times = {side: {step: [] for step in steps} for side in SIDES}
    cpu_times = {side: {step: [] for step in steps} for side in SIDES}
    commits = {"baseline": git("rev-parse", args.baseline), "checkout": git("rev-parse", "HEAD")}
    machine = {
        **machine_description("cpu"),  # with the CPU flags (cpu_features)
        "load_average_before": load_average(),
        "commits": commits,
        "checkout_has_uncommitted_changes": bool(git("status", "--porcelain", "--", "src")),
    }
    with tempfile.TemporaryDirectory(prefix="tempme-compare-") as work:
        work_dir = Path(work)
        presets = write_models(args, work_dir, benchmark)
        sources = {"baseline": export_revision(commits["baseline"], work_dir / "baseline"), "checkout": REPO / "src"}
        workers = {}
        try:
            for side in SIDES:
                print(f"starting the {side} worker ({sources[side]})", file=sys.stderr, flush=True)
                workers[side] = Worker(side, sources[side], args, work_dir)
            machine["threads"] = workers["checkout"].ready["threads"]
            for round_index in range(args.warmup + args.repeats):
                order = SIDES if round_index % 2 == 0 else SIDES[::-1]
                for step in steps:
                    for side in order:
                        reply = workers[side].ask({"step": step})
                        kind = "warm-up" if round_index < args.warmup else "timed"
                        print(f"  {step} {side}: {kind} round {round_index + 1}, {reply['seconds']:.3f} s",
                              file=sys.stderr, flush=True)
                        if round_index >= args.warmup:
                            times[side][step].append(reply["seconds"])
                            cpu_times[side][step].append(reply["cpu_seconds"])
            embeddings = {}
            for side, worker in workers.items():
                worker.ask({"embeddings": str(work_dir / f"{side}.pt")})
                embeddings[side] = torch.load(work_dir / f"{side}.pt")
        finally:
            for worker in workers.values():
                worker.close()
    machine["load_average_after"] = load_average()

    comparisons = []
    for step in steps:
        method, path = step.split("/")
        base, ours = times["baseline"][step], times["checkout"][step]
        cosine = F.cosine_similarity(embeddings["checkout"][step], embeddings["baseline"][step], dim=-1)
        comparisons.append(Comparison(
            method=method,
            path=path,
            preset=presets[method],
            batch=args.batch,
            videos_per_s={side: args.batch / statistics.median(times[side][step]) for side in SIDES},
            seconds_all={side: [round(t, 4) for t in times[side][step]] for side in SIDES},
            cpu_seconds_all={side: [round(t, 4) for t in cpu_times[side][step]] for side in SIDES},
            speed_ratio=statistics.median(b / o for b, o in zip(base, ours)),
            speed_ratio_per_round=[round(b / o, 3) for b, o in zip(base, ours)],
            cpu_speed_ratio=statistics.median(cpu_times["baseline"][step]) / statistics.median(cpu_times["checkout"][step]),
            max_abs_diff=float((embeddings["checkout"][step] - embeddings["baseline"][step]).abs().max()),
            min_cosine=float(cosine.min()),
            machine=machine,
        ))
    return comparisons


def report(comparisons: list[Comparison], command: str) -> str:
    machine = comparisons[0].machine
    features, commits = machine["cpu_features"], machine["commits"]
    dirty = " plus uncommitted changes" if machine["checkout_has_uncommitted_changes"] else ""
    lines = [
        f"`{command}`",
        "",
        f"Baseline {commits['baseline'][:10]} against this checkout {commits['checkout'][:10]}{dirty}; "
        f"{machine['cpu']} ({machine['cpu_count']} cores), CPU flags {' '.join(features['flags']) or 'none'}, oneDNN "
        f"native bf16 {features['onednn_bf16']}; torch {machine['torch']}, {machine['threads']} threads, batch "
        f"{comparisons[0].batch}; load average (1, 5, 15 min) before {machine['load_average_before']}, after "
        f"{machine['load_average_after']}.",
        "",
        "Speed ratio: this checkout's videos/s over the baseline's, the median of the per-round ratios (above 1: "
        "faster); CPU: the same from process CPU time. Embeddings: largest difference and smallest cosine between the "
        "two sides' video embeddings.",
        "",
        "| preset | path | baseline videos/s | checkout videos/s | speed ratio (CPU) | per round | max abs diff | min cosine |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for c in comparisons:
        lines.append(
            f"| {c.preset} | {c.path} | {c.videos_per_s['baseline']:.3f} | {c.videos_per_s['checkout']:.3f} "
            f"| {c.speed_ratio:.3f}x ({c.cpu_speed_ratio:.3f}x) | {', '.join(f'{r:.2f}' for r in c.speed_ratio_per_round)} "
            f"| {c.max_abs_diff:.1e} | {c.min_cosine:.6f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=None, help="the revision to compare against (commit, branch or tag)")
    parser.add_argument("--backbone", default="vit-b-32", choices=["vit-b-32", "vit-b-16"])
    parser.add_argument("--methods", default="tempme", help="comma-separated: no-merge, tome, tempme")
    parser.add_argument("--paths", default="fp32,bf16,int8", help=f"comma-separated: {', '.join(PATHS)}")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8, help="videos per forward")
    parser.add_argument("--attn", default="sdpa", choices=["eager", "sdpa"], help="attention implementation")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads in both workers")
    parser.add_argument("--repeats", type=int, default=8, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=1, help="rounds run first and dropped")
    parser.add_argument("--tiny", action="store_true", help="narrow layers, real token schedules: for tests")
    parser.add_argument("--json", type=Path, default=None, help="write the records here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the table here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    args.paths = [name.strip() for name in args.paths.split(",") if name.strip()]
    unknown = [path for path in args.paths if path not in PATHS]
    if unknown:
        parser.error(f"unknown path {unknown[0]!r}: choose from {', '.join(PATHS)}")
    unknown = [method for method in args.methods if method not in ("no-merge", "tome", "tempme")]
    if unknown:
        parser.error(f"unknown method {unknown[0]!r}: choose from no-merge, tome, tempme")
    if not args.worker and args.baseline is None:
        parser.error("--baseline REVISION is required (the commit whose code is the reference, e.g. main's before a change)")
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be at least 1 and --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> list[Comparison] | None:
    args = parse_args(argv)
    if args.worker:
        run_worker(args.work_dir, args.threads, args.attn, args.methods, args.paths)
        return None
    try:
        git("rev-parse", "--verify", f"{args.baseline}^{{commit}}")
    except subprocess.CalledProcessError:
        raise SystemExit(f"error: --baseline {args.baseline!r} is not a commit of {REPO}.") from None
    benchmark = load_benchmark_script()
    comparisons = compare(args, benchmark)
    command = "python benchmarks/compare_revisions.py " + " ".join(sys.argv[1:] if argv is None else argv)
    benchmark.publish(report(comparisons, command.strip()), [asdict(c) for c in comparisons], args.markdown, args.json)
    return comparisons


if __name__ == "__main__":
    main()
