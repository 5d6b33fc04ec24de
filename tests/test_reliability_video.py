"""Videos that used to be read wrongly without a word: damaged files, rotated phone clips, extreme aspect ratios."""

from __future__ import annotations

import warnings
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from data_helpers import clip_tokenizer  # noqa: F401 (fixture)

from transformers_tempme import TempMeProcessor, read_video_frames
from transformers_tempme.frame_transforms import center_crop, preprocess_video, resize_and_center_crop, resize_shorter_side
from transformers_tempme.video_io import TruncatedVideoWarning


def write_clip(path: Path, frames: np.ndarray, fps: int = 10, rotation: int | None = None, options: dict | None = None):
    """Lossless h264 with an optional display matrix (counter-clockwise degrees) and container options."""
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream("libx264", rate=fps, options={"qp": "0"})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def noise_frames(n: int, height: int = 32, width: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


# --- truncated files ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, options", [("clip.mp4", {"movflags": "faststart"}), ("clip.mkv", None)])
def test_a_truncated_video_that_still_decodes_partly_warns(tmp_path, name, options):
    path = tmp_path / name
    write_clip(path, noise_frames(50), fps=10, options=options)  # 5 s
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the whole file: no warning
        read_video_frames(path, 4, "uniform")

    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(TruncatedVideoWarning, match=r"only 2\.\d s of the 5\.0 s its header states can be decoded") as record:
        frames, _ = read_video_frames(path, 4, "uniform")
    assert name in str(record[0].message)
    assert frames.shape == (4, 32, 32, 3)


# --- rotation -------------------------------------------------------------------------------------------------------


def stored_frames() -> np.ndarray:
    """Landscape 48x32 frames: left half red, right half blue, top rows green."""
    frames = np.zeros((3, 32, 48, 3), dtype=np.uint8)
    frames[:, :, :24, 0] = 255
    frames[:, :, 24:, 2] = 255
    frames[:, :8, :, 1] = 255
    return frames


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_turns_frames_upright(tmp_path, rotation):
    write_clip(tmp_path / "plain.mp4", stored_frames())
    write_clip(tmp_path / "rotated.mp4", stored_frames(), rotation=rotation)
    plain, _ = read_video_frames(tmp_path / "plain.mp4", 3, "uniform")
    rotated, _ = read_video_frames(tmp_path / "rotated.mp4", 3, "uniform")
    # A player shows the stored frame turned counter-clockwise by the display matrix's angle.
    expected = np.rot90(plain, rotation // 90, axes=(1, 2))
    assert rotated.shape == expected.shape
    np.testing.assert_array_equal(rotated, expected)
    if rotation == 90:  # turned counter-clockwise: the green top edge is now the left edge, red at the bottom
        assert rotated[0, :, :4, 1].mean() > 200 and rotated[0, -4:, 12:, 0].mean() > 200


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


# --- processor ------------------------------------------------------------------------------------------------------


def test_empty_text_list_is_a_clear_error(clip_tokenizer):  # noqa: F811
    processor = TempMeProcessor(clip_tokenizer, num_frames=4, image_size=32)
    with pytest.raises(ValueError, match="text is an empty list: give at least one caption"):
        processor(text=[])
