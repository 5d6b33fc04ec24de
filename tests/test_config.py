"""TempMeConfig: presets, serialisation and schedule validation."""

import pytest

from transformers_tempme import PRESETS, TempMeConfig

PRESET_SHAPES = [
    # preset, patch size, frames, ClipMe blocks, groups, R_C, R_I, ImgMe r
    ("tempme-vit-b-32", 32, 12, [8, 9, 10], [2, 2, 3], 0.7, 0.9, 2),
    ("tempme-vit-b-16", 16, 12, [8, 9, 10], [2, 2, 3], 0.6, 0.8, 10),
    ("tempme-vit-b-32-64f", 32, 64, [8, 9, 10], [4, 4, 4], 0.7, 0.9, 2),
    ("tome-vit-b-32", 32, 12, [], [], 0.7, 0.9, 2),
    ("tome-vit-b-16", 16, 12, [], [], 0.7, 0.9, 10),
    ("clip-vit-b-32", 32, 12, [], [], 0.7, 0.9, 0),
    ("clip-vit-b-16", 16, 12, [], [], 0.7, 0.9, 0),
]


@pytest.mark.parametrize("preset, patch, frames, layers, groups, keep_cross, keep_intra, r", PRESET_SHAPES)
def test_presets(preset, patch, frames, layers, groups, keep_cross, keep_intra, r):
    config = TempMeConfig.from_preset(preset)
    assert config.model_type == "tempme"
    assert config.vision_config.patch_size == patch
    assert (config.vision_config.hidden_size, config.vision_config.num_hidden_layers) == (768, 12)
    assert (config.text_config.hidden_size, config.projection_dim) == (512, 512)
    assert config.num_frames == frames
    assert config.clip_merge_layers == layers and config.clip_merge_groups == groups
    if layers:
        assert (config.cross_clip_keep_ratio, config.intra_clip_keep_ratio) == (keep_cross, keep_intra)
    assert config.img_merge_r == r


def test_every_preset_is_listed():
    vit_l = {preset for preset in PRESETS if preset.endswith("vit-l-14")}  # tested in test_backbones.py
    assert set(PRESETS) - vit_l == {row[0] for row in PRESET_SHAPES}


def test_preset_overrides_merge_sub_configs():
    config = TempMeConfig.from_preset("tempme-vit-b-32", vision_config={"num_hidden_layers": 12}, num_frames=24,
                                      clip_merge_groups=[2, 3, 4])
    assert config.vision_config.patch_size == 32  # kept from the preset
    assert config.num_frames == 24 and config.clip_merge_groups == [2, 3, 4]


def test_save_and_load_round_trip(tmp_path):
    config = TempMeConfig.from_preset("tempme-vit-b-16", clip_position_embedding_init_std=0.02)
    config.save_pretrained(tmp_path)
    loaded = TempMeConfig.from_pretrained(tmp_path)
    assert loaded.merge_schedule == config.merge_schedule
    assert loaded.vision_config.patch_size == 16
    assert loaded.to_dict() == config.to_dict()


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="tempme-vit-b-32"):
        TempMeConfig.from_preset("tempme-vit-h-14")


INVALID_SCHEDULES = [
    ({"num_frames": 8}, "does not divide the frame count"),
    ({"num_frames": 12, "clip_merge_groups": [2, 2, 2]}, "does not divide the frame count"),
    ({"clip_merge_layers": [8, 9, 12]}, r"0-indexed vision blocks in \[0, 11\]"),
    ({"clip_merge_layers": [9, 8, 10]}, "strictly increasing"),
    ({"clip_merge_layers": [8, 9]}, "same length"),
    ({"clip_merge_groups": [2, 0, 3]}, "positive integers"),
    ({"cross_clip_keep_ratio": 0.0}, r"cross_clip_keep_ratio must be in \(0, 1\]"),
    ({"intra_clip_keep_ratio": 1.5}, r"intra_clip_keep_ratio must be in \(0, 1\]"),
    ({"img_merge_r": 30}, "at most half"),
    ({"img_merge_r": 6}, "more than half of the 7 patch tokens left in ImgMe block 7"),
    ({"img_merge_r": -1}, "img_merge_r must be >= 0"),
    ({"num_frames": 0}, "num_frames must be at least 1"),
]


@pytest.mark.parametrize("overrides, message", INVALID_SCHEDULES)
def test_invalid_schedules_raise_clear_errors(overrides, message):
    with pytest.raises(Exception, match=message) as error:
        TempMeConfig.from_preset("tempme-vit-b-32", **overrides)
    assert isinstance(error.value, ValueError) or isinstance(error.value.__cause__, ValueError)


@pytest.mark.parametrize(
    "frames, groups",
    [(8, [2, 2, 2]), (16, [2, 2, 4]), (64, [4, 4, 4]), (12, [2, 3]), (12, [4]), (24, [2, 3, 4])],
)
def test_schedules_that_fit_other_frame_counts(frames, groups):
    layers = [8, 9, 10][: len(groups)]
    config = TempMeConfig.from_preset("tempme-vit-b-32", num_frames=frames, clip_merge_layers=layers,
                                      clip_merge_groups=groups)
    clips = frames
    for group in groups:
        clips //= group
    assert config.merge_plan()[-1].clips == clips
