"""Evaluate a TempMe model on a retrieval split and write the metrics JSON.

    python scripts/evaluate.py --model_name_or_path runs/msrvtt_vit_b32 --base_model_name_or_path openai/clip-vit-base-patch32 \
        --dataset_name msrvtt --annotations_dir data/msrvtt/annotations --videos_dir data/msrvtt/videos \
        --output_file runs/msrvtt_vit_b32/retrieval_test.json

Every video of the split is encoded once (batched, with a progress bar), every caption once; the full
(texts, videos) similarity matrix gives both directions (one caption or paragraph per video: diagonal ground truth;
several captions per video: a hit when the caption's video is retrieved). The JSON also holds the model's vision
GFLOPs per video (`count_gflops`), its output tokens per video and the videos/s measured here:

    {"dataset", "split", "model", "command", "text_to_video": {"R@1", "R@5", "R@10", "MdR", "MnR"},
     "video_to_text": {...}, "rsum", "gflops", "output_tokens", "videos_per_s"}

`--model_name_or_path` may be a folder written by `scripts/train.py` (a LoRA adapter with its TempMe config; the
adapter is merged into `--base_model_name_or_path`, by default the base recorded in the adapter), a saved TempMe
model, or a plain CLIP checkpoint turned into TempMe with `--schedule` (zero-shot).
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

from transformers_tempme import (
    CLIP_MEAN,
    CLIP_STD,
    TempMeCLIPModel,
    TempMeConfig,
    TempMeProcessor,
    build_clip_tokenizer,
    load_retrieval_dataset,
)
from transformers_tempme.retrieval_evaluation import evaluate_retrieval
from transformers_tempme.training_data import VideoTextDataset

ADAPTER_CONFIG = "adapter_config.json"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", required=True)
    parser.add_argument("--base_model_name_or_path", default=None, help="CLIP weights under a LoRA adapter")
    parser.add_argument("--schedule", default="tempme-vit-b-32", help="preset applied to a plain CLIP checkpoint")
    parser.add_argument("--tokenizer_name_or_path", default=None)
    parser.add_argument("--dataset_name", default="msrvtt")
    parser.add_argument("--annotations_dir", required=True)
    parser.add_argument("--videos_dir", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--num_frames", type=int, default=None, help="default: the saved processor's, else 12")
    parser.add_argument("--max_words", type=int, default=None, help="default: the saved processor's, else 32")
    parser.add_argument("--frame_sampling", default=None, choices=("fps", "uniform"))
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--max_samples", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output_file", default=None, help="default: <model folder>/retrieval_<split>.json")
    return parser.parse_args(argv)


def load_model(args) -> TempMeCLIPModel:
    path = Path(args.model_name_or_path)
    if (path / ADAPTER_CONFIG).exists():
        from peft import PeftModel

        adapter = json.loads((path / ADAPTER_CONFIG).read_text())
        base = args.base_model_name_or_path or adapter.get("base_model_name_or_path")
        if not base:
            raise ValueError(f"{path} holds a LoRA adapter without a recorded base; pass --base_model_name_or_path.")
        config = TempMeConfig.from_pretrained(path)
        base_type = PretrainedConfig.get_config_dict(base)[0].get("model_type")
        model = TempMeCLIPModel.from_pretrained(base) if base_type == "tempme" else TempMeCLIPModel.from_clip(base, config)
        return PeftModel.from_pretrained(model, path).merge_and_unload()
    if PretrainedConfig.get_config_dict(args.model_name_or_path)[0].get("model_type") == "tempme":
        return TempMeCLIPModel.from_pretrained(args.model_name_or_path)
    return TempMeCLIPModel.from_clip(args.model_name_or_path, args.schedule)


def load_processor(args, model: TempMeCLIPModel) -> TempMeProcessor:
    saved = {}
    processor_file = Path(args.model_name_or_path) / "processor_config.json"
    if processor_file.exists():
        saved = json.loads(processor_file.read_text())
    tokenizer_source = args.tokenizer_name_or_path or args.model_name_or_path
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


def main(argv=None) -> dict:
    args = parse_args(argv)
    model = load_model(args).to(args.device).eval()
    processor = load_processor(args, model)
    rows = load_retrieval_dataset(args.dataset_name, args.annotations_dir, args.videos_dir, split=args.split)
    if args.max_samples is not None:
        rows = rows.select(range(min(args.max_samples, len(rows))))
    dataset = VideoTextDataset(rows, processor)
    metrics = evaluate_retrieval(model, dataset, batch_size=args.batch_size, num_workers=args.num_workers)
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__), *(sys.argv[1:] if argv is None else argv)])
    results = {
        "dataset": args.dataset_name,
        "split": args.split,
        "model": args.model_name_or_path,
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
    output = Path(args.output_file or Path(args.model_name_or_path) / f"retrieval_{args.split}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    t2v, v2t = results["text_to_video"], results["video_to_text"]
    print(
        f"text-to-video R@1 {t2v['R@1']:.1f} R@5 {t2v['R@5']:.1f} R@10 {t2v['R@10']:.1f} MdR {t2v['MdR']:.1f} | "
        f"video-to-text R@1 {v2t['R@1']:.1f} | R-sum {results['rsum']:.1f} | {results['gflops']:.2f} GFLOPs | "
        f"{results['videos_per_s']:.1f} videos/s -> {output}"
    )
    return results


if __name__ == "__main__":
    main()
