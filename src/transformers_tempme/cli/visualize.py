"""Draw which patches ToMe and TempMe merge on the frames of a video (the paper's Figures 4 and 7).

    tempme visualize VIDEO [-o merges.png] [--model PATH] [--preset tempme-vit-b-32]

Rows are methods, columns the sampled frames; patches merged into the same final token share a colour and an
outline. ToMe merges within each frame only; TempMe's tokens can span the frames of a clip.

Without `--model` both rows use the same randomly initialised CLIP at the shape of `--preset` (the merges then
follow raw patch similarity). With `--model`, a trained TempMe model or adapter (folder or Hub id, anything
`load_tempme` loads), both rows use its weights. The ToMe row is
the TempMe schedule without its ClipMe blocks: ImgMe with the same r in every block, as the paper's ToMe rows.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..analysis.visualization import merge_figure, merge_owners, prepare_frames
from ..configuration_tempme import PRESETS, TempMeConfig
from ..modeling_tempme import TempMeCLIPModel
from ..video_io import read_video_frames
from .common import command_parser, load_model_option, reports_user_errors


def build_models(model_path: str | None, preset: str, seed: int) -> tuple[TempMeCLIPModel, TempMeCLIPModel]:
    """(ToMe, TempMe) sharing one set of CLIP weights."""
    if model_path:
        tempme = load_model_option(model_path, merge=True)  # the ToMe row needs a plain model (with_schedule)
    else:
        torch.manual_seed(seed)
        tempme = TempMeCLIPModel(TempMeConfig.from_preset(preset)).eval()
    tome_schedule = TempMeConfig.from_dict({**tempme.config.to_dict(), "clip_merge_layers": [], "clip_merge_groups": []})
    return tempme.with_schedule(tome_schedule).eval(), tempme


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    parser = command_parser("visualize", __doc__)
    parser.add_argument("video", help="video file (anything PyAV decodes)")
    parser.add_argument("-o", "--output", default="merges.png", help="PNG to write")
    parser.add_argument("--model", help="trained TempMe model or adapter, folder or Hub id (default: random weights at the preset shape)")
    parser.add_argument(
        "--preset",
        default="tempme-vit-b-32",
        choices=[name for name in PRESETS if name.startswith("tempme-")],
        help="shape and schedule of the random-weight model (without --model)",
    )
    parser.add_argument("--thumb-size", type=int, default=112, help="side of each frame in the figure, in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and of the colours")
    args = parser.parse_args(argv)

    tome, tempme = build_models(args.model, args.preset, args.seed)
    config = tempme.config
    frames, _ = read_video_frames(args.video, config.num_frames, sampling="uniform")
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

