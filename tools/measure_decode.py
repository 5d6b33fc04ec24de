"""Time `read_video_frames` on a generated 10 s 720p clip, with and without seeking, for several keyframe intervals.

    python tools/measure_decode.py [--num-frames 12] [--repeats 3] [--threads N]

Writes the clips to a temporary folder, prints one table row per (keyframe interval, strategy): the fastest wall time
to return `num_frames` frames with the paper's sampling, and the time to decode every frame for comparison.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from transformers_tempme import video_io
from transformers_tempme.data.synthetic_video import write_video

WIDTH, HEIGHT, FPS, SECONDS = 1280, 720, 30, 10


def make_clip(path: Path, keyframe_interval: int) -> None:
    """A panning scene with smooth texture and a moving object, h264 yuv420p (bitrate of ordinary footage)."""
    rng = np.random.default_rng(0)
    # Low-frequency texture: random values on a coarse grid, upsampled, so the encoder sees structure, not noise.
    coarse = rng.integers(0, 256, size=(HEIGHT // 40 + 1, (2 * WIDTH) // 40 + 1, 3), dtype=np.uint8)
    texture = np.repeat(np.repeat(coarse, 40, axis=0), 40, axis=1)[:HEIGHT, : 2 * WIDTH]
    frames = np.empty((FPS * SECONDS, HEIGHT, WIDTH, 3), dtype=np.uint8)
    for t in range(len(frames)):
        shift = (t * 4) % WIDTH
        frames[t] = texture[:, shift : shift + WIDTH]
        x = (t * 9) % (WIDTH - 120)
        frames[t, 300:420, x : x + 120] = (240, 40, 40)
    write_video(path, frames, fps=FPS, codec_options={"g": str(keyframe_interval), "preset": "veryfast"})


def decode_everything(path: Path) -> float:
    """Baseline: decode every frame (what a reader without an index or seeking does)."""
    start = time.perf_counter()
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in container.decode(stream):
            pass
    return time.perf_counter() - start


def timed_read(path: Path, num_frames: int, min_skip: int) -> float:
    video_io.MIN_FRAMES_SKIPPED_BY_SEEK = min_skip
    start = time.perf_counter()
    frames, _ = video_io.read_video_frames(path, num_frames)
    elapsed = time.perf_counter() - start
    assert frames.shape == (num_frames, HEIGHT, WIDTH, 3)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-frames", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keyframe-intervals", type=int, nargs="+", default=[250, 30, 5])
    args = parser.parse_args()
    default_min_skip = video_io.MIN_FRAMES_SKIPPED_BY_SEEK
    never_seek = 10**9
    print(f"{SECONDS} s {WIDTH}x{HEIGHT} h264 at {FPS} fps, {args.num_frames} frames, ", end="")
    print(f"fastest of {args.repeats} interleaved runs")
    print("| keyframe interval | strategy | seconds per video |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for interval in args.keyframe_intervals:
            path = Path(tmp) / f"clip_g{interval}.mp4"
            make_clip(path, interval)
            rows = {
                "decode all frames (no sampling)": lambda: decode_everything(path),
                "read_video_frames, no seeking": lambda: timed_read(path, args.num_frames, never_seek),
                "read_video_frames, seek over any gap": lambda: timed_read(path, args.num_frames, 0),
                f"read_video_frames (default, seek when > {default_min_skip} frames skipped)": lambda: timed_read(
                    path, args.num_frames, default_min_skip
                ),
            }
            for run in rows.values():
                run()  # warm the page cache
            # Interleave the strategies and keep each one's fastest run: on a machine shared with other jobs the
            # minimum is the figure least disturbed by them.
            times: dict[str, list[float]] = {name: [] for name in rows}
            for _ in range(args.repeats):
                for name, run in rows.items():
                    times[name].append(run())
            for name, seconds in times.items():
                print(f"| {interval} | {name} | {min(seconds):.2f} |")
    video_io.MIN_FRAMES_SKIPPED_BY_SEEK = default_min_skip


if __name__ == "__main__":
    main()
