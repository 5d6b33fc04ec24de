"""Fine-tune TempMe for text-video retrieval with the `Trainer` (shaped like transformers' `run_clip.py`).

    tempme train configs/msrvtt_vit_b32.json
    tempme train configs/msrvtt_vit_b32.json --max-steps 100 --output-dir runs/try
    accelerate launch -m transformers_tempme.cli train configs/msrvtt_vit_b32.json

Settings come from a JSON file (its keys are the option names with underscores), then the command line on top.
A dataset given (`--annotations-dir` / `--videos-dir`) means: train, then evaluate on `--eval-split` when the dataset
has that split; `--do-train false` or `--do-eval false` say otherwise, and without a dataset there is nothing to do
(an error says so). `--help` lists this command's options and the Trainer options runs usually set; `--help-all`
lists every Trainer option (all of them are accepted either way).

The model: a CLIP checkpoint (`--model`, Hub id or local folder) turned into TempMe with the merge schedule of
`--preset` (`clip-vit-b-32` for the frame-independent baseline, `tome-vit-b-32` for ToMe) updated by
`--schedule-overrides`; a saved TempMe model (loaded as it is); or, without `--model`, a random-weight model from
`--preset` updated by `--config-overrides`. LoRA by default (`--use-lora false` for full fine-tuning); `--peft`
chooses another method: `adapter` (bottleneck 8) or `prompt` (5 deep prompts), the paper's other rows, or any peft
method as a JSON file or dict (`'{"peft_type": "LORA", "r": 8, "use_dora": true}'`). The loss is the symmetric
InfoNCE over the text and video embeddings of all processes.

Data: `load_retrieval_dataset(--dataset, --annotations-dir, --videos-dir, split)` (see the Data section of the
README) as a `VideoTextDataset`, decoded in the DataLoader workers. The train augmentation draws are keyed on
(seed, epoch, sample), so a run is reproducible under `--seed` (or `--data-seed`) and a resumed run sees the samples
the uninterrupted one would. Videos that do not decode are skipped and logged; more than `--max-skipped-videos` stop
the run. Text: `--tokenizer`, else the tokenizer saved with the model, else OpenAI CLIP's BPE tokenizer built offline
(`build_clip_tokenizer`).

Outputs in `--output-dir`: the adapter (with the clip position embeddings and the TempMe config) or the full model
with its pipeline (full fine-tuning, or a peft method on a random initialisation, which no adapter could be loaded
onto: the method is folded into the weights), the processor, `eval_results.json`, and with `--save-merged-model` the
adapter folded into a plain TempMe model in `merged/` (with processor and pipeline; for the methods that can be
folded, not bottleneck adapters or deep prompts, which therefore need a base checkpoint, `--model`). Rerunning the
command resumes from the newest complete `checkpoint-N` there (partial ones are skipped and named).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field

import transformers
from transformers import HfArgumentParser, TrainingArguments, set_seed

from .. import TempMeCLIPModel, TempMeConfig, TempMeProcessor, load_retrieval_dataset
from ..configuration_tempme import DEFAULT_PRESET, SCHEDULE_FIELDS, did_you_mean, unknown_names
from ..data.video_text import VideoTextDataset, collate_video_text
from ..hub.loading import check_processor_fits, load_tempme, load_tokenizer, saved_model_type
from ..hub.repo_id import check_model_source
from ..training.checkpoints import resume_checkpoint
from ..training.saving import save_trained_model
from ..training.trainer import TempMeTrainer
from ..tuners.lora import DEFAULT_TARGET_MODULES, lora_config
from ..tuners.peft_methods import apply_peft, parse_peft_option
from ..tuners.tuner_model import TunerConfig
from .common import OneLineErrors, reports_user_errors

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    _argument_group_name = "model"  # a section of --help (HfArgumentParser)

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "aliases": ["--model"],
            "help": "CLIP (or TempMe) checkpoint: Hub id or local folder. Omit for random initialisation.",
        },
    )
    preset: str = field(
        default=DEFAULT_PRESET,
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
    _argument_group_name = "data"

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
    max_skipped_videos: float = field(
        default=0.01,
        metadata={"help": "Videos that do not decode are skipped and logged; more than this many (a count, or a "
                          "fraction < 1 of the split's videos) stop the run."},
    )
    global_train_batch_size: int | None = field(
        default=None,
        metadata={"help": "Samples per optimiser step over all processes (the paper: 128); sets the per-device size."},
    )
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)


# The Trainer options `--help` shows (runs usually set these); `--help-all` shows the other ~150.
COMMON_TRAINER_OPTIONS: tuple[str, ...] = (
    "output_dir", "do_train", "do_eval", "num_train_epochs", "max_steps", "per_device_train_batch_size",
    "per_device_eval_batch_size", "gradient_accumulation_steps", "learning_rate", "weight_decay", "warmup_steps",
    "lr_scheduler_type", "eval_strategy", "save_strategy", "save_steps", "logging_steps", "seed",
    "resume_from_checkpoint", "bf16", "dataloader_num_workers", "report_to",
)
HELP_ALL = "--help-all"


class TrainArgumentParser(OneLineErrors, HfArgumentParser):
    """`HfArgumentParser` whose usage errors are one `error:` line, as in every `tempme` command."""


def hyphens_first(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Show every option by its shortest hyphenated spelling in `--help`.

    `HfArgumentParser` accepts `--output_dir` and `--output-dir` alike (and aliases such as `--model`) but lists the
    underscore form first; the other `tempme` commands use hyphens, so help shows those.
    """
    for action in parser._actions:
        action.option_strings.sort(key=lambda option: ("_" in option, len(option)))
    return parser


def hide_rare_trainer_options(parser: argparse.ArgumentParser) -> None:
    """Leave out of `--help` the Trainer options not in `COMMON_TRAINER_OPTIONS` (they still parse)."""
    trainer_fields = set(TrainingArguments.__dataclass_fields__)
    hidden = 0
    for action in parser._actions:
        if action.dest in trainer_fields and action.dest not in COMMON_TRAINER_OPTIONS:
            action.help = argparse.SUPPRESS
            hidden += 1
    parser.epilog = (parser.epilog or "") + (
        f"\n\n{hidden} more Trainer options (TrainingArguments) are accepted: `tempme train {HELP_ALL}` lists them."
    )


def trainer_options_last(parser: argparse.ArgumentParser) -> None:
    """In `--help`, this command's own sections (model, data) first, then the Trainer's options."""
    general = parser._optionals
    general.title = "Trainer options (TrainingArguments) and help"
    parser._action_groups.remove(general)
    parser._action_groups.append(general)


def explicit_settings(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The settings the command line names (by dest), whatever their spelling (aliases, `--no-x`, `--x=value`)."""
    defaults = {action: action.default for action in parser._actions}
    try:
        for action in parser._actions:
            action.default = argparse.SUPPRESS
        named, _ = argparse.ArgumentParser.parse_known_args(parser, argv)
    finally:
        for action, default in defaults.items():
            action.default = default
    return set(vars(named))


def parse_arguments(argv: list[str]) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """`config.json [--key value ...]`: the file's values, then the command line on top; or only the command line."""
    return parse_settings(argv)[:3]


def parse_settings(argv: list[str]) -> tuple[ModelArguments, DataArguments, TrainingArguments, set[str]]:
    """`parse_arguments`, plus the names of the settings given explicitly (in the file or on the command line),
    which `plan_run` needs to tell "not asked" from "asked not to"."""
    description, _, epilog = __doc__.strip().partition("\n\n")
    parser = TrainArgumentParser(
        (ModelArguments, DataArguments, TrainingArguments),
        prog="tempme train",
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hyphens_first(parser)
    trainer_options_last(parser)
    argv = list(argv)
    if HELP_ALL in argv:
        argv[argv.index(HELP_ALL)] = "--help"
    else:
        hide_rare_trainer_options(parser)
    explicit = set()
    if argv and argv[0].endswith(".json"):
        with open(argv[0]) as f:
            file_settings = json.load(f)
        parser.set_defaults(**file_settings)
        explicit |= set(file_settings)
        argv = argv[1:]
    model_args, data_args, training_args, *unknown, remaining = parser.parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True, look_for_args_file=False
    )
    names = [action.dest for action in parser._actions]
    if unknown:
        raise ValueError(f"Unknown settings in the config file: {unknown_names(sorted(vars(unknown[0])), names)}. See --help.")
    if remaining:
        flags = [arg.split("=")[0] for arg in remaining if arg.startswith("-")]
        options = [f"--{name.replace('_', '-')}" for name in names]
        hints = "".join(f" {flag}{did_you_mean(flag.replace('_', '-'), options)}" for flag in flags)
        raise ValueError(f"Unknown command-line arguments {remaining}.{hints} See --help.")
    explicit |= explicit_settings(parser, argv)
    return model_args, data_args, training_args, explicit


def has_dataset(data_args: DataArguments, explicit: set[str]) -> bool:
    """Whether the settings name a dataset: its folders, or a dataset name given (a Hub dataset needs no folders)."""
    return data_args.annotations_dir is not None or data_args.videos_dir is not None or "dataset_name" in explicit


def plan_run(data_args: DataArguments, training_args: TrainingArguments, explicit: set[str]) -> bool:
    """Decide what the run does when the settings do not say: a dataset given means train, and evaluate when the
    dataset has the eval split. Returns whether evaluation was asked for explicitly (else it runs only if the split is
    there). Raises `ValueError` when there is nothing to do."""
    dataset = has_dataset(data_args, explicit)
    if "do_train" not in explicit:
        training_args.do_train = dataset
    eval_asked = "do_eval" in explicit
    if not eval_asked:
        training_args.do_eval = dataset
    if not (training_args.do_train or training_args.do_eval):
        raise ValueError(
            "Nothing to do: " + ("--do-train and --do-eval are both off." if dataset else "no dataset is given.")
            + " Give a dataset to train on (--dataset, --annotations-dir, --videos-dir); training and evaluating on it"
            " is the default."
        )
    return eval_asked


def run_warnings(model_args: ModelArguments, training_args: TrainingArguments) -> list[str]:
    """What changes the meaning of a run, said before anything else is logged."""
    if model_args.model_name_or_path is not None or not training_args.do_train:
        return []
    warnings = [
        f"No --model: training starts from random weights (the {model_args.preset} shape), not from a pretrained "
        "CLIP. Pass --model openai/clip-vit-base-patch32 (or a local CLIP or TempMe folder) to fine-tune one."
    ]
    method = peft_config(model_args)
    if method is not None and not isinstance(method, TunerConfig):
        name = str(getattr(method.peft_type, "value", method.peft_type)).replace("LORA", "LoRA")
        warnings.append(
            f"{name} on random weights trains only its own small matrices "
            "and the clip position embeddings; every other weight stays random. Pass --use-lora false to train all "
            "weights. The output folder will hold the full model with the method folded in, not an adapter."
        )
    return warnings


def model_source_kwargs(model_args: ModelArguments) -> dict:
    """The keyword arguments that load files from --model, after checking it (`check_model_source`): a wrong path or
    an unreachable Hub is one error before anything is loaded."""
    kwargs = {"cache_dir": model_args.cache_dir} if model_args.cache_dir else {}
    if model_args.model_name_or_path is not None:
        kwargs.update(check_model_source(model_args.model_name_or_path, cache_dir=model_args.cache_dir))
    return kwargs


def load_tokenizer_for(model_args: ModelArguments, **source_kwargs):
    """--tokenizer, else the tokenizer saved with --model, else OpenAI CLIP's BPE tokenizer built offline."""
    return load_tokenizer(model_args.model_name_or_path, tokenizer=model_args.tokenizer_name_or_path, **source_kwargs)


def json_option(name: str, text: str | None) -> dict:
    """The dict a JSON option holds (`--schedule-overrides '{"img_merge_r": 4}'`), or an error naming the option."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as error:
        raise ValueError(f"--{name} is not valid JSON ({error}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"--{name} must be a JSON object such as '{{\"img_merge_r\": 4}}', got {text!r}.")
    return value


def build_model(model_args: ModelArguments, tokenizer, **source_kwargs) -> TempMeCLIPModel:
    """The model to train: random weights of --preset (with --config-overrides), or the --model checkpoint (a CLIP
    checkpoint under --preset's schedule, a TempMe model under its own), --schedule-overrides on top.
    `source_kwargs`: from `model_source_kwargs`."""
    schedule_overrides = json_option("schedule-overrides", model_args.schedule_overrides)
    not_schedule = [key for key in schedule_overrides if key not in SCHEDULE_FIELDS]
    if not_schedule:
        raise ValueError(
            f"--schedule-overrides takes merge schedule fields; {unknown_names(not_schedule, SCHEDULE_FIELDS)} is not "
            f"one (they are {', '.join(SCHEDULE_FIELDS)}). Backbone settings go in --config-overrides."
        )
    if model_args.model_name_or_path is None:
        overrides = json_option("config-overrides", model_args.config_overrides)
        text = overrides.setdefault("text_config", {})
        # The embedding table and the pooling position follow the tokenizer.
        text.setdefault("vocab_size", len(tokenizer))
        text.setdefault("bos_token_id", tokenizer.bos_token_id)
        text.setdefault("eos_token_id", tokenizer.eos_token_id)
        config = TempMeConfig.from_preset(model_args.preset, **{**overrides, **schedule_overrides})
        logger.info("Random initialisation of %s", model_args.preset)
        return TempMeCLIPModel(config)
    path, kwargs = model_args.model_name_or_path, source_kwargs
    if saved_model_type(path, **kwargs) == TempMeConfig.model_type:
        # A saved TempMe model keeps its schedule, unless overrides change some of its fields.
        schedule = TempMeConfig.from_pretrained(path, **kwargs, **schedule_overrides) if schedule_overrides else None
    else:
        schedule = TempMeConfig.from_preset(model_args.preset, **schedule_overrides)
    model = load_tempme(path, schedule=schedule, **kwargs)
    model.name_or_path = path  # recorded as the adapter's base by peft
    return model


def load_rows(data_args: DataArguments, split: str, max_samples: int | None):
    """The rows of one split (`load_retrieval_dataset`), the first `max_samples` of them when given."""
    rows = load_retrieval_dataset(data_args.dataset_name, data_args.annotations_dir, data_args.videos_dir, split=split)
    return rows if max_samples is None else rows.select(range(min(max_samples, len(rows))))


def load_eval_rows(data_args: DataArguments, required: bool):
    """The eval split's rows; `None` (logged) when the dataset has no such split and evaluation was not required."""
    try:
        return load_rows(data_args, data_args.eval_split, data_args.max_eval_samples)
    except FileNotFoundError as error:
        if required:
            raise
        logger.warning("Not evaluating: the dataset has no %s split (%s)", data_args.eval_split, error)
        return None


def video_text_dataset(rows, data_args: DataArguments, processor, augment: bool, seed: int) -> VideoTextDataset:
    skipped = data_args.max_skipped_videos
    return VideoTextDataset(
        rows, processor, augment=augment, seed=seed, max_skipped_videos=int(skipped) if skipped >= 1 else skipped
    )


def prepare_for_training(model: TempMeCLIPModel, method, freeze_logit_scale: bool):
    """The model with `method` (a peft or tuner config, `None` for full fine-tuning) on it, ready to train."""
    model.logit_scale.requires_grad_(not freeze_logit_scale)
    if method is not None:
        model = apply_peft(model, method)
        if not freeze_logit_scale:
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


def check_base_for_method(model_args: ModelArguments, method) -> None:
    """Bottleneck adapters and deep prompts cannot be folded into the weights, so what they are trained on must be a
    checkpoint their adapter folder can name: refuse a random initialisation before any training is spent."""
    if model_args.model_name_or_path is None and isinstance(method, TunerConfig):
        raise ValueError(
            f"--peft {model_args.peft} on a random initialisation: the adapter could not be loaded again, since it "
            "cannot be folded into the weights and its base is saved nowhere. Train from a checkpoint (--model "
            "FOLDER, e.g. a model saved by an earlier run), or use LoRA or full fine-tuning, which are saved as a "
            "full model."
        )


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
    """Run `tempme train ARGV` and return the train and eval metrics.

    Everything that can be checked is checked before the first step: the settings, the data (splits, folders), the
    model, and that the processor's frames, caption length and token ids fit the model.
    """
    model_args, data_args, training_args, explicit = parse_settings(argv)
    training_args.remove_unused_columns = False  # batches carry videos and captions, not model-signature columns
    eval_asked = plan_run(data_args, training_args, explicit)
    if data_args.global_train_batch_size is not None:
        set_per_device_batch_size(training_args, data_args.global_train_batch_size)
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=training_args.get_process_log_level()
    )
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    for warning in run_warnings(model_args, training_args):  # before anything else is logged
        logger.warning(warning)
    logger.info("Training arguments: %s", training_args)

    method = peft_config(model_args)
    check_base_for_method(model_args, method)
    checkpoint = resume_checkpoint(training_args)  # the newest complete checkpoint; partial ones are skipped
    set_seed(training_args.seed)

    # The data before the model: a mistyped dataset name or folder is reported before a model is loaded.
    train_rows = None
    if training_args.do_train:
        train_rows = load_rows(data_args, data_args.train_split, data_args.max_train_samples)
    eval_rows = None
    if training_args.do_eval or training_args.eval_strategy != "no":
        required = eval_asked or training_args.eval_strategy != "no" or not training_args.do_train
        eval_rows = load_eval_rows(data_args, required)
        training_args.do_eval = training_args.do_eval and eval_rows is not None

    source_kwargs = model_source_kwargs(model_args)
    tokenizer = load_tokenizer_for(model_args, **source_kwargs)
    model = build_model(model_args, tokenizer, **source_kwargs)
    processor = TempMeProcessor(
        tokenizer,
        num_frames=data_args.num_frames,
        max_words=data_args.max_words,
        frame_sampling=data_args.frame_sampling,
        image_size=model.config.vision_config.image_size,
    )
    check_processor_fits(model, processor)
    # The augmentation draws are keyed on (seed, epoch, sample): the same with any number of workers, and replayed
    # when a run resumes.
    data_seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
    train_dataset = None if train_rows is None else video_text_dataset(
        train_rows, data_args, processor, data_args.augment, data_seed
    )
    eval_dataset = None if eval_rows is None else video_text_dataset(eval_rows, data_args, processor, False, data_seed)

    model = prepare_for_training(model, method, model_args.freeze_logit_scale)
    # An adapter needs a base to load onto, and a random initialisation is none: the method is folded in and the
    # full model saved (methods that cannot be folded are refused above, see check_base_for_method).
    fold_into_weights = model_args.model_name_or_path is None and method is not None
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
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        save_trained_model(trainer, processor, fold_into_weights=fold_into_weights,
                           save_merged=model_args.save_merged_model)
        if train_dataset.skipped_video_ids:
            train_result.metrics["train_skipped_videos"] = len(train_dataset.skipped_video_ids)
            logger.warning(
                "%d training videos did not decode and were skipped: %s",
                len(train_dataset.skipped_video_ids), ", ".join(train_dataset.skipped_video_ids),
            )
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        results.update(train_result.metrics)
    if training_args.do_eval:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
    return results


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    train(sys.argv[1:] if argv is None else argv)
    return 0
