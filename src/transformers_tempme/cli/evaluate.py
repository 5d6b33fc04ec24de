"""Evaluate a TempMe model on a retrieval split and write the metrics JSON.

    tempme evaluate --model runs/msrvtt_vit_b32 --base-model openai/clip-vit-base-patch32 \
        --dataset msrvtt --annotations-dir data/msrvtt/annotations --videos-dir data/msrvtt/videos \
        --output-file runs/msrvtt_vit_b32/retrieval_test.json

Every video of the split is encoded once (batched, with a progress bar), every caption once; the full
(texts, videos) similarity matrix gives both directions (one caption or paragraph per video: diagonal ground truth;
several captions per video: a hit when the caption's video is retrieved). The JSON also holds the model's vision
GFLOPs per video (`count_gflops`), its output tokens per video and the videos/s measured here:

    {"dataset", "split", "model", "command", "text_to_video": {"R@1", "R@5", "R@10", "MdR", "MnR"},
     "video_to_text": {...}, "rsum", "gflops", "output_tokens", "videos_per_s"}

`--model` is anything `load_tempme` loads: a folder written by `tempme train` (an adapter with its TempMe config,
put on `--base-model` or the base the adapter names; LoRA and the other peft methods are merged into the weights,
bottleneck adapters and deep prompts run as they are and their cost is in `gflops`), a saved TempMe model, a Hub
id, or a plain CLIP checkpoint turned into TempMe with `--preset` (zero-shot). `--preset` on a TempMe model
evaluates its weights under another schedule. `--peft lora|adapter|prompt|<peft config>` names the method the
adapter must hold (as `tempme train --peft`); an adapter of another kind is an error.
`accelerate launch -m transformers_tempme.cli evaluate ...` shards the split over processes.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from .common import command_parser, reports_user_errors


def parse_args(argv=None) -> argparse.Namespace:
    parser = command_parser("evaluate", __doc__)
    parser.add_argument("--model", required=True, help="model or adapter folder, Hub id, or a CLIP checkpoint")
    parser.add_argument("--base-model", default=None, help="the model under an adapter (default: the one it names)")
    parser.add_argument("--peft", default=None, help="lora, adapter, prompt or a peft config: the method to expect")
    parser.add_argument("--preset", default=None, help="merge schedule for a CLIP checkpoint, or to replace the model's")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder or Hub id (default: the model's)")
    parser.add_argument("--dataset", default="msrvtt", help="msrvtt, didemo, activitynet or lsmdc")
    parser.add_argument("--annotations-dir", required=True)
    parser.add_argument("--videos-dir", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--num-frames", type=int, default=None, help="default: the saved processor's, else the model's")
    parser.add_argument("--max-words", type=int, default=None, help="default: the saved processor's, else 32")
    parser.add_argument("--frame-sampling", default=None, choices=("fps", "uniform"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--device", default=None, help="cpu to stay off the GPU (default: Accelerate's choice)")
    parser.add_argument("--output-file", default=None, help="default: <model folder>/retrieval_<split>.json")
    return parser.parse_args(argv)


def load_model(args):
    from ..tuners.peft_methods import can_merge
    from .common import load_model_option

    model = load_model_option(args.model, args.base_model, schedule=args.preset)
    check_peft_type(model, args.peft)
    # peft's methods fold into the weights; bottleneck adapters and deep prompts run as they are.
    return model.merge_and_unload() if can_merge(model) else model


def check_peft_type(model, peft: str | None) -> None:
    """With `--peft`, the adapter must be of that method (e.g. a sweep over Table 13's rows evaluates the right run)."""
    if peft is None:
        return
    from ..tuners.peft_methods import parse_peft_option

    if not hasattr(model, "peft_config"):
        raise ValueError(f"--peft {peft}: the model holds no adapter (no adapter_config.json).")
    expected = parse_peft_option(peft).peft_type
    found = model.peft_config[model.active_adapter].peft_type
    value = lambda peft_type: getattr(peft_type, "value", peft_type)  # noqa: E731 (peft's types are enum members)
    if value(found) != value(expected):
        raise ValueError(f"--peft {peft} expects a {value(expected)} adapter, but the adapter is {value(found)}.")


def load_processor(args, model):
    """The processor saved with the model (or its adapter's base), settings on the command line on top; with
    --tokenizer, a new one around that tokenizer (`hub.loading.load_processor`)."""
    from ..hub.loading import load_processor as load_model_processor

    settings = {
        key: value
        for key, value in (("num_frames", args.num_frames), ("max_words", args.max_words),
                           ("frame_sampling", args.frame_sampling))
        if value is not None
    }
    return load_model_processor(args.model, model, tokenizer=args.tokenizer, **settings)


def evaluate(argv: list[str]) -> dict:
    """Run `tempme evaluate ARGV`: write the metrics JSON and return its content."""
    from accelerate import Accelerator

    from .. import load_retrieval_dataset
    from ..data.retrieval_datasets import evaluation_dataset_fields
    from ..data.video_text import VideoTextDataset
    from ..evaluation.retrieval import evaluate_retrieval

    args = parse_args(argv)
    # The split first: a mistyped dataset or folder is reported before the model is loaded.
    rows = load_retrieval_dataset(args.dataset, args.annotations_dir, args.videos_dir, split=args.split)
    accelerator = Accelerator(cpu=args.device == "cpu")
    model = load_model(args).to(accelerator.device).eval()
    processor = load_processor(args, model)
    if args.max_samples is not None:
        rows = rows.select(range(min(args.max_samples, len(rows))))
    dataset = VideoTextDataset(rows, processor)
    metrics = evaluate_retrieval(
        model, dataset, batch_size=args.batch_size, num_workers=args.num_workers, accelerator=accelerator
    )
    command = "tempme evaluate " + " ".join(shlex.quote(a) for a in argv)
    results = {
        **evaluation_dataset_fields(args.dataset, args.annotations_dir),  # "synthetic-temporal" for generated videos
        "split": args.split,
        "model": args.model,
        "command": command,
        "text_to_video": metrics["text_to_video"],
        "video_to_text": metrics["video_to_text"],
        "rsum": metrics["rsum"],
        "gflops": metrics["gflops"],
        "output_tokens": metrics["output_tokens"],
        "videos_per_s": metrics["videos_per_s"],
        "num_texts": metrics["num_texts"],
        "num_videos": metrics["num_videos"],
        "num_frames": processor.num_frames,
        "skipped_videos": metrics["skipped_videos"],
        "device": str(accelerator.device),
    }
    output = Path(args.output_file or Path(args.model) / f"retrieval_{args.split}.json")
    if accelerator.is_main_process:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2))
        t2v, v2t = results["text_to_video"], results["video_to_text"]
        print(
            f"text-to-video R@1 {t2v['R@1']:.1f} R@5 {t2v['R@5']:.1f} R@10 {t2v['R@10']:.1f} MdR {t2v['MdR']:.1f} | "
            f"video-to-text R@1 {v2t['R@1']:.1f} | R-sum {results['rsum']:.1f} | {results['gflops']:.2f} GFLOPs | "
            f"{results['videos_per_s'] or 0:.1f} videos/s -> {output}"
        )
    return results


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    evaluate(sys.argv[1:] if argv is None else argv)
    return 0
