"""Other CLIP backbones: `from_clip` on HF `CLIPModel` folders of every flavour (OpenAI, MetaCLIP, OpenCLIP-trained,
LaCLIP), written by the tests with tiny widths, and the ViT-L/14 presets."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_BACKBONE, random_video
from transformers import CLIPConfig, CLIPModel

from transformers_tempme import TempMeCLIPModel, TempMeConfig, apply_adapter, apply_lora, apply_prompt, count_gflops
from transformers_tempme.analysis.accounting import token_schedule


def tiny_clip_config(**changes) -> CLIPConfig:
    """`TINY_BACKBONE` with `changes` applied (sub-config dicts key by key)."""
    fields = {key: dict(value) if isinstance(value, dict) else value for key, value in TINY_BACKBONE.items()}
    for key, value in changes.items():
        fields[key] = {**fields[key], **value} if isinstance(value, dict) else value
    return CLIPConfig(**fields)


# What sets the HF conversions of these checkpoints apart from OpenAI's CLIP (their config.json, at tiny widths).
FLAVOURS = {
    # openai/clip-vit-*: QuickGELU, eps 1e-5, the end-of-text token is the largest id.
    "openai": {},
    # facebook/metaclip-*: exact GELU, its own projection width, the old `eos_token_id: 2` (pooling at the largest id).
    "metaclip": {
        "projection_dim": 24,
        "text_config": {"hidden_act": "gelu", "eos_token_id": 2},
        "vision_config": {"hidden_act": "gelu"},
    },
    # laion/CLIP-ViT-B-*-laion2B (OpenCLIP-trained, saved as CLIPModel): exact GELU, another temperature init.
    "openclip": {
        "text_config": {"hidden_act": "gelu"},
        "vision_config": {"hidden_act": "gelu", "layer_norm_eps": 1e-6},
        "logit_scale_init_value": 4.6052,
    },
    # LaCLIP, converted to HF CLIP: OpenAI's architecture with other weights.
    "laclip": {"text_config": {"max_position_embeddings": 20}},
}
NO_MERGE = {"img_merge_r": 0, "clip_merge_layers": [], "clip_merge_groups": []}
TEMPME = {"img_merge_r": 2, "clip_merge_layers": [2, 3], "clip_merge_groups": [2, 2]}


@pytest.fixture(params=list(FLAVOURS))
def clip_folder(request, tmp_path):
    torch.manual_seed(0)
    clip = CLIPModel(tiny_clip_config(**FLAVOURS[request.param])).eval()
    clip.save_pretrained(tmp_path / request.param)
    return tmp_path / request.param, clip


def test_from_clip_keeps_the_backbone_and_every_weight(clip_folder):
    folder, clip = clip_folder
    model = TempMeCLIPModel.from_clip(str(folder), TempMeConfig(num_frames=4, **TINY_BACKBONE, **TEMPME))
    shared = ("hidden_act", "layer_norm_eps", "hidden_size", "num_hidden_layers")
    for tower, keys in (("text_config", (*shared, "eos_token_id", "max_position_embeddings")), ("vision_config", shared)):
        for key in keys:
            assert getattr(getattr(model.config, tower), key) == getattr(getattr(clip.config, tower), key), (tower, key)
    assert model.logit_scale.item() == pytest.approx(clip.logit_scale.item())
    assert model.config.projection_dim == clip.config.projection_dim
    assert model.config.clip_merge_layers == [2, 3]
    state = model.state_dict()
    for name, tensor in clip.state_dict().items():
        assert torch.equal(state[name], tensor), name
    assert {name for name in state if name not in clip.state_dict()} == {
        f"vision_model.encoder.layers.{i}.clip_position_embedding.weight" for i in (2, 3)
    }


def test_without_merging_the_model_is_the_clip_it_came_from(clip_folder):
    """Frame embeddings are CLIP's image embeddings of each frame; text embeddings are CLIP's."""
    folder, clip = clip_folder
    model = TempMeCLIPModel.from_clip(str(folder), TempMeConfig(num_frames=3, **TINY_BACKBONE, **NO_MERGE)).eval()
    pixel_values = random_video(2, 3, model.config)
    input_ids = torch.tensor([[126, 5, 9, 17, 127], [126, 3, 127, 0, 0]])
    with torch.no_grad():
        frames = model.encode_video(pixel_values).frame_embeds
        images = clip.get_image_features(pixel_values=pixel_values.flatten(0, 1)).pooler_output.view(2, 3, -1)
        texts = model.get_text_features(input_ids=input_ids).pooler_output
        expected_texts = clip.get_text_features(input_ids=input_ids).pooler_output
    torch.testing.assert_close(frames, images / images.norm(dim=-1, keepdim=True), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(texts, expected_texts, rtol=1e-5, atol=1e-5)


def test_every_tuner_fits_a_metaclip_backbone(tmp_path):
    torch.manual_seed(0)
    CLIPModel(tiny_clip_config(**FLAVOURS["metaclip"])).save_pretrained(tmp_path)
    schedule = TempMeConfig(num_frames=4, **TINY_BACKBONE, **TEMPME)
    vision, text = 64, 32  # tiny widths; 4 vision and 2 text blocks
    clip_positions = (4 + 2) * vision
    counts = {
        apply_adapter: 4 * (2 * vision * 8 + 8 + vision) + 2 * (2 * text * 8 + 8 + text) + clip_positions,
        apply_prompt: 4 * 5 * vision + 2 * 5 * text + clip_positions,
        apply_lora: 4 * 3 * 2 * 8 * vision + 2 * 3 * 2 * 8 * text + clip_positions,
    }
    for apply, expected in counts.items():
        model = apply(TempMeCLIPModel.from_clip(str(tmp_path), schedule))
        assert model.get_nb_trainable_parameters()[0] == expected, apply.__name__
        with torch.no_grad():
            embeds = model.encode_video(random_video(1, 4, schedule)).video_embeds
        assert embeds.shape == (1, 24)


# ---------------------------------------------------------------------------------------------- ViT-L/14


def test_vit_l_14_presets_are_openai_clip_large_shapes():
    openai_large = CLIPConfig(
        text_config={"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12},
        vision_config={"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                       "num_attention_heads": 16, "patch_size": 14},
        projection_dim=768,
    )
    with torch.device("meta"):  # shapes only
        clip = CLIPModel(openai_large)
        model = TempMeCLIPModel(TempMeConfig.from_preset("clip-vit-l-14"))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {
        k: tuple(v.shape) for k, v in clip.state_dict().items()
    }
    assert sum(p.numel() for p in clip.parameters()) == 427_616_513


@pytest.mark.parametrize(
    "preset, layers, groups, keep_cross, keep_intra, r",
    [
        ("tempme-vit-l-14", [16, 18, 20], [2, 2, 3], 0.6, 0.9, 7),
        ("tome-vit-l-14", [], [], None, None, 7),
        ("clip-vit-l-14", [], [], None, None, 0),
    ],
)
def test_vit_l_14_presets(preset, layers, groups, keep_cross, keep_intra, r):
    config = TempMeConfig.from_preset(preset)
    vision = config.vision_config
    assert (vision.patch_size, vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (14, 1024, 24, 16)
    assert (config.text_config.hidden_size, config.projection_dim, config.num_frames) == (768, 768, 12)
    assert (config.clip_merge_layers, config.clip_merge_groups, config.img_merge_r) == (layers, groups, r)
    if layers:
        assert (config.cross_clip_keep_ratio, config.intra_clip_keep_ratio) == (keep_cross, keep_intra)


def test_vit_l_14_schedule_is_scaled_from_b_16_as_b_16_from_b_32():
    """The same share of output tokens and about the same GFLOPs ratio to no merging as the paper's B/16."""
    tempme, tome, clip = (TempMeConfig.from_preset(f"{kind}-vit-l-14") for kind in ("tempme", "tome", "clip"))
    assert token_schedule(clip)[-1] == (12, 257)
    assert token_schedule(tome)[-1] == (12, 89)
    assert token_schedule(tempme)[-1] == (1, 166)
    b16 = TempMeConfig.from_preset("tempme-vit-b-16")
    assert 166 / (12 * 257) == pytest.approx(127 / (12 * 197), rel=0.01)
    b16_ratio = count_gflops(b16) / count_gflops(TempMeConfig.from_preset("clip-vit-b-16"))
    assert count_gflops(tempme) / count_gflops(clip) == pytest.approx(b16_ratio, abs=0.02)
    assert count_gflops(clip) == pytest.approx(972.93, abs=0.01)
    assert count_gflops(tempme) == pytest.approx(548.71, abs=0.01)


def test_vit_l_14_schedule_runs_on_a_narrow_clip_with_large_geometry(tmp_path):
    """24 blocks on 224 px frames in 14 px patches, at a tiny width: the measured token counts are the plan's."""
    torch.manual_seed(0)
    narrow = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}
    clip = CLIPModel(tiny_clip_config(vision_config={**narrow, "num_hidden_layers": 24, "image_size": 224,
                                                     "patch_size": 14}))
    clip.save_pretrained(tmp_path)
    model = TempMeCLIPModel.from_clip(str(tmp_path), "tempme-vit-l-14").eval()
    with torch.no_grad():
        outputs = model.encode_video(random_video(1, 12, model.config))
    assert outputs.token_counts == token_schedule(model.config)
    assert outputs.token_counts[-1] == (1, 166)
