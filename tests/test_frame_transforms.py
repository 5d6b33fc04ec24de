"""CLIP frame preprocessing and the video-consistent augmentation."""

from __future__ import annotations

import numpy as np
import pytest
from data_helpers import noise_frames
from PIL import Image

from transformers_tempme.frame_transforms import (
    CLIP_MEAN,
    CLIP_STD,
    RAND_AUGMENT_OPS,
    AugmentationStep,
    VideoRandAugment,
    center_crop,
    preprocess_video,
    resize_and_center_crop,
    resize_shorter_side,
    stack_videos,
)


@pytest.mark.parametrize(
    "size_in, size_after_resize",
    [((320, 240), (298, 224)), ((240, 320), (224, 298)), ((100, 50), (448, 224)), ((224, 224), (224, 224))],
)
def test_resize_shorter_side_keeps_aspect_ratio(size_in, size_after_resize):
    image = Image.new("RGB", size_in)
    resized = resize_shorter_side(image, 224)
    assert resized.size == size_after_resize
    assert center_crop(resized, 224).size == (224, 224)


def test_center_crop_takes_the_middle():
    array = np.zeros((10, 20, 3), np.uint8)
    array[:, 5:15] = 255
    assert np.asarray(center_crop(Image.fromarray(array), 10)).min() == 255


def test_preprocess_normalises_with_clip_mean_and_std():
    frames = np.full((3, 50, 80, 3), 255, np.uint8)
    frames[1] = 0
    pixel_values = preprocess_video(frames, image_size=32)
    assert pixel_values.shape == (3, 3, 32, 32) and pixel_values.dtype == np.float32
    expected_white = (1.0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    expected_black = -np.array(CLIP_MEAN) / np.array(CLIP_STD)
    np.testing.assert_allclose(pixel_values[0, :, 5, 5], expected_white, rtol=1e-5)
    np.testing.assert_allclose(pixel_values[1, :, 5, 5], expected_black, rtol=1e-5)


def test_preprocess_rejects_wrong_input():
    with pytest.raises(ValueError, match="uint8 RGB frames"):
        preprocess_video(np.zeros((2, 8, 8), np.uint8))


def test_augmentation_is_identical_for_every_frame_of_a_video():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    video = np.stack([frame] * 4)
    augmentation = VideoRandAugment(num_ops=4, probability=1.0)
    augmented = preprocess_video(video, image_size=32, augmentation=augmentation, rng=np.random.default_rng(3))
    for i in range(1, 4):
        np.testing.assert_array_equal(augmented[i], augmented[0])
    plain = preprocess_video(video, image_size=32)
    assert not np.allclose(augmented[0], plain[0])


def test_augmentation_is_reproducible_from_the_generator_and_varies_between_videos():
    augmentation = VideoRandAugment()
    draws = [augmentation.draw(np.random.default_rng(seed)) for seed in range(20)]
    assert augmentation.draw(np.random.default_rng(5)) == draws[5]
    assert len({tuple(d) for d in draws}) > 10
    assert all(0.0 <= step.magnitude <= 10.0 for d in draws for step in d)


@pytest.mark.parametrize("op", RAND_AUGMENT_OPS)
def test_every_augmentation_op_keeps_size_and_mode(op):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 36, 3), dtype=np.uint8))
    out = VideoRandAugment.apply(image, [AugmentationStep(op, 7.0, 1)])
    assert out.size == image.size and out.mode == "RGB"


def test_unknown_augmentation_op_is_rejected():
    with pytest.raises(ValueError, match="Unknown augmentation ops"):
        VideoRandAugment(ops=["Flip"])


def test_stack_videos_pads_shorter_videos_and_masks_them():
    videos = [np.ones((4, 3, 8, 8), np.float32), np.ones((2, 3, 8, 8), np.float32)]
    pixel_values, video_mask = stack_videos(videos)
    assert pixel_values.shape == (2, 4, 3, 8, 8)
    assert video_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert pixel_values[1, 2:].sum() == 0


# --- extreme aspect ratios ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("height, width", [(2, 2000), (2000, 2), (6, 900), (900, 6)])
def test_extreme_aspect_ratios_resize_only_what_the_crop_keeps(monkeypatch, height, width):
    image = Image.fromarray(noise_frames(1, height, width)[0])
    # The unbounded reference costs about a second at 2000 x 2: compare on a third of the long side.
    short_image = image.crop((0, 0, max(width // 3, 2), max(height // 3, 2)))
    reference = np.asarray(center_crop(resize_shorter_side(short_image, 224), 224)).astype(int)

    sizes = []
    original_resize = Image.Image.resize

    def recording_resize(self, size, *args, **kwargs):
        sizes.append(size)
        return original_resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", recording_resize)
    bounded = np.asarray(resize_and_center_crop(image, 224))
    # The full resize would be 224 x 224,000 pixels for 2 x 2000; no intermediate image here exceeds 224 x 2000.
    assert max(w * h for w, h in sizes) <= 224 * max(height, width)
    assert bounded.shape == (224, 224, 3)
    # Same pixels as the full resize and crop, to within one level of rounding.
    assert np.abs(np.asarray(resize_and_center_crop(short_image, 224)).astype(int) - reference).max() <= 1


def test_preprocess_video_of_a_2000x2_video():
    frames = noise_frames(12, 2, 2000)
    pixel_values = preprocess_video(frames, 224)
    assert pixel_values.shape == (12, 3, 224, 224) and np.isfinite(pixel_values).all()
