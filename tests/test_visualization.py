"""Merge sources: every input patch sits in exactly one final token, and the pictures are drawn from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_inputs, tiny_model
from PIL import Image

from transformers_tempme.data.synthetic_video import write_video
from transformers_tempme.analysis.visualization import merge_figure, merge_owners, owner_colours, paint_merges, patch_owners

FAMILIES = ("tempme", "tome", "clip")


def vision_output(family: str, batch: int = 2):
    model = tiny_model(family)
    pixel_values = tiny_inputs(model.config, batch=batch)["pixel_values"]
    with torch.no_grad():
        output = model.encode_video(pixel_values, output_merge_sources=True).vision_model_output
    return model.config, output


@pytest.mark.parametrize("family", FAMILIES)
def test_every_input_token_belongs_to_exactly_one_final_token(family):
    config, output = vision_output(family)
    sources = output.merge_sources
    clips, tokens = output.token_counts[-1]
    assert sources.shape == (2 * clips, tokens, config.num_frames * config.tokens_per_frame)
    assert set(sources.unique().tolist()) <= {0.0, 1.0}
    holders = sources.reshape(2, clips * tokens, -1).sum(dim=1)
    assert torch.all(holders == 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_sources_agree_with_token_sizes(family):
    _, output = vision_output(family)
    held = output.merge_sources.sum(dim=-1)
    if output.token_sizes is None:  # nothing merged: every token holds itself
        assert family == "clip"
        assert torch.all(held == 1)
    else:
        torch.testing.assert_close(held, output.token_sizes.squeeze(-1))
        assert held.max() > 1


def test_tome_merges_stay_within_a_frame_and_tempme_clips_span_frames():
    for family, max_frames_per_clip in (("tome", 1), ("tempme", None)):
        config, output = vision_output(family)
        per_frame = output.merge_sources.reshape(*output.merge_sources.shape[:2], config.num_frames, -1)
        frames_touched = (per_frame.sum(dim=-1) > 0).sum(dim=-1)
        if max_frames_per_clip is not None:
            assert frames_touched.max() == max_frames_per_clip
        else:
            # TempMe joins all frames into one clip here; its tokens hold patches of several frames.
            assert output.token_counts[-1][0] == 1
            assert frames_touched.max() > 1


@pytest.mark.parametrize("family", FAMILIES)
def test_patch_owners_map_every_patch_to_its_final_token(family):
    config, output = vision_output(family)
    owners = patch_owners(output.merge_sources, 2, config.tokens_per_frame)
    grid = config.vision_config.image_size // config.vision_config.patch_size
    assert owners.shape == (2, config.num_frames, grid, grid)
    clips, tokens = output.token_counts[-1]
    sizes = output.merge_sources.sum(dim=-1).reshape(2, clips * tokens)
    for video in range(2):
        patches_held = np.bincount(owners[video].ravel(), minlength=clips * tokens)
        cls_held = np.zeros(clips * tokens, dtype=np.int64)  # CLS tokens hold only themselves
        cls_per_clip = config.num_frames // clips
        for clip in range(clips):
            cls_held[clip * tokens : clip * tokens + cls_per_clip] = 1
        np.testing.assert_array_equal(patches_held + cls_held, sizes[video].numpy())


def test_patch_owners_rejects_inconsistent_sources():
    _, output = vision_output("tempme")
    broken = output.merge_sources.clone()
    broken[0, 0, 5] += 1
    with pytest.raises(ValueError, match="exactly one final token"):
        patch_owners(broken, 2, tiny_model().config.tokens_per_frame)


def test_paint_merges_outlines_regions_and_keeps_one_colour_per_region():
    owners = np.array([[0, 0], [1, 2]])
    colours = owner_colours(owners)
    frame = np.full((8, 8, 3), 200, dtype=np.uint8)
    painted = paint_merges(frame, owners, colours)
    assert painted.shape == frame.shape
    assert np.all(painted[0, :] == painted[0, 0])  # owner 0 spans the top row: no outline inside it
    assert np.all(painted[4:, 4] == 0)  # the border between owners 1 and 2
    assert len({tuple(c) for c in colours}) == 3


def test_merge_figure_has_one_row_per_method_and_one_column_per_frame():
    config, output = vision_output("tome", batch=1)
    owners = patch_owners(output.merge_sources, 1, config.tokens_per_frame)[0]
    frames = np.random.default_rng(0).integers(0, 255, (config.num_frames, 32, 32, 3), dtype=np.uint8)
    figure = merge_figure(frames, [("ToMe", owners), ("again", owners)], thumb_size=16, label_width=40)
    assert figure.size == (40 + config.num_frames * 16, 2 * 16)


def test_merge_owners_counts_output_tokens():
    model = tiny_model("tempme")
    pixel_values = tiny_inputs(model.config, batch=1)["pixel_values"]
    owners, tokens = merge_owners(model, pixel_values)
    clips, per_clip = model.encode_video(pixel_values).token_counts[-1]
    assert tokens == clips * per_clip and owners.max() < tokens


def test_script_writes_a_png(tmp_path):
    model = tiny_model("tempme")
    model.save_pretrained(tmp_path / "model")
    rng = np.random.default_rng(0)
    video = np.repeat(rng.integers(0, 255, (1, 48, 64, 3), dtype=np.uint8), 10, axis=0)
    video[5:] = 255 - video[5:]
    write_video(tmp_path / "clip.mp4", video)

    from transformers_tempme.cli import visualize as script

    output = tmp_path / "out" / "merges.png"
    argv = [str(tmp_path / "clip.mp4"), "--model", str(tmp_path / "model"), "-o", str(output), "--thumb-size", "32"]
    assert script.main(argv) == 0
    with Image.open(output) as image:
        assert image.format == "PNG"
        assert image.size == (150 + model.config.num_frames * 32, 2 * 32)
    assert script.main([str(tmp_path / "missing.mp4"), "--model", str(tmp_path / "model"), "-o", str(output)]) == 2
