"""transformers-tempme: TempMe (Temporal Token Merging) for text-video retrieval on Hugging Face transformers."""

from .accounting import FlopCount, count_flops, count_gflops, token_schedule
from .adapters import adapter_base_model, load_tempme, save_adapter
from .auto import REMOTE_CODE_FILES, register_auto_classes
from .configuration_tempme import PRESETS, TempMeConfig
from .lora import apply_lora, lora_config
from .modeling_tempme import (
    TempMeCLIPModel,
    TempMeOutput,
    TempMePreTrainedModel,
    TempMeVideoOutput,
    TempMeVisionOutput,
)

register_auto_classes()

__all__ = [
    "PRESETS",
    "TempMeConfig",
    "TempMeCLIPModel",
    "TempMePreTrainedModel",
    "TempMeOutput",
    "TempMeVideoOutput",
    "TempMeVisionOutput",
    "token_schedule",
    "count_flops",
    "count_gflops",
    "FlopCount",
    "apply_lora",
    "lora_config",
    "register_auto_classes",
    "save_adapter",
    "load_tempme",
    "adapter_base_model",
    "REMOTE_CODE_FILES",
]
