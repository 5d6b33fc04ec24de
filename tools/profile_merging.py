"""Where TempMe's vision forward spends its time besides the matmuls: a torch.profiler table of the top operators.

Runs `encode_video` of a random-weight preset under `torch.profiler` (CPU activities, no shapes) and prints the
operators with the most self time as a markdown table, plus the share of time spent in dense matmul-type kernels
(linear layers, batched matmuls, attention kernels, the patch convolution) against everything else.

    python tools/profile_merging.py --preset tempme-vit-b-32 --batch 2 --threads 2
    python tools/profile_merging.py --preset tempme-vit-b-32 --batch 2 --threads 1 --precision fp32

`--precision` profiles the model prepared by `optimize_for_inference` at that precision instead of the model itself.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from transformers_tempme import TempMeCLIPModel, TempMeConfig
from transformers_tempme.analysis.benchmark_records import load_average, machine_description
from transformers_tempme.inference import PRECISIONS, optimize_for_inference

# Operators whose self time is dense linear algebra: the work the FLOP count measures.
MATMUL_OPS = {
    "aten::addmm",
    "aten::mm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::matmul",
    "aten::linear",
    "aten::mkldnn_convolution",
    "mkldnn::_linear_pointwise",
    "quantized::linear_dynamic",
    "aten::convolution",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_attention_math",
    "aten::_flash_attention_forward",
    "aten::_scaled_dot_product_efficient_attention",
    "aten::_scaled_dot_product_cudnn_attention",
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tempme-vit-b-32", help="a TempMeConfig preset, e.g. tempme-vit-b-16")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=None, help="frames per video (default: the preset's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--attn", default="sdpa", choices=["eager", "sdpa"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--precision", default=None, choices=PRECISIONS, help="profile optimize_for_inference(model, precision)"
    )
    parser.add_argument("--top", type=int, default=20, help="operators to list")
    parser.add_argument("--layers", type=int, default=None, help="vision blocks (default: 12); fewer for a quick look")
    return parser.parse_args(argv)


def build_model(args: argparse.Namespace) -> TempMeCLIPModel:
    overrides = {"attn_implementation": args.attn}
    if args.frames is not None:
        overrides["num_frames"] = args.frames
    if args.layers is not None:
        overrides["vision_config"] = {"num_hidden_layers": args.layers}
    config = TempMeConfig.from_preset(args.preset, **overrides)
    return TempMeCLIPModel(config).to(getattr(torch, args.dtype)).eval()


def profile_table(args: argparse.Namespace) -> str:
    torch.manual_seed(0)
    model = build_model(args)
    config = model.config
    size = config.vision_config.image_size
    dtype = getattr(torch, args.dtype)
    pixel_values = torch.randn(args.batch, config.num_frames, 3, size, size, dtype=dtype)
    if args.precision is not None:
        model = optimize_for_inference(model, args.precision)
    with torch.inference_mode():
        model.encode_video(pixel_values)  # warm-up: first-call allocations and kernel selection
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model.encode_video(pixel_values)
    events = prof.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    matmul = sum(event.self_cpu_time_total for event in events if event.key in MATMUL_OPS)
    rows = sorted(events, key=lambda event: event.self_cpu_time_total, reverse=True)[: args.top]

    lines = [
        f"`{args.preset}`, {config.num_frames} frames, batch {args.batch}, "
        f"{f'optimize_for_inference {args.precision}' if args.precision else f'{args.dtype}, attention {args.attn}'}, "
        f"{args.threads} threads, torch {torch.__version__}, {machine_description()['cpu']}, "
        f"load average {load_average()}",
        "",
        f"Total self time {total / 1e3:.0f} ms: matmul-type kernels {100 * matmul / total:.1f}%, "
        f"everything else {100 * (total - matmul) / total:.1f}%.",
        "",
        "| operator | calls | self time (ms) | share |",
        "|---|---:|---:|---:|",
    ]
    for event in rows:
        share = 100 * event.self_cpu_time_total / total
        lines.append(f"| `{event.key}` | {event.count} | {event.self_cpu_time_total / 1e3:.1f} | {share:.1f}% |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(profile_table(args))


if __name__ == "__main__":
    main()
