"""Pictures of token merging (the paper's Figures 4 and 7): patches merged into one final token share a colour.

Pure functions from a model's `merge_sources` to images; `tempme visualize` runs the models. Not part
of the remote code (it uses numpy and PIL).

`merge_sources` (from `encode_video(..., output_merge_sources=True).vision_model_output`) has shape
`(batch * clips, tokens, frames * tokens_per_frame)`: row `i` of clip `c` marks the input tokens (frame-major,
CLS first in every frame) that final token `i` of clip `c` holds.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..frame_transforms import CLIP_MEAN, CLIP_STD, center_crop, normalize_frames, resize_shorter_side
from ..modeling_tempme import TempMeCLIPModel

GOLDEN_RATIO_CONJUGATE = 0.6180339887498949


def patch_owners(merge_sources: torch.Tensor, batch_size: int, tokens_per_frame: int) -> np.ndarray:
    """For every input patch, the final token that holds it.

    Args:
        merge_sources: `(batch * clips, tokens, frames * tokens_per_frame)` 0/1 matrix.
        batch_size: videos in the batch.
        tokens_per_frame: patches per frame plus the CLS token.

    Returns:
        int64 `(batch, frames, grid, grid)`: for each patch, the index of its final token among all final
        tokens of its video (clip-major), so equal values mean "merged into the same token".

    Raises:
        ValueError: an input token held by no final token or by several (the sources are inconsistent).
    """
    rows, tokens, inputs = merge_sources.shape
    clips = rows // batch_size
    frames = inputs // tokens_per_frame
    grid = int(round((tokens_per_frame - 1) ** 0.5))
    per_video = merge_sources.reshape(batch_size, clips * tokens, inputs)
    holders = per_video.sum(dim=1)
    if not torch.all(holders == 1):
        raise ValueError(
            f"Every input token must belong to exactly one final token, but holder counts range over "
            f"{holders.min().item()}..{holders.max().item()}."
        )
    owners = per_video.argmax(dim=1).reshape(batch_size, frames, tokens_per_frame)
    return owners[:, :, 1:].reshape(batch_size, frames, grid, grid).cpu().numpy()


def owner_colours(owners: np.ndarray, seed: int = 0) -> np.ndarray:
    """An RGB colour per owner id, hues spread by the golden ratio so that neighbouring ids differ. `(ids, 3)` uint8."""
    count = int(owners.max()) + 1
    order = np.random.default_rng(seed).permutation(count)
    colours = [colorsys.hsv_to_rgb((rank * GOLDEN_RATIO_CONJUGATE) % 1.0, 0.85, 0.95) for rank in order]
    return (np.asarray(colours) * 255).astype(np.uint8)


def paint_merges(frame: np.ndarray, owners: np.ndarray, colours: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Tint every patch of `frame` (uint8 `(H, W, 3)`) with its owner's colour and outline the merged regions.

    `owners` is the `(grid, grid)` owner map of this frame; `H` and `W` must be multiples of `grid`.
    """
    height, width = frame.shape[:2]
    grid = owners.shape[0]
    pixel_owners = np.kron(owners, np.ones((height // grid, width // grid), dtype=owners.dtype))
    tinted = (1 - alpha) * frame.astype(np.float32) + alpha * colours[pixel_owners].astype(np.float32)
    edges = np.zeros((height, width), dtype=bool)
    edges[:, 1:] |= pixel_owners[:, 1:] != pixel_owners[:, :-1]
    edges[1:, :] |= pixel_owners[1:, :] != pixel_owners[:-1, :]
    tinted[edges] = 0
    return tinted.astype(np.uint8)


def prepare_frames(frames: np.ndarray, image_size: int) -> tuple[np.ndarray, torch.Tensor]:
    """RGB frames `(F, H, W, 3)` -> cropped display frames `(F, S, S, 3)` and CLIP pixel values `(1, F, 3, S, S)`."""
    shown = np.stack(
        [np.asarray(center_crop(resize_shorter_side(Image.fromarray(f), image_size), image_size)) for f in frames]
    )
    pixel_values = torch.from_numpy(normalize_frames(shown, CLIP_MEAN, CLIP_STD)).unsqueeze(0)
    return shown, pixel_values


@torch.no_grad()
def merge_owners(model: TempMeCLIPModel, pixel_values: torch.Tensor) -> tuple[np.ndarray, int]:
    """Owner map `(frames, grid, grid)` of one video, and the number of tokens leaving the vision tower."""
    output = model.encode_video(pixel_values, output_merge_sources=True).vision_model_output
    owners = patch_owners(output.merge_sources, pixel_values.shape[0], model.config.tokens_per_frame)[0]
    clips, tokens = output.token_counts[-1] if output.token_counts else (pixel_values.shape[1], model.config.tokens_per_frame)
    return owners, clips * tokens


def merge_figure(
    frames: np.ndarray,
    rows: Sequence[tuple[str, np.ndarray]],
    thumb_size: int = 96,
    label_width: int = 150,
    seed: int = 0,
) -> Image.Image:
    """One row per method, one column per frame: every frame painted with that method's merges.

    Args:
        frames: display frames `(F, S, S, 3)` uint8, `S` a multiple of the patch grid.
        rows: `(label, owners (F, grid, grid))` per method.
        thumb_size: side of each frame in the figure, rounded down to a multiple of the patch grid.
    """
    num_frames = frames.shape[0]
    grid = rows[0][1].shape[-1]
    thumb_size = grid * max(1, thumb_size // grid)
    figure = Image.new("RGB", (label_width + num_frames * thumb_size, len(rows) * thumb_size), "white")
    draw = ImageDraw.Draw(figure)
    font = ImageFont.load_default(size=14)
    for row, (label, owners) in enumerate(rows):
        colours = owner_colours(owners, seed)
        draw.multiline_text((6, row * thumb_size + 6), label, fill="black", font=font)
        for column in range(num_frames):
            # Shrink first, then paint, so that the one-pixel outlines survive.
            thumb = np.asarray(Image.fromarray(frames[column]).resize((thumb_size, thumb_size), Image.Resampling.BICUBIC))
            painted = Image.fromarray(paint_merges(thumb, owners[column], colours))
            figure.paste(painted, (label_width + column * thumb_size, row * thumb_size))
    return figure


__all__ = [
    "patch_owners",
    "owner_colours",
    "paint_merges",
    "prepare_frames",
    "merge_owners",
    "merge_figure",
]
