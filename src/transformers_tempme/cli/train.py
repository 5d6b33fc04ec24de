"""Fine-tune TempMe for text-video retrieval with the `Trainer` (shaped like transformers' `run_clip.py`).

    tempme train configs/msrvtt_vit_b32.json
    tempme train configs/msrvtt_vit_b32.json --max-steps 100 --output-dir runs/try
    accelerate launch -m transformers_tempme.cli train configs/msrvtt_vit_b32.json

Settings come from a JSON file (its keys are the option names with underscores), then the command line on top.

The model: a CLIP checkpoint (`--model`, Hub id or local folder) turned into TempMe with the merge schedule of
`--preset` (`clip-vit-b-32` for the frame-independent baseline, `tome-vit-b-32` for ToMe) updated by
`--schedule-overrides`; a saved TempMe model (loaded as it is); or, without `--model`, a random-weight model from
`--preset` updated by `--config-overrides`. LoRA by default (`--use-lora false` for full fine-tuning); `--peft`
chooses another method: `adapter` (bottleneck 8) or `prompt` (5 deep prompts), the paper's other rows, or any peft
method as a JSON file or dict (`'{"peft_type": "LORA", "r": 8, "use_dora": true}'`). The loss is the symmetric
InfoNCE over the text and video embeddings of all processes.

Data: `load_retrieval_dataset(--dataset, --annotations-dir, --videos-dir, split)` (see the Data section of the
README), decoded in the DataLoader workers. Text: `--tokenizer`, else the tokenizer saved with the model, else
OpenAI CLIP's BPE tokenizer built offline (`build_clip_tokenizer`).

Outputs in `--output-dir`: the adapter (with the clip position embeddings) or the full model, the processor,
`eval_results.json`, and with `--save-merged-model` the adapter folded into a plain TempMe model in `merged/` (for
the methods that can be folded: not adapters or prompts).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import transformers
from transformers import AutoTokenizer, HfArgumentParser, PretrainedConfig, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from .. import (
    TempMeCLIPModel,
    TempMeConfig,
    TempMeProcessor,
    build_clip_tokenizer,
    load_retrieval_dataset,
)
from ..tuners.lora import DEFAULT_TARGET_MODULES, lora_config
from ..tuners.peft_methods import apply_peft, can_merge, parse_peft_option
from ..tuners.tuner_model import TempMeTunerModel
from ..training.trainer import TempMeTrainer, unwrap_tempme
from ..data.training_data import VideoTextDataset, collate_video_text

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "aliases": ["--model"],
            "help": "CLIP (or TempMe) checkpoint: Hub id or local folder. Omit for random initialisation.",
        },
    )
    preset: str = field(
        default="tempme-vit-b-32",
        metadata={"help": "Merge schedule preset (TempMeConfig.from_preset); the backbone too for random init."},
    )
    schedule_overrides: str | None = field(
        default=None, metadata={"help": 'JSON dict of schedule fields, e.g. \'{"img_merge_r": 4}\'.'}
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Random init only: JSON dict of TempMeConfig fields (vision_config / text_config as dicts)."},
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"aliases": ["--tokenizer"], "help": "Tokenizer folder or Hub id."}
    )
    use_lora: bool = field(default=True, metadata={"help": "LoRA on q/k/v of both towers; false: full fine-tuning."})
    peft: str | None = field(
        default=None,
        metadata={"help": "lora, adapter, prompt, or a peft config (JSON file or dict with peft_type); over use_lora."},
    )
    lora_r: int = field(default=8)
    lora_alpha: int | None = field(default=None, metadata={"help": "Defaults to lora_r (scaling 1, as the paper)."})
    lora_target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGET_MODULES))
    freeze_logit_scale: bool = field(default=True, metadata={"help": "Keep CLIP's temperature (the paper freezes it)."})
    save_merged_model: bool = field(default=False, metadata={"help": "Also save the LoRA-merged model to merged/."})
    cache_dir: str | None = field(default=None)


@dataclass
class DataArguments:
    dataset_name: str = field(
        default="msrvtt", metadata={"aliases": ["--dataset"], "help": "msrvtt, didemo, activitynet or lsmdc."}
    )
    annotations_dir: str | None = field(default=None)
    videos_dir: str | None = field(default=None)
    train_split: str = field(default="train")
    eval_split: str = field(default="test")
    num_frames: int = field(default=12)
    max_words: int = field(default=32)
    frame_sampling: str = field(default="fps", metadata={"help": "fps (the paper) or uniform."})
    augment: bool = field(default=True, metadata={"help": "The processor's video-consistent RandAugment in training."})
    global_train_batch_size: int | None = field(
        default=None,
        metadata={"help": "Samples per optimiser step over all processes (the paper: 128); sets the per-device size."},
    )
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)


def hyphens_first(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Show every option by its shortest hyphenated spelling in `--help`.

    `HfArgumentParser` accepts `--output_dir` and `--output-dir` alike (and aliases such as `--model`) but lists the
    underscore form first; the other `tempme` commands use hyphens, so help shows those.
    """
    for action in parser._actions:
        action.option_strings.sort(key=lambda option: ("_" in option, len(option)))
    return parser


def parse_arguments(argv: list[str]) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """`config.json [--key value ...]`: the file's values, then the command line on top; or only the command line."""
    description, _, epilog = __doc__.strip().partition("\n\n")
    parser = HfArgumentParser(
        (ModelArguments, DataArguments, TrainingArguments),
        prog="tempme train",
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hyphens_first(parser)
    if argv and argv[0].endswith(".json"):
        with open(argv[0]) as f:
            parser.set_defaults(**json.load(f))
        argv = argv[1:]
    model_args, data_args, training_args, *unknown = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    if unknown:
        raise ValueError(f"Unknown settings in the config file: {sorted(vars(unknown[0]))}. See --help for the names.")
    return model_args, data_args, training_args


def load_tokenizer(model_args: ModelArguments):
    if model_args.tokenizer_name_or_path:
        return AutoTokenizer.from_pretrained(model_args.tokenizer_name_or_path, cache_dir=model_args.cache_dir)
    if model_args.model_name_or_path:
        try:
            return AutoTokenizer.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
        except (OSError, ValueError):
            logger.info("No tokenizer next to %s; building OpenAI CLIP's BPE tokenizer.", model_args.model_name_or_path)
    return build_clip_tokenizer()


def load_model(model_args: ModelArguments, tokenizer) -> TempMeCLIPModel:
    schedule_overrides = json.loads(model_args.schedule_overrides or "{}")
    if model_args.model_name_or_path is None:
        overrides = json.loads(model_args.config_overrides or "{}")
        text = overrides.setdefault("text_config", {})
        # The embedding table and the pooling position follow the tokenizer.
        text.setdefault("vocab_size", len(tokenizer))
        text.setdefault("bos_token_id", tokenizer.bos_token_id)
        text.setdefault("eos_token_id", tokenizer.eos_token_id)
        config = TempMeConfig.from_preset(model_args.preset, **{**overrides, **schedule_overrides})
        logger.info("Random initialisation of %s", model_args.preset)
        return TempMeCLIPModel(config)
    base_config = PretrainedConfig.get_config_dict(model_args.model_name_or_path, cache_dir=model_args.cache_dir)[0]
    if base_config.get("model_type") == "tempme":
        if schedule_overrides:
            raise ValueError("schedule_overrides apply to a CLIP checkpoint; this checkpoint is already TempMe.")
        return TempMeCLIPModel.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
    schedule = TempMeConfig.from_preset(model_args.preset, **schedule_overrides)
    model = TempMeCLIPModel.from_clip(model_args.model_name_or_path, schedule, cache_dir=model_args.cache_dir)
    model.name_or_path = model_args.model_name_or_path  # recorded as the adapter's base by peft
    return model


def load_split(data_args: DataArguments, split: str, processor, augment: bool, max_samples: int | None):
    rows = load_retrieval_dataset(data_args.dataset_name, data_args.annotations_dir, data_args.videos_dir, split=split)
    if max_samples is not None:
        rows = rows.select(range(min(max_samples, len(rows))))
    return VideoTextDataset(rows, processor, augment=augment)


def prepare_for_training(model: TempMeCLIPModel, model_args: ModelArguments):
    model.logit_scale.requires_grad_(not model_args.freeze_logit_scale)
    config = peft_config(model_args)
    if config is not None:
        model = apply_peft(model, config)
        if not model_args.freeze_logit_scale:
            model.get_base_model().logit_scale.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("Trainable parameters: %d of %d (%.3f%%)", trainable, total, 100 * trainable / total)
    return model


def peft_config(model_args: ModelArguments):
    """The parameter-efficient method to train with, or `None` for full fine-tuning."""
    if model_args.peft is None and not model_args.use_lora:
        return None
    if model_args.peft is None or model_args.peft.lower() == "lora":
        return lora_config(model_args.lora_r, model_args.lora_target_modules, model_args.lora_alpha)
    return parse_peft_option(model_args.peft)


def set_per_device_batch_size(training_args: TrainingArguments, global_batch_size: int) -> None:
    """Split a global batch over the processes (and gradient-accumulation steps) of this launch."""
    shares = training_args.world_size * training_args.gradient_accumulation_steps
    if global_batch_size % shares:
        raise ValueError(
            f"global_train_batch_size={global_batch_size} does not split over {training_args.world_size} processes x "
            f"{training_args.gradient_accumulation_steps} accumulation steps; choose a multiple of {shares}."
        )
    training_args.per_device_train_batch_size = global_batch_size // shares


def train(argv: list[str]) -> dict:
    """Run `tempme train ARGV` and return the train and eval metrics."""
    model_args, data_args, training_args = parse_arguments(argv)
    training_args.remove_unused_columns = False  # batches carry videos and captions, not model-signature columns
    if data_args.global_train_batch_size is not None:
        set_per_device_batch_size(training_args, data_args.global_train_batch_size)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=training_args.get_process_log_level())
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    logger.info("Training arguments: %s", training_args)

    last_checkpoint = None
    if os.path.isdir(training_args.output_dir) and training_args.do_train and training_args.resume_from_checkpoint is None:
        last_checkpoint = get_last_checkpoint(training_args.output_dir)
        if last_checkpoint is not None:
            logger.info("Resuming from %s (found in output_dir).", last_checkpoint)
    set_seed(training_args.seed)

    tokenizer = load_tokenizer(model_args)
    model = load_model(model_args, tokenizer)
    processor = TempMeProcessor(
        tokenizer,
        num_frames=data_args.num_frames,
        max_words=data_args.max_words,
        frame_sampling=data_args.frame_sampling,
        image_size=model.config.vision_config.image_size,
    )
    train_dataset = eval_dataset = None
    if training_args.do_train:
        train_dataset = load_split(data_args, data_args.train_split, processor, data_args.augment, data_args.max_train_samples)
    if training_args.do_eval or training_args.eval_strategy != "no":
        eval_dataset = load_split(data_args, data_args.eval_split, processor, False, data_args.max_eval_samples)

    model = prepare_for_training(model, model_args)
    trainer = TempMeTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collate_video_text,
        processing_class=tokenizer,
    )

    results = {}
    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint or last_checkpoint
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        if isinstance(trainer.model, TempMeTunerModel):  # not a model class the Trainer saves as an adapter
            trainer.model.save_pretrained(training_args.output_dir, is_main_process=trainer.is_world_process_zero())
        else:
            trainer.save_model()  # the adapter (with the clip position embeddings) or the full model
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        results.update(train_result.metrics)
        if trainer.is_world_process_zero():
            processor.save_pretrained(training_args.output_dir)
            # The adapter alone does not say which merge schedule it was trained with: keep the TempMe config.
            unwrap_tempme(trainer.model).config.save_pretrained(training_args.output_dir)
            if model_args.save_merged_model and not can_merge(trainer.model):
                logger.warning("--save-merged-model: full fine-tuning, adapters and prompts have nothing to fold in.")
            elif model_args.save_merged_model:
                merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
                merged.save_pretrained(Path(training_args.output_dir) / "merged")
                processor.save_pretrained(Path(training_args.output_dir) / "merged")
    if training_args.do_eval:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
    return results


def main(argv: list[str] | None = None) -> int:
    train(sys.argv[1:] if argv is None else argv)
    return 0
