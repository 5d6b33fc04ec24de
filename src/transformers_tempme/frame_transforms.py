"""CLIP frame preprocessing and video-consistent train-time augmentation, with PIL and numpy only.

Test-time (and the last train-time step), as the paper's loader does with torchvision: resize the shorter side to
`image_size` with bicubic interpolation, center-crop `image_size` x `image_size`, scale to [0, 1] and normalise with
CLIP's mean and std.

Train-time augmentation is a RandAugment (`rand-m7-n4-mstd0.5-inc1`, the paper's setting) whose random choices
(which ops, whether each fires, its magnitude and sign) are drawn once per video and applied to every frame, so that
the frames of a video stay consistent with each other. Horizontal flips are not part of it: they would turn "from
left to right" into "from right to left" while the caption stays the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageEnhance, ImageOps
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

CLIP_MEAN = tuple(OPENAI_CLIP_MEAN)
CLIP_STD = tuple(OPENAI_CLIP_STD)
CLIP_IMAGE_SIZE = 224


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Resize so that the shorter side is `size` (bicubic), keeping the aspect ratio as torchvision's `Resize(int)`."""
    width, height = image.size
    if min(width, height) == size:
        return image
    if width <= height:
        new_width, new_height = size, int(size * height / width)
    else:
        new_width, new_height = int(size * width / height), size
    return image.resize((new_width, new_height), Image.Resampling.BICUBIC)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """Crop the central `size` x `size` square (torchvision's rounding of the offsets)."""
    width, height = image.size
    left = int(round((width - size) / 2.0))
    top = int(round((height - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


# Past this ratio of the resized long side to the crop, only the part of the frame that the crop keeps is
# resized: a 2000x2 frame would otherwise become a 224000x224 image (150 MB) to keep 224x224 of it.
MAX_RESIZED_SIDE_RATIO = 4


def resize_and_center_crop(image: Image.Image, size: int) -> Image.Image:
    """`center_crop(resize_shorter_side(image, size), size)`, at a cost bounded whatever the aspect ratio.

    For extreme aspect ratios only the source box that maps onto the crop is resized, with the scale and offsets
    of the full resize (the same pixels, to within 1 level of rounding).
    """
    width, height = image.size
    if max(width, height) <= MAX_RESIZED_SIDE_RATIO * min(width, height):
        return center_crop(resize_shorter_side(image, size), size)
    if width <= height:
        new_width, new_height = size, int(size * height / width)
    else:
        new_width, new_height = int(size * width / height), size
    scale_x, scale_y = width / new_width, height / new_height
    left = int(round((new_width - size) / 2.0))
    top = int(round((new_height - size) / 2.0))
    # Pillow resizes horizontally, then vertically; one call per pass keeps each to the crop's box (a single call
    # with a box that cuts both axes differs from the full resize by up to 20 levels).
    rows = image.resize((size, height), Image.Resampling.BICUBIC, box=(left * scale_x, 0, (left + size) * scale_x, height))
    return rows.resize((size, size), Image.Resampling.BICUBIC, box=(0, top * scale_y, size, (top + size) * scale_y))


def normalize_frames(
    frames: np.ndarray, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD
) -> np.ndarray:
    """uint8 `(frames, height, width, 3)` -> float32 `(frames, 3, height, width)`, scaled to [0, 1] and normalised."""
    scaled = frames.astype(np.float32) / 255.0
    normalised = (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(normalised.transpose(0, 3, 1, 2))


# --- Video-consistent RandAugment --------------------------------------------------------------------------------
# Every op takes (image, magnitude in [0, 10], sign in {-1, 1}); the "increasing" variants (timm's `inc1`) get
# stronger as the magnitude grows. Geometric ops fill uncovered pixels with mid grey.
_FILL = (128, 128, 128)
_MAX_MAGNITUDE = 10.0


def _level(magnitude: float, maximum: float) -> float:
    return magnitude / _MAX_MAGNITUDE * maximum


def _affine(image: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
    return image.transform(
        image.size, Image.Transform.AFFINE, matrix, resample=Image.Resampling.BICUBIC, fillcolor=_FILL
    )


def _solarize_add(image: Image.Image, addition: int, threshold: int = 128) -> Image.Image:
    """Brighten the pixels darker than `threshold` by `addition` (clipped at 255)."""
    array = np.asarray(image, dtype=np.int32)
    brightened = np.where(array < threshold, np.minimum(array + addition, 255), array)
    return Image.fromarray(brightened.astype(np.uint8))


_OPS = {
    "AutoContrast": lambda im, m, s: ImageOps.autocontrast(im),
    "Equalize": lambda im, m, s: ImageOps.equalize(im),
    "Invert": lambda im, m, s: ImageOps.invert(im),
    "Rotate": lambda im, m, s: im.rotate(s * _level(m, 30.0), resample=Image.Resampling.BICUBIC, fillcolor=_FILL),
    "PosterizeIncreasing": lambda im, m, s: ImageOps.posterize(im, max(1, 4 - int(_level(m, 4)))),
    "SolarizeIncreasing": lambda im, m, s: ImageOps.solarize(im, 256 - int(_level(m, 256))),
    "SolarizeAdd": lambda im, m, s: _solarize_add(im, int(_level(m, 110))),
    "ColorIncreasing": lambda im, m, s: ImageEnhance.Color(im).enhance(1.0 + s * _level(m, 0.9)),
    "ContrastIncreasing": lambda im, m, s: ImageEnhance.Contrast(im).enhance(1.0 + s * _level(m, 0.9)),
    "BrightnessIncreasing": lambda im, m, s: ImageEnhance.Brightness(im).enhance(1.0 + s * _level(m, 0.9)),
    "SharpnessIncreasing": lambda im, m, s: ImageEnhance.Sharpness(im).enhance(1.0 + s * _level(m, 0.9)),
    "ShearX": lambda im, m, s: _affine(im, (1, s * _level(m, 0.3), 0, 0, 1, 0)),
    "ShearY": lambda im, m, s: _affine(im, (1, 0, 0, s * _level(m, 0.3), 1, 0)),
    "TranslateXRel": lambda im, m, s: _affine(im, (1, 0, s * _level(m, 0.45) * im.size[0], 0, 1, 0)),
    "TranslateYRel": lambda im, m, s: _affine(im, (1, 0, 0, 0, 1, s * _level(m, 0.45) * im.size[1])),
}
RAND_AUGMENT_OPS: tuple[str, ...] = tuple(_OPS)


@dataclass(frozen=True)
class AugmentationStep:
    op: str
    magnitude: float
    sign: int


@dataclass
class VideoRandAugment:
    """RandAugment whose random draws are shared by all frames of a video.

    Args:
        num_ops (`int`, defaults to 4): ops drawn (with replacement) per video.
        magnitude (`float`, defaults to 7): mean op strength on a 0-10 scale.
        magnitude_std (`float`, defaults to 0.5): the strength of each op is drawn from N(magnitude, magnitude_std).
        probability (`float`, defaults to 0.5): chance that each drawn op is applied.
        ops (`Sequence[str]`): op names to draw from, a subset of `RAND_AUGMENT_OPS`.
    """

    num_ops: int = 4
    magnitude: float = 7.0
    magnitude_std: float = 0.5
    probability: float = 0.5
    ops: Sequence[str] = field(default_factory=lambda: RAND_AUGMENT_OPS)

    def __post_init__(self):
        unknown = set(self.ops) - set(_OPS)
        if unknown:
            raise ValueError(f"Unknown augmentation ops {sorted(unknown)}; choose from {RAND_AUGMENT_OPS}.")

    def draw(self, rng: np.random.Generator) -> list[AugmentationStep]:
        """The random choices for one video."""
        steps = []
        for op in rng.choice(list(self.ops), size=self.num_ops, replace=True):
            if rng.random() >= self.probability:
                continue
            magnitude = float(np.clip(rng.normal(self.magnitude, self.magnitude_std), 0.0, _MAX_MAGNITUDE))
            steps.append(AugmentationStep(str(op), magnitude, 1 if rng.random() < 0.5 else -1))
        return steps

    @staticmethod
    def apply(image: Image.Image, steps: Sequence[AugmentationStep]) -> Image.Image:
        for step in steps:
            image = _OPS[step.op](image, step.magnitude, step.sign)
        return image


def preprocess_video(
    frames: np.ndarray,
    image_size: int = CLIP_IMAGE_SIZE,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    augmentation: VideoRandAugment | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Turn the RGB frames of one video into CLIP pixel values.

    Args:
        frames (`np.ndarray` of shape `(num_frames, height, width, 3)`, uint8): RGB frames.
        image_size (`int`, defaults to 224): output side.
        mean, std (`Sequence[float]`): per-channel normalisation (CLIP's by default).
        augmentation (`VideoRandAugment`, *optional*): train-time augmentation, drawn once for the whole video and
            applied to the full-resolution frames before resizing (as the paper does).
        rng (`np.random.Generator`, *optional*): source of the augmentation's randomness.

    Returns:
        `np.ndarray` of shape `(num_frames, 3, image_size, image_size)`, float32.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"Expected uint8 RGB frames of shape (num_frames, height, width, 3), got {frames.dtype} {frames.shape}."
        )
    steps = augmentation.draw(rng if rng is not None else np.random.default_rng()) if augmentation else []
    processed = np.empty((len(frames), image_size, image_size, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        image = Image.fromarray(frame)
        if steps:
            image = VideoRandAugment.apply(image, steps)
        processed[i] = np.asarray(resize_and_center_crop(image, image_size))
    return normalize_frames(processed, mean, std)


def stack_videos(
    videos: Sequence[np.ndarray], masks: Sequence[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Batch preprocessed videos, zero-padding the frame axis of shorter ones.

    Args:
        videos: each of shape `(frames_i, 3, size, size)`, float32.
        masks: each of shape `(frames_i,)`; all ones when omitted.

    Returns:
        `pixel_values` of shape `(batch, max_frames, 3, size, size)` float32 and `video_mask` of shape
        `(batch, max_frames)` int64 (1 for real frames, 0 for padding).
    """
    if not videos:
        raise ValueError("stack_videos needs at least one video.")
    max_frames = max(len(v) for v in videos)
    pixel_values = np.zeros((len(videos), max_frames, *videos[0].shape[1:]), dtype=np.float32)
    video_mask = np.zeros((len(videos), max_frames), dtype=np.int64)
    for i, video in enumerate(videos):
        pixel_values[i, : len(video)] = video
        video_mask[i, : len(video)] = 1 if masks is None else masks[i][: len(video)]
    return pixel_values, video_mask
