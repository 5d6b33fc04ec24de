"""Write the synthetic temporal retrieval benchmark (mp4 clips + MSR-VTT style annotations).

    python scripts/make_synthetic_benchmark.py OUTDIR [--train-pairs 200] [--test-pairs 50] [--size 64] [--seed 0]

Read it back with `load_retrieval_dataset("msrvtt", OUTDIR/annotations, OUTDIR/videos, split)`; every video's
time reversal is listed in OUTDIR/annotations/reversal_pairs.json.
"""

from __future__ import annotations

import argparse
import time

from transformers_tempme.synthetic_video import make_synthetic_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir")
    parser.add_argument("--train-pairs", type=int, default=200)
    parser.add_argument("--test-pairs", type=int, default=50)
    parser.add_argument("--frames", type=int, default=24, help="frames per clip")
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels (even)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    make_synthetic_benchmark(
        args.outdir, args.train_pairs, args.test_pairs, args.frames, args.fps, args.size, args.seed
    )
    n_videos = 2 * (args.train_pairs + args.test_pairs)
    print(f"Wrote {n_videos} videos to {args.outdir} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
