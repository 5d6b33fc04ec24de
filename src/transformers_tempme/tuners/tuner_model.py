"""The tuners peft has no method for (Houlsby adapters, deep prompts), with the surface of a peft model.

peft's methods are a closed set (`peft.PeftType`), so a tuner of our own cannot be a `PeftModel`. It is the next
best thing: `TempMeTunerModel` wraps a `TempMeCLIPModel` the way `PeftModel` does and answers the same calls
(`print_trainable_parameters`, `get_nb_trainable_parameters`, `save_pretrained`, `from_pretrained`, `push_to_hub`,
`get_base_model`, `unload`, `merge_and_unload` where the method can merge), and saves the same adapter folder:
`adapter_config.json` (the tuner config, with `peft_type` and `base_model_name_or_path`) and
`adapter_model.safetensors` (the tuner's parameters and the trained clip position embeddings).

A tuner adds modules by wrapping existing ones (`TunerLayer`: the original module stays as `base_layer`, as in
peft), so `unload()` restores the original model exactly. The clip position embeddings (`modules_to_save`) are
trained in place, so they stay trained after `unload()`, as peft's `modules_to_save` do after merging.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from peft.utils import CONFIG_NAME as ADAPTER_CONFIG_NAME
from peft.utils import SAFETENSORS_WEIGHTS_NAME as ADAPTER_WEIGHTS_NAME
from torch import nn
from transformers.utils import PushToHubMixin, cached_file

# The module trained in full and saved with every tuner: TempMe's clip position embeddings.
CLIP_POSITION_EMBEDDING_MODULE = "clip_position_embedding"
TOWERS = ("vision", "text")


def encoder_layers(model: nn.Module, tower: str) -> nn.ModuleList:
    """The transformer blocks of one tower of a `TempMeCLIPModel`: `"vision"` or `"text"`."""
    if tower not in TOWERS:
        raise ValueError(f"Unknown tower {tower!r}: choose among {TOWERS}.")
    return (model.vision_model if tower == "vision" else model.text_model).encoder.layers


@dataclasses.dataclass
class TunerConfig:
    """Settings of a tuner, saved as `adapter_config.json`.

    Args:
        towers: the towers whose blocks get the tuner, `("vision", "text")` by default.
        modules_to_save: modules trained in full and saved with the tuner (the clip position embeddings).
        base_model_name_or_path: the model the tuner was trained on, recorded for loading it back.
    """

    peft_type: ClassVar[str]
    towers: list[str] = dataclasses.field(default_factory=lambda: list(TOWERS))
    modules_to_save: list[str] = dataclasses.field(default_factory=lambda: [CLIP_POSITION_EMBEDDING_MODULE])
    base_model_name_or_path: str | None = None

    # Why the tuner cannot be folded into the frozen weights (set by each tuner).
    cannot_merge_reason: ClassVar[str]

    def __post_init__(self):
        self.towers = list(self.towers)
        unknown = sorted(set(self.towers) - set(TOWERS))
        if unknown:
            raise ValueError(f"Unknown towers {unknown}: choose among {list(TOWERS)}.")

    def inject(self, model: nn.Module) -> None:
        """Wrap the modules of `model` that this tuner adapts (implemented by each tuner)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"peft_type": self.peft_type, **dataclasses.asdict(self)}

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        Path(save_directory).mkdir(parents=True, exist_ok=True)
        (Path(save_directory) / ADAPTER_CONFIG_NAME).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TunerConfig":
        values = dict(values)
        if values.pop("peft_type", cls.peft_type) != cls.peft_type:
            raise ValueError(f"This is not a {cls.peft_type} config: {values}")
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"Unknown {cls.peft_type} settings {unknown}; the settings are {sorted(fields)}.")
        return cls(**values)


class TunerLayer(nn.Module):
    """A module wrapped by a tuner: the original stays, unchanged, as `base_layer`.

    Attributes the wrapper does not have (`layer_idx`, `clip_position_embedding`, ...) are the base layer's, so that
    the model's own code reads its blocks the same way wrapped or not.
    """

    def __init__(self, base_layer: nn.Module):
        super().__init__()
        self.base_layer = base_layer

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)  # parameters, buffers and sub-modules of the wrapper itself
        except AttributeError:
            if name == "base_layer":
                raise
            return getattr(self.base_layer, name)

    def tuner_parameters(self) -> list[nn.Parameter]:
        """The parameters this wrapper adds (everything not in `base_layer`)."""
        base = {id(parameter) for parameter in self.base_layer.parameters()}
        return [parameter for parameter in self.parameters() if id(parameter) not in base]


class TempMeTunerModel(PushToHubMixin, nn.Module):
    """A `TempMeCLIPModel` with a tuner peft does not have, answering the calls of a `PeftModel`.

    Everything but the tuner's parameters and `tuner_config.modules_to_save` is frozen (`logit_scale` included, as in
    the paper). Calls the wrapper does not define (`encode_video`, `get_text_features`, `config`, ...) go to the
    base model.
    """

    active_adapter = "default"

    def __init__(self, model: nn.Module, tuner_config: TunerConfig):
        super().__init__()
        if isinstance(model, TempMeTunerModel):
            raise ValueError("This model already has a tuner: call unload() first, or tune the base model.")
        if not tuner_config.base_model_name_or_path:
            tuner_config.base_model_name_or_path = getattr(model, "name_or_path", None) or None
        self.base_model = model
        self.tuner_config = tuner_config
        model.requires_grad_(False)
        tuner_config.inject(model)
        for module in model.modules():
            if isinstance(module, TunerLayer):  # new parameters go where their block is; they stay in float32
                module.to(device=next(module.base_layer.parameters()).device)
        for parameter in self.tuner_parameters():
            parameter.requires_grad_(True)
        for parameter in self.modules_to_save_parameters().values():
            parameter.requires_grad_(True)

    # ------------------------------------------------------------------ peft's surface

    @property
    def peft_config(self) -> dict[str, TunerConfig]:
        return {self.active_adapter: self.tuner_config}

    def get_base_model(self) -> nn.Module:
        return self.base_model

    def forward(self, *args, **kwargs):
        return self.base_model(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":  # not set yet: avoid recursing
                raise
            return getattr(self.base_model, name)

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """`(trainable, all)` parameter counts, as peft's."""
        parameters = list(self.parameters())
        return sum(p.numel() for p in parameters if p.requires_grad), sum(p.numel() for p in parameters)

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")

    def merge_and_unload(self, **kwargs) -> nn.Module:
        """peft's call to fold a method into the weights: neither bottleneck adapters nor prompts can be, it says why."""
        raise NotImplementedError(
            f"{self.tuner_config.peft_type} cannot be merged into the weights: {self.tuner_config.cannot_merge_reason} "
            "Use the tuned model as it is (it costs the base model's GFLOPs plus the tuner's: count_gflops(model)), "
            "or unload() to drop the tuner."
        )

    def unload(self) -> nn.Module:
        """The base model without the tuner (the clip position embeddings keep their trained values)."""
        # Innermost wrappers first: a wrapper's path runs through the wrappers around it.
        for name, module in reversed(list(self.base_model.named_modules())):
            if isinstance(module, TunerLayer):
                self.base_model.set_submodule(name, module.base_layer)
        return self.base_model

    # ------------------------------------------------------------------ what is trained and saved

    def tuner_parameters(self) -> list[nn.Parameter]:
        return [p for module in self.base_model.modules() if isinstance(module, TunerLayer) for p in module.tuner_parameters()]

    def modules_to_save_parameters(self) -> dict[str, nn.Parameter]:
        """Parameters of the modules named in `modules_to_save`, by their name in the base model."""
        names = tuple(self.tuner_config.modules_to_save or ())
        return {
            f"{module_name}.{name}": parameter
            for module_name, module in self.base_model.named_modules()
            if module_name.split(".")[-1] in names
            for name, parameter in module.named_parameters()
        }

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """What the adapter file holds: the tuner's parameters and the `modules_to_save`, named as in the base model."""
        tuner = {id(parameter) for parameter in self.tuner_parameters()}
        state = {name: p for name, p in self.base_model.named_parameters() if id(p) in tuner}
        state.update(self.modules_to_save_parameters())
        return {name: tensor.detach().contiguous() for name, tensor in state.items()}

    # ------------------------------------------------------------------ saving and loading

    def save_pretrained(self, save_directory: str | os.PathLike, is_main_process: bool = True, **kwargs) -> None:
        """Write `adapter_config.json` and `adapter_model.safetensors` to `save_directory`."""
        if not is_main_process:
            return
        self.tuner_config.save_pretrained(save_directory)
        save_file(self.adapter_state_dict(), str(Path(save_directory) / ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(
        cls, model: nn.Module, adapter: str | os.PathLike, is_trainable: bool = False, **hub_kwargs
    ) -> "TempMeTunerModel":
        """Put a saved tuner (folder or Hub id) on `model`; frozen unless `is_trainable`."""
        config = tuner_config_from_dict(read_adapter_config(adapter, **hub_kwargs))
        tuned = cls(model, config)
        weights = load_file(cached_file(str(adapter), ADAPTER_WEIGHTS_NAME, **hub_kwargs))
        expected = tuned.adapter_state_dict()
        missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"The adapter at {adapter} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}"
                f"{' ...' if len(missing) > 5 or len(unexpected) > 5 else ''}. Load it on the base model it was trained "
                f"on ({config.base_model_name_or_path})."
            )
        parameters = dict(tuned.base_model.named_parameters())
        with torch.no_grad():
            for name, tensor in weights.items():
                parameters[name].copy_(tensor)
        tuned.requires_grad_(False)
        if is_trainable:
            for parameter in [*tuned.tuner_parameters(), *tuned.modules_to_save_parameters().values()]:
                parameter.requires_grad_(True)
        return tuned


def read_adapter_config(adapter: str | os.PathLike, **hub_kwargs) -> dict[str, Any]:
    """The `adapter_config.json` of an adapter folder or Hub repository, as a dict."""
    return json.loads(Path(cached_file(str(adapter), ADAPTER_CONFIG_NAME, **hub_kwargs)).read_text())


def tuner_config_classes() -> dict[str, type[TunerConfig]]:
    """The tuners of this package, by `peft_type`."""
    from .adapter import HoulsbyAdapterConfig
    from .prompt import DeepPromptConfig

    return {config.peft_type: config for config in (HoulsbyAdapterConfig, DeepPromptConfig)}


def tuner_config_from_dict(values: dict[str, Any]) -> TunerConfig:
    peft_type = values.get("peft_type")
    classes = tuner_config_classes()
    if peft_type not in classes:
        raise ValueError(f"Unknown tuner {peft_type!r}: this package's tuners are {sorted(classes)}.")
    return classes[peft_type].from_dict(values)


__all__ = [
    "TempMeTunerModel",
    "TunerConfig",
    "TunerLayer",
    "encoder_layers",
    "read_adapter_config",
    "tuner_config_from_dict",
    "tuner_config_classes",
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_WEIGHTS_NAME",
    "CLIP_POSITION_EMBEDDING_MODULE",
]
