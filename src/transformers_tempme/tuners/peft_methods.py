"""Any parameter-efficient method on TempMe through one call: peft's tuners, or this package's adapter and prompts.

`apply_peft(model, config)` takes a peft config (`LoraConfig`, `LoraConfig(use_dora=True)`, `IA3Config`,
`LoHaConfig`, `LoKrConfig`, `OFTConfig`, `VeraConfig`, ...) or one of this package's tuner configs
(`HoulsbyAdapterConfig`, `DeepPromptConfig`). For a peft config it fills in what a TempMe model needs:

- `target_modules`, when the config leaves it empty: the attention projections `q_proj`, `k_proj`, `v_proj` of both
  towers (peft knows no default for a TempMe model);
- `modules_to_save` gains `clip_position_embedding`, so that the clip position embeddings are trained and saved
  with the adapter.

`load_adapter(model, folder_or_hub_id)` loads either kind back, by the `peft_type` of its `adapter_config.json`.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from peft import PeftConfig, PeftModel, get_peft_model
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
from torch import nn

from .one_tuner import require_untuned
from .tuner_model import (
    CLIP_POSITION_EMBEDDING_MODULE,
    TempMeTunerModel,
    TunerConfig,
    read_adapter_config,
    tuner_config_classes,
    tuner_config_from_dict,
)

# The attention projections of both towers: what the paper's LoRA adapts.
DEFAULT_TARGET_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj")


def tempme_peft_config(config: PeftConfig) -> PeftConfig:
    """A copy of a peft config with TempMe's defaults filled in (see the module docstring)."""
    config = copy.deepcopy(config)
    if getattr(config, "target_modules", None) is None and hasattr(config, "target_modules"):
        config.target_modules = set(DEFAULT_TARGET_MODULES)
        if getattr(config, "feedforward_modules", "absent") is None:  # IA3: no feed-forward layer among the targets
            config.feedforward_modules = set()
    if not hasattr(config, "modules_to_save"):
        raise ValueError(
            f"{type(config).__name__} cannot train extra modules (it has no modules_to_save), so TempMe's clip "
            "position embeddings could not be trained and saved with it."
        )
    config.modules_to_save = [*(config.modules_to_save or []), CLIP_POSITION_EMBEDDING_MODULE]
    config.modules_to_save = list(dict.fromkeys(config.modules_to_save))
    return config


def apply_peft(model: nn.Module, config: PeftConfig | TunerConfig) -> PeftModel | TempMeTunerModel:
    """Wrap a `TempMeCLIPModel` with any parameter-efficient method; the clip position embeddings train with it.

    Everything else is frozen, `logit_scale` included. The result answers peft's calls
    (`print_trainable_parameters()`, `save_pretrained(folder)`, `merge_and_unload()` where the method can merge);
    `load_tempme(adapter=folder)` loads it back.
    """
    require_untuned(model, "apply_peft")
    if isinstance(config, TunerConfig):
        return TempMeTunerModel(model, copy.deepcopy(config))
    if config.is_prompt_learning:
        raise ValueError(
            f"peft's {config.peft_type} adds virtual tokens to the input of a language model, which a video-text model "
            "does not have: use DeepPromptConfig (apply_prompt) for prompts in every block of both towers."
        )
    return get_peft_model(model, tempme_peft_config(config))


def peft_config_from_dict(values: dict[str, Any]) -> PeftConfig | TunerConfig:
    """A peft config or a tuner config of this package from its `adapter_config.json`-style dict (`peft_type` first)."""
    peft_type = values.get("peft_type")
    if peft_type in tuner_config_classes():
        return tuner_config_from_dict(values)
    if peft_type not in PEFT_TYPE_TO_CONFIG_MAPPING:
        known = sorted([*tuner_config_classes(), *map(str, PEFT_TYPE_TO_CONFIG_MAPPING)])
        raise ValueError(f"Unknown peft_type {peft_type!r}. Known: {', '.join(known)}.")
    return PEFT_TYPE_TO_CONFIG_MAPPING[peft_type](**{key: value for key, value in values.items() if key != "peft_type"})


def parse_peft_option(option: str) -> PeftConfig | TunerConfig:
    """What `--peft` names: `lora`, `adapter`, `prompt` (the paper's settings), a JSON file or an inline JSON dict."""
    from .adapter import HoulsbyAdapterConfig
    from .lora import lora_config
    from .prompt import DeepPromptConfig

    named = {"lora": lora_config, "adapter": HoulsbyAdapterConfig, "prompt": DeepPromptConfig}
    if option.lower() in named:
        return named[option.lower()]()
    if option.lstrip().startswith("{"):
        values = json.loads(option)
    elif Path(option).is_file():
        values = json.loads(Path(option).read_text())
    else:
        raise ValueError(
            f"--peft {option!r} is none of lora, adapter, prompt, a JSON file or a JSON dict such as "
            '\'{"peft_type": "LORA", "r": 8, "use_dora": true}\'.'
        )
    return peft_config_from_dict(values)


def load_adapter(
    model: nn.Module, adapter: str | os.PathLike, is_trainable: bool = False, **hub_kwargs
) -> PeftModel | TempMeTunerModel:
    """Put a saved adapter (a peft method or this package's adapter or prompts; folder or Hub id) on `model`."""
    peft_type = read_adapter_config(adapter, **hub_kwargs).get("peft_type")
    if peft_type in tuner_config_classes():
        return TempMeTunerModel.from_pretrained(model, adapter, is_trainable=is_trainable, **hub_kwargs)
    return PeftModel.from_pretrained(model, str(adapter), is_trainable=is_trainable, **hub_kwargs)


def can_merge(model: nn.Module) -> bool:
    """Whether `model.merge_and_unload()` folds its method into the weights (peft's methods; not adapters, prompts)."""
    return isinstance(model, PeftModel)


__all__ = [
    "apply_peft",
    "load_adapter",
    "can_merge",
    "parse_peft_option",
    "peft_config_from_dict",
    "tempme_peft_config",
    "DEFAULT_TARGET_MODULES",
]
