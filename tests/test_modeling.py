"""TempMeCLIPModel on tiny configs: equivalences, shapes, masks, dtypes, gradients, serialisation, errors."""

import pytest
import torch
from transformers import CLIPConfig, CLIPModel

from conftest import TINY_BACKBONE, random_text, random_video, tiny_config, tiny_inputs, tiny_model
from transformers_tempme import TempMeCLIPModel, TempMeConfig, apply_lora
from transformers_tempme.analysis.accounting import token_schedule


def frame_mean_reference(clip: CLIPModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """CLIP4Clip meanP: the mean over frames of the normalised CLIP image embeddings."""
    batch, frames = pixel_values.shape[:2]
    image_embeds = clip.get_image_features(pixel_values=pixel_values.flatten(0, 1)).pooler_output
    image_embeds = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
    return image_embeds.view(batch, frames, -1).mean(dim=1)


def perturb_clip_position_embeddings(model: TempMeCLIPModel) -> None:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "clip_position_embedding" in name:
                parameter.normal_(std=0.5)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_no_merge_model_is_clip4clip_meanp(attn_implementation):
    clip = CLIPModel(CLIPConfig(**TINY_BACKBONE, attn_implementation=attn_implementation)).eval()
    model = TempMeCLIPModel.from_clip(clip, tiny_config("clip")).eval()
    pixel_values = random_video(3, 5, model.config)
    with torch.no_grad():
        video_embeds = model.encode_video(pixel_values).video_embeds
        expected = frame_mean_reference(clip, pixel_values)
    torch.testing.assert_close(video_embeds, expected, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_no_merge_preset_at_vit_b_32_shape_is_clip4clip_meanp():
    config = TempMeConfig.from_preset("clip-vit-b-32", text_config=TINY_BACKBONE["text_config"])
    clip = CLIPModel(CLIPConfig(text_config=config.text_config.to_dict(), vision_config=config.vision_config.to_dict()))
    model = TempMeCLIPModel.from_clip(clip.eval(), config).eval()
    pixel_values = random_video(1, 3, config)
    with torch.no_grad():
        torch.testing.assert_close(
            model.encode_video(pixel_values).video_embeds, frame_mean_reference(clip, pixel_values), rtol=0, atol=1e-5
        )


def test_from_clip_keeps_every_clip_weight_and_loads_from_a_folder(tmp_path):
    clip = CLIPModel(CLIPConfig(**TINY_BACKBONE))
    clip.save_pretrained(tmp_path)
    model = TempMeCLIPModel.from_clip(str(tmp_path), tiny_config("tempme"))
    tempme_state = model.state_dict()
    for name, tensor in clip.state_dict().items():
        torch.testing.assert_close(tempme_state[name], tensor, rtol=0, atol=0)
    new = set(tempme_state) - set(clip.state_dict())
    assert new == {f"vision_model.encoder.layers.{i}.clip_position_embedding.weight" for i in (2, 3)}
    assert model.config.merge_schedule == tiny_config("tempme").merge_schedule


def test_from_clip_takes_a_preset_name():
    clip = CLIPModel(CLIPConfig(**TINY_BACKBONE))
    model = TempMeCLIPModel.from_clip(clip, "tome-vit-b-32")
    assert model.config.img_merge_r == 2 and model.config.clip_merge_layers == []
    assert model.config.vision_config.hidden_size == 64  # dimensions come from the CLIP model
    with pytest.raises(ValueError, match="Unknown TempMe preset"):
        TempMeCLIPModel.from_clip(clip, "tempme-vit-h-14")


FRAME_SCHEDULES = [
    # frames, ClipMe blocks, groups
    (4, [2, 3], [2, 2]),
    (8, [2, 3], [2, 2]),
    (8, [1, 2, 3], [2, 2, 2]),
    (16, [2, 3], [4, 4]),
    (12, [1, 3], [3, 2]),
    (64, [1, 2, 3], [4, 4, 4]),
]


@pytest.mark.parametrize("frames, layers, groups", FRAME_SCHEDULES)
def test_frame_counts_with_fitting_schedules(frames, layers, groups):
    config = tiny_config("tempme", num_frames=frames, clip_merge_layers=layers, clip_merge_groups=groups)
    model = TempMeCLIPModel(config).eval()
    with torch.no_grad():
        outputs = model.encode_video(random_video(2, frames, config))
    assert outputs.video_embeds.shape == (2, 16)
    assert outputs.frame_embeds.shape == (2, frames, 16)
    assert outputs.token_counts == token_schedule(config)
    final_clips, final_tokens = outputs.token_counts[-1]
    assert outputs.vision_model_output.last_hidden_state.shape == (2 * final_clips, final_tokens, 64)


@pytest.mark.parametrize("schedule", ["clip", "tome", "tempme"])
def test_videos_are_encoded_independently_of_their_batch(schedule):
    model = TempMeCLIPModel(tiny_config(schedule)).eval()
    perturb_clip_position_embeddings(model)
    pixel_values = random_video(3, 4, model.config)
    with torch.no_grad():
        together = model.encode_video(pixel_values).video_embeds
        alone = torch.cat([model.encode_video(pixel_values[i : i + 1]).video_embeds for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_eager_and_sdpa_attention_agree():
    eager = TempMeCLIPModel(tiny_config("tempme", attn_implementation="eager")).eval()
    perturb_clip_position_embeddings(eager)
    sdpa = TempMeCLIPModel(tiny_config("tempme", attn_implementation="sdpa")).eval()
    sdpa.load_state_dict(eager.state_dict())
    pixel_values = random_video(2, 4, eager.config)
    with torch.no_grad():
        torch.testing.assert_close(
            eager.encode_video(pixel_values).video_embeds, sdpa.encode_video(pixel_values).video_embeds,
            rtol=1e-5, atol=1e-5,
        )


def test_clip_merging_changes_the_embedding_with_frame_order():
    """Frame-independent CLIP cannot tell a video from its reversal; TempMe with clip embeddings can."""
    pixel_values = random_video(1, 4, tiny_config())
    reversed_video = pixel_values.flip(1)
    for schedule, order_sensitive in [("clip", False), ("tempme", True)]:
        model = TempMeCLIPModel(tiny_config(schedule)).eval()
        perturb_clip_position_embeddings(model)
        with torch.no_grad():
            forward = model.encode_video(pixel_values).video_embeds
            backward = model.encode_video(reversed_video).video_embeds
        assert (not torch.allclose(forward, backward, atol=1e-4)) == order_sensitive


@pytest.mark.parametrize("schedule", ["clip", "tempme"])
def test_video_mask_leaves_padded_frames_out_of_the_mean(schedule):
    model = TempMeCLIPModel(tiny_config(schedule)).eval()
    pixel_values = random_video(2, 4, model.config)
    video_mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    with torch.no_grad():
        outputs = model.encode_video(pixel_values, video_mask=video_mask)
    for b, real in enumerate([3, 1]):
        torch.testing.assert_close(outputs.video_embeds[b], outputs.frame_embeds[b, :real].mean(0))
    if schedule == "clip":  # frames never interact: the masked video equals its real frames alone
        with torch.no_grad():
            alone = model.encode_video(pixel_values[:1, :3]).video_embeds
        torch.testing.assert_close(outputs.video_embeds[:1], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("schedule", ["clip", "tome", "tempme"])
def test_bfloat16_runs_and_stays_close_to_float32(schedule):
    """A random 64-wide model is far from robust to bfloat16 rounding (it also flips near-tied matches), so
    this asks for the frame embeddings to keep their direction, not for a tight tolerance."""
    model = TempMeCLIPModel(tiny_config(schedule)).eval()
    pixel_values = random_video(2, 4, model.config)
    with torch.no_grad():
        reference = model.encode_video(pixel_values).frame_embeds
        outputs = model.to(torch.bfloat16).encode_video(pixel_values.bfloat16())
    assert outputs.video_embeds.dtype == torch.bfloat16
    if schedule != "clip":
        assert outputs.vision_model_output.token_sizes.dtype == torch.float32
    similarity = torch.nn.functional.cosine_similarity(outputs.frame_embeds.float(), reference, dim=-1)
    assert similarity.mean() > 0.9


def test_forward_logits_and_loss():
    model = TempMeCLIPModel(tiny_config()).eval()
    input_ids, pixel_values = random_text(3, model.config), random_video(3, 4, model.config)
    outputs = model(input_ids=input_ids, pixel_values=pixel_values, return_loss=True)
    assert outputs.logits_per_text.shape == (3, 3)
    torch.testing.assert_close(outputs.logits_per_video, outputs.logits_per_text.t())
    expected_logits = model.logit_scale.exp() * outputs.text_embeds @ outputs.video_embeds.t()
    torch.testing.assert_close(outputs.logits_per_text, expected_logits)
    targets = torch.arange(3)
    expected_loss = (
        torch.nn.functional.cross_entropy(outputs.logits_per_text, targets)
        + torch.nn.functional.cross_entropy(outputs.logits_per_video, targets)
    ) / 2
    torch.testing.assert_close(outputs.loss, expected_loss)
    assert model(input_ids=input_ids, pixel_values=pixel_values).loss is None


def test_feature_getters_follow_clip_conventions():
    clip = CLIPModel(CLIPConfig(**TINY_BACKBONE)).eval()
    model = TempMeCLIPModel.from_clip(clip, tiny_config()).eval()
    input_ids, pixel_values = random_text(2, model.config), random_video(2, 4, model.config)
    with torch.no_grad():
        torch.testing.assert_close(
            model.get_text_features(input_ids=input_ids).pooler_output,
            clip.get_text_features(input_ids=input_ids).pooler_output,
        )
        torch.testing.assert_close(
            model.get_video_features(pixel_values).pooler_output, model.encode_video(pixel_values).video_embeds
        )


def test_gradients_reach_lora_and_clip_position_embeddings():
    model = apply_lora(TempMeCLIPModel(tiny_config()), r=4)
    input_ids, pixel_values = random_text(3, model.config), random_video(3, 4, model.config)
    model(input_ids=input_ids, pixel_values=pixel_values, return_loss=True).loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    for tower in ("vision_model", "text_model"):
        lora_b = [g for name, g in grads.items() if tower in name and "lora_B" in name]
        assert lora_b and all(g is not None and g.abs().sum() > 0 for g in lora_b)
    position = [g for name, g in grads.items() if "clip_position_embedding" in name]
    assert len(position) == 2 and all(g is not None and g.abs().sum() > 0 for g in position)
    assert not any("logit_scale" in name for name in grads)


def test_save_and_load_round_trip(tmp_path):
    model = TempMeCLIPModel(tiny_config()).eval()
    perturb_clip_position_embeddings(model)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = TempMeCLIPModel.from_pretrained(tmp_path).eval()
    input_ids, pixel_values = random_text(2, model.config), random_video(2, 4, model.config)
    with torch.no_grad():
        expected = model(input_ids=input_ids, pixel_values=pixel_values).logits_per_text
        actual = loaded(input_ids=input_ids, pixel_values=pixel_values).logits_per_text
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_clip_position_embedding_init_std():
    zero = TempMeCLIPModel(tiny_config())
    random = TempMeCLIPModel(tiny_config(clip_position_embedding_init_std=0.02))
    for model, is_zero in [(zero, True), (random, False)]:
        weights = [p for n, p in model.named_parameters() if "clip_position_embedding" in n]
        assert [tuple(w.shape) for w in weights] == [(4, 64), (2, 64)]
        assert all(bool((w == 0).all()) == is_zero for w in weights)
    no_embeddings = TempMeCLIPModel(tiny_config(clip_position_embedding=False))
    assert not any("clip_position_embedding" in n for n, _ in no_embeddings.named_parameters())


@pytest.mark.parametrize("schedule", ["clip", "tempme"])
def test_random_init_matches_clip_init(schedule):
    """From scratch, every weight CLIP has gets CLIP's init scale (same config, std per parameter within 20%)."""
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(**TINY_BACKBONE))
    model = TempMeCLIPModel(tiny_config(schedule))
    expected = {name: parameter.std().item() for name, parameter in clip.named_parameters() if parameter.numel() > 1}
    actual = {name: parameter.std().item() for name, parameter in model.named_parameters() if name in expected}
    assert actual.keys() == expected.keys()
    mismatched = {
        name: (round(actual[name], 4), round(std, 4))
        for name, std in expected.items()
        if abs(actual[name] - std) > 0.2 * std + 1e-6
    }
    assert not mismatched, f"std (TempMe, CLIP) differs for {mismatched}"


BAD_INPUTS = [
    # pixel_values shape, video_mask shape, error
    ((4, 3, 32, 32), None, r"\(batch, frames, channels, height, width\)"),
    ((2, 6, 3, 32, 32), None, "exactly 4 frames per video"),
    ((2, 4, 3, 32, 32), (2, 3), r"video_mask must have shape \(batch, frames\)"),
    ((2, 4, 3, 48, 48), None, "doesn't match model"),
]


@pytest.mark.parametrize("pixel_shape, mask_shape, message", BAD_INPUTS)
def test_bad_inputs_raise_clear_errors(pixel_shape, mask_shape, message):
    model = TempMeCLIPModel(tiny_config())
    video_mask = None if mask_shape is None else torch.ones(mask_shape)
    with pytest.raises(ValueError, match=message):
        model.encode_video(torch.randn(pixel_shape), video_mask=video_mask)


def test_models_without_clip_merging_take_any_frame_count():
    model = TempMeCLIPModel(tiny_config("tome")).eval()
    for frames in (1, 3, 7):
        with torch.no_grad():
            assert model.encode_video(random_video(1, frames, model.config)).frame_embeds.shape == (1, frames, 16)


def test_merge_sources_partition_the_input_patches():
    model = TempMeCLIPModel(tiny_config()).eval()
    with torch.no_grad():
        outputs = model.encode_video(random_video(2, 4, model.config), output_merge_sources=True)
    vision = outputs.vision_model_output
    assert vision.merge_sources.shape == (2, vision.last_hidden_state.shape[1], 4 * 17)
    torch.testing.assert_close(vision.merge_sources.sum(1), torch.ones(2, 4 * 17))
    torch.testing.assert_close(vision.merge_sources.sum(-1, keepdim=True), vision.token_sizes)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = TempMeCLIPModel(tiny_config())
    perturb_clip_position_embeddings(model)
    input_ids, pixel_values = random_text(3, model.config), random_video(3, 4, model.config)
    gradients = []
    for checkpointing in (False, True):
        model.zero_grad()
        if checkpointing:
            model.activation_checkpointing_enable()
        model.train()
        model(input_ids=input_ids, pixel_values=pixel_values, return_loss=True).loss.backward()
        gradients.append(model.vision_model.encoder.layers[2].clip_position_embedding.weight.grad.clone())
    assert model.vision_model.encoder.layers[0].gradient_checkpointing
    torch.testing.assert_close(gradients[0], gradients[1])


@pytest.mark.parametrize("schedule", ["clip", "tome", "tempme"])
def test_the_vision_tower_is_captured_as_one_graph(schedule):
    """Token counts come from the plan, never from the data: no graph break, no host sync, static shapes."""
    model = TempMeCLIPModel(tiny_config(schedule, attn_implementation="sdpa")).eval()
    pixel_values = random_video(2, 4, model.config)
    compiled = torch.compile(model.vision_model, fullgraph=True, backend="eager")
    with torch.no_grad():
        actual, expected = compiled(pixel_values), model.vision_model(pixel_values)
    assert actual.token_counts == expected.token_counts
    torch.testing.assert_close(actual.pooler_output, expected.pooler_output, rtol=0, atol=1e-6)


def test_the_encoder_owns_the_loop_and_each_block_runs_its_steps():
    """`TempMeVisionEncoder.forward` over the plan is the tower's middle, and a block's forward is its four steps."""
    model = TempMeCLIPModel(tiny_config("tempme", clip_position_embedding_init_std=0.02)).eval()
    vision, plan = model.vision_model, model.config.merge_plan()
    pixel_values = random_video(2, 4, model.config)
    with torch.no_grad():
        expected = vision(pixel_values)
        hidden = vision.pre_layrnorm(vision.embeddings(pixel_values.flatten(0, 1)))
        encoded = vision.encoder(hidden, plan, 2)
        sizes = None
        for layer, step in zip(vision.encoder.layers, plan):
            sources = None
            if layer.is_clip_merge_block:
                hidden, sizes, sources = layer.cross_clip_merge(hidden, sizes, sources, step)
            hidden, key_metric = layer.attend(hidden, sizes, step)
            if step.intra_merge > 0:
                hidden, sizes, sources = layer.intra_clip_merge(hidden, sizes, sources, key_metric, step)
            hidden = layer.feed_forward(hidden)
    assert encoded.token_counts == expected.token_counts
    torch.testing.assert_close(encoded.last_hidden_state, expected.last_hidden_state, rtol=0, atol=0)
    torch.testing.assert_close(hidden, expected.last_hidden_state, rtol=0, atol=0)
    torch.testing.assert_close(sizes, expected.token_sizes, rtol=0, atol=0)


# --- The model's inputs are checked before torch sees them: each mistake gets an error that names the fix. ------------


@pytest.fixture(scope="module")
def model():
    return tiny_model("tempme")


def test_text_video_batch_mismatch_with_loss(model):
    inputs = tiny_inputs(model.config, batch=2)
    with pytest.raises(ValueError, match="return_loss=True pairs text i with video i, but there are 1 texts and 2 videos"):
        model(input_ids=inputs["input_ids"][:1], pixel_values=inputs["pixel_values"], return_loss=True)
    # Without the loss, any numbers of texts and videos are scored against each other.
    logits = model(input_ids=inputs["input_ids"][:1], pixel_values=inputs["pixel_values"]).logits_per_text
    assert logits.shape == (1, 2)


BAD_VIDEOS = [
    # what, how to break the (2, 4, 3, 32, 32) input, the error
    ("empty batch", lambda v: v[:0], r"holds no video"),
    ("no frames", lambda v: v[:, :0], r"holds no frame"),
    ("channels-last", lambda v: v.permute(0, 1, 3, 4, 2), r"channels-last; permute to \(B, F, 3, H, W\)"),
    ("grey frames", lambda v: v[:, :, :1], r"has 1 channels in dimension 2 .* the model takes 3"),
]


@pytest.mark.parametrize("what, corrupt, message", BAD_VIDEOS, ids=[row[0] for row in BAD_VIDEOS])
def test_malformed_videos(model, what, corrupt, message):
    pixel_values = tiny_inputs(model.config)["pixel_values"]
    with pytest.raises(ValueError, match=message):
        model.encode_video(corrupt(pixel_values))


BAD_TEXTS = [
    # what, how to break the (2, 7) input_ids (vocabulary of 128), the error
    ("empty batch", lambda ids: ids[:0], r"input_ids holds no text: shape \(0, 7\)"),
    ("no tokens", lambda ids: ids[:, :0], r"input_ids holds no token: shape \(2, 0\)\. Tokenise texts with the model's processor"),
    ("one text without batch", lambda ids: ids[0], r"input_ids must have shape \(batch, words\), got \(7,\).*unsqueeze\(0\)"),
    ("float ids", lambda ids: ids.float(), r"input_ids must be integer token ids, got dtype torch\.float32"),
    ("id past the vocabulary", lambda ids: torch.where(ids == ids.max(), 49407, ids),
     r"input_ids holds the token id 49407, outside the text model's vocabulary of 128 ids \(0 to 127\): an id from "
     r"another tokenizer than the model's\. Tokenise with the processor saved with the model"),
    ("negative id", lambda ids: torch.where(ids == ids.max(), -100, ids), r"holds the token id -100, .*a padding value"),
]


@pytest.mark.parametrize("what, corrupt, message", BAD_TEXTS, ids=[row[0] for row in BAD_TEXTS])
@pytest.mark.parametrize("entry", ["forward", "get_text_features"])
def test_malformed_texts(model, what, corrupt, message, entry):
    inputs = tiny_inputs(model.config)
    input_ids = corrupt(inputs["input_ids"])
    with pytest.raises(ValueError, match=message):
        if entry == "forward":
            model(input_ids=input_ids, pixel_values=inputs["pixel_values"])
        else:
            model.get_text_features(input_ids=input_ids)


def test_attention_mask_must_match_input_ids(model):
    inputs = tiny_inputs(model.config)
    with pytest.raises(ValueError, match=r"attention_mask must have the shape of input_ids \(2, 7\), got \(2, 6\)"):
        model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"][:, :6])


class TextFeatures(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model.get_text_features(input_ids=input_ids).pooler_output


def test_the_vocabulary_check_stays_out_of_a_traced_graph(model, monkeypatch):
    """Reading the ids' values while tracing would bake them into the graph as constants."""
    input_ids = tiny_inputs(model.config)["input_ids"]
    value_reads = []
    aminmax = torch.aminmax
    monkeypatch.setattr(torch, "aminmax", lambda tensor: value_reads.append(tensor.shape) or aminmax(tensor))
    with torch.no_grad():
        traced = torch.jit.trace(TextFeatures(model), input_ids, check_trace=False)
        assert value_reads == []
        expected = model.get_text_features(input_ids=input_ids).pooler_output
        assert value_reads == [input_ids.shape]
    torch.testing.assert_close(traced(input_ids), expected)


def test_all_zero_video_mask_is_an_error_not_nan(model):
    inputs = tiny_inputs(model.config)
    video_mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
    with pytest.raises(ValueError, match=r"video_mask marks no real frame in video\(s\) \[1\]"):
        model(**inputs, video_mask=video_mask)
    video_mask[1, 0] = 1
    assert torch.isfinite(model(**inputs, video_mask=video_mask).logits_per_text).all()


def test_image_features_of_a_clipme_model_run_the_frame_level_path(model):
    images = tiny_inputs(model.config)["pixel_values"][:, 0]
    with torch.no_grad():
        features = model.get_image_features(images).pooler_output
    assert features.shape == (2, model.config.projection_dim)
    assert torch.allclose(features.norm(dim=-1), torch.ones(2))

    # The same weights in a one-frame model whose ClipMe blocks join nothing and merge nothing across frames.
    frame_level = TempMeCLIPModel(tiny_config("tempme", num_frames=1, clip_merge_groups=[1, 1], cross_clip_keep_ratio=1.0))
    weights = {name: value for name, value in model.state_dict().items() if "clip_position_embedding" not in name}
    missing, unexpected = frame_level.load_state_dict(weights, strict=False)
    assert all("clip_position_embedding" in name for name in missing) and not unexpected
    with torch.no_grad():
        expected = frame_level.eval().encode_video(images.unsqueeze(1)).video_embeds
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-6)


def test_image_features_of_a_model_without_clipme_are_one_frame_videos():
    model = tiny_model("tome")
    images = tiny_inputs(model.config)["pixel_values"][:, 0]
    with torch.no_grad():
        image = model.get_image_features(images).pooler_output
        video = model.get_video_features(images.unsqueeze(1)).pooler_output
    torch.testing.assert_close(image, video, rtol=0, atol=0)


EDITS = [
    # a schedule edit after the model was built, the error
    ({"clip_merge_groups": [4, 1]}, r"vision block 3 has clip position embeddings for 2 clips, the schedule now joins 1"),
    ({"clip_merge_layers": [1, 3]}, r"vision block 1 was built without ClipMe"),
]


@pytest.mark.parametrize("edit, message", EDITS)
def test_a_schedule_edited_after_the_model_was_built(edit, message):
    model = tiny_model("tempme")
    for name, value in edit.items():
        setattr(model.config, name, value)
    with pytest.raises(ValueError, match=message + r".*Build a new model from the edited config"):
        model.encode_video(tiny_inputs(model.config)["pixel_values"])


def test_an_edit_that_breaks_the_schedule_is_caught_before_the_forward():
    model = tiny_model("tempme")
    model.config.clip_merge_groups = [3, 2]  # 4 frames: 3 does not divide them
    with pytest.raises(ValueError, match="does not divide the frame count"):
        model.encode_video(tiny_inputs(model.config)["pixel_values"])
