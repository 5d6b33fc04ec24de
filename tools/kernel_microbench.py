"""Micro-benchmarks behind the choices in merging.py and the notes in docs/performance.md.

Median milliseconds of single kernels on ViT-B/32-sized tensors (24 sequences of 50 tokens, width 768), each case
timed interleaved with the others of its group:

- launch cost: filling a 3.7 MB tensor with 1 and with 2 threads (on a loaded machine a parallel kernel waits for
  both of its threads to be scheduled);
- merge update: `index_add_` over flattened rows against `scatter_add_` into the destinations' view;
- gather backward: `index_select` against advanced indexing, forward + backward;
- matmul throughput in float32 and bfloat16 (GFLOP/s, 2 FLOPs per multiply-add), and whether oneDNN has native
  bfloat16 on this CPU;
- the levers of `optimize_for_inference` on ViT-B shapes (`INFERENCE_TOKENS` tokens of width 768), each against
  what the model itself runs: the MLP (`F.linear` + quick-GELU as three kernels + `F.linear` + residual add) against
  oneDNN's linear with SiLU fused (quick-GELU folded into SiLU by scaling the weights), and in bfloat16 and int8;
  q, k, v as three matmuls against one; the patch embedding as a convolution against a matmul over the flattened
  patches.

    python tools/kernel_microbench.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from transformers_tempme.analysis.benchmark_records import load_average, machine_description

SEQUENCES, TOKENS, WIDTH, MERGED = 24, 50, 768, 2
INFERENCE_TOKENS = 2400  # 4 videos x 12 frames x 50 tokens (ViT-B/32 before any merge)


def interleaved_ms(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in cases}
    for case in cases.values():
        case()  # warm-up
    for _ in range(repeats):
        for name, case in cases.items():
            start = time.perf_counter()
            case()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}


def with_threads(threads: int, function: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return function()
        finally:
            torch.set_num_threads(previous)

    return run


def inference_levers(generator: torch.Generator, repeats: int) -> dict[str, float]:
    """Median ms of the model's kernels against optimize_for_inference's, interleaved (see the module docstring)."""
    import torch.nn.functional as F

    from transformers_tempme.inference.linear import InferenceLinear, InferenceMLP

    tokens, hidden = INFERENCE_TOKENS, WIDTH
    x = torch.randn(tokens, hidden, generator=generator)
    mlp = torch.nn.Module()
    mlp.fc1, mlp.fc2 = torch.nn.Linear(hidden, 4 * hidden), torch.nn.Linear(4 * hidden, hidden)

    def model_mlp() -> torch.Tensor:
        h = mlp.fc1(x)
        return x + mlp.fc2(h * torch.sigmoid(1.702 * h))

    prepared = {precision: InferenceMLP(mlp, "quick_gelu", precision) for precision in ("fp32", "bf16", "int8")}
    x_bf16 = x.bfloat16()
    projections = [torch.nn.Linear(hidden, hidden) for _ in range(3)]
    qkv = InferenceLinear(
        torch.cat([p.weight.detach() for p in projections]), torch.cat([p.bias.detach() for p in projections]), "fp32"
    )
    frames, patch, grid = tokens // TOKENS, 32, 7
    pixels = torch.randn(frames, 3, patch * grid, patch * grid, generator=generator)
    conv = torch.nn.Conv2d(3, hidden, patch, stride=patch, bias=False)
    patch_linear = InferenceLinear(conv.weight.detach().flatten(1), None, "fp32")

    def patch_matmul() -> torch.Tensor:
        patches = pixels.view(frames, 3, grid, patch, grid, patch).permute(0, 2, 4, 1, 3, 5)
        return patch_linear(patches.reshape(frames, grid * grid, 3 * patch * patch))

    with torch.inference_mode():
        return interleaved_ms(
            {
                "MLP + residual, as the model runs it": model_mlp,
                "MLP + residual, oneDNN fp32, SiLU fused": lambda: x + prepared["fp32"](x),
                "MLP + residual, oneDNN bf16, SiLU fused": lambda: x_bf16 + prepared["bf16"](x_bf16),
                "MLP + residual, int8 (fbgemm dynamic)": lambda: x + prepared["int8"](x),
                "q, k, v: three F.linear": lambda: [p(x) for p in projections],
                "q, k, v: one fused oneDNN linear": lambda: qkv(x),
                "patch embedding: convolution": lambda: conv(pixels),
                "patch embedding: oneDNN matmul over patches": patch_matmul,
            },
            max(repeats // 3, 3),
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    rows = SEQUENCES * TOKENS
    print(f"{machine_description()['cpu']}, threads {args.threads}, load average {load_average()}, torch {torch.__version__}\n")

    buffer = torch.empty(rows, WIDTH)
    launch = interleaved_ms(
        {
            "fill_ 3.7 MB, 1 thread": with_threads(1, lambda: buffer.fill_(1.0)),
            f"fill_ 3.7 MB, {args.threads} threads": lambda: buffer.fill_(1.0),
        },
        args.repeats,
    )

    output = torch.randn(SEQUENCES, TOKENS, WIDTH, generator=generator)
    moved = torch.randn(SEQUENCES, MERGED, WIDTH, generator=generator)
    destinations = TOKENS // 2
    targets = torch.randint(0, destinations, (SEQUENCES, MERGED), generator=generator)
    flat_targets = (targets + (TOKENS - destinations) + torch.arange(SEQUENCES).unsqueeze(1) * TOKENS).flatten()
    update = interleaved_ms(
        {
            "index_add_ over flattened rows": lambda: output.view(rows, WIDTH).index_add_(
                0, flat_targets, moved.view(-1, WIDTH)
            ),
            "scatter_add_ into the destinations' view": lambda: output[:, TOKENS - destinations :].scatter_add_(
                1, targets.unsqueeze(-1).expand(-1, -1, WIDTH), moved
            ),
        },
        args.repeats,
    )

    x = torch.randn(rows, WIDTH, generator=generator, requires_grad=True)
    kept = torch.randperm(rows, generator=generator)[: SEQUENCES * (TOKENS - MERGED)].sort().values
    grad = torch.randn(kept.numel(), WIDTH, generator=generator)
    backward = interleaved_ms(
        {
            "index_select forward + backward": lambda: x.index_select(0, kept).backward(grad),
            "advanced indexing forward + backward": lambda: x[kept].backward(grad),
        },
        max(args.repeats // 3, 3),
    )

    matmul = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(1024, WIDTH, generator=generator).to(dtype)
        b = torch.randn(WIDTH, 4 * WIDTH, generator=generator).to(dtype)
        repeats = 5 if dtype == torch.float32 else 2
        ms = interleaved_ms({"matmul": lambda: a @ b}, repeats)["matmul"]
        matmul[f"matmul 1024x768 @ 768x3072, {str(dtype).removeprefix('torch.')}"] = ms

    inference = inference_levers(generator, args.repeats)

    print("| kernel | median ms |\n|---|---:|")
    for results in (launch, update, backward, matmul, inference):
        for name, ms in results.items():
            print(f"| {name} | {ms:.2f} |")
    print()
    for name, ms in matmul.items():
        print(f"{name}: {2 * 1024 * WIDTH * 4 * WIDTH / ms / 1e6:.1f} GFLOP/s")
    print(f"oneDNN native bfloat16: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}")


if __name__ == "__main__":
    main()
