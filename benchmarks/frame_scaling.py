"""How cost grows with the number of frames: output tokens and GFLOPs of no-merge, ToMe and TempMe (analytic).

For 12, 24, 48 and 64 frames on ViT-B/32 and ViT-B/16 shapes, counts the tokens leaving the vision tower and the
GFLOPs per video (`transformers_tempme.count_gflops`, the paper's convention: one multiply-add is one FLOP).
TempMe keeps the paper's ClipMe blocks [8, 9, 10] and keep ratios and joins clips with a schedule whose product
is the frame count, so that one clip per video is left: [2, 2, 3] for 12 frames, [2, 3, 4] for 24, [4, 4, 3] for
48 and [4, 4, 4] for 64 (the paper's ActivityNet setting). No model is built; this runs in a second.

    python benchmarks/frame_scaling.py
    python benchmarks/frame_scaling.py --frames 12,24,48,64 --backbones vit-b-32 --markdown outputs/frames.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from transformers_tempme import TempMeConfig, count_gflops
from transformers_tempme.analysis.accounting import token_schedule

# ClipMe group sizes per frame count (their product is the frame count: one clip per video at the end).
TEMPME_GROUPS: dict[int, list[int]] = {12: [2, 2, 3], 24: [2, 3, 4], 48: [4, 4, 3], 64: [4, 4, 4]}
METHOD_PRESETS = {"no-merge": "clip", "tome": "tome", "tempme": "tempme"}


def scaling_rows(backbones: list[str], frame_counts: list[int]) -> list[dict]:
    rows = []
    for backbone in backbones:
        for frames in frame_counts:
            baseline = None
            for method, prefix in METHOD_PRESETS.items():
                overrides = {"num_frames": frames}
                if method == "tempme":
                    if frames not in TEMPME_GROUPS:
                        raise SystemExit(f"No TempMe schedule for {frames} frames: choose from {sorted(TEMPME_GROUPS)}.")
                    overrides["clip_merge_groups"] = TEMPME_GROUPS[frames]
                config = TempMeConfig.from_preset(f"{prefix}-{backbone}", **overrides)
                clips, tokens = token_schedule(config)[-1]
                gflops = count_gflops(config)
                baseline = gflops if method == "no-merge" else baseline
                rows.append(
                    {
                        "backbone": backbone,
                        "frames": frames,
                        "method": method,
                        "clip_merge_groups": list(config.clip_merge_groups),
                        "output_tokens": clips * tokens,
                        "output_tokens_layout": f"{clips} x {tokens}",
                        "input_tokens": frames * config.tokens_per_frame,
                        "gflops": gflops,
                        "gflops_vs_no_merge": gflops / baseline,
                        "gflops_per_frame": gflops / frames,
                    }
                )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| backbone | frames | method | ClipMe groups | output tokens | share of input tokens | GFLOPs | GFLOPs per frame "
        "| GFLOPs vs no-merge |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        groups = ", ".join(map(str, row["clip_merge_groups"])) or "—"
        lines.append(
            f"| {row['backbone']} | {row['frames']} | {row['method']} | {groups} | {row['output_tokens_layout']} "
            f"| {100 * row['output_tokens'] / row['input_tokens']:.1f}% | {row['gflops']:.1f} "
            f"| {row['gflops_per_frame']:.2f} | {100 * row['gflops_vs_no_merge']:.0f}% |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="vit-b-32,vit-b-16")
    parser.add_argument("--frames", default="12,24,48,64")
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = scaling_rows(args.backbones.split(","), [int(frames) for frames in args.frames.split(",")])
    text = "`python benchmarks/frame_scaling.py" + "".join(f" {a}" for a in (argv or [])) + "`\n\n" + markdown(rows) + "\n"
    print(text)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    return rows


if __name__ == "__main__":
    main()
