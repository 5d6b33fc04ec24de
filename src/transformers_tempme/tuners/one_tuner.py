"""One tuner per model: `apply_lora`, `apply_peft`, `apply_adapter` and `apply_prompt` refuse a model that has one.

The methods are alternatives. Stacked, the second freezes everything it did not add, the first tuner included
(`apply_adapter` on a LoRA model would train the adapter alone), and peft and this package's tuners wrap the model in
ways that do not nest.
"""

from __future__ import annotations

from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from .tuner_model import TempMeTunerModel, TunerLayer


def existing_tuner(model: nn.Module) -> str | None:
    """The tuner `model` already has, in words, or `None` when it has none."""
    if isinstance(model, PeftModel):
        peft_type = model.peft_config[model.active_adapter].peft_type
        return f"peft's {getattr(peft_type, 'value', peft_type)} (a PeftModel)"
    if isinstance(model, TempMeTunerModel):
        return f"{model.tuner_config.peft_type} (a TempMeTunerModel)"
    for name, module in model.named_modules():
        if isinstance(module, (BaseTunerLayer, TunerLayer)):
            return f"tuner layers ({type(module).__name__} at {name})"
    return None


def require_untuned(model: nn.Module, method: str) -> None:
    """Raise a `ValueError` naming the tuner when `model` already has one; `method` names the caller."""
    tuner = existing_tuner(model)
    if tuner is not None:
        raise ValueError(
            f"{method}: this model already has a tuner, {tuner}. The tuning methods are alternatives, one per "
            f"model (a second one would freeze the first): call {method} on the base model, or first fold a peft "
            "method into the weights with model.merge_and_unload(), or remove adapters or prompts with "
            "model.unload()."
        )


__all__ = ["existing_tuner", "require_untuned"]
