"""LoRA for TempMe through peft: both towers' attention projections plus the clip position embeddings.

The paper adapts the fused qkv projection of every attention layer with one shared down-projection A (8 x D) and
one up-projection B (3D x 8), with no alpha/r scaling. HF CLIP has separate q/k/v projections, so peft gives
each of them its own A and B. The defaults keep the paper's placement (Q, K and V of all 24 attention layers:
keys matter twice in TempMe, as attention keys and as the merge metric), rank 8 and a scaling of 1
(`lora_alpha = r`), at 737,280 LoRA parameters instead of 491,520. `target_modules=("q_proj", "v_proj")` has the
paper's exact count instead (491,520), with K frozen.
"""

from __future__ import annotations

from collections.abc import Sequence

from peft import LoraConfig, PeftModel
from torch import nn

from .one_tuner import require_untuned
from .peft_methods import DEFAULT_TARGET_MODULES, apply_peft
from .tuner_model import CLIP_POSITION_EMBEDDING_MODULE


def lora_config(
    r: int = 8,
    target_modules: Sequence[str] = DEFAULT_TARGET_MODULES,
    lora_alpha: int | None = None,
    lora_dropout: float = 0.0,
) -> LoraConfig:
    """The peft `LoraConfig` TempMe trains with: clip position embeddings trained in full and saved with it."""
    return LoraConfig(
        r=r,
        lora_alpha=r if lora_alpha is None else lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=list(target_modules),
        modules_to_save=[CLIP_POSITION_EMBEDDING_MODULE],
    )


def apply_lora(
    model: nn.Module,
    r: int = 8,
    target_modules: Sequence[str] = DEFAULT_TARGET_MODULES,
    lora_alpha: int | None = None,
    lora_dropout: float = 0.0,
) -> PeftModel:
    """Wrap a `TempMeCLIPModel` in a peft model: LoRA on `target_modules` of both towers, everything else
    frozen except the clip position embeddings (and `logit_scale` stays frozen, as in the paper).

    Call `print_trainable_parameters()` or `get_nb_trainable_parameters()` on the result for the count, and
    `merge_and_unload()` to fold the adapters back into a plain `TempMeCLIPModel`.
    """
    require_untuned(model, "apply_lora")
    return apply_peft(model, lora_config(r, target_modules, lora_alpha, lora_dropout))


__all__ = ["apply_lora", "lora_config", "DEFAULT_TARGET_MODULES", "CLIP_POSITION_EMBEDDING_MODULE"]
