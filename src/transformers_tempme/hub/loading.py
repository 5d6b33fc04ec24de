"""TempMe LoRA adapters as peft adapters: save them with the name of their base model, load base + adapter at once.

The same holds for every peft method (`apply_peft`) and for this package's bottleneck adapters and deep prompts
(`apply_adapter`, `apply_prompt`), which save the same two files; `load_tempme` loads each kind by the `peft_type`
of its `adapter_config.json`.

An adapter folder is what `PeftModel.save_pretrained` writes: `adapter_config.json` (LoRA rank, target modules,
`modules_to_save=["clip_position_embedding"]` and `base_model_name_or_path`) and `adapter_model.safetensors`
(the LoRA matrices and the trained clip position embeddings). `PeftModel.from_pretrained(base, folder)` restores
the trained model on any copy of the base; `load_tempme` does both steps in one call.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from peft import PeftModel
from transformers import PreTrainedModel

from ..configuration_tempme import TempMeConfig
from ..tuners.lora import CLIP_POSITION_EMBEDDING_MODULE
from ..tuners.peft_methods import load_adapter
from ..tuners.tuner_model import TempMeTunerModel, read_adapter_config
from ..modeling_tempme import TempMeCLIPModel

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"


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


def adapter_base_model(adapter_dir: str | os.PathLike) -> str:
    """The `base_model_name_or_path` an adapter folder names."""
    config_path = Path(adapter_dir) / ADAPTER_CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{adapter_dir} is not a peft adapter folder: it has no {ADAPTER_CONFIG_NAME}.")
    base = json.loads(config_path.read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{config_path} names no base model (base_model_name_or_path); pass the base model yourself.")
    return base


def load_tempme(
    model_or_path: PreTrainedModel | str | os.PathLike | None = None,
    adapter: str | os.PathLike | None = None,
    merge: bool = False,
    schedule: TempMeConfig | str | None = None,
    **from_pretrained_kwargs,
) -> TempMeCLIPModel | PeftModel | TempMeTunerModel:
    """Load a TempMe model and, optionally, a peft adapter on top of it, in one call.

    Args:
        model_or_path: the base model, a folder or a Hub id. Defaults to the base the adapter names.
        adapter: a peft adapter folder or Hub id (see `save_adapter`).
        merge: fold the LoRA weights and clip position embeddings into the base and return a plain
            `TempMeCLIPModel` (no peft wrapper, no LoRA overhead at inference). Bottleneck adapters and deep
            prompts cannot be folded (an error says so).
        schedule: when the base is a plain CLIP checkpoint, the TempMe preset name or config to build on it
            (`TempMeCLIPModel.from_clip`); leave out for TempMe checkpoints.
        from_pretrained_kwargs: passed to `from_pretrained` (e.g. `revision`, `dtype`).

    Returns:
        The model in eval mode: a `PeftModel` when an adapter is given and `merge=False`, else a `TempMeCLIPModel`.
    """
    if model_or_path is None:
        if adapter is None:
            raise ValueError("Give a base model, an adapter, or both.")
        model_or_path = _base_of_adapter(adapter)
    if isinstance(model_or_path, PreTrainedModel):
        model = model_or_path
    elif schedule is not None:
        model = TempMeCLIPModel.from_clip(str(model_or_path), schedule, **from_pretrained_kwargs)
    else:
        model = TempMeCLIPModel.from_pretrained(model_or_path, **from_pretrained_kwargs)
    if adapter is not None:
        model = load_adapter(model, adapter)
        if merge:  # bottleneck adapters and deep prompts cannot be folded: their merge_and_unload says why
            model = model.merge_and_unload()
    return model.eval()


def _base_of_adapter(adapter: str | os.PathLike) -> str:
    if Path(adapter).is_dir():
        return adapter_base_model(adapter)
    base = read_adapter_config(adapter).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"The adapter {adapter} names no base model (base_model_name_or_path); pass it yourself.")
    return base


__all__ = [
    "save_adapter",
    "load_tempme",
    "adapter_base_model",
    "is_adapter_folder",
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_WEIGHTS_NAME",
]
