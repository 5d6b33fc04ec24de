"""Registration of TempMe with transformers' Auto classes, for local use and for remote code.

Two registrations, for the two ways a saved TempMe folder is loaded:

- With this package importable, `AutoConfig` / `AutoModel` know the `"tempme"` model type directly, so
  `AutoModel.from_pretrained(folder)` needs no `trust_remote_code`.
- `register_for_auto_class` makes `save_pretrained` write an `auto_map` into `config.json` and copy
  `configuration_tempme.py`, `modeling_tempme.py` and, through their relative imports, `merging.py` next to the
  weights. A user who has only `transformers` then loads the folder (or its Hub repo) with
  `AutoModel.from_pretrained(folder, trust_remote_code=True)`.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel

from ..configuration_tempme import TempMeConfig
from ..modeling_tempme import TempMeCLIPModel

# The files `save_pretrained` copies next to the weights (the model's module and its relative imports).
REMOTE_CODE_FILES: tuple[str, ...] = ("configuration_tempme.py", "modeling_tempme.py", "merging.py")


def register_auto_classes() -> None:
    """Register TempMe with `AutoConfig` / `AutoModel` and mark it for remote-code saving. Safe to call twice."""
    AutoConfig.register(TempMeConfig.model_type, TempMeConfig, exist_ok=True)
    AutoModel.register(TempMeConfig, TempMeCLIPModel, exist_ok=True)
    TempMeConfig.register_for_auto_class("AutoConfig")
    TempMeCLIPModel.register_for_auto_class("AutoModel")


__all__ = ["register_auto_classes", "REMOTE_CODE_FILES"]
