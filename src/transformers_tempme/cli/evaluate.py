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

`--model` may be a folder written by `tempme train` (an adapter with its TempMe config, put on `--base-model`, by
default the base recorded in the adapter; LoRA and the other peft methods are merged into the weights, bottleneck
adapters and deep prompts run as they are and their cost is in `gflops`), a saved TempMe model, or a plain CLIP
checkpoint turned into TempMe with `--preset` (zero-shot). `--peft lora|adapter|prompt|<peft config>` names the
method the adapter must hold (as `tempme train --peft`); an adapter of another kind is an error.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, PretrainedConfig

from .. import (
    CLIP_MEAN,
    CLIP_STD,
    TempMeCLIPModel,
    TempMeConfig,
    TempMeProcessor,
    build_clip_tokenizer,
    load_retrieval_dataset,
)
from ..evaluation.retrieval import evaluate_retrieval
from ..data.training_data import VideoTextDataset
from . import command_parser

ADAPTER_CONFIG = "adapter_config.json"


def parse_args(argv=None) -> argparse.Namespace:
    parser = command_parser("evaluate", __doc__)
    parser.add_argument("--model", required=True, help="model or adapter folder, Hub id, or a CLIP checkpoint")
    parser.add_argument("--base-model", default=None, help="CLIP weights under an adapter")
    parser.add_argument("--peft", default=None, help="lora, adapter, prompt or a peft config: the method to expect")
    parser.add_argument("--preset", default="tempme-vit-b-32", help="preset applied to a plain CLIP checkpoint")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder or Hub id (default: the model's)")
    parser.add_argument("--dataset", default="msrvtt", help="msrvtt, didemo, activitynet or lsmdc")
    parser.add_argument("--annotations-dir", required=True)
    parser.add_argument("--videos-dir", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--num-frames", type=int, default=None, help="default: the saved processor's, else 12")
    parser.add_argument("--max-words", type=int, default=None, help="default: the saved processor's, else 32")
    parser.add_argument("--frame-sampling", default=None, choices=("fps", "uniform"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output-file", default=None, help="default: <model folder>/retrieval_<split>.json")
    return parser.parse_args(argv)


def load_model(args) -> TempMeCLIPModel:
    path = Path(args.model)
    if (path / ADAPTER_CONFIG).exists():
        from ..tuners.peft_methods import can_merge, load_adapter

        adapter = json.loads((path / ADAPTER_CONFIG).read_text())
        check_peft_type(adapter, args.peft)
        base = args.base_model or adapter.get("base_model_name_or_path")
        if not base:
            raise ValueError(f"{path} holds an adapter without a recorded base; pass --base-model.")
        config = TempMeConfig.from_pretrained(path)
        base_type = PretrainedConfig.get_config_dict(base)[0].get("model_type")
        model = TempMeCLIPModel.from_pretrained(base) if base_type == "tempme" else TempMeCLIPModel.from_clip(base, config)
        model = load_adapter(model, path)
        return model.merge_and_unload() if can_merge(model) else model
    if args.peft is not None:
        raise ValueError(f"--peft {args.peft}: {path} holds no adapter (no {ADAPTER_CONFIG}).")
    if PretrainedConfig.get_config_dict(args.model)[0].get("model_type") == "tempme":
        return TempMeCLIPModel.from_pretrained(args.model)
    return TempMeCLIPModel.from_clip(args.model, args.preset)


def check_peft_type(adapter_config: dict, peft: str | None) -> None:
    """With `--peft`, the adapter must be of that method (e.g. a sweep over Table 13's rows evaluates the right run)."""
    if peft is None:
        return
    from ..tuners.peft_methods import parse_peft_option

    peft_type = parse_peft_option(peft).peft_type
    expected = getattr(peft_type, "value", peft_type)  # peft's types are enum members
    if adapter_config.get("peft_type") != expected:
        raise ValueError(f"--peft {peft} expects a {expected} adapter, but the adapter is {adapter_config.get('peft_type')}.")


def load_processor(args, model: TempMeCLIPModel) -> TempMeProcessor:
    saved = {}
    processor_file = Path(args.model) / "processor_config.json"
    if processor_file.exists():
        saved = json.loads(processor_file.read_text())
    tokenizer_source = args.tokenizer or args.model
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    except (OSError, ValueError):
        tokenizer = build_clip_tokenizer()
    return TempMeProcessor(
        tokenizer,
        num_frames=args.num_frames or saved.get("num_frames", 12),
        max_words=args.max_words or saved.get("max_words", 32),
        frame_sampling=args.frame_sampling or saved.get("frame_sampling", "fps"),
        image_size=model.config.vision_config.image_size,
        image_mean=saved.get("image_mean", CLIP_MEAN),
        image_std=saved.get("image_std", CLIP_STD),
    )


def evaluate(argv: list[str]) -> dict:
    """Run `tempme evaluate ARGV`: write the metrics JSON and return its content."""
    args = parse_args(argv)
    model = load_model(args).to(args.device).eval()
    processor = load_processor(args, model)
    rows = load_retrieval_dataset(args.dataset, args.annotations_dir, args.videos_dir, split=args.split)
    if args.max_samples is not None:
        rows = rows.select(range(min(args.max_samples, len(rows))))
    dataset = VideoTextDataset(rows, processor)
    metrics = evaluate_retrieval(model, dataset, batch_size=args.batch_size, num_workers=args.num_workers)
    command = "tempme evaluate " + " ".join(shlex.quote(a) for a in argv)
    results = {
        "dataset": args.dataset,
        "split": args.split,
        "model": args.model,
        "command": command,
        "text_to_video": metrics["text_to_video"],
        "video_to_text": metrics["video_to_text"],
        "rsum": metrics["rsum"],
        "gflops": metrics["gflops"],
        "output_tokens": metrics["output_tokens"],
        "videos_per_s": metrics["videos_per_s"],
        "num_texts": len(dataset),
        "num_videos": len(dataset.video_ids),
        "device": args.device,
    }
    output = Path(args.output_file or Path(args.model) / f"retrieval_{args.split}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    t2v, v2t = results["text_to_video"], results["video_to_text"]
    print(
        f"text-to-video R@1 {t2v['R@1']:.1f} R@5 {t2v['R@5']:.1f} R@10 {t2v['R@10']:.1f} MdR {t2v['MdR']:.1f} | "
        f"video-to-text R@1 {v2t['R@1']:.1f} | R-sum {results['rsum']:.1f} | {results['gflops']:.2f} GFLOPs | "
        f"{results['videos_per_s']:.1f} videos/s -> {output}"
    )
    return results


def main(argv: list[str] | None = None) -> int:
    evaluate(sys.argv[1:] if argv is None else argv)
    return 0
