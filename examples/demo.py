"""End-to-end demo on a machine without the Hub: a synthetic temporal benchmark that only TempMe can solve.

    python examples/demo.py                              # or: make demo (seed 0)
    python examples/demo.py --seeds 0 1 2 --output-dir demo_output_seeds   # or: make demo-seeds

1. Generates the synthetic benchmark (real mp4 files of moving shapes; every clip comes with its time reversal,
   whose caption differs only in the order of events) in the MSR-VTT layout.
2. Trains the same small CLIP twice, from the same initialisation, data order and step budget, with
   `TempMeTrainer`: as the frame-independent baseline (no merging, mean over frames) and as TempMe (ImgMe in block
   0, ClipMe joining 2 frames in block 1 and all 8 in block 2, a schedule scaled to the 4-block vision tower).
   Every video's time-reversed twin is in the same batch as a hard negative (`GroupedDataset`).
3. Evaluates both on the test split and prints one table: R@1/R@5/R@10 and R-sum in both directions, pair
   accuracy (does a video score its own caption above its time reversal's caption), GFLOPs per video, training
   time per step and peak memory. Writes `results.md`, `results.json` and `r1_vs_gflops.png` to `--output-dir`;
   `results.json` records the wall time of the whole run (`total_seconds`) and the machine it ran on (CPU, cores,
   load average at the start).
4. Indexes the held-out videos with the trained TempMe and searches them by text (`--no-search` skips it).

`--seeds 0 1 2` runs steps 1-3 once per seed (each seed draws its own benchmark, data order and initialisation), in
`OUTPUT_DIR/seed-N/`, and writes the mean and standard deviation over the seeds of every column to
`OUTPUT_DIR/results.md` and `results.json` (with each seed's figures, the total wall time and the machine).

Each model trains in a subprocess of its own, so that its peak memory is its own; by default the two run side by
side with one CPU thread each (`--sequential`: one after the other with all cores). Captions are tokenised word by
word (see `word_tokenizer.py`): the models train from scratch on a vocabulary of about 40 words, where CLIP's
49,408-token BPE table would only add untrained rows and optimiser work.

`--peft lora adapter prompt` (or `make demo-peft`) trains TempMe with parameter-efficient methods instead, as the
paper does on a pretrained CLIP: the frame-independent baseline is trained first and stands in for the pretrained
image model, then each method fine-tunes TempMe on top of it (the baseline's weights frozen, the method's parameters
and the clip position embeddings trained, the same steps and learning rate as the baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerFast, TrainerCallback, TrainingArguments

from transformers_tempme import TempMeCLIPModel, TempMeConfig, TempMeProcessor, pair_accuracy
from transformers_tempme.data.retrieval_datasets import evaluation_dataset_fields, load_retrieval_dataset
from transformers_tempme.data.synthetic_video import load_reversal_pairs, make_synthetic_benchmark
from transformers_tempme.data.video_text import GroupedDataset, VideoTextDataset, collate_video_text, reversal_groups
from transformers_tempme.data.word_tokenizer import build_word_level_tokenizer
from transformers_tempme.evaluation.retrieval import evaluate_retrieval
from transformers_tempme.training.trainer import TempMeTrainer

PEFT_METHODS = {"lora": "LoRA", "adapter": "Adapter", "prompt": "Prompt"}
VARIANTS = ("baseline", "tempme", *(f"tempme-{method}" for method in PEFT_METHODS))
VARIANT_LABELS = {
    "baseline": "CLIP, frame-independent (mean over frames)",
    "tempme": "TempMe (ImgMe + ClipMe)",
    **{f"tempme-{method}": f"{name} + TempMe, on the trained baseline" for method, name in PEFT_METHODS.items()},
}
NUM_FRAMES, IMAGE_SIZE, PATCH_SIZE, MAX_WORDS = 8, 32, 8, 16


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--output-dir", default="demo_output")
    parser.add_argument("--train-pairs", type=int, default=300, help="scene pairs (2 videos each) for training")
    parser.add_argument("--test-pairs", type=int, default=60, help="scene pairs (2 videos each) for testing")
    parser.add_argument("--max-steps", type=int, default=1200)
    parser.add_argument("--pairs-per-batch", type=int, default=32, help="a batch holds twice as many videos")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--eval-steps", type=int, default=100, help="evaluate on the test split every N steps")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--clip-position-std", type=float, default=0.1, help="init std of TempMe's clip embeddings")
    parser.add_argument("--clip-merge-layers", type=int, nargs="+", default=[1, 2], help="TempMe's ClipMe blocks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="run the demo once per seed (in OUTPUT_DIR/seed-N) and report the mean and standard deviation over them",
    )
    parser.add_argument("--no-search", action="store_true", help="skip indexing and searching the held-out videos")
    parser.add_argument(
        "--max-word-order-cosine",
        type=float,
        default=0.8,
        help="initialise from the first seed whose text tower embeds the two directions of a caption below this cosine",
    )
    parser.add_argument("--model-seed", type=int, default=None, help=argparse.SUPPRESS)  # internal: chosen seed
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="train one model after the other with all cores (default: side by side, one core each)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads per training process")
    parser.add_argument("--variants", nargs="+", default=["baseline", "tempme"], choices=VARIANTS)
    parser.add_argument(
        "--peft",
        nargs="+",
        choices=list(PEFT_METHODS),
        help="train TempMe with these methods on the trained baseline (the baseline and these instead of --variants)",
    )
    parser.add_argument("--train-one", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: one training run
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------- models


def demo_config(
    variant: str,
    vocab_size: int,
    bos_token_id: int,
    eos_token_id: int,
    hidden_size: int,
    clip_position_std: float,
    clip_merge_layers: list[int],
) -> TempMeConfig:
    """The small CLIP both variants share; only the merge schedule differs.

    Text tower: `initializer_factor=4`, meant to keep captions that differ only in word order ("from left to right" /
    "from right to left") from starting with near-identical embeddings (at CLIP's scale the causal attention of a
    random tower is nearly uniform and the end-of-text token sees a bag of words). `word_order_cosine` measures how
    far that goes; the result JSON records it.
    TempMe: clip position embeddings start small and random (`--clip-position-std`).
    Neither choice is needed to learn the direction of time here (`docs/training.md` has both runs without them):
    they are kept as a margin for other seeds and sizes.
    """
    if variant == "baseline":
        schedule = {"img_merge_r": 0, "clip_merge_layers": [], "clip_merge_groups": []}
    else:
        schedule = {
            "img_merge_r": 2,  # ImgMe in the blocks before the first ClipMe block: 16 -> 14 patches per frame
            "clip_merge_layers": clip_merge_layers,  # 8 frames -> 4 clips of 2 -> 1 clip of 8 frames
            "clip_merge_groups": [2, 4],
            "cross_clip_keep_ratio": 0.7,
            "intra_clip_keep_ratio": 0.9,
            "clip_position_embedding_init_std": clip_position_std,
        }
    heads = max(1, hidden_size // 16)
    return TempMeConfig(
        num_frames=NUM_FRAMES,
        projection_dim=hidden_size,
        vision_config={
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
            "hidden_size": hidden_size,
            "intermediate_size": 4 * hidden_size,
            "num_hidden_layers": 4,
            "num_attention_heads": heads,
        },
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": hidden_size,
            "intermediate_size": 4 * hidden_size,
            "num_hidden_layers": 2,
            "num_attention_heads": heads,
            "max_position_embeddings": MAX_WORDS,
            "bos_token_id": bos_token_id,
            "eos_token_id": eos_token_id,
            "pad_token_id": 0,
            "initializer_factor": 4.0,
        },
        **schedule,
    )


def build_peft_model(method: str, tokenizer, args, work: Path):
    """TempMe on the trained baseline's weights (its stand-in for a pretrained CLIP), tuned with `method`."""
    from transformers_tempme import DeepPromptConfig, HoulsbyAdapterConfig, apply_peft, lora_config

    config = demo_config("tempme", len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, args.hidden_size,
                         args.clip_position_std, args.clip_merge_layers)
    model = TempMeCLIPModel(config)
    baseline = TempMeCLIPModel.from_pretrained(work / "models" / "baseline")
    missing, unexpected = model.load_state_dict(baseline.state_dict(), strict=False)
    assert not unexpected and all(".clip_position_embedding." in name for name in missing)
    methods = {"lora": lora_config, "adapter": HoulsbyAdapterConfig, "prompt": DeepPromptConfig}
    return apply_peft(model, methods[method]())


def build_model(variant: str, tokenizer, args, seed: int) -> TempMeCLIPModel:
    """Both variants from the same seed: identical weights (TempMe adds only the clip position embeddings)."""
    config = demo_config(
        variant,
        len(tokenizer),
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        args.hidden_size,
        args.clip_position_std,
        args.clip_merge_layers,
    )
    if variant == "baseline":
        torch.manual_seed(seed)
        return TempMeCLIPModel(config)
    # The baseline's weights under TempMe's schedule; the clip position embeddings (the only new weights) are drawn
    # from the same seed.
    baseline = build_model("baseline", tokenizer, args, seed)
    torch.manual_seed(seed)
    return baseline.with_schedule(config)


def order_sensitive_seed(tokenizer, processor, args) -> tuple[int, float]:
    """The first seed from `args.seed` on whose random text tower tells word order apart.

    A random CLIP text tower often embeds "from left to right" and "from right to left" almost identically, and
    then only training can tell the two apart. Both variants start from the seed chosen here, so the comparison
    stays fair.
    """
    for seed in range(args.seed, args.seed + 50):
        cosine = word_order_cosine(build_model("baseline", tokenizer, args, seed), processor)
        if cosine <= args.max_word_order_cosine:
            return seed, cosine
    raise SystemExit(
        f"No seed in [{args.seed}, {args.seed + 50}) gives a text tower with a word-order cosine at most "
        f"{args.max_word_order_cosine}; raise --max-word-order-cosine."
    )


@torch.no_grad()
def word_order_cosine(model: TempMeCLIPModel, processor: TempMeProcessor) -> float:
    """Cosine of the text embeddings of two captions that differ only in the order of 'left' and 'right'."""
    captions = [
        "a red circle moves from left to right on a black background",
        "a red circle moves from right to left on a black background",
    ]
    input_ids, attention_mask = processor.encode_text(captions)
    embeds = model.get_text_features(
        input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask)
    ).pooler_output
    embeds = F.normalize(embeds, dim=-1)
    return float(embeds[0] @ embeds[1])


# ---------------------------------------------------------------------------------------------- data


def prepare_benchmark(args) -> Path:
    root = Path(args.output_dir) / "benchmark"
    stamp = root / "arguments.json"
    # Videos of exactly NUM_FRAMES frames, all of them sampled: a clip and its reversal then hold the same frames. With
    # longer videos, uniform sampling (linspace with truncation) would pick different time steps from a clip and
    # from its reversal, and a frame-independent model could tell them apart by the positions it sees.
    wanted = {
        "train_pairs": args.train_pairs, "test_pairs": args.test_pairs, "seed": args.seed, "frames": NUM_FRAMES,
        "encoding": "lossless",
    }
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        print(f"Synthetic benchmark already in {root}")
        return root
    print(f"Generating the synthetic benchmark in {root} ({2 * (args.train_pairs + args.test_pairs)} mp4 files)")
    make_synthetic_benchmark(
        root, num_train_pairs=args.train_pairs, num_test_pairs=args.test_pairs, frames_per_video=NUM_FRAMES, size=64,
        seed=args.seed,
    )
    stamp.write_text(json.dumps(wanted))
    return root


def one_row_per_video(dataset) -> list[dict]:
    """The loader gives one row per caption; keep the first row of every video (its `captions` hold them all)."""
    rows, seen = [], set()
    for row in dataset:
        if row["video_id"] not in seen:
            seen.add(row["video_id"])
            rows.append(row)
    return rows


def unique_caption_pairs(rows: list[dict], partner_of: dict[str, str]) -> list[dict]:
    """Test rows without repeated captions (a few scene kinds do not name the background): a pair is dropped when
    one of its captions was already used, so that every query has exactly one correct video."""
    by_id = {row["video_id"]: row for row in rows}
    kept, used_captions, done = [], set(), set()
    for row in rows:
        partner = by_id.get(partner_of.get(row["video_id"], ""))
        if row["video_id"] in done or partner is None:
            continue
        done |= {row["video_id"], partner["video_id"]}
        captions = {row["caption"], partner["caption"]}
        if len(captions) < 2 or captions & used_captions:
            continue
        used_captions |= captions
        kept += [row, partner]
    return kept


def load_splits(benchmark: Path, processor: TempMeProcessor, seed: int):
    """Train and test splits, one row per video, decoded videos kept in memory (the demo decodes them once)."""
    annotations, videos = benchmark / "annotations", benchmark / "videos"
    partner_of = load_reversal_pairs(annotations)
    train_rows = one_row_per_video(load_retrieval_dataset("msrvtt", annotations, videos, split="train"))
    test_rows = unique_caption_pairs(
        one_row_per_video(load_retrieval_dataset("msrvtt", annotations, videos, split="test")), partner_of
    )
    # Every access to a training video draws one of its two captions (a function of seed, epoch and video).
    train = VideoTextDataset(train_rows, processor, random_caption=True, cache_videos=True, seed=seed)
    test = VideoTextDataset(test_rows, processor, cache_videos=True, seed=seed)
    return train, test, partner_of


# ---------------------------------------------------------------------------------------------- one training run


def peak_memory_mib() -> tuple[float, str]:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20, "GPU memory allocated"
    # ru_maxrss is in KiB on Linux: the peak resident memory of this process (runtime, data and training).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process RSS"


class StepTimer(TrainerCallback):
    """Wall and CPU seconds spent inside training steps (forward, backward, optimiser), evaluations left out."""

    def __init__(self):
        self.wall = self.cpu = 0.0
        self.steps = 0

    def on_step_begin(self, args, state, control, **kwargs):
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        self.wall += time.perf_counter() - self._wall
        self.cpu += time.process_time() - self._cpu
        self.steps += 1


def train_one(args, variant: str) -> dict:

    torch.set_num_threads(args.threads or (torch.get_num_threads() if args.sequential else 1))
    work = Path(args.output_dir)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(work / "tokenizer")
    processor = TempMeProcessor(
        tokenizer, num_frames=NUM_FRAMES, max_words=MAX_WORDS, frame_sampling="uniform", image_size=IMAGE_SIZE,
        train_augmentation=None,
    )
    train, test, partner_of = load_splits(Path(args.output_dir) / "benchmark", processor, args.seed)
    cache = torch.load(work / "decoded_videos.pt")
    train.decoded_videos, test.decoded_videos = cache["train"], cache["test"]
    pairs = GroupedDataset(train, reversal_groups(train.video_ids, partner_of))
    test_partners = [test.video_ids.index(partner_of[v]) for v in test.video_ids]

    if variant.startswith("tempme-"):
        model = build_peft_model(variant.removeprefix("tempme-"), tokenizer, args, work)
    else:
        model = build_model(variant, tokenizer, args, args.seed if args.model_seed is None else args.model_seed)
    order_cosine = word_order_cosine(model, processor)
    training_args = TrainingArguments(
        output_dir=str(work / "runs" / variant),
        per_device_train_batch_size=args.pairs_per_batch,
        per_device_eval_batch_size=64,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        weight_decay=0.2,
        adam_epsilon=1e-6,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=args.warmup_steps,
        max_grad_norm=1.0,
        logging_steps=25,
        eval_strategy="steps",
        eval_steps=args.eval_steps,
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        data_seed=args.seed,
        dataloader_drop_last=True,
        remove_unused_columns=False,
        disable_tqdm=False,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = TempMeTrainer(
        model=model,
        args=training_args,
        train_dataset=pairs,
        eval_dataset=test,
        data_collator=collate_video_text,
        compute_metrics=lambda p: {"pair_accuracy": pair_accuracy(p.predictions, test_partners)},
    )
    timer = StepTimer()
    trainer.add_callback(timer)
    train_output = trainer.train()
    peak, peak_kind = peak_memory_mib()
    if variant == "baseline":  # what the parameter-efficient variants start from
        model.save_pretrained(work / "models" / "baseline")

    results = evaluate_retrieval(model, test, batch_size=64, partner_of_video=partner_of, progress=False)
    history = [
        {k: v for k, v in entry.items() if k in ("step", "loss", "eval_text_to_video_R@1", "eval_pair_accuracy")}
        for entry in trainer.state.log_history
    ]
    results.update(
        **evaluation_dataset_fields("msrvtt", Path(args.output_dir) / "benchmark" / "annotations"),
        split="test",
        variant=variant,
        label=VARIANT_LABELS[variant],
        steps=train_output.global_step,
        train_seconds=train_output.metrics["train_runtime"],
        trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        seconds_per_step=timer.wall / timer.steps,
        cpu_seconds_per_step=timer.cpu / timer.steps,
        peak_memory_mib=peak,
        peak_memory_kind=peak_kind,
        final_train_loss=next((e["loss"] for e in reversed(history) if "loss" in e), None),
        text_word_order_cosine_at_init=order_cosine,
        num_test_videos=len(test.video_ids),
        history=[e for e in history if len(e) > 1],
    )
    (work / f"result_{variant}.json").write_text(json.dumps(results, indent=2))
    if variant == "tempme":
        save_for_search(model, processor, work / SEARCH_MODEL_DIR)
    return results


# ---------------------------------------------------------------------------------------------- table and plot


# The columns of the results table: header, the value of a model's result, its format.
COLUMNS = [
    *((f"{short} R@{k}", lambda r, d=direction, k=k: r[d][f"R@{k}"], ".1f")
      for short, direction in (("t2v", "text_to_video"), ("v2t", "video_to_text")) for k in (1, 5, 10)),
    ("R-sum", lambda r: r["rsum"], ".1f"),
    ("pair accuracy", lambda r: r["pair_accuracy"], ".3f"),
    ("GFLOPs/video", lambda r: r["gflops"], ".4f"),
    ("trained parameters", lambda r: r["trainable_parameters"], ",.0f"),
    ("s/step (wall)", lambda r: r["seconds_per_step"], ".3f"),
    ("s/step (CPU)", lambda r: r["cpu_seconds_per_step"], ".3f"),
    ("peak memory (MiB)", lambda r: r["peak_memory_mib"], ".0f"),
]


def _table_columns(results: list[dict]) -> list[tuple]:
    peft = any(r["variant"].startswith("tempme-") for r in results)  # then the table counts trained parameters
    return [column for column in COLUMNS if peft or column[0] != "trained parameters"]


def _markdown_table(columns: list[tuple], rows: list[list[str]]) -> str:
    header = "| model | " + " | ".join(name for name, _, _ in columns) + " |"
    return "\n".join([header, "|" + "---|" * (len(columns) + 1), *("| " + " | ".join(row) + " |" for row in rows)])


def results_table(results: list[dict]) -> str:
    columns = _table_columns(results)
    rows = [[r["label"], *(format(value(r), spec) for _, value, spec in columns)] for r in results]
    return _markdown_table(columns, rows)


def seed_statistics(runs: list[list[dict]]) -> dict:
    """Per variant and column: mean, standard deviation (n - 1), min, max and the values of the seeds, in order.

    `runs` holds one list of model results (`results.json`'s `models`) per seed."""
    statistics = {}
    for models in zip(*runs):
        variant = models[0]["variant"]
        statistics[variant] = {"label": models[0]["label"]}
        for name, value, _ in _table_columns(runs[0]):
            values = [float(value(model)) for model in models]
            mean = sum(values) / len(values)
            std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
            statistics[variant][name] = {"mean": mean, "std": std, "min": min(values), "max": max(values),
                                         "values": values}
    return statistics


def seeds_table(runs: list[list[dict]]) -> str:
    """The results table with `mean ± standard deviation` over the seeds in every cell."""
    columns = _table_columns(runs[0])
    rows = []
    for variant in seed_statistics(runs).values():
        rows.append([variant["label"], *(f"{variant[name]['mean']:{spec}} ± {variant[name]['std']:{spec}}"
                                         for name, _, spec in columns)])
    return _markdown_table(columns, rows)


def machine_description() -> dict:
    """Where the demo ran: the CPU and its flags, the cores, the GPU if it trained on one, and the load average when
    it started (an idle machine is near 0), for the time and step timings it records."""
    from transformers_tempme.analysis import benchmark_records

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {**benchmark_records.machine_description(device), "load_average_at_start": benchmark_records.load_average()}


def describe(machine: dict) -> str:
    from transformers_tempme.analysis.benchmark_records import describe_machine

    load = machine["load_average_at_start"]
    return f"{describe_machine(machine)}, load average {load[0] if load else 'unknown'} at the start"


def plot_r1_vs_gflops(results: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'transformers-tempme[demo]'): no plot written.")
        return False
    figure, axis = plt.subplots(figsize=(5, 3.6))
    for r, marker in zip(results, "os^Dv"):
        axis.scatter(r["gflops"], r["text_to_video"]["R@1"], s=80, marker=marker, label=r["label"])
    axis.set_xlabel("vision GFLOPs per video")
    axis.set_ylabel("text-to-video R@1 (%)")
    axis.set_title("Synthetic temporal benchmark")
    # From zero on both axes, with room around the points, so that neither sits on the frame.
    axis.set_xlim(0, 1.2 * max(r["gflops"] for r in results))
    axis.set_ylim(0, 105)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def train_side_by_side(variants: list[str], command: list[str], args, work: Path) -> None:
    """Train `variants`, each in its own process: side by side, or one after the other with `--sequential`."""
    processes = []
    for variant in variants:
        print(f"\n=== Training {VARIANT_LABELS[variant]} for {args.max_steps} steps ===", flush=True)
        if args.sequential:
            if subprocess.Popen([*command, "--train-one", variant]).wait() != 0:
                raise SystemExit(f"Training {variant} failed.")
            continue
        # Side by side, one core each: the last run draws its progress bar, the others log to a file.
        log = None if variant == variants[-1] else open(work / f"train_{variant}.log", "w")
        if log is not None:
            print(f"(in the background, log in {log.name})", flush=True)
        processes.append((variant, subprocess.Popen([*command, "--train-one", variant], stdout=log, stderr=log)))
    for variant, process in reversed(processes):  # the one drawing its progress bar first
        if process.poll() is None and process is not processes[-1][1]:
            print(f"Waiting for {VARIANT_LABELS[variant]} to finish training ...", flush=True)
        if process.wait() != 0:
            raise SystemExit(f"Training {variant} failed; see {work / f'train_{variant}.log'}.")


# ---------------------------------------------------------------------------------------------- video search

SEARCH_MODEL_DIR, SEARCH_VIDEOS_DIR, SEARCH_INDEX_DIR = "model", "search_videos", "search.index"


def save_for_search(model: TempMeCLIPModel, processor: TempMeProcessor, folder: Path) -> None:
    """The trained TempMe as `--model` takes it: weights (safetensors), remote code and the processor in one folder."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def held_out_query_pairs(captions) -> list[str]:
    """Two order-dependent queries of scenes that are in the held-out set, each with its reversal: the first
    left/right motion and the first growing shape, background left out ("a blue square moves from left to right")."""
    queries = []
    for event, reverse in ((" moves from left to right", " moves from right to left"), (" grows", " shrinks")):
        caption = next((c for c in sorted(captions) if event in c and " on a " in c), None)
        if caption is not None:
            query = caption.split(" on a ")[0]
            queries += [query, query.replace(event, reverse)]
    return queries


def search_demo(args) -> None:
    """Index the held-out test videos with the trained TempMe and search them by text, order of events included."""
    from transformers_tempme import VideoSearchIndex

    work = Path(args.output_dir)
    model_dir = work / SEARCH_MODEL_DIR
    if not (model_dir / "config.json").is_file():
        print("\nNo trained TempMe in this run (--variants without tempme): skipping the video search demo.")
        return
    annotations = work / "benchmark" / "annotations"
    test_rows = one_row_per_video(load_retrieval_dataset("msrvtt", annotations, work / "benchmark" / "videos", split="test"))
    videos = work / SEARCH_VIDEOS_DIR
    videos.mkdir(parents=True, exist_ok=True)
    caption_of = {}
    for row in test_rows:  # a folder of the held-out videos only: nothing the model trained on
        name = Path(row["video_path"]).name
        if not (videos / name).exists():
            shutil.copy2(row["video_path"], videos / name)
        caption_of[name] = row["caption"]
    print(f"\n=== Video search: indexing the {len(test_rows)} held-out test videos with the trained TempMe ===")
    model, processor = TempMeCLIPModel.from_pretrained(model_dir), TempMeProcessor.from_pretrained(model_dir)
    index = VideoSearchIndex.build(videos, work / SEARCH_INDEX_DIR, model, processor,
                                   model_info={"name_or_path": str(model_dir.resolve())}, num_workers=0, progress=False)
    print(index.last_report.summary())
    queries = ["a red circle moves from left to right", "a red circle moves from right to left",
               *held_out_query_pairs(caption_of.values())]
    for query in queries:
        print(f'\n"{query}"')
        for hit in index.search(query, k=3):
            print(f"  {hit.rank}. {hit.score:.3f}  {hit.path:<14} {caption_of.get(hit.path, '')}")
    print(f"\nTry it: tempme search {work / SEARCH_INDEX_DIR} \"a green triangle moves from top to bottom\" -k 5\n"
          f"        tempme serve {work / SEARCH_INDEX_DIR}     (a web page on http://127.0.0.1:7860)")


def without_option(argv: list[str], option: str) -> list[str]:
    """`argv` without `option` and the values that follow it (`--seeds 0 1 2`, `--seeds=0`)."""
    kept, skipping = [], False
    for token in argv:
        if token == option or token.startswith(option + "="):
            skipping = token == option
            continue
        if skipping and not token.startswith("-"):
            continue
        skipping = False
        kept.append(token)
    return kept


def run_seeds(args, argv: list[str]) -> None:
    """The whole demo once per seed of `args.seeds`, each in a process of its own, then the statistics over them."""
    start = time.perf_counter()
    machine = machine_description()
    work = Path(args.output_dir)
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in args.seeds:
        folder = work / f"seed-{seed}"
        print(f"\n##### Seed {seed} of {args.seeds}: {folder} #####", flush=True)
        command = [sys.executable, os.path.abspath(__file__), *without_option(argv, "--seeds"), "--seed", str(seed),
                   "--output-dir", str(folder), "--no-search"]
        if subprocess.run(command).returncode != 0:
            raise SystemExit(f"The demo with seed {seed} failed.")
        runs.append(json.loads((folder / "results.json").read_text()))
    total = time.perf_counter() - start
    command_line = "python examples/demo.py " + " ".join(argv)
    table = seeds_table([run["models"] for run in runs])
    notes = (
        f"Mean ± standard deviation over seeds {', '.join(map(str, args.seeds))} (each seed draws its own benchmark, "
        f"data order and initialisation; its run is in {work}/seed-N). "
        f"{runs[0]['models'][0]['num_test_videos']} test videos, {args.max_steps} steps. "
        f"Wall time of all {len(args.seeds)} runs: {total / 60:.1f} min "
        f"({', '.join(format(run['total_seconds'] / 60, '.1f') for run in runs)} min each) on {describe(machine)}."
    )
    (work / "results.md").write_text(f"Command: `{command_line.strip()}`\n\n{table}\n\n{notes}\n")
    (work / "results.json").write_text(json.dumps({
        "command": command_line.strip(), "seeds": args.seeds, "total_seconds": total,
        "seconds_per_seed": [run["total_seconds"] for run in runs], "machine": machine,
        "models": seed_statistics([run["models"] for run in runs]),
    }, indent=2))
    print("\n" + table + "\n\n" + notes)
    print(f"Wrote {work / 'results.md'}, {work / 'results.json'}")


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    argv = list(argv if argv is not None else sys.argv[1:])
    if args.train_one:
        train_one(args, args.train_one)
        return
    if args.seeds:
        run_seeds(args, argv)
        return

    start = time.perf_counter()
    machine = machine_description()
    work = Path(args.output_dir)
    work.mkdir(parents=True, exist_ok=True)
    benchmark = prepare_benchmark(args)
    all_captions = [s["caption"] for s in json.loads((benchmark / "annotations" / "MSRVTT_data.json").read_text())["sentences"]]
    tokenizer = build_word_level_tokenizer(all_captions, model_max_length=MAX_WORDS)
    tokenizer.save_pretrained(work / "tokenizer")
    processor = TempMeProcessor(
        tokenizer, num_frames=NUM_FRAMES, max_words=MAX_WORDS, frame_sampling="uniform", image_size=IMAGE_SIZE,
        train_augmentation=None,
    )
    train, test, _ = load_splits(benchmark, processor, args.seed)
    train.decode_all("Decoding train videos")
    test.decode_all("Decoding test videos")
    torch.save({"train": train.decoded_videos, "test": test.decoded_videos}, work / "decoded_videos.pt")
    print(f"{len(train)} training videos ({len(tokenizer)}-token vocabulary), {len(test)} test videos")

    model_seed, cosine = order_sensitive_seed(tokenizer, processor, args)
    print(f"Initialising both models from seed {model_seed} (word-order cosine of the text tower {cosine:.3f})")
    command = [sys.executable, os.path.abspath(__file__), *argv, "--model-seed", str(model_seed)]
    if args.peft:
        args.variants = ["baseline", *(f"tempme-{method}" for method in args.peft)]
    # The parameter-efficient variants start from the trained baseline: they train after it.
    first = [variant for variant in args.variants if not variant.startswith("tempme-")]
    for phase in (first, [variant for variant in args.variants if variant not in first]):
        train_side_by_side(phase, command, args, work)

    results = [json.loads((work / f"result_{variant}.json").read_text()) for variant in args.variants]
    table = results_table(results)
    print("\n" + table)
    plotted = plot_r1_vs_gflops(results, work / "r1_vs_gflops.png")
    write_results(args, argv, results, machine, time.perf_counter() - start, searched=False)
    if not args.no_search:
        search_demo(args)
        # The time of the whole demo, its search included: what `make demo` takes.
        write_results(args, argv, results, machine, time.perf_counter() - start, searched=True)
    print(f"Wrote {work / 'results.md'}, {work / 'results.json'}" + (f", {work / 'r1_vs_gflops.png'}" if plotted else ""))


def write_results(args, argv: list[str], results: list[dict], machine: dict, total: float, searched: bool) -> None:
    """`results.md` and `results.json` of one run: the table, how it was made, and how long it took where."""
    work = Path(args.output_dir)
    command_line = ("python examples/demo.py " + " ".join(argv)).strip()
    notes = (
        f"{results[0]['num_test_videos']} test videos (text-to-video among all of them), {args.max_steps} steps of "
        f"{2 * args.pairs_per_batch} videos, {NUM_FRAMES} frames of {IMAGE_SIZE}x{IMAGE_SIZE}. Cosine of the text "
        f"embeddings of 'from left to right' vs 'from right to left' captions at initialisation: "
        f"{results[0]['text_word_order_cosine_at_init']:.3f}. Peak memory: {results[0]['peak_memory_kind']}. "
        f"The models trained {'one after the other' if args.sequential else 'side by side, one CPU thread each'}"
        f"{' (the baseline first: the parameter-efficient variants start from it)' if args.peft else ''}. "
        f"Wall time of the whole demo{', video search included' if searched else ''}: {total / 60:.1f} min, seed "
        f"{args.seed}, on {describe(machine)}."
    )
    (work / "results.md").write_text(f"Command: `{command_line}`\n\n{results_table(results)}\n\n{notes}\n")
    (work / "results.json").write_text(json.dumps(
        {"command": command_line, "seed": args.seed, "total_seconds": total, "search_included": searched,
         "machine": machine, "models": results}, indent=2))
    print("\n" + notes)


if __name__ == "__main__":
    main()
