"""The tuning methods are alternatives: each apply_* refuses a model that already has a tuner, and changes nothing."""

from __future__ import annotations

import pytest
from conftest import tiny_config
from peft import IA3Config

from transformers_tempme import TempMeCLIPModel, apply_adapter, apply_lora, apply_peft, apply_prompt

METHODS = {
    "apply_lora": apply_lora,
    "apply_adapter": apply_adapter,
    "apply_prompt": apply_prompt,
    "apply_peft": lambda model: apply_peft(model, IA3Config()),
}
# What each first tuner is called in the error.
FOUND = {
    "apply_lora": r"peft's LORA \(a PeftModel\)",
    "apply_adapter": r"HOULSBY_ADAPTER \(a TempMeTunerModel\)",
    "apply_prompt": r"DEEP_PROMPT \(a TempMeTunerModel\)",
    "apply_peft": r"peft's IA3 \(a PeftModel\)",
}


def trainable(model) -> list[str]:
    return sorted(name for name, parameter in model.named_parameters() if parameter.requires_grad)


@pytest.mark.parametrize("second", METHODS)
@pytest.mark.parametrize("first", METHODS)
def test_a_second_tuner_is_refused_and_leaves_the_first_as_it_was(first, second):
    tuned = METHODS[first](TempMeCLIPModel(tiny_config()))
    before = trainable(tuned)
    with pytest.raises(ValueError, match=rf"^{second}: this model already has a tuner, {FOUND[first]}\. The tuning "
                                         r"methods are alternatives.*merge_and_unload\(\).*unload\(\)"):
        METHODS[second](tuned)
    assert trainable(tuned) == before


@pytest.mark.parametrize("first", ["apply_lora", "apply_adapter"])
def test_the_model_inside_a_tuned_model_is_refused_too(first):
    inner = METHODS[first](TempMeCLIPModel(tiny_config())).get_base_model()
    with pytest.raises(ValueError, match=r"apply_prompt: this model already has a tuner, tuner layers \("):
        apply_prompt(inner)


def test_after_merging_or_unloading_another_method_applies():
    model = TempMeCLIPModel(tiny_config())
    alone = apply_adapter(TempMeCLIPModel(tiny_config())).get_nb_trainable_parameters()[0]
    merged = apply_lora(model).merge_and_unload()
    assert apply_adapter(merged).get_nb_trainable_parameters()[0] == alone
    assert apply_prompt(apply_adapter(TempMeCLIPModel(tiny_config())).unload()).get_nb_trainable_parameters()[0] > 0
