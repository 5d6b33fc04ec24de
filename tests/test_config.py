"""TempMeConfig: presets, serialisation and schedule validation; it refuses what it would otherwise ignore or
truncate (unknown keywords, wrong types, later edits)."""

import json

import pytest
from transformers import AutoConfig

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


# --- TempMeConfig refuses what it would otherwise ignore or truncate: unknown keywords, wrong types, later edits. -----


MISSPELT = [
    # overrides of from_preset, the error
    ({"img_merge_R": 4}, r"no field 'img_merge_R' \(did you mean 'img_merge_r'\?\)"),
    ({"num_frame": 12}, r"no field 'num_frame' \(did you mean 'num_frames'\?\)"),
    ({"clip_merge_layer": [8, 9, 10]}, r"did you mean 'clip_merge_layers'\?"),
    ({"frobnicate": 1}, r"no field 'frobnicate'\. The merge schedule fields are num_frames, img_merge_r"),
    ({"vision_config": {"num_hidden_layer": 4}}, r"vision_config has no field 'num_hidden_layer' \(did you mean 'num_hidden_layers'\?\)"),
    ({"text_config": {"vocab_sise": 10}}, r"text_config has no field 'vocab_sise' \(did you mean 'vocab_size'\?\)"),
]


@pytest.mark.parametrize("overrides, message", MISSPELT)
def test_unknown_keywords_name_the_closest_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        TempMeConfig.from_preset("tempme-vit-b-32", **overrides)


def test_unknown_keyword_in_the_constructor_is_an_error():
    with pytest.raises(ValueError, match="did you mean 'intra_clip_keep_ratio'"):
        TempMeConfig(intra_clip_keep_ration=0.8)


def test_misspelt_preset_names_the_closest_one():
    with pytest.raises(ValueError, match=r"'tempme-vit-b32' \(did you mean 'tempme-vit-b-32'\?\)"):
        TempMeConfig.from_preset("tempme-vit-b32")


def test_keywords_hf_takes_stay_accepted():
    config = TempMeConfig(attn_implementation="sdpa", name_or_path="somewhere", num_frames=12)
    assert config._attn_implementation == "sdpa"
    # A config's own dict (what save_pretrained writes) builds the same config.
    assert TempMeConfig(**config.to_dict()).to_dict() == config.to_dict()


def test_saved_config_with_extra_keys_still_loads(tmp_path, caplog):
    TempMeConfig.from_preset("tempme-vit-b-32", img_merge_r=3).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    # Keys an older transformers or an older version of this package may have written.
    saved.update({"torchscript": False, "use_bfloat16": False, "_commit_hash": "abc", "img_merge_R": 5})
    (tmp_path / "config.json").write_text(json.dumps(saved))

    with caplog.at_level("WARNING"):
        loaded = TempMeConfig.from_pretrained(tmp_path)
    assert loaded.img_merge_r == 3 and loaded.clip_merge_groups == [2, 2, 3]
    assert AutoConfig.from_pretrained(tmp_path).img_merge_r == 3
    # The one key that looks like a misspelt schedule field is named in a warning; HF's own keys are not.
    assert "'img_merge_R'" in caplog.text and "did you mean 'img_merge_r'" in caplog.text
    assert "torchscript" not in caplog.text
    # And after loading, constructing configs is strict again.
    with pytest.raises(ValueError, match="img_merge_R"):
        TempMeConfig(img_merge_R=4)


WRONG_TYPES = [
    ({"num_frames": "4"}, r"'num_frames' expected int, got str"),
    ({"img_merge_r": 2.5}, r"'img_merge_r' expected int, got float"),
    ({"clip_merge_groups": [2.7, 3.2]}, r"'clip_merge_groups' with value \[2\.7, 3\.2\]"),
    ({"clip_merge_layers": "8,9,10"}, r"'clip_merge_layers'"),
    ({"cross_clip_keep_ratio": "0.7"}, r"'cross_clip_keep_ratio'"),
]


@pytest.mark.parametrize("overrides, message", WRONG_TYPES)
def test_wrong_types_are_errors_not_truncations(overrides, message):
    with pytest.raises(Exception, match=message):
        TempMeConfig.from_preset("tempme-vit-b-32", **overrides)


def test_a_field_set_after_construction_is_type_checked():
    config = TempMeConfig.from_preset("tempme-vit-b-32")
    with pytest.raises(Exception, match="'num_frames' expected int"):
        config.num_frames = "12"


def test_a_schedule_edited_after_construction_is_validated_before_use():
    config = TempMeConfig.from_preset("tempme-vit-b-32")
    config.num_frames = 8  # a valid int, but [2, 2, 3] does not divide 8 frames
    with pytest.raises(ValueError, match="does not divide the frame count"):
        config.merge_plan()
    config.num_frames = 12
    config.clip_merge_groups.append(2.5)  # edited in place: no setattr to check it
    with pytest.raises(TypeError, match=r"clip_merge_groups must be a list of integers, got \[2, 2, 3, 2\.5\]"):
        config.merge_plan()
    config.clip_merge_groups.pop()
    assert config.merge_plan()[-1].clips == 1
