"""The model's inputs are checked before torch sees them: each mistake gets an error that names the fix."""

import pytest
import torch

from conftest import tiny_config, tiny_inputs, tiny_model
from transformers_tempme import TempMeCLIPModel


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
