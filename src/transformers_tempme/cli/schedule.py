"""Build a TempMe model at the paper's shape (random weights), encode a random video, and print its token
schedule and GFLOPs next to the paper's.

    tempme schedule --preset tempme-vit-b-32      # one model, block by block
    tempme schedule --all                         # every preset, one summary table
    tempme schedule --tuners --preset tempme-vit-b-16   # GFLOPs with each tuner (Table 13's methods), B/16
"""

from __future__ import annotations

import torch

from .. import PRESETS, TempMeCLIPModel, TempMeConfig
from ..analysis.accounting import count_gflops, token_schedule
from ..analysis.paper_figures import PAPER_GFLOPS, PAPER_OUTPUT_TOKENS
from .common import command_parser, reports_user_errors

# Rows of the summary table: (label, preset, frame override). 64-frame baselines reuse the 12-frame presets.
SUMMARY_ROWS = [(preset, preset, None) for preset in PRESETS] + [
    ("clip-vit-b-32-64f", "clip-vit-b-32", 64),
    ("tome-vit-b-32-64f", "tome-vit-b-32", 64),
]


def block_kind(config: TempMeConfig, layer: int) -> str:
    if layer in config.clip_merge_layers:
        return "ClipMe"
    if config.clip_merge_layers and layer > config.clip_merge_layers[0]:
        return "intra-clip"
    return "ImgMe" if config.img_merge_r > 0 else "none"


def measure_token_counts(config: TempMeConfig, seed: int = 0) -> tuple[tuple[int, int], ...]:
    """Run the vision tower on one random video and return the counts it measured at every block."""
    torch.manual_seed(seed)
    model = TempMeCLIPModel(config).eval()
    size = config.vision_config.image_size
    with torch.inference_mode():
        return model.encode_video(torch.randn(1, config.num_frames, 3, size, size)).token_counts


def fmt_tokens(counts: tuple[int, int] | None) -> str:
    return "-" if counts is None else f"{counts[0]} x {counts[1]}"


def print_block_table(preset: str) -> None:
    config = TempMeConfig.from_preset(preset)
    measured = measure_token_counts(config)
    vision = config.vision_config
    size = {768: "B", 1024: "L"}.get(vision.hidden_size, f"{vision.num_hidden_layers}x{vision.hidden_size}")
    print(f"{preset}: {config.num_frames} frames, ViT-{size}/{vision.patch_size}, random weights\n")
    print("| block | kind | clips/video | tokens in attention | tokens out (analytic) | measured |")
    print("|---:|---|---:|---:|---:|---:|")
    for step, counts in zip(config.merge_plan(), measured):
        analytic = (step.clips, step.tokens_out)
        print(f"| {step.layer} | {block_kind(config, step.layer)} | {step.clips} | {step.tokens_attention} | "
              f"{fmt_tokens(analytic)} | {fmt_tokens(counts)} |")
    print(f"\noutput tokens: {fmt_tokens(measured[-1])} (paper: {fmt_tokens(PAPER_OUTPUT_TOKENS.get(preset))})")
    print(f"GFLOPs per video: {count_gflops(config):.2f} (paper: {PAPER_GFLOPS.get(preset, '-')})")


def print_summary_table(measure: bool) -> None:
    header = "| model | frames | output tokens | measured | paper tokens | GFLOPs | paper GFLOPs | ratio |"
    print(header + "\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, preset, frames in SUMMARY_ROWS:
        config = TempMeConfig.from_preset(preset, **({} if frames is None else {"num_frames": frames}))
        analytic = token_schedule(config)[-1]
        measured = fmt_tokens(measure_token_counts(config)[-1]) if measure else "-"
        paper_gflops = PAPER_GFLOPS.get(label)
        ratio = f"{count_gflops(config) / paper_gflops:.4f}" if paper_gflops else "-"
        print(f"| {label} | {config.num_frames} | {fmt_tokens(analytic)} | {measured} | "
              f"{fmt_tokens(PAPER_OUTPUT_TOKENS.get(label))} | {count_gflops(config):.2f} | "
              f"{paper_gflops if paper_gflops else '-'} | {ratio} |")


# Rows of the tuner table: (label, count_gflops keyword arguments).
TUNER_ROWS = [
    ("LoRA (folded)", {}),
    ("Adapter, bottleneck 8", {"adapter_bottleneck": 8}),
    ("Prompt, 5 prompts, as computed here", {"num_prompts": 5}),
    ("Prompt, 5 prompts run as tokens (the paper's convention)", {"num_prompts": 5, "prompts_as_tokens": True}),
]


def print_tuner_table(preset: str) -> None:
    """GFLOPs per video of each parameter-efficient method, without merging, with ToMe and with TempMe."""
    backbone = preset.split("-", 1)[1]
    kinds = [kind for kind in ("clip", "tome", "tempme") if f"{kind}-{backbone}" in PRESETS]
    configs = [TempMeConfig.from_preset(f"{kind}-{backbone}") for kind in kinds]
    print(f"| {backbone}, {configs[0].num_frames} frames | " + " | ".join(f"{kind}-{backbone}" for kind in kinds) + " |")
    print("|---|" + "---:|" * len(kinds))
    for label, tuning in TUNER_ROWS:
        print(f"| {label} | " + " | ".join(f"{count_gflops(config, **tuning):.2f}" for config in configs) + " |")


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    parser = command_parser("schedule", __doc__)
    parser.add_argument("--preset", default="tempme-vit-b-32", choices=PRESETS)
    parser.add_argument("--all", action="store_true", help="summary table over every preset")
    parser.add_argument("--no-measure", action="store_true", help="with --all: analytic counts only (fast)")
    parser.add_argument("--tuners", action="store_true", help="GFLOPs with adapters and prompts, for the backbone of --preset")
    args = parser.parse_args(argv)
    with torch.no_grad():  # not set_grad_enabled(False): callers in the same process keep their grad mode
        if args.tuners:
            print_tuner_table(args.preset)
        elif args.all:
            print_summary_table(measure=not args.no_measure)
        else:
            print_block_table(args.preset)
    return 0

