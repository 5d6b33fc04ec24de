"""Loading TempMe models: one call for a saved model, a peft adapter, a Hub id or a plain CLIP checkpoint.

The same holds for every peft method (`apply_peft`) and for this package's bottleneck adapters and deep prompts
(`apply_adapter`, `apply_prompt`), which save the same two files; `load_tempme` loads each kind by the `peft_type`
of its `adapter_config.json`.

An adapter folder is what `PeftModel.save_pretrained` writes: `adapter_config.json` (LoRA rank, target modules,
`modules_to_save=["clip_position_embedding"]` and `base_model_name_or_path`) and `adapter_model.safetensors`
(the LoRA matrices and the trained clip position embeddings); `tempme train` adds the TempMe `config.json` the
adapter was trained with. `PeftModel.from_pretrained(base, folder)` restores the trained model on any copy of the
base; `load_tempme` does every step in one call, and `tempme evaluate`, `tempme visualize` and `tempme train` load
through it.
"""

from __future__ import annotations

import os
from pathlib import Path

from peft import PeftModel
from peft.utils import CONFIG_NAME as ADAPTER_CONFIG_NAME
from peft.utils import SAFETENSORS_WEIGHTS_NAME as ADAPTER_WEIGHTS_NAME
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import CONFIG_NAME, find_adapter_config_file

from ..configuration_tempme import PRESETS, TempMeConfig
from ..modeling_tempme import TempMeCLIPModel
from ..tuners.lora import CLIP_POSITION_EMBEDDING_MODULE
from ..tuners.peft_methods import load_adapter
from ..tuners.tuner_model import TempMeTunerModel, read_adapter_config
from .integrity import check_weights_in


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


def _model_type(name_or_path: str, **hub_kwargs) -> str | None:
    return PretrainedConfig.get_config_dict(name_or_path, **hub_kwargs)[0].get("model_type")


def _schedule_of_adapter(adapter: str, **hub_kwargs) -> TempMeConfig | None:
    """The TempMe config saved beside an adapter (`tempme train` writes it), or `None`."""
    try:
        if _model_type(adapter, **hub_kwargs) == TempMeConfig.model_type:
            return TempMeConfig.from_pretrained(adapter, **hub_kwargs)
    except OSError:
        pass
    return None


def _as_schedule(schedule: TempMeConfig | str) -> TempMeConfig:
    if isinstance(schedule, str):
        if schedule not in PRESETS:
            raise ValueError(f"Unknown TempMe preset {schedule!r}. Available presets: {', '.join(PRESETS)}.")
        return TempMeConfig.from_preset(schedule)
    return schedule


def _same_schedule(config: TempMeConfig, other: TempMeConfig) -> bool:
    """Whether two configs merge the same way (the init of the clip position embeddings aside)."""
    ignore = {"clip_position_embedding_init_std"}
    return {k: v for k, v in config.merge_schedule.items() if k not in ignore} == {
        k: v for k, v in other.merge_schedule.items() if k not in ignore
    }


def load_tempme(
    model_or_path: PreTrainedModel | str | os.PathLike | None = None,
    adapter: str | os.PathLike | None = None,
    merge: bool = False,
    schedule: TempMeConfig | str | None = None,
    **from_pretrained_kwargs,
) -> TempMeCLIPModel | PeftModel | TempMeTunerModel:
    """Load a TempMe model in one call: a saved model, an adapter on its base, or a plain CLIP checkpoint.

    Args:
        model_or_path: a model object, folder or Hub id: a saved TempMe model, a peft adapter (its base is the one
            it names), or a plain CLIP checkpoint. With `adapter`, the base to put the adapter on.
        adapter: a peft adapter folder or Hub id (see `save_adapter`); its base defaults to the one it names.
        merge: fold the LoRA weights and clip position embeddings into the base and return a plain
            `TempMeCLIPModel` (no peft wrapper, no LoRA overhead at inference). Bottleneck adapters and deep
            prompts cannot be folded (an error says so).
        schedule: a preset name or `TempMeConfig` whose merge schedule the model runs. Needed for a plain CLIP base
            (`TempMeCLIPModel.from_clip`) unless the adapter folder holds the TempMe config it was trained with; for
            a TempMe base it replaces the saved schedule (same weights, `TempMeCLIPModel.with_schedule`).
        from_pretrained_kwargs: passed to `from_pretrained` (e.g. `revision`, `dtype`, `cache_dir`).

    Returns:
        The model in eval mode: with an adapter and `merge=False`, a `PeftModel` (peft's methods) or a
        `TempMeTunerModel` (bottleneck adapters, deep prompts); else a `TempMeCLIPModel`.
    """
    hub_kwargs = {key: from_pretrained_kwargs[key] for key in ("cache_dir", "revision", "token") if key in from_pretrained_kwargs}
    if adapter is None and isinstance(model_or_path, (str, os.PathLike)) and _is_adapter(str(model_or_path), **hub_kwargs):
        model_or_path, adapter = None, model_or_path
    if model_or_path is None:
        if adapter is None:
            raise ValueError("Give a base model, an adapter, or both.")
        model_or_path = adapter_base_model(adapter)
    for folder in (model_or_path, adapter):
        if isinstance(folder, (str, os.PathLike)):
            check_weights_in(folder)  # a truncated file is named here, not deep inside the loader
    if schedule is None and adapter is not None:
        schedule = _schedule_of_adapter(str(adapter), **hub_kwargs)
    schedule = None if schedule is None else _as_schedule(schedule)

    if isinstance(model_or_path, PreTrainedModel):
        model = model_or_path
    elif _model_type(str(model_or_path), **hub_kwargs) == TempMeConfig.model_type:
        model = TempMeCLIPModel.from_pretrained(model_or_path, **from_pretrained_kwargs)
    elif schedule is None:
        raise ValueError(
            f"{model_or_path} is a plain CLIP checkpoint: give the TempMe schedule to build on it, a preset name "
            "such as 'tempme-vit-b-32' or a TempMeConfig."
        )
    else:
        model = TempMeCLIPModel.from_clip(str(model_or_path), schedule, **from_pretrained_kwargs)
    if schedule is not None and isinstance(model, TempMeCLIPModel) and not _same_schedule(model.config, schedule):
        model = model.with_schedule(schedule)
    if adapter is not None:
        model = load_adapter(model, adapter)
        if merge:  # bottleneck adapters and deep prompts cannot be folded: their merge_and_unload says why
            model = model.merge_and_unload()
    return model.eval()


__all__ = [
    "save_adapter",
    "load_tempme",
    "adapter_base_model",
    "is_adapter_folder",
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_WEIGHTS_NAME",
    "CONFIG_NAME",
]
