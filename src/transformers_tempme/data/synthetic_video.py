"""A synthetic text-video retrieval benchmark that only temporal models can solve, written in the MSR-VTT layout.

Every scene is generated together with its time reversal, and both clips carry captions that differ only in the
order of events ("a red circle moves from left to right" / "... from right to left", "a blue square grows" /
"... shrinks", "a circle appears, then a square" / "a square disappears, then a circle"). A clip and its reversal
hold exactly the same set of frames, so a model that pools frames without looking at their order scores at chance on
telling them apart. Both clips of a pair always land in the same split; `reversal_pairs.json` records, for every
video, the video that is its time reversal, so that a pair accuracy can be computed.

The output folder is read by `load_retrieval_dataset("msrvtt", out_dir / "annotations", out_dir / "videos", split)`:

    out_dir/
      annotations/MSRVTT_train.9k.csv      column video_id: the training videos
      annotations/MSRVTT_JSFUSION_test.csv key,vid_key,video_id,sentence: one caption per test video
      annotations/MSRVTT_data.json         {"sentences": [{"video_id", "caption", "sen_id"}], "videos": [...]}
      annotations/reversal_pairs.json      {video_id: video_id of its time reversal}
      videos/video{N}.mp4
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from fractions import Fraction
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

# The benchmark's name in evaluation results: results on it are never labelled with the layout it borrows (MSR-VTT).
SYNTHETIC_BENCHMARK_NAME = "synthetic-temporal"
# Written beside the MSR-VTT layout files by `make_synthetic_benchmark`, and by nothing else: it marks the benchmark.
REVERSAL_PAIRS_FILE = "reversal_pairs.json"

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "white": (250, 250, 250),
    "purple": (160, 60, 220),
    "orange": (250, 140, 20),
    "cyan": (40, 220, 230),
}
# Backgrounds are dark so that every shape colour stays visible after 4:2:0 chroma subsampling.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (90, 90, 90),
    "dark blue": (10, 20, 80),
    "dark green": (10, 60, 20),
}
SHAPES = ("circle", "square", "triangle")
MOTIONS = {  # caption phrase -> (start, end) of the shape centre, in fractions of the frame side
    "from left to right": ((0.2, 0.5), (0.8, 0.5)),
    "from right to left": ((0.8, 0.5), (0.2, 0.5)),
    "from top to bottom": ((0.5, 0.2), (0.5, 0.8)),
    "from bottom to top": ((0.5, 0.8), (0.5, 0.2)),
}
REVERSED_MOTION = {
    "from left to right": "from right to left",
    "from right to left": "from left to right",
    "from top to bottom": "from bottom to top",
    "from bottom to top": "from top to bottom",
}


def _a(phrase: str) -> str:
    """The phrase with its indefinite article ("a red circle", "an orange square")."""
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def write_video(
    file: str | os.PathLike | BinaryIO,
    frames: np.ndarray,
    fps: int = 8,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    container_format: str | None = None,
    frame_times_s: Sequence[float] | None = None,
    codec_options: dict[str, str] | None = None,
) -> None:
    """Encode RGB frames into a video file with PyAV.

    Args:
        file (`str`, `os.PathLike` or binary file object): where to write; the container comes from the suffix
            unless `container_format` is given (required for file objects).
        frames (`np.ndarray`, uint8): `(n_frames, height, width, 3)` RGB, `(n_frames, height, width, 4)` RGBA or
            `(n_frames, height, width)` grey.
        fps (`int`): nominal frame rate.
        codec, pix_fmt: encoder and its pixel format (`"libx264"`/`"yuv420p"` needs even sizes; `"mpeg4"`, `"ffv1"`
            with `"gray"` or `"png"` with `"rgba"` cover the less common cases).
        frame_times_s (`Sequence[float]`, *optional*): presentation time of every frame, for variable frame rate.
        codec_options (`dict`, *optional*): encoder options, e.g. `{"g": "30"}` for the keyframe interval.
    """
    frames = np.asarray(frames, dtype=np.uint8)
    # (n, h, w) is grey, (n, h, w, 4) RGBA, (n, h, w, 3) RGB.
    input_format = "gray" if frames.ndim == 3 else {3: "rgb24", 4: "rgba"}[frames.shape[-1]]
    height, width = frames.shape[1:3]
    container = av.open(file, mode="w", format=container_format)
    try:
        stream = container.add_stream(codec, rate=fps, options=codec_options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if frame_times_s is not None:
            # A fine time base so that irregular timestamps survive.
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format=input_format)
            if frame_times_s is not None:
                frame.pts = int(round(frame_times_s[i] * 1000))
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()


def _shape_mask(shape: str, height: int, width: int, centre: tuple[float, float], radius: float) -> np.ndarray:
    """Boolean mask of a shape; `centre` is (x, y) in pixels, `radius` the half side / radius in pixels."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    dx, dy = xs - centre[0], ys - centre[1]
    if shape == "circle":
        return dx**2 + dy**2 <= radius**2
    if shape == "square":
        return (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
    if shape == "triangle":  # apex up: inside when below the two slanted sides and above the base
        return (dy <= radius) & (dy >= -radius + 2 * np.abs(dx))
    raise ValueError(f"Unknown shape {shape!r}; choose from {SHAPES}.")


@dataclass(frozen=True)
class Scene:
    """One clip to render: its caption and a function from time in [0, 1] to the objects drawn at that time."""

    caption: str
    paraphrase: str
    draw: Callable[[float], list[tuple[str, str, tuple[float, float], float]]]  # (shape, colour, centre, radius)
    background: str


def _render(scene: Scene, n_frames: int, size: int, reverse: bool) -> np.ndarray:
    video = np.empty((n_frames, size, size, 3), dtype=np.uint8)
    times = np.linspace(0.0, 1.0, n_frames)
    if reverse:
        times = times[::-1]
    for i, t in enumerate(times):
        video[i] = BACKGROUNDS[scene.background]
        for shape, colour, (cx, cy), radius in scene.draw(float(t)):
            video[i][_shape_mask(shape, size, size, (cx * size, cy * size), radius * size)] = COLOURS[colour]
    return video


def _scene_pairs(rng: np.random.Generator) -> list[tuple[Scene, Scene]]:
    """Every scene the generator knows, as (forward, time-reversed) pairs of captions over the same drawing."""
    pairs: list[tuple[Scene, Scene]] = []
    for colour, shape, background, motion in itertools.product(COLOURS, SHAPES, BACKGROUNDS, MOTIONS):
        if motion not in ("from left to right", "from top to bottom"):
            continue  # the other two directions are the reversals
        (x0, y0), (x1, y1) = MOTIONS[motion]
        radius = 0.12

        def draw(t, shape=shape, colour=colour, x0=x0, y0=y0, x1=x1, y1=y1, radius=radius):
            return [(shape, colour, (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t), radius)]

        def captions(direction, colour=colour, shape=shape, background=background):
            return (
                f"{_a(colour)} {shape} moves {direction} on a {background} background",
                f"on a {background} background {_a(colour)} {shape} slides {direction}",
            )

        back = REVERSED_MOTION[motion]
        pairs.append((Scene(*captions(motion), draw, background), Scene(*captions(back), draw, background)))
    for colour, shape, background in itertools.product(COLOURS, SHAPES, BACKGROUNDS):

        def draw(t, shape=shape, colour=colour):
            return [(shape, colour, (0.5, 0.5), 0.06 + 0.3 * t)]

        def captions(verb, colour=colour, shape=shape, background=background):
            return (
                f"{_a(colour)} {shape} {verb} on a {background} background",
                f"on a {background} background {_a(colour)} {shape} {verb}",
            )

        pairs.append((Scene(*captions("grows"), draw, background), Scene(*captions("shrinks"), draw, background)))
    for (colour_a, colour_b), (shape_a, shape_b), background in itertools.product(
        itertools.permutations(COLOURS, 2), itertools.permutations(SHAPES, 2), BACKGROUNDS
    ):
        if rng.random() > 0.15:
            continue  # the full product is large; a random subset keeps the kinds of scene balanced

        def draw(t, a=(shape_a, colour_a), b=(shape_b, colour_b)):
            objects = []
            if t >= 0.25:
                objects.append((a[0], a[1], (0.3, 0.5), 0.14))
            if t >= 0.6:
                objects.append((b[0], b[1], (0.7, 0.5), 0.14))
            return objects

        a, b = _a(f"{colour_a} {shape_a}"), _a(f"{colour_b} {shape_b}")
        on = f"on a {background} background"
        forward = Scene(f"{a} appears, then {b} {on}", f"{on} first {a} shows up and then {b}", draw, background)
        backward = Scene(f"{b} disappears, then {a} {on}", f"{on} first {b} vanishes and then {a}", draw, background)
        pairs.append((forward, backward))
    for (colour_a, colour_b), shape, background in itertools.product(
        itertools.permutations(COLOURS, 2), SHAPES, BACKGROUNDS
    ):
        if rng.random() > 0.3:
            continue

        def draw(t, shape=shape, a=colour_a, b=colour_b):
            return [(shape, a if t < 0.5 else b, (0.5, 0.5), 0.2)]

        forward = Scene(
            f"a {shape} turns from {colour_a} to {colour_b} on a {background} background",
            f"{_a(colour_a)} {shape} becomes {colour_b} on a {background} background",
            draw,
            background,
        )
        backward = Scene(
            f"a {shape} turns from {colour_b} to {colour_a} on a {background} background",
            f"{_a(colour_b)} {shape} becomes {colour_a} on a {background} background",
            draw,
            background,
        )
        pairs.append((forward, backward))
    return pairs


def make_synthetic_benchmark(
    out_dir: str | os.PathLike,
    num_train_pairs: int = 200,
    num_test_pairs: int = 50,
    frames_per_video: int = 24,
    fps: int = 8,
    size: int = 64,
    seed: int = 0,
) -> Path:
    """Write the synthetic temporal benchmark (videos and MSR-VTT style annotations) to `out_dir`.

    Args:
        out_dir: output folder, created if needed.
        num_train_pairs, num_test_pairs (`int`): scene pairs per split; each pair is two videos (a clip and its
            time reversal), so a split has twice as many videos.
        frames_per_video (`int`), fps (`int`): clip length in frames and its frame rate.
        size (`int`): frame side in pixels (even, for 4:2:0 video).
        seed (`int`): the benchmark is a deterministic function of its arguments.

    Returns:
        `Path` of `out_dir`.
    """
    if size % 2:
        raise ValueError(f"size must be even for 4:2:0 h264 video, got {size}.")
    rng = np.random.default_rng(seed)
    pairs = _scene_pairs(rng)
    needed = num_train_pairs + num_test_pairs
    if needed > len(pairs):
        raise ValueError(f"Asked for {needed} scene pairs but the generator has {len(pairs)} distinct ones.")
    chosen = [pairs[i] for i in rng.permutation(len(pairs))[:needed]]

    out_dir = Path(out_dir)
    videos_dir, annotations_dir = out_dir / "videos", out_dir / "annotations"
    videos_dir.mkdir(parents=True, exist_ok=True)
    annotations_dir.mkdir(parents=True, exist_ok=True)

    sentences, videos, reversal_of, splits = [], [], {}, {"train": [], "test": []}
    for pair_number, (forward, backward) in enumerate(chosen):
        split = "train" if pair_number < num_train_pairs else "test"
        ids = (f"video{2 * pair_number}", f"video{2 * pair_number + 1}")
        for video_id, scene, reverse in ((ids[0], forward, False), (ids[1], backward, True)):
            # Lossless (qp 0): a lossy encoder gives each frame a quality that depends on its place in the group of
            # pictures, a per-frame cue to the direction of time. Lossless, a clip and its reversal decode to exactly
            # the same frames.
            frames = _render(scene, frames_per_video, size, reverse)
            write_video(videos_dir / f"{video_id}.mp4", frames, fps=fps, codec_options={"qp": "0"})
            splits[split].append((video_id, scene.caption))
            videos.append({"video_id": video_id, "split": split})
            for caption in (scene.caption, scene.paraphrase):
                sentences.append({"video_id": video_id, "caption": caption, "sen_id": len(sentences)})
        reversal_of[ids[0]], reversal_of[ids[1]] = ids[1], ids[0]

    with open(annotations_dir / "MSRVTT_train.9k.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video_id"])
        writer.writerows([video_id] for video_id, _ in splits["train"])
    with open(annotations_dir / "MSRVTT_JSFUSION_test.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "vid_key", "video_id", "sentence"])
        for n, (video_id, caption) in enumerate(splits["test"]):
            writer.writerow([f"ret{n}", f"msr{video_id.removeprefix('video')}", video_id, caption])
    with open(annotations_dir / "MSRVTT_data.json", "w") as f:
        json.dump({"videos": videos, "sentences": sentences}, f)
    with open(annotations_dir / REVERSAL_PAIRS_FILE, "w") as f:
        json.dump(reversal_of, f, indent=0)
    return out_dir


def load_reversal_pairs(annotations_dir: str | os.PathLike) -> dict[str, str]:
    """`{video_id: video_id of its time reversal}` of a synthetic benchmark."""
    with open(Path(annotations_dir) / REVERSAL_PAIRS_FILE) as f:
        return json.load(f)


def is_synthetic_benchmark(annotations_dir: str | os.PathLike) -> bool:
    """Whether `annotations_dir` holds the annotations of the synthetic benchmark (`make_synthetic_benchmark`)."""
    return (Path(annotations_dir) / REVERSAL_PAIRS_FILE).is_file()


def encode_video_bytes(frames: np.ndarray, container_format: str = "mp4", **kwargs) -> bytes:
    """`write_video` into memory; returns the file's bytes."""
    buffer = io.BytesIO()
    write_video(buffer, frames, container_format=container_format, **kwargs)
    return buffer.getvalue()
