"""Model cards for TempMe checkpoints, filled only from the config and the JSON that the evaluation and
benchmark scripts write: no number in a card is typed by hand.

Inputs:

- Evaluation JSON (one file per dataset and split, written by `tempme evaluate`)::

    {
      "dataset": "msrvtt",                  # dataset name (also its Hub type unless "dataset_type" is given)
      "split": "test",
      "text_to_video": {"R@1": ..., "R@5": ..., "R@10": ..., "MdR": ..., "MnR": ...},
      "video_to_text": {"R@1": ..., "R@5": ..., "R@10": ..., "MdR": ..., "MnR": ...},
      "gflops": ...,                        # vision GFLOPs per video
      "output_tokens": ...,                 # tokens per video leaving the vision tower
      # optional: "model", "videos_per_s", "num_videos", "num_frames", "dataset_type", "trainable_parameters",
      #           "command" (the command line that produced the file),
      #           "synthetic": true and "annotation_layout" for generated data (the synthetic temporal benchmark)
    }

  Results on synthetic data (`"synthetic": true`; `tempme evaluate` writes `"dataset": "synthetic-temporal"` for the
  benchmark of `tempme make-synthetic`) say so in the card's text and model index, and stay out of its `datasets`.

- Benchmark JSON (written by `benchmarks/benchmark.py`): a list of records, or `{"records": [...], "command": ...}`;
  every record has at least `method`, `backbone`, `frames`, `gflops`, `output_tokens`, `videos_per_s` (and may
  have `command`, `device`, `batch_size`, `dtype`).

Every number in the card comes from one of these files, from the model's `config.json` (schedule, backbone),
or from counting the elements of the saved weights (trainable parameters of an adapter). Each results section
names the command that produced its numbers: the JSON's `command`, or the one given to the renderer.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from safetensors import safe_open
from transformers.utils import CONFIG_NAME, SAFE_WEIGHTS_NAME
from transformers.utils.peft_utils import ADAPTER_CONFIG_NAME, ADAPTER_SAFE_WEIGHTS_NAME

from .repo_id import is_repo_id

RETRIEVAL_METRICS: tuple[str, ...] = ("R@1", "R@5", "R@10", "MdR", "MnR")
RETRIEVAL_DIRECTIONS: dict[str, str] = {"text_to_video": "Text-to-video", "video_to_text": "Video-to-text"}
EVAL_REQUIRED_KEYS: tuple[str, ...] = ("dataset", "split", "text_to_video", "video_to_text", "gflops", "output_tokens")
BENCHMARK_REQUIRED_KEYS: tuple[str, ...] = ("method", "backbone", "frames", "gflops", "output_tokens", "videos_per_s")
TASK_TYPE = "text-to-video-retrieval"
TASK_NAME = "Text-to-Video Retrieval"
# metric_type ids in the model index, per metric name.
_METRIC_TYPES = {"R@1": "recall_at_1", "R@5": "recall_at_5", "R@10": "recall_at_10", "MdR": "median_rank", "MnR": "mean_rank"}
DEFAULT_TEMPLATE = Path(__file__).resolve().parent / "model_card_template.md"  # package data


class CardInputError(ValueError):
    """An evaluation or benchmark JSON file lacks what the card needs."""


# ---------------------------------------------------------------------------------------------------------------
# Reading and checking the inputs
# ---------------------------------------------------------------------------------------------------------------


def load_evaluation(path: str | os.PathLike, command: str | None = None) -> dict[str, Any]:
    """Read one evaluation JSON and check it has every key the card needs; `command` fills a missing "command"."""
    evaluation = _read_json(path)
    if not isinstance(evaluation, dict):
        raise CardInputError(f"{path}: an evaluation JSON must be an object, got {type(evaluation).__name__}.")
    for key in EVAL_REQUIRED_KEYS:
        if key not in evaluation:
            raise CardInputError(f"{path}: missing key {key!r} (required: {', '.join(EVAL_REQUIRED_KEYS)}).")
    for direction in RETRIEVAL_DIRECTIONS:
        for metric in RETRIEVAL_METRICS:
            if metric not in evaluation[direction]:
                raise CardInputError(f"{path}: missing key {direction!r} -> {metric!r}.")
    if not isinstance(evaluation.get("synthetic", False), bool):
        raise CardInputError(f"{path}: 'synthetic' must be true or false, got {evaluation['synthetic']!r}.")
    evaluation = dict(evaluation)
    evaluation["command"] = evaluation.get("command") or command
    if not evaluation["command"]:
        raise CardInputError(
            f"{path}: missing key 'command' (the command line that produced it); pass the command to the renderer "
            "(--eval-command) so that the card can name it."
        )
    return evaluation


def load_benchmark(path: str | os.PathLike, command: str | None = None) -> dict[str, Any]:
    """Read a benchmark JSON into `{"records": [...], "command": str}` after checking every record's keys."""
    data = _read_json(path)
    records = data.get("records") if isinstance(data, dict) else data
    if not isinstance(records, list) or not records:
        raise CardInputError(f"{path}: a benchmark JSON must be a non-empty list of records (or {{'records': [...]}}).")
    for index, record in enumerate(records):
        for key in BENCHMARK_REQUIRED_KEYS:
            if key not in record:
                raise CardInputError(
                    f"{path}: record {index} is missing key {key!r} (required: {', '.join(BENCHMARK_REQUIRED_KEYS)})."
                )
    recorded = {record["command"] for record in records if record.get("command")}
    if isinstance(data, dict) and data.get("command"):
        recorded.add(data["command"])
    if len(recorded) > 1:
        raise CardInputError(f"{path}: records come from different commands {sorted(recorded)}; one run per table.")
    found = recorded.pop() if recorded else command
    if not found:
        raise CardInputError(
            f"{path}: missing key 'command' (the command line that produced it); pass the command to the renderer "
            "(--benchmark-command) so that the card can name it."
        )
    extra = {key: data[key] for key in ("device", "dtype", "batch_size") if isinstance(data, dict) and key in data}
    return {"records": records, "command": found, **extra}


def _read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CardInputError(f"{path}: no such file.") from None
    except json.JSONDecodeError as error:
        raise CardInputError(f"{path}: not valid JSON ({error}).") from None


def count_parameters(weights_file: str | os.PathLike) -> int:
    """Elements in a safetensors file, read from its header (nothing is loaded)."""
    total = 0
    with safe_open(str(weights_file), framework="pt") as tensors:
        for name in tensors.keys():
            numel = 1
            for dim in tensors.get_slice(name).get_shape():
                numel *= dim
            total += numel
    return total


# ---------------------------------------------------------------------------------------------------------------
# Building the card
# ---------------------------------------------------------------------------------------------------------------


def format_number(value: Any) -> str:
    """Integers as they are, other numbers with at most two decimals (trailing zeros dropped)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def dataset_label(evaluation: dict[str, Any]) -> str:
    """The dataset as the card names it: the evaluation's `dataset`, marked when the data is synthetic."""
    name = str(evaluation["dataset"])
    return f"{name} (synthetic)" if evaluation.get("synthetic") and "synthetic" not in name else name


def eval_results(evaluation: dict[str, Any]) -> list[EvalResult]:
    """Model-index entries of one evaluation: R@1/5/10, MdR and MnR in both directions, GFLOPs and tokens."""
    dataset = dict(
        task_type=TASK_TYPE,
        task_name=TASK_NAME,
        dataset_type=str(evaluation.get("dataset_type") or evaluation["dataset"]),
        dataset_name=dataset_label(evaluation),
        dataset_split=str(evaluation["split"]),
    )
    results = [
        EvalResult(
            metric_type=f"{direction}_{_METRIC_TYPES[metric]}",
            metric_name=f"{label} {metric}",
            metric_value=evaluation[direction][metric],
            **dataset,
        )
        for direction, label in RETRIEVAL_DIRECTIONS.items()
        for metric in RETRIEVAL_METRICS
    ]
    results.append(EvalResult(metric_type="gflops", metric_name="Vision GFLOPs per video",
                              metric_value=evaluation["gflops"], **dataset))
    results.append(EvalResult(metric_type="output_tokens", metric_name="Output tokens per video",
                              metric_value=evaluation["output_tokens"], **dataset))
    return results


# `--base-model none`: the model was trained from a random initialisation.
NO_BASE_MODEL = "none"


def _library_name(adapter_config: dict[str, Any] | None) -> str | None:
    """transformers for a model; peft for a peft adapter; none for this package's adapters and prompts."""
    if adapter_config is None:
        return "transformers"
    return None if adapter_config.get("peft_type") in ("HOULSBY_ADAPTER", "DEEP_PROMPT") else "peft"


def render_model_card(
    config: dict[str, Any],
    *,
    repo_id: str,
    evaluations: Sequence[dict[str, Any]] = (),
    benchmark: dict[str, Any] | None = None,
    base_model: str | None = None,
    adapter_config: dict[str, Any] | None = None,
    trainable_parameters: int | None = None,
    total_parameters: int | None = None,
    license: str | None = None,
    template_path: str | os.PathLike = DEFAULT_TEMPLATE,
) -> ModelCard:
    """Render a TempMe model card.

    Args:
        config: the TempMe `config.json` as a dict (of the model, or of an adapter's base model).
        repo_id: the Hub repo the card is for (shown in the loading snippets).
        evaluations: results of `load_evaluation`, one per dataset and split.
        benchmark: result of `load_benchmark`.
        base_model: the model this one was trained from (a Hub id goes into the card's metadata).
        adapter_config: the `adapter_config.json` of an adapter repo (the card then explains how to load the
            adapter on its base), or `None` for a full model.
        trainable_parameters: parameters that were trained (adapter: its elements), if known.
        total_parameters: parameters in the saved model weights.
        license: SPDX id for the card's metadata.
        template_path: the Jinja template (`model_card_template.md` beside this module).
    """
    if config.get("model_type") != "tempme":
        raise CardInputError(
            f"The card needs a TempMe config.json (model_type 'tempme'), got model_type {config.get('model_type')!r}. "
            "For an adapter on a plain CLIP checkpoint, pass the TempMe config it was trained with."
        )
    template_path = Path(template_path)
    if not template_path.is_file():
        raise FileNotFoundError(f"Model card template {template_path} not found; pass template_path=.")
    if adapter_config is not None and base_model is None:
        base_model = adapter_config.get("base_model_name_or_path")
    if not base_model:
        raise CardInputError(
            "The card must name the base model: pass base_model (--base-model), e.g. the CLIP checkpoint the "
            "model was built from, or 'none' for a model trained from a random initialisation."
        )
    if base_model == NO_BASE_MODEL and adapter_config is None:
        base_model = None  # trained from scratch: the card says so
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        base_model=base_model if base_model and is_repo_id(base_model) else None,  # the Hub rejects paths
        library_name=_library_name(adapter_config),
        license=license,
        tags=["tempme", "token-merging", "video-text-retrieval", "clip"]
        + ([str(adapter_config.get("peft_type", "lora")).lower()] if adapter_config else []),
        eval_results=[result for evaluation in evaluations for result in eval_results(evaluation)] or None,
        # Hub datasets the model was evaluated on; generated data is none.
        datasets=sorted({str(e.get("dataset_type") or e["dataset"]) for e in evaluations if not e.get("synthetic")})
        or None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        repo_id=repo_id,
        model_name=card_data.model_name,
        base_model_name=base_model,
        config=config,
        vision=config.get("vision_config", {}),
        adapter=adapter_config,
        trainable_parameters=trainable_parameters,
        total_parameters=total_parameters,
        evaluations=list(evaluations),
        benchmark=benchmark,
        metrics=RETRIEVAL_METRICS,
        directions=RETRIEVAL_DIRECTIONS,
        fmt=format_number,
        dataset_label=dataset_label,
    )


# ---------------------------------------------------------------------------------------------------------------
# From a saved folder
# ---------------------------------------------------------------------------------------------------------------


def card_for_folder(
    folder: str | os.PathLike,
    repo_id: str,
    eval_json: Sequence[str | os.PathLike] = (),
    benchmark_json: str | os.PathLike | None = None,
    eval_command: str | None = None,
    benchmark_command: str | None = None,
    base_model: str | None = None,
    config_path: str | os.PathLike | None = None,
    license: str | None = None,
    template_path: str | os.PathLike = DEFAULT_TEMPLATE,
) -> ModelCard:
    """The card of a saved model folder (`config.json` + weights) or peft adapter folder.

    For an adapter the TempMe config is read from `config_path`, else from the adapter folder's own `config.json`
    (`tempme train` writes it), else from the base model folder named in its `adapter_config.json` (which must then
    be a local folder).
    """
    folder = Path(folder)
    adapter_config = None
    if (folder / ADAPTER_CONFIG_NAME).is_file():
        adapter_config = json.loads((folder / ADAPTER_CONFIG_NAME).read_text())
        base_model = base_model or adapter_config.get("base_model_name_or_path")
        if config_path is None and (folder / CONFIG_NAME).is_file():
            config_path = folder / CONFIG_NAME
        if config_path is None:
            candidate = Path(base_model or "") / CONFIG_NAME
            if not (base_model and candidate.is_file()):
                raise CardInputError(
                    f"The adapter's base model {base_model!r} is not a local folder with a config.json; pass the "
                    "TempMe config.json it was trained with (--config)."
                )
            config_path = candidate
    config = json.loads(Path(config_path or folder / CONFIG_NAME).read_text())

    evaluations = [load_evaluation(path, eval_command) for path in eval_json]
    trainable = next((e["trainable_parameters"] for e in evaluations if "trainable_parameters" in e), None)
    total = None
    if adapter_config is not None:
        trainable = count_parameters(folder / ADAPTER_SAFE_WEIGHTS_NAME)
    elif (folder / SAFE_WEIGHTS_NAME).is_file():
        total = count_parameters(folder / SAFE_WEIGHTS_NAME)
    return render_model_card(
        config,
        repo_id=repo_id,
        evaluations=evaluations,
        benchmark=load_benchmark(benchmark_json, benchmark_command) if benchmark_json else None,
        base_model=base_model,
        adapter_config=adapter_config,
        trainable_parameters=trainable,
        total_parameters=total,
        license=license,
        template_path=template_path,
    )


# ---------------------------------------------------------------------------------------------------------------
# Command-line options shared by `tempme card` and `tempme push`
# ---------------------------------------------------------------------------------------------------------------


def add_card_arguments(parser: argparse.ArgumentParser) -> None:
    """The card options shared by `tempme card` and `tempme push`."""
    parser.add_argument("--eval-json", action="append", default=[], help="evaluation JSON of tempme evaluate (repeatable)")
    parser.add_argument("--benchmark-json", help="benchmark JSON of benchmarks/benchmark.py")
    parser.add_argument("--eval-command", help="command that wrote the evaluation JSON, if the JSON does not record it")
    parser.add_argument("--benchmark-command", help="command that wrote the benchmark JSON, if the JSON does not record it")
    parser.add_argument(
        "--base-model",
        help="model this one was built from (adapters: defaults to adapter_config.json's); 'none' for random init",
    )
    parser.add_argument("--config", help="TempMe config.json of an adapter's base model, if that is not a local folder")
    parser.add_argument("--license", help="SPDX license id for the card's metadata")
    parser.add_argument("--template", default=str(DEFAULT_TEMPLATE), help="Jinja template of the card")


def card_from_arguments(folder: str | os.PathLike, repo_id: str, args: argparse.Namespace) -> ModelCard:
    """`card_for_folder` with the options of `add_card_arguments`."""
    return card_for_folder(
        folder,
        repo_id,
        eval_json=args.eval_json,
        benchmark_json=args.benchmark_json,
        eval_command=args.eval_command,
        benchmark_command=args.benchmark_command,
        base_model=args.base_model,
        config_path=args.config,
        license=args.license,
        template_path=args.template,
    )


__all__ = [
    "CardInputError",
    "load_evaluation",
    "load_benchmark",
    "count_parameters",
    "eval_results",
    "dataset_label",
    "render_model_card",
    "card_for_folder",
    "format_number",
    "add_card_arguments",
    "card_from_arguments",
    "RETRIEVAL_METRICS",
    "EVAL_REQUIRED_KEYS",
    "BENCHMARK_REQUIRED_KEYS",
]
