"""Draw which patches ToMe and TempMe merge on the frames of a video (the paper's Figures 4 and 7).

    python scripts/visualize_merges.py VIDEO [-o merges.png] [--model PATH] [--backbone vit-b-32|vit-b-16]

Rows are methods, columns the sampled frames; patches merged into the same final token share a colour and an
outline. ToMe merges within each frame only; TempMe's tokens can span the frames of a clip.

Without `--model` both rows use the same randomly initialised CLIP at the real ViT-B shape under the presets
`tome-vit-b-*` and `tempme-vit-b-*` (the merges then follow raw patch similarity). With `--model`, a trained
TempMe folder, the ToMe row reuses its weights under the ToMe schedule.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from transformers_tempme import TempMeCLIPModel, TempMeConfig
from transformers_tempme.video_io import VideoDecodeError, read_video_frames
from transformers_tempme.visualization import merge_figure, merge_owners, model_with_schedule, prepare_frames


def build_models(model_path: str | None, backbone: str, seed: int) -> tuple[TempMeCLIPModel, TempMeCLIPModel]:
    """(ToMe, TempMe) sharing one set of CLIP weights."""
    if model_path:
        tempme = TempMeCLIPModel.from_pretrained(model_path).eval()
    else:
        torch.manual_seed(seed)
        tempme = TempMeCLIPModel(TempMeConfig.from_preset(f"tempme-{backbone}")).eval()
    tome_schedule = TempMeConfig.from_preset(f"tome-{backbone}", num_frames=tempme.config.num_frames)
    return model_with_schedule(tempme, tome_schedule), tempme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", help="video file (anything PyAV decodes)")
    parser.add_argument("-o", "--output", default="merges.png", help="PNG to write")
    parser.add_argument("--model", help="trained TempMe model folder (default: random weights at the preset shape)")
    parser.add_argument("--backbone", default="vit-b-32", choices=["vit-b-32", "vit-b-16"])
    parser.add_argument("--thumb-size", type=int, default=112, help="side of each frame in the figure, in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and of the colours")
    args = parser.parse_args(argv)

    tome, tempme = build_models(args.model, args.backbone, args.seed)
    config = tempme.config
    try:
        frames, _ = read_video_frames(args.video, config.num_frames, sampling="uniform")
    except VideoDecodeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    shown, pixel_values = prepare_frames(frames, config.vision_config.image_size)

    rows = []
    for name, model in (("ToMe", tome), ("TempMe", tempme)):
        owners, tokens = merge_owners(model, pixel_values.to(model.dtype))
        rows.append((f"{name}\n{tokens} tokens out\nof {config.num_frames * config.tokens_per_frame}", owners))
    figure = merge_figure(shown, rows, thumb_size=args.thumb_size, seed=args.seed)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    # A 256-colour palette keeps the PNG small; the merge colours are flat, so little is lost.
    figure.quantize(colors=256).save(args.output, optimize=True)
    print(f"Wrote {args.output}: {len(rows)} methods x {config.num_frames} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
