"""TempMeConfig refuses what it would otherwise ignore or truncate: unknown keywords, wrong types, later edits."""

import json

import pytest
from transformers import AutoConfig

from transformers_tempme import TempMeConfig

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
