"""Loading TempMe models and their processors: one place for every command and for the Python API.

`load_tempme` loads a saved model, a peft adapter on its base, a Hub id or a plain CLIP checkpoint. The same holds
for every peft method (`apply_peft`) and for this package's bottleneck adapters and deep prompts (`apply_adapter`,
`apply_prompt`), which save the same two files; `load_tempme` loads each kind by the `peft_type` of its
`adapter_config.json`.

An adapter folder is what `PeftModel.save_pretrained` writes: `adapter_config.json` (LoRA rank, target modules,
`modules_to_save=["clip_position_embedding"]` and `base_model_name_or_path`) and `adapter_model.safetensors`
(the LoRA matrices and the trained clip position embeddings); `tempme train` adds the TempMe `config.json` the
adapter was trained with. `PeftModel.from_pretrained(base, folder)` restores the trained model on any copy of the
base; `load_tempme` does every step in one call.

`load_processor(source, model)` finds the processor that goes with a model: the one saved at `source`, else the one
of an adapter's base model, else one built around the tokenizer saved there (or OpenAI CLIP's, built offline), and
checks that its inputs fit the model (`check_processor_fits`).

`load_search_model` is both at once plus what a search index records about the model (`describe_model`), and
`load_from_model_info` loads that record back: `tempme index / search / serve` and `VideoSearchIndex` load through
them. Every source is checked before `from_pretrained` runs (`check_model_source`): a path that is not a model
folder, or a Hub id while the Hub is unreachable, is one clear error.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

from peft import PeftModel
from peft.utils import CONFIG_NAME as ADAPTER_CONFIG_NAME
from peft.utils import SAFETENSORS_WEIGHTS_NAME as ADAPTER_WEIGHTS_NAME
from transformers import AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers.utils import CONFIG_NAME, PROCESSOR_NAME, find_adapter_config_file

from ..configuration_tempme import DEFAULT_PRESET, TempMeConfig
from ..modeling_tempme import TempMeCLIPModel
from ..processing_tempme import TempMeProcessor
from ..tuners.lora import CLIP_POSITION_EMBEDDING_MODULE
from ..tuners.peft_methods import can_merge, load_adapter
from ..tuners.tuner_model import TempMeTunerModel, read_adapter_config
from .integrity import check_weights_in
from .repo_id import check_model_source

logger = logging.getLogger(__name__)

# The keyword arguments of `from_pretrained` that say where files come from (passed on to every file lookup).
_HUB_KEYWORDS = ("cache_dir", "revision", "token", "local_files_only")


def is_adapter_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / ADAPTER_CONFIG_NAME).is_file()


def save_adapter(
    peft_model: PeftModel, adapter_dir: str | os.PathLike, base_model_name_or_path: str | None = None
) -> Path:
    """Save a LoRA-wrapped (or otherwise tuned) TempMe model as an adapter folder (safetensors) that names its base.

    Args:
        peft_model: the result of `apply_lora(model)` (or `apply_peft`, `apply_adapter`, `apply_prompt`) after training.
        adapter_dir: folder to write.
        base_model_name_or_path: the Hub id or folder of the base model to record in `adapter_config.json`;
            defaults to where the base model was loaded from. Give a Hub id when the adapter will be published.
    """
    config = peft_model.peft_config[peft_model.active_adapter]
    if base_model_name_or_path is not None:
        config.base_model_name_or_path = str(base_model_name_or_path)
    if not config.base_model_name_or_path:
        raise ValueError(
            "The adapter's base model is unknown: the base model was built in memory, not loaded from a folder or "
            "the Hub. Save the base model first (model.save_pretrained(folder)) and pass "
            "base_model_name_or_path=folder (or its Hub id)."
        )
    modules_to_save = config.modules_to_save or []
    if CLIP_POSITION_EMBEDDING_MODULE not in modules_to_save and _has_clip_position_embeddings(peft_model):
        raise ValueError(
            f"The clip position embeddings would not be saved with this adapter: add {CLIP_POSITION_EMBEDDING_MODULE!r}"
            " to the LoraConfig's modules_to_save (transformers_tempme.lora_config does)."
        )
    peft_model.save_pretrained(adapter_dir, safe_serialization=True)
    return Path(adapter_dir)


def _has_clip_position_embeddings(model) -> bool:
    return any(CLIP_POSITION_EMBEDDING_MODULE in name for name, _ in model.named_parameters())


def adapter_base_model(adapter: str | os.PathLike) -> str:
    """The `base_model_name_or_path` an adapter (folder or Hub id) names."""
    if Path(adapter).exists() and not is_adapter_folder(adapter):
        raise FileNotFoundError(f"{adapter} is not a peft adapter folder: it has no {ADAPTER_CONFIG_NAME}.")
    # Read as JSON: peft's own config classes do not know this package's tuners (bottleneck adapters, deep prompts).
    base = read_adapter_config(adapter).get("base_model_name_or_path")
    if not base:
        raise ValueError(
            f"The adapter {adapter} names no base model (base_model_name_or_path in {ADAPTER_CONFIG_NAME}); pass the "
            "base model yourself."
        )
    return base


def _is_adapter(name_or_path: str, **hub_kwargs) -> bool:
    if Path(name_or_path).exists():
        return is_adapter_folder(name_or_path)
    return find_adapter_config_file(name_or_path, **hub_kwargs) is not None


def saved_model_type(name_or_path: str | os.PathLike, **hub_kwargs) -> str | None:
    """The `model_type` of the `config.json` at `name_or_path` (`"tempme"`, `"clip"`, ...)."""
    return PretrainedConfig.get_config_dict(str(name_or_path), **hub_kwargs)[0].get("model_type")


def _schedule_of_adapter(adapter: str, **hub_kwargs) -> TempMeConfig | None:
    """The TempMe config saved beside an adapter (`tempme train` writes it), or `None`."""
    try:
        if saved_model_type(adapter, **hub_kwargs) == TempMeConfig.model_type:
            return TempMeConfig.from_pretrained(adapter, **hub_kwargs)
    except OSError:
        pass
    return None


def _same_schedule(config: TempMeConfig, other: TempMeConfig) -> bool:
    """Whether two configs merge the same way (the init of the clip position embeddings aside)."""
    ignore = {"clip_position_embedding_init_std"}
    return {k: v for k, v in config.merge_schedule.items() if k not in ignore} == {
        k: v for k, v in other.merge_schedule.items() if k not in ignore
    }


def _checked_source(source: str | os.PathLike, hub_kwargs: dict, role: str = "") -> dict:
    """`check_model_source(source)`, its keyword arguments added to `hub_kwargs`; `role` prefixes an error."""
    try:
        hub_kwargs.update(check_model_source(source, hub_kwargs.get("revision"), hub_kwargs.get("cache_dir")))
    except (OSError, ValueError) as error:
        if not role:
            raise
        raise type(error)(f"{role}: {error}") from None
    return hub_kwargs


def load_tempme(
    model_or_path: PreTrainedModel | str | os.PathLike | None = None,
    adapter: str | os.PathLike | None = None,
    merge: bool | Literal["auto"] = False,
    schedule: TempMeConfig | str | None = None,
    **from_pretrained_kwargs,
) -> TempMeCLIPModel | PeftModel | TempMeTunerModel:
    """Load a TempMe model in one call: a saved model, an adapter on its base, or a plain CLIP checkpoint.

    Args:
        model_or_path: a model object, folder or Hub id: a saved TempMe model, a peft adapter (its base is the one
            it names), or a plain CLIP checkpoint. With `adapter`, the base to put the adapter on.
        adapter: a peft adapter folder or Hub id (see `save_adapter`); its base defaults to the one it names.
        merge: `True` folds the LoRA weights and clip position embeddings into the base and returns a plain
            `TempMeCLIPModel` (no peft wrapper, no LoRA overhead at inference); bottleneck adapters and deep prompts
            cannot be folded (an error says so). `"auto"` folds what can be folded and leaves adapters and prompts
            on the model, which then runs them in its own forward.
        schedule: a preset name or `TempMeConfig` whose merge schedule the model runs. Needed for a plain CLIP base
            (`TempMeCLIPModel.from_clip`) unless the adapter folder holds the TempMe config it was trained with; for
            a TempMe base it replaces the saved schedule (same weights, `TempMeCLIPModel.with_schedule`).
        from_pretrained_kwargs: passed to `from_pretrained` (e.g. `revision`, `dtype`, `cache_dir`).

    Returns:
        The model in eval mode: with an adapter left unmerged, a `PeftModel` (peft's methods) or a
        `TempMeTunerModel` (bottleneck adapters, deep prompts); else a `TempMeCLIPModel`.

    Raises:
        `FileNotFoundError` / `ValueError`: a path that is not a model or adapter folder; `HubUnreachableError`: a
        Hub id while the Hub cannot be reached (see `check_model_source`).
    """
    hub_kwargs = {key: from_pretrained_kwargs[key] for key in _HUB_KEYWORDS if key in from_pretrained_kwargs}
    for source in (model_or_path, adapter):
        if isinstance(source, (str, os.PathLike)):
            _checked_source(source, hub_kwargs)
    if adapter is None and isinstance(model_or_path, (str, os.PathLike)) and _is_adapter(str(model_or_path), **hub_kwargs):
        model_or_path, adapter = None, model_or_path
    if model_or_path is None:
        if adapter is None:
            raise ValueError("Give a base model, an adapter, or both.")
        model_or_path = adapter_base_model(adapter)
        _checked_source(model_or_path, hub_kwargs, f"The base model {model_or_path} named by the adapter {adapter}")
    from_pretrained_kwargs.update(hub_kwargs)
    for folder in (model_or_path, adapter):
        if isinstance(folder, (str, os.PathLike)):
            check_weights_in(folder)  # a truncated file is named here, not deep inside the loader
    if schedule is None and adapter is not None:
        schedule = _schedule_of_adapter(str(adapter), **hub_kwargs)
    if isinstance(schedule, str):
        schedule = TempMeConfig.from_preset(schedule)  # an unknown name is an error with "did you mean"

    if isinstance(model_or_path, PreTrainedModel):
        model = model_or_path
    elif saved_model_type(model_or_path, **hub_kwargs) == TempMeConfig.model_type:
        model = TempMeCLIPModel.from_pretrained(model_or_path, **from_pretrained_kwargs)
    elif schedule is None:
        raise ValueError(
            f"{model_or_path} is a plain CLIP checkpoint: give the TempMe schedule to build on it, a preset name "
            f"such as {DEFAULT_PRESET!r} or a TempMeConfig (on the command line: --from-clip {model_or_path})."
        )
    else:
        model = TempMeCLIPModel.from_clip(str(model_or_path), schedule, **from_pretrained_kwargs)
    if schedule is not None and isinstance(model, TempMeCLIPModel) and not _same_schedule(model.config, schedule):
        model = model.with_schedule(schedule)
    if adapter is not None:
        model = load_adapter(model, adapter, **{k: v for k, v in hub_kwargs.items() if k != "revision"})
        if merge is True or (merge == "auto" and can_merge(model)):
            model = model.merge_and_unload()  # bottleneck adapters and deep prompts: their merge_and_unload says why
    return model.eval()


# ---------------------------------------------------------------------------------------------------------------
# The processor that goes with a model
# ---------------------------------------------------------------------------------------------------------------


def _source_kwargs(source: str, revision: str | None = None) -> dict:
    """The keyword arguments that load files from `source`: none for a local folder; for a Hub id its revision, and
    `local_files_only` when the Hub is unreachable but the cache holds it (`check_model_source`)."""
    if _is_local(source):
        return {}
    return {**({"revision": revision} if revision else {}), **check_model_source(source, revision)}


def _adapter_base(source: str, **hub_kwargs) -> str | None:
    """The base model an adapter names, or `None` for a source that is not an adapter."""
    try:
        return adapter_base_model(source) if _is_adapter(source, **hub_kwargs) else None
    except (OSError, ValueError):
        return None


def _saved_processor(source: str, settings: dict, **hub_kwargs) -> TempMeProcessor | None:
    """The processor saved at `source` (folder or Hub id), or `None`."""
    if _is_local(source):
        if not (Path(source).expanduser() / PROCESSOR_NAME).is_file():
            return None
        return TempMeProcessor.from_pretrained(source, **settings)
    try:
        return TempMeProcessor.from_pretrained(source, **hub_kwargs, **settings)
    except (OSError, ValueError):
        return None


def load_tokenizer(*sources: str | os.PathLike | None, tokenizer: str | os.PathLike | None = None, **hub_kwargs):
    """`tokenizer` (a tokenizer folder or Hub id) when given; else the tokenizer saved at the first of `sources` that
    holds one; else OpenAI CLIP's BPE tokenizer built offline (`build_clip_tokenizer`), with a warning."""
    if tokenizer is not None:
        return AutoTokenizer.from_pretrained(str(tokenizer), **hub_kwargs)
    for source in filter(None, sources):
        try:
            return AutoTokenizer.from_pretrained(str(source), **hub_kwargs)
        except (OSError, ValueError, TypeError, KeyError):
            continue
    from ..data.tokenizer import build_clip_tokenizer

    text = build_clip_tokenizer()
    logger.warning(
        "No tokenizer is saved with %s: using OpenAI CLIP's BPE tokenizer (built offline). Save the model's processor "
        "or tokenizer beside it to use its own.", " or ".join(str(s) for s in sources if s) or "the model",
    )
    return text


def load_processor(
    source: str | os.PathLike | None,
    model,
    tokenizer: str | os.PathLike | None = None,
    revision: str | None = None,
    **settings,
) -> TempMeProcessor:
    """The processor for `model` loaded from `source` (where the model came from), checked to fit the model.

    In order: the processor saved at `source`; for an adapter saved without one, the processor of the base model it
    names; else a processor built around the tokenizer saved there (or OpenAI CLIP's, built offline, with a warning),
    the model's frame count and image size, and the paper's one-frame-per-second sampling.

    Args:
        source: the model's folder or Hub id (an adapter folder too), or `None` for a model built in memory.
        model: the model the processor feeds (`TempMeCLIPModel`, or a peft / tuner model around one).
        tokenizer: a tokenizer folder or Hub id to use instead of the saved one (a new processor is built around it).
        revision: the Hub revision of `source`.
        settings: processor settings that replace the saved ones (`num_frames`, `max_words`, `frame_sampling`).

    Raises:
        `ValueError`: the processor does not fit the model (`check_processor_fits`).
    """
    candidates = []  # (folder or Hub id, its loading keyword arguments)
    if source is not None:
        kwargs = _source_kwargs(str(source), revision)
        candidates.append((str(source), kwargs))
        base = _adapter_base(str(source), **kwargs)
        if base is not None:  # an adapter saved without a processor takes its base model's
            candidates.append((base, _source_kwargs(base)))
    processor = None
    if tokenizer is None:
        for candidate, kwargs in candidates:
            processor = _saved_processor(candidate, settings, **kwargs)
            if processor is not None:
                break
    if processor is None:
        text = load_tokenizer(*(candidate for candidate, _ in candidates), tokenizer=tokenizer)
        defaults = {"num_frames": model.config.num_frames, "image_size": model.config.vision_config.image_size}
        processor = TempMeProcessor(text, **{**defaults, **settings})
        if "max_words" not in settings:  # the processor's default, unless the model has fewer text positions
            processor.max_words = min(processor.max_words, model.config.text_config.max_position_embeddings)
    check_processor_fits(model, processor)
    return processor


def check_processor_fits(model, processor) -> None:
    """Raise `ValueError` unless `processor`'s inputs fit `model`, before any video is encoded.

    Its frame count must pass the model's merge schedule, its text length fit the text position embeddings, and its
    tokenizer's ids the text embedding table (a tokenizer of another model gives out-of-range ids).
    """
    config = model.config
    try:
        config.merge_plan(num_frames=processor.num_frames)
    except ValueError as error:
        raise ValueError(
            f"The processor samples {processor.num_frames} frames per video, which the model's merge schedule cannot "
            f"take ({error}). Use the model's {config.num_frames} frames (num_frames / --num-frames)."
        ) from None
    positions = config.text_config.max_position_embeddings
    if processor.max_words > positions:
        raise ValueError(
            f"max_words={processor.max_words} is more than the model's {positions} text positions: captions would "
            f"index past its position embeddings. Use max_words (--max-words) of {positions} or less."
        )
    vocabulary, embeddings = len(processor.tokenizer), config.text_config.vocab_size
    if vocabulary > embeddings:
        raise ValueError(
            f"The tokenizer has {vocabulary} tokens but the model's text embedding table only {embeddings}: it is not "
            "the model's tokenizer. Save the model's processor (processor.save_pretrained(folder)) or tokenizer beside it."
        )


# ---------------------------------------------------------------------------------------------------------------
# Model and processor for search, and what an index records about them
# ---------------------------------------------------------------------------------------------------------------


def _is_local(name_or_path: str | os.PathLike) -> bool:
    return Path(name_or_path).expanduser().exists()


def describe_model(
    model,
    name_or_path: str | os.PathLike | None = None,
    from_clip: bool = False,
    preset: str | None = None,
    revision: str | None = None,
) -> dict:
    """What a search index records about its model (`model_info` in `index.json`), to load it back later.

    `name_or_path` is stored as an absolute path for a local folder (so that the index works from any directory),
    else as the Hub id with its `revision` (the commit the files came from when none is named); by default the
    model's own `name_or_path`. Keys: `name_or_path`, `revision`, `from_clip`, `preset`, `schedule`.
    """
    source = str(name_or_path if name_or_path is not None else getattr(model, "name_or_path", "") or "")
    local = bool(source) and _is_local(source)
    return {
        "name_or_path": str(Path(source).expanduser().resolve()) if local else source,
        "revision": None if local else revision or getattr(model.config, "_commit_hash", None),
        "from_clip": bool(from_clip),
        "preset": preset if from_clip else None,
        "schedule": model.config.merge_schedule,
    }


def load_search_model(
    name_or_path: str | os.PathLike,
    *,
    from_clip: bool = False,
    preset: str = DEFAULT_PRESET,
    revision: str | None = None,
    processor_source: str | os.PathLike | None = None,
):
    """Load `(model, processor, model_info)` for building or searching an index.

    Args:
        name_or_path: a TempMe model folder or Hub id, an adapter folder (LoRA and peft's methods are merged;
            bottleneck adapters and deep prompts run unmerged), or (with `from_clip`) a CLIP checkpoint.
        from_clip (`bool`): build zero-shot TempMe on a plain CLIP checkpoint with the schedule `preset`.
        preset (`str`): the TempMe preset applied with `from_clip`.
        revision (`str`, *optional*): the Hub revision (ignored for a local folder).
        processor_source (*optional*): where to load the processor from, when not next to the model.

    Returns:
        The model in eval mode, its `TempMeProcessor` (see `load_processor`), and `model_info` (`describe_model`:
        what the index's manifest records).
    """
    source = str(name_or_path)
    kwargs = {"revision": revision} if revision and not _is_local(source) else {}
    model = load_tempme(source, schedule=preset if from_clip else None, merge="auto", **kwargs)
    processor = load_processor(processor_source or source, model, **kwargs)
    return model, processor, describe_model(model, source, from_clip, preset, revision)


def load_from_model_info(model_info: dict, index_dir: str | os.PathLike | None = None):
    """`(model, processor)` from what an index recorded about its model (`describe_model`)."""
    if not model_info.get("name_or_path"):
        where = f"The index {index_dir}" if index_dir else "This index"
        raise ValueError(
            f"{where} was built with a model held in memory, so it cannot load it by itself: pass the model (--model, "
            "or VideoSearchIndex.open(index_dir, model, processor)), or save the model and build the index with "
            "model_info=describe_model(model, folder)."
        )
    model, processor, _ = load_search_model(
        model_info["name_or_path"], from_clip=model_info.get("from_clip", False),
        preset=model_info.get("preset") or DEFAULT_PRESET, revision=model_info.get("revision"),
    )
    return model, processor


__all__ = [
    "save_adapter",
    "load_tempme",
    "load_processor",
    "load_tokenizer",
    "check_processor_fits",
    "load_search_model",
    "describe_model",
    "load_from_model_info",
    "adapter_base_model",
    "is_adapter_folder",
    "saved_model_type",
    "DEFAULT_PRESET",
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_WEIGHTS_NAME",
    "CONFIG_NAME",
]
