"""TempMeProcessor: the authors' text truncation, video inputs, save/load round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from data_helpers import clip_tokenizer, frame_numbers, numbered_frames  # noqa: F401 (fixture)

from transformers_tempme import TempMeProcessor
from transformers_tempme.data.synthetic_video import write_video
from transformers_tempme.frame_transforms import CLIP_MEAN, CLIP_STD
from transformers_tempme.video_io import VideoDecodeError


@pytest.fixture()
def processor(clip_tokenizer):  # noqa: F811
    return TempMeProcessor(clip_tokenizer, num_frames=4, max_words=8, image_size=32)


@pytest.mark.parametrize(
    "text, input_ids, attention_mask",
    [
        ("a photo of a cat", [49406, 320, 1125, 539, 320, 2368, 49407, 0], [1, 1, 1, 1, 1, 1, 1, 0]),
        # 9 BPE tokens: SOT + the first max_words - 2 = 6 tokens + EOT
        (
            "a photo of a cat sitting on the sofa",
            [49406, 320, 1125, 539, 320, 2368, 4919, 49407],
            [1] * 8,
        ),
        ("", [49406, 49407, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]),
    ],
)
def test_text_follows_the_authors_truncation_and_zero_padding(processor, text, input_ids, attention_mask):
    batch = processor(text=[text], return_tensors="pt")
    assert batch["input_ids"].tolist() == [input_ids]
    assert batch["attention_mask"].tolist() == [attention_mask]
    assert batch["input_ids"].dtype == torch.int64


def test_default_max_words_is_32(clip_tokenizer):  # noqa: F811
    batch = TempMeProcessor(clip_tokenizer)(text="word " * 100, return_tensors="np")
    assert batch["input_ids"].shape == (1, 32)
    assert batch["input_ids"][0, -1] == 49407 and batch["attention_mask"].sum() == 32


def test_videos_from_paths_and_arrays(processor, tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, numbered_frames(30), fps=10)
    batch = processor(
        text=["first", "second"], videos=[str(path), numbered_frames(4, 40, 60)], return_tensors="pt"
    )
    assert batch["pixel_values"].shape == (2, 4, 3, 32, 32)
    assert batch["pixel_values"].dtype == torch.float32
    assert batch["video_mask"].tolist() == [[1] * 4, [1] * 4]
    assert batch["input_ids"].shape == (2, 8)
    # Frame 0 of both videos is the same flat picture: grey 8 on top, 8 at the bottom.
    expected = (8 / 255 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    np.testing.assert_allclose(batch["pixel_values"][1, 0, :, 4, 4].numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(batch["pixel_values"][0, 0, :, 4, 4].numpy(), expected, atol=0.1)


def test_a_broken_video_raises_video_decode_error(processor, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(VideoDecodeError, match="bad.mp4"):
        processor(videos=[bad])


def test_call_needs_text_or_videos(processor):
    with pytest.raises(ValueError, match="Give `text`, `videos` or both"):
        processor()


def test_save_and_load_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["num_frames"] == 4 and config["max_words"] == 8 and config["image_size"] == 32
    reloaded = TempMeProcessor.from_pretrained(tmp_path)
    for attribute in ("num_frames", "max_words", "frame_sampling", "image_size", "image_mean", "image_std"):
        assert getattr(reloaded, attribute) == getattr(processor, attribute)
    assert reloaded.train_augmentation == processor.train_augmentation
    video = numbered_frames(4, 40, 40)
    original = processor(text=["a dog runs"], videos=[video], return_tensors="np")
    restored = reloaded(text=["a dog runs"], videos=[video], return_tensors="np")
    for key in ("input_ids", "attention_mask", "pixel_values", "video_mask"):
        np.testing.assert_array_equal(original[key], restored[key])


def test_train_augmentation_changes_pixels_consistently(processor):
    video = np.repeat(np.random.default_rng(0).integers(0, 256, (1, 40, 40, 3), dtype=np.uint8), 4, axis=0)
    plain = processor(videos=[video], return_tensors="np")["pixel_values"]
    augmented = [
        processor(videos=[video], return_tensors="np", augment=True, rng=np.random.default_rng(seed))["pixel_values"]
        for seed in range(5)
    ]
    assert any(not np.allclose(a, plain) for a in augmented)
    for a in augmented:
        np.testing.assert_array_equal(a[0, 1], a[0, 0])


# Frame arrays of any length are sampled to num_frames (4 here) the way a decoded file of the same frames is.
ARRAY_SAMPLING = [
    # frames in the array, video_fps, frame_sampling, the frames kept
    (4, None, "fps", [0, 1, 2, 3]),  # already num_frames: used as it is
    (30, 10, "fps", [0, 9, 19, 29]),  # 3 one-per-second candidates, fewer than 4: spread over the raw frames
    (60, 10, "fps", [0, 10, 30, 50]),  # 6 one-per-second candidates, 4 of them
    (30, None, "fps", [0, 9, 19, 29]),  # no frame rate: every frame is a candidate
    (30, 10, "uniform", [0, 9, 19, 29]),
    (2, None, "fps", [0, 0, 0, 1]),  # shorter than num_frames: frames repeat
    (1, None, "uniform", [0, 0, 0, 0]),
]


@pytest.mark.parametrize("length, video_fps, sampling, kept", ARRAY_SAMPLING)
def test_frame_arrays_are_sampled_like_files(clip_tokenizer, tmp_path, length, video_fps, sampling, kept):  # noqa: F811
    processor = TempMeProcessor(clip_tokenizer, num_frames=4, max_words=8, image_size=32, frame_sampling=sampling)
    frames, mask = processor.load_video(numbered_frames(length), video_fps)
    assert frame_numbers(frames) == kept and mask.tolist() == [1] * 4
    # The same frames written to a file at that frame rate decode to the same picks.
    path = tmp_path / "clip.mp4"
    write_video(path, numbered_frames(length), fps=video_fps or 1)
    assert frame_numbers(processor.load_video(str(path))[0]) == kept
    # Through __call__ too, as the pipeline calls it.
    batch = processor(videos=[numbered_frames(length)], video_fps=video_fps, return_tensors="np")
    assert batch["pixel_values"].shape == (1, 4, 3, 32, 32)


@pytest.mark.parametrize(
    "text, message",
    [
        ([], r"text is an empty list: give at least one caption"),
        (["a dog", None], r"text\[1\] is NoneType None: every caption must be a string"),
        ([["a", "b"]], r"text\[0\] is list \['a', 'b'\]: every caption must be a string"),
        ([3], r"text\[0\] is int 3"),
    ],
)
def test_text_that_is_not_a_list_of_strings_is_a_value_error(processor, text, message):
    with pytest.raises(ValueError, match=message):
        processor.encode_text(text)
    with pytest.raises(ValueError, match=message):
        processor(text=text)


# --- empty inputs -----------------------------------------------------------------------------------------------------


def test_empty_text_list_is_a_clear_error(clip_tokenizer):  # noqa: F811
    processor = TempMeProcessor(clip_tokenizer, num_frames=4, image_size=32)
    with pytest.raises(ValueError, match="text is an empty list: give at least one caption"):
        processor(text=[])
