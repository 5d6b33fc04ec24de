"""`TempMeProcessor`: CLIP text tokenisation and video decoding / preprocessing for TempMe.

Text follows the paper's loader: `[SOT] + BPE tokens` truncated to `max_words - 1`, then `[EOT]`, zero-padded to
`max_words` with an attention mask of ones on the real tokens. Videos are decoded with `read_video_frames`
(`num_frames` frames, the paper's one-frame-per-second sampling by default) and preprocessed as CLIP images.

The video settings are plain processor attributes stored in `processor_config.json` (there is no separate image
processor: `transformers`' CLIP image processors need torchvision, and the paper's video pipeline is its own).

This file, `video_io.py` and `frame_transforms.py` are written next to a saved processor as remote code
(`AutoProcessor.from_pretrained(folder, trust_remote_code=True)`): they import only numpy, PIL, transformers, PyAV
(optional: needed to read video files, not for frame arrays) and each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .frame_transforms import CLIP_IMAGE_SIZE, CLIP_MEAN, CLIP_STD, VideoRandAugment, preprocess_video, stack_videos
from .video_io import read_video_frames, sample_frame_indices

# The authors pad token ids with 0; the attention mask, not the pad id, marks padding.
TEXT_PAD_ID = 0


class TempMeProcessor(ProcessorMixin):
    r"""
    Processor for TempMe text-video retrieval: a CLIP tokenizer plus video decoding and CLIP frame preprocessing.

    Args:
        tokenizer (`CLIPTokenizer`):
            OpenAI CLIP's BPE tokenizer (the package's `build_clip_tokenizer()` builds it offline).
        num_frames (`int`, *optional*, defaults to 12):
            Frames sampled per video (64 in the paper for ActivityNet and DiDeMo).
        max_words (`int`, *optional*, defaults to 32):
            Text length in tokens, SOT and EOT included (64 in the paper for ActivityNet and DiDeMo).
        frame_sampling (`str`, *optional*, defaults to `"fps"`):
            `"fps"`: the paper's one-frame-per-second candidates; `"uniform"`: uniform over all frames.
        image_size (`int`, *optional*, defaults to 224):
            Side of the square frames given to the vision tower.
        image_mean (`list[float]`, *optional*), image_std (`list[float]`, *optional*):
            Normalisation; CLIP's by default.
        train_augmentation (`dict`, *optional*):
            Arguments of `VideoRandAugment` used when the processor is called with `augment=True`; the paper's
            `rand-m7-n4-mstd0.5` by default. `None` disables augmentation.
    """

    model_input_names = ["input_ids", "attention_mask", "pixel_values", "video_mask"]

    def __init__(
        self,
        tokenizer=None,
        num_frames: int = 12,
        max_words: int = 32,
        frame_sampling: str = "fps",
        image_size: int = CLIP_IMAGE_SIZE,
        image_mean: Sequence[float] = CLIP_MEAN,
        image_std: Sequence[float] = CLIP_STD,
        train_augmentation: dict[str, Any] | None = None,
        **kwargs,
    ):
        if tokenizer is None:
            raise ValueError("TempMeProcessor needs a CLIP tokenizer; build one offline with `build_clip_tokenizer()`.")
        if max_words < 2:
            raise ValueError(f"max_words must leave room for the start and end tokens, got {max_words}.")
        if frame_sampling not in ("fps", "uniform"):
            raise ValueError(f"frame_sampling must be 'fps' or 'uniform', got {frame_sampling!r}.")
        self.num_frames = int(num_frames)
        self.max_words = int(max_words)
        self.frame_sampling = frame_sampling
        self.image_size = int(image_size)
        self.image_mean = [float(x) for x in image_mean]
        self.image_std = [float(x) for x in image_std]
        # The paper's rand-m7-n4-mstd0.5.
        paper_augmentation = {"num_ops": 4, "magnitude": 7.0, "magnitude_std": 0.5}
        self.train_augmentation = dict(train_augmentation) if train_augmentation is not None else paper_augmentation
        super().__init__(tokenizer, **kwargs)

    def encode_text(self, text: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, both int64 of shape `(batch, max_words)`, with the paper's truncation."""
        texts = [text] if isinstance(text, str) else list(text)
        if not texts:
            raise ValueError("text is an empty list: give at least one caption, or leave text out for videos only.")
        for number, caption in enumerate(texts):
            if not isinstance(caption, str):
                raise ValueError(f"text[{number}] is {type(caption).__name__} {caption!r:.60}: every caption must be a string.")
        tokens = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        input_ids = np.full((len(texts), self.max_words), TEXT_PAD_ID, dtype=np.int64)
        attention_mask = np.zeros((len(texts), self.max_words), dtype=np.int64)
        for i, ids in enumerate(tokens):
            sequence = [self.tokenizer.bos_token_id, *ids[: self.max_words - 2], self.tokenizer.eos_token_id]
            input_ids[i, : len(sequence)] = sequence
            attention_mask[i, : len(sequence)] = 1
        return input_ids, attention_mask

    def load_video(self, video: Any, video_fps: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Frames `(num_frames, height, width, 3)` uint8 and mask `(num_frames,)` of one video given as a path, file
        or frame array.

        An array of `num_frames` frames is used as it is. An array of any other length is sampled to `num_frames`
        by `sample_frame_indices`, as a decoded file is: at `video_fps`, its frame rate, when given; otherwise each
        of its frames counts as one second apart, which for `"fps"` sampling is uniform sampling over the array.
        """
        if isinstance(video, np.ndarray) or (hasattr(video, "numpy") and hasattr(video, "dim")):
            frames = np.asarray(video)
            if frames.ndim == 3:  # one frame
                frames = frames[None]
            if len(frames) != self.num_frames:
                fps = 1.0 if video_fps is None else float(video_fps)
                frames = frames[sample_frame_indices(len(frames), fps, self.num_frames, self.frame_sampling)]
            return frames, np.ones(len(frames), dtype=np.int64)
        return read_video_frames(video, self.num_frames, sampling=self.frame_sampling)

    def preprocess_videos(
        self,
        videos: Sequence[Any],
        augment: bool = False,
        rng: np.random.Generator | None = None,
        video_fps: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`pixel_values` `(batch, frames, 3, size, size)` float32 and `video_mask` `(batch, frames)` int64.

        `video_fps` is the frame rate of the videos given as frame arrays (see `load_video`)."""
        augmentation = VideoRandAugment(**self.train_augmentation) if augment and self.train_augmentation else None
        processed, masks = [], []
        for video in videos:
            frames, mask = self.load_video(video, video_fps)
            processed.append(
                preprocess_video(frames, self.image_size, self.image_mean, self.image_std, augmentation, rng)
            )
            masks.append(mask)
        return stack_videos(processed, masks)

    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        videos: Any = None,
        return_tensors: str | None = None,
        augment: bool = False,
        rng: np.random.Generator | None = None,
        video_fps: float | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Tokenise `text` and decode / preprocess `videos`.

        Args:
            text (`str` or `list[str]`, *optional*): captions.
            videos (*optional*): one video or a list of videos, each a path, a binary file object, the file's
                bytes, or a uint8 array of RGB frames `(frames, height, width, 3)`; arrays of another length than
                `num_frames` are sampled to it as files are.
            return_tensors (`str`, *optional*): `"pt"` for torch tensors, `"np"` for numpy arrays.
            augment (`bool`, *optional*, defaults to `False`): apply the video-consistent train augmentation.
            rng (`np.random.Generator`, *optional*): randomness of the augmentation.
            video_fps (`float`, *optional*): frame rate of the videos given as frame arrays, for `"fps"` sampling;
                without it their frames count as one second apart.

        Returns:
            `BatchFeature` with `input_ids` and `attention_mask` `(batch, max_words)` when `text` is given, and
            `pixel_values` `(batch, frames, 3, image_size, image_size)` and `video_mask` `(batch, frames)` when
            `videos` is given.
        """
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)} for TempMeProcessor.")
        if text is None and videos is None:
            raise ValueError("Give `text`, `videos` or both.")
        data: dict[str, np.ndarray] = {}
        if text is not None:
            data["input_ids"], data["attention_mask"] = self.encode_text(text)
        if videos is not None:
            if not isinstance(videos, (list, tuple)):
                videos = [videos]
            data["pixel_values"], data["video_mask"] = self.preprocess_videos(
                videos, augment=augment, rng=rng, video_fps=video_fps
            )
        return BatchFeature(data=data, tensor_type=return_tensors)

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)


# `save_pretrained` writes an auto_map for AutoProcessor and copies this file and its relative imports.
TempMeProcessor.register_for_auto_class("AutoProcessor")
