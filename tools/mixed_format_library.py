"""Re-encode a folder of videos into the formats people keep, in turn, to try the search page on a mixed library.

Each video of SOURCE (sorted by name) is written to TARGET with the same name and frames, as the next of: an H.264
MP4 (which browsers play as it is), an MPEG-4 Part 2 AVI, an MPEG-1 program stream (`.mpg`, at 25 frames per
second: MPEG-1 takes only the standard rates), a GIF and a Motion JPEG MOV (which the page plays through copies of
their windows). The README's screenshot shows the demo's held-out videos this way:

    python tools/mixed_format_library.py demo_output/search_videos demo_output/mixed_videos
    tempme index demo_output/mixed_videos --model demo_output/model --index demo_output/mixed.index
    python tests/test_search_app.py demo_output/mixed.index "a blue square moves from left to right" docs/images/search_page.png 6
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import numpy as np

from transformers_tempme.data.synthetic_video import write_video

# suffix: codec, pixel format, container format, frame rate (None: the source's)
FORMATS = [
    (".mp4", "libx264", "yuv420p", None, None),
    (".avi", "mpeg4", "yuv420p", None, None),
    (".mpg", "mpeg1video", "yuv420p", "mpeg", 25),
    (".gif", "gif", "rgb8", None, None),
    (".mov", "mjpeg", "yuvj420p", None, None),
]


def read_frames(path: Path) -> tuple[np.ndarray, float]:
    """Every frame of a video, RGB `(n, height, width, 3)`, and its frame rate."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])
        return frames, float(stream.average_rate or 25)


def at_rate(frames: np.ndarray, fps: float, new_fps: int) -> np.ndarray:
    """The frames shown at each tick of `new_fps` (nearest earlier frame)."""
    ticks = np.arange(int(len(frames) / fps * new_fps))
    return frames[np.minimum((ticks * fps / new_fps).astype(int), len(frames) - 1)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="folder of videos")
    parser.add_argument("target", type=Path, help="folder to write (created)")
    args = parser.parse_args(argv)
    args.target.mkdir(parents=True, exist_ok=True)
    sources = sorted(path for path in args.source.iterdir() if path.is_file())
    for number, path in enumerate(sources):
        suffix, codec, pixel_format, container_format, rate = FORMATS[number % len(FORMATS)]
        frames, fps = read_frames(path)
        if rate is not None:
            frames, fps = at_rate(frames, fps, rate), rate
        write_video(args.target / (path.stem + suffix), frames, fps=round(fps), codec=codec, pix_fmt=pixel_format,
                    container_format=container_format)
    print(f"Wrote {len(sources)} videos to {args.target}")


if __name__ == "__main__":
    main()
