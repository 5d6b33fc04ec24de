"""transformers-tempme: TempMe (Temporal Token Merging) for text-video retrieval on Hugging Face transformers."""

from .configuration_tempme import PRESETS, TempMeConfig

__all__ = ["PRESETS", "TempMeConfig"]
