"""Shared pieces of the video search tests: a tiny saved TempMe model with its processor, and folders of generated
videos (short clips, a long video cut into several windows, and files that are not videos)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from transformers_tempme import TempMeCLIPModel, TempMeConfig, TempMeProcessor
from transformers_tempme.data.synthetic_video import write_video
from transformers_tempme.data.word_tokenizer import build_word_level_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

NUM_FRAMES, IMAGE_SIZE, MAX_WORDS, FPS = 4, 32, 12, 4
VOCABULARY = [
    "a red green blue yellow square circle moves from left to right top bottom grows shrinks on black background",
]
COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240), "yellow": (240, 220, 40)}


def tiny_search_model(seed: int = 0) -> tuple[TempMeCLIPModel, TempMeProcessor]:
    """A 4-frame TempMe model on 32x32 frames (ImgMe + ClipMe) with a word-level tokenizer, both in eval mode."""
    tokenizer = build_word_level_tokenizer(VOCABULARY, model_max_length=MAX_WORDS)
    config = TempMeConfig(
        num_frames=NUM_FRAMES,
        img_merge_r=2,
        clip_merge_layers=[2, 3],
        clip_merge_groups=[2, 2],
        projection_dim=16,
        clip_position_embedding_init_std=0.02,
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 2,
                       "image_size": IMAGE_SIZE, "patch_size": 8},
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "vocab_size": len(tokenizer), "max_position_embeddings": MAX_WORDS,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
    )
    torch.manual_seed(seed)
    model = TempMeCLIPModel(config).eval()
    processor = TempMeProcessor(tokenizer, num_frames=NUM_FRAMES, max_words=MAX_WORDS, image_size=IMAGE_SIZE,
                                train_augmentation=None)
    return model, processor


def save_tiny_search_model(folder: Path, seed: int = 0) -> Path:
    """Save the tiny model and its processor into one folder (what `--model` takes)."""
    model, processor = tiny_search_model(seed)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def moving_square(colour: str, n_frames: int, size: int = 32, reverse: bool = False, square: int = 8) -> np.ndarray:
    """Frames of a square of `colour` crossing a black frame from left to right (or back)."""
    frames = np.zeros((n_frames, size, size, 3), dtype=np.uint8)
    positions = np.linspace(0, size - square, n_frames).astype(int)
    if reverse:
        positions = positions[::-1]
    top = (size - square) // 2
    for frame, left in zip(frames, positions):
        frame[top : top + square, left : left + square] = COLOURS[colour]
    return frames


def long_video_frames(seconds: int, size: int = 32) -> np.ndarray:
    """A video whose colour changes every 10 seconds (red, green, blue, ...), so its windows differ."""
    names = list(COLOURS)
    parts = [moving_square(names[i % len(names)], 10 * FPS, size) for i in range((seconds + 9) // 10)]
    return np.concatenate(parts)[: seconds * FPS]


def write_clip(path: Path, frames: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames, fps=FPS)
    return path


def write_truncated_mp4(path: Path, seconds: int, keep: float) -> Path:
    """`long_video_frames(seconds)` as an mp4 with its index first (`faststart`, as streaming sites serve), cut to the
    first `keep` of its bytes: a download cut short whose header still states the whole duration."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for frame in long_video_frames(seconds):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    return path


def make_video_folder(root: Path) -> Path:
    """A folder of videos: four 3-second clips (one in a subfolder, one without a video extension), a 25-second
    video (three 10 s windows), plus an empty file, a text file named `.mp4`, a PNG image and a hidden file."""
    root.mkdir(parents=True, exist_ok=True)
    write_clip(root / "red_right.mp4", moving_square("red", 3 * FPS))
    write_clip(root / "red_left.mp4", moving_square("red", 3 * FPS, reverse=True))
    write_clip(root / "sub" / "blue_right.mp4", moving_square("blue", 3 * FPS))
    write_clip(root / "green.mkv", moving_square("green", 3 * FPS))
    shutil.move(root / "green.mkv", root / "green_clip")  # no extension: found by probing its container
    write_clip(root / "long.mp4", long_video_frames(25))
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("not a video at all\n")
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "thumbnail.png")
    (root / ".hidden.mp4").write_bytes((root / "red_right.mp4").read_bytes())
    return root


VIDEOS = ["green_clip", "long.mp4", "red_left.mp4", "red_right.mp4", "sub/blue_right.mp4"]

# A library of the formats people keep (name: codec, pixel format, container format, frames per second): browsers
# play only the H.264 MP4 as it is.
MIXED_FORMATS = {
    "clip.mp4": ("libx264", "yuv420p", None, FPS),
    "clip.avi": ("mpeg4", "yuv420p", None, FPS),
    "clip.mpg": ("mpeg1video", "yuv420p", "mpeg", 25),  # MPEG-1 takes only the standard frame rates
    "clip.gif": ("gif", "rgb8", None, FPS),
    "clip.mov": ("mjpeg", "yuvj420p", None, FPS),
}


def colour_seconds(seconds: int, fps: int = FPS, size: int = 64) -> np.ndarray:
    """Frames of a square crossing the frame whose colour changes every second (red, green, blue, yellow, red, ...):
    the frame shown at a time tells which second it is."""
    names = list(COLOURS)
    return np.concatenate([moving_square(names[second % len(names)], fps, size, square=size // 4)
                           for second in range(seconds)])


def make_mixed_formats_folder(root: Path, seconds: int = 4, size: int = 64) -> Path:
    """`MIXED_FORMATS`, each `seconds` long (`colour_seconds`)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, (codec, pixel_format, container_format, fps) in MIXED_FORMATS.items():
        write_video(root / name, colour_seconds(seconds, fps, size), fps=fps, codec=codec, pix_fmt=pixel_format,
                    container_format=container_format)
    return root
BAD_FILES = ["empty.mp4", "notes.mp4", "thumbnail.png"]
NOT_VIDEOS = ["thumbnail.png"]  # of BAD_FILES, skipped as not a video; the others are named like videos: failed


def make_many_videos(root: Path, count: int, seconds: int = 25) -> Path:
    """`count` videos of `seconds` seconds, each with its own colour order and direction."""
    names = list(COLOURS)
    for i in range(count):
        parts = [moving_square(names[(i + j) % len(names)], 10 * FPS, reverse=bool((i + j) % 2))
                 for j in range((seconds + 9) // 10)]
        write_clip(root / f"part{i % 3}" / f"video{i:02d}.mp4", np.concatenate(parts)[: seconds * FPS])
    return root


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def subprocess_env() -> dict[str, str]:
    """The environment of `tempme` subprocesses: offline, one thread, this checkout's sources first."""
    root = Path(__file__).resolve().parents[1]
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(root / "src"), os.environ.get("PYTHONPATH", "")])}


def stored_rows(index) -> tuple[list[tuple], np.ndarray]:
    """Every stored row's (path, segment, start, end, duration, size, mtime_ns, sha256), sorted, and the embeddings in
    that order."""
    dataset = index.to_dataset()
    columns = ("path", "segment", "start", "end", "duration", "size", "mtime_ns", "sha256")
    keys = list(zip(*(dataset[name] for name in columns)))
    order = sorted(range(len(keys)), key=lambda i: keys[i])
    embeddings = np.asarray(dataset.with_format("numpy")["embedding"], dtype=np.float32)
    return [keys[i] for i in order], embeddings[order]


def flip_bytes(path: Path, count: int = 64, offset: int | None = None) -> None:
    """Invert `count` bytes of a file in place, from `offset` (default: the middle of the file): damage that leaves
    its size as it was."""
    data = bytearray(Path(path).read_bytes())
    start = len(data) // 2 - count // 2 if offset is None else offset
    for i in range(start, start + count):
        data[i] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def hits_of(index, query: str = "a red square moves from left to right", k: int = 7) -> list[tuple]:
    """(path, start, score rounded to 1e-5) of a search's hits: what a search answers, to compare before and after."""
    return [(hit.path, hit.start, round(hit.score, 5)) for hit in index.search(query, k=k)]


# Indexing options that keep the tests fast: no decoding worker, small batches, no progress bar.
FAST_INDEXING = {"num_workers": 0, "batch_size": 4, "progress": False}


def build_index(videos: Path, index_dir: Path, encoder, **options):
    """`VideoSearchIndex.build` with `encoder` (model, processor) and `FAST_INDEXING` (overridden by `options`)."""
    from transformers_tempme import VideoSearchIndex

    model, processor = encoder
    return VideoSearchIndex.build(videos, index_dir, model, processor, **{**FAST_INDEXING, **options})


@pytest.fixture(scope="module")
def encoder():
    """The tiny search model and its processor (a fixture: import it into a test module to use it)."""
    return tiny_search_model()


@pytest.fixture
def videos(tmp_path):
    """`make_video_folder` in the test's temporary folder (a fixture: import it into a test module to use it)."""
    return make_video_folder(tmp_path / "videos")
