"""Retrieval accuracy of a trained TempMe at every inference precision, on the demo's synthetic temporal benchmark.

    make demo   # trains TempMe on the synthetic benchmark and saves it (model + processor) to demo_output/model
    python benchmarks/precision_accuracy.py --model demo_output/model --benchmark demo_output/benchmark \
        --json outputs/precision_accuracy.json

For each path (the model as it is, `optimize_for_inference` at fp32 / bf16 / int8, the ONNX graphs in
onnxruntime at fp32 / int8) this encodes the test split the demo evaluates on (one caption per video, every video
beside its time reversal) and reports text-to-video and video-to-text R@1, pair accuracy (does a video score its
own caption above its reversal's) and the min / mean cosine of every video embedding to the model's own float32
one. The model passes when every path keeps t2v R@1 within `--max-r1-drop` points and pair accuracy unchanged.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from transformers_tempme import TempMeCLIPModel, TempMeProcessor, optimize_for_inference
from transformers_tempme.data.video_text import VideoTextDataset
from transformers_tempme.evaluation.retrieval import encode_split, evaluate_retrieval
from transformers_tempme.inference import cpu_features

PATHS = ("eager", "fp32", "bf16", "int8", "ort", "ort-int8")
DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


def demo_module():
    """examples/demo.py, for the test split exactly as the demo builds it."""
    spec = importlib.util.spec_from_file_location("tempme_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_split(benchmark: Path, processor: TempMeProcessor) -> tuple[VideoTextDataset, dict[str, str]]:
    """The demo's test split (`load_splits`), and each test video's time reversal."""
    _, test, partner_of = demo_module().load_splits(benchmark, processor, seed=0)
    return test, partner_of


class OnnxForEvaluation(nn.Module):
    """`OnnxTempMe` behind the interface `evaluate_retrieval` uses (a module, whose parameter says the device)."""

    def __init__(self, session):
        super().__init__()
        self.session, self.config = session, session.config
        self.device_anchor = nn.Parameter(torch.zeros(()), requires_grad=False)

    def encode_video(self, pixel_values, video_mask=None):
        return self.session.encode_video(pixel_values, video_mask)

    def get_text_features(self, input_ids, attention_mask=None):
        return self.session.get_text_features(input_ids=input_ids, attention_mask=attention_mask)


def model_for_path(model: TempMeCLIPModel, path: str, onnx_dir: Path) -> nn.Module:
    if path == "eager":
        return model
    if path in ("fp32", "bf16", "int8"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bf16 warns on CPUs without native bfloat16; the flags are reported
            return optimize_for_inference(model, path)
    from transformers_tempme.inference.onnx_export import VISION_FILE, OnnxTempMe, export_onnx

    if not (onnx_dir / VISION_FILE).exists():
        print(f"Exporting the model to ONNX in {onnx_dir} ...", file=sys.stderr, flush=True)
        export_onnx(model, onnx_dir, quantize=True)
    return OnnxForEvaluation(OnnxTempMe(onnx_dir, int8=path == "ort-int8", threads=torch.get_num_threads()))


@torch.no_grad()
def evaluate_paths(model, dataset, partner_of, paths, batch_size: int, onnx_dir: Path) -> list[dict]:
    rows, reference = [], None
    for path in paths:
        candidate = model_for_path(model, path, onnx_dir)
        metrics = evaluate_retrieval(candidate, dataset, batch_size=batch_size, partner_of_video=partner_of, progress=False)
        video_embeds = encode_split(candidate, dataset, batch_size=batch_size, progress=False).video_embeds
        if reference is None:
            reference = encode_split(model, dataset, batch_size=batch_size, progress=False).video_embeds
        cosine = (video_embeds * reference).sum(dim=-1)  # both are L2-normalised
        rows.append(
            {
                "path": path,
                "t2v_R@1": metrics["text_to_video"]["R@1"],
                "v2t_R@1": metrics["video_to_text"]["R@1"],
                "pair_accuracy": metrics["pair_accuracy"],
                "cosine_to_fp32_min": float(cosine.min()),
                "cosine_to_fp32_mean": float(cosine.mean()),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def check(rows: list[dict], max_r1_drop: float) -> list[str]:
    """The paths that lose more than `max_r1_drop` points of t2v R@1 or any pair accuracy against eager fp32."""
    base = next(row for row in rows if row["path"] == "eager")
    failures = []
    for row in rows:
        if base["t2v_R@1"] - row["t2v_R@1"] > max_r1_drop or row["pair_accuracy"] < base["pair_accuracy"]:
            failures.append(row["path"])
        row["passes"] = row["path"] not in failures
    return failures


def markdown(rows: list[dict], command: str, num_videos: int, features: dict) -> str:
    lines = [
        f"`{command}`",
        "",
        f"{num_videos} test videos; CPU {features.get('cpu', '?')}, flags {' '.join(features.get('flags', [])) or '—'}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads.",
        "",
        "| path | t2v R@1 | v2t R@1 | pair accuracy | min cosine to fp32 | mean cosine to fp32 | within bounds |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['path']} | {row['t2v_R@1']:.1f} | {row['v2t_R@1']:.1f} | {row['pair_accuracy']:.3f} "
            f"| {row['cosine_to_fp32_min']:.5f} | {row['cosine_to_fp32_mean']:.5f} | {'yes' if row['passes'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("demo_output/model"), help="saved TempMe model + processor")
    parser.add_argument("--benchmark", type=Path, default=Path("demo_output/benchmark"), help="synthetic benchmark")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated: {', '.join(PATHS)}")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-r1-drop", type=float, default=1.0, help="allowed loss of t2v R@1 in points")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    paths = [path.strip() for path in args.paths.split(",") if path.strip()]
    unknown = [path for path in paths if path not in PATHS]
    if unknown:
        parser.error(f"unknown paths {unknown}: choose from {', '.join(PATHS)}")
    paths = list(dict.fromkeys(["eager", *paths]))
    if not (args.model / "config.json").is_file():
        parser.error(f"no saved model in {args.model}: run `make demo` first (it saves the trained TempMe there)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    model = TempMeCLIPModel.from_pretrained(args.model).eval()
    processor = TempMeProcessor.from_pretrained(args.model)
    dataset, partner_of = test_split(args.benchmark, processor)
    with tempfile.TemporaryDirectory(prefix="tempme-onnx-") as onnx_dir:
        rows = evaluate_paths(model, dataset, partner_of, paths, args.batch_size, Path(onnx_dir))
    failures = check(rows, args.max_r1_drop)
    command = "python benchmarks/precision_accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv)
    features = cpu_features()
    text = markdown(rows, command.strip(), len(dataset.video_ids), features)
    print(text)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"command": command, "cpu_features": features, "torch": torch.__version__, "rows": rows}
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    if failures:
        print(f"Outside the bounds: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
