"""Write the synthetic temporal retrieval benchmark (mp4 clips + MSR-VTT style annotations).

    tempme make-synthetic OUTDIR [--train-pairs 200] [--test-pairs 50] [--size 64] [--seed 0]

Read it back with `load_retrieval_dataset("msrvtt", OUTDIR/annotations, OUTDIR/videos, split)`; every video's
time reversal is listed in OUTDIR/annotations/reversal_pairs.json.
"""

from __future__ import annotations

import time

from ..data.synthetic_video import make_synthetic_benchmark
from .common import command_parser, reports_user_errors


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    parser = command_parser("make-synthetic", __doc__)
    parser.add_argument("outdir")
    parser.add_argument("--train-pairs", type=int, default=200)
    parser.add_argument("--test-pairs", type=int, default=50)
    parser.add_argument("--frames", type=int, default=24, help="frames per clip")
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels (even)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    make_synthetic_benchmark(
        args.outdir, args.train_pairs, args.test_pairs, args.frames, args.fps, args.size, args.seed
    )
    n_videos = 2 * (args.train_pairs + args.test_pairs)
    print(f"Wrote {n_videos} videos to {args.outdir} in {time.perf_counter() - start:.1f} s")
    return 0

