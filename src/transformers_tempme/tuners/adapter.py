"""Bottleneck adapters (Houlsby et al., 2019) in every block of both towers: the paper's "Adapter" rows.

One adapter per block, on the MLP's output before the residual add: `y = mlp(x)`, then
`y + up(act(down(y)))` with `down: D -> bottleneck`, `up: bottleneck -> D` and `up` initialised at zero, so a
freshly adapted model computes exactly what its base does. Houlsby's original puts a second adapter after
attention; the paper's 0.26M parameters at ViT-B/32 count one per block:
12 x (2 x 768 x 8 + 8 + 768) + 12 x (2 x 512 x 8 + 8 + 512) = 261,312, and 277,440 with TempMe's clip position
embeddings (the paper's 0.28M).

In the vision tower the adapter runs on the tokens the MLP sees, after the block's merge, so it costs
2 x D x bottleneck multiply-adds per token and block (0.09 GFLOPs per 12-frame video at ViT-B/32:
`count_gflops(model)`). A non-linear bottleneck cannot be folded into the frozen weights.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from transformers.activations import ACT2FN

from .one_tuner import require_untuned
from .tuner_model import TempMeTunerModel, TunerConfig, TunerLayer, encoder_layers


@dataclasses.dataclass
class HoulsbyAdapterConfig(TunerConfig):
    """A bottleneck adapter after the MLP of every block.

    Args:
        bottleneck: width of the bottleneck (the paper: 8).
        activation: the non-linearity between the two projections, a name from `transformers.activations`.
    """

    peft_type = "HOULSBY_ADAPTER"
    cannot_merge_reason = (
        "the bottleneck is non-linear (down-projection, activation, up-projection), so it is no change of the "
        "frozen weights."
    )

    bottleneck: int = 8
    activation: str = "gelu"

    def __post_init__(self):
        super().__post_init__()
        if self.bottleneck < 1:
            raise ValueError(f"bottleneck must be a positive integer, got {self.bottleneck}.")
        if self.activation not in ACT2FN:
            raise ValueError(f"Unknown activation {self.activation!r}; choose one of transformers' ACT2FN names.")

    def inject(self, model: nn.Module) -> None:
        for tower in self.towers:
            for layer in encoder_layers(model, tower):
                hidden_size = layer.layer_norm2.normalized_shape[0]
                layer.mlp = AdaptedMLP(layer.mlp, HoulsbyAdapter(hidden_size, self.bottleneck, self.activation))


class HoulsbyAdapter(nn.Module):
    """`x + up(act(down(x)))` on `(..., hidden_size)`, starting as the identity (`up` is zero)."""

    def __init__(self, hidden_size: int, bottleneck: int, activation: str = "gelu"):
        super().__init__()
        self.down_proj = nn.Linear(hidden_size, bottleneck)
        self.activation_fn = ACT2FN[activation]
        self.up_proj = nn.Linear(bottleneck, hidden_size)
        nn.init.zeros_(self.up_proj.weight)
        nn.init.zeros_(self.up_proj.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.up_proj(self.activation_fn(self.down_proj(hidden_states)))


class AdaptedMLP(TunerLayer):
    """A block's MLP followed by its adapter."""

    def __init__(self, base_layer: nn.Module, adapter: HoulsbyAdapter):
        super().__init__(base_layer)
        self.adapter = adapter

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.base_layer(hidden_states)
        return self.adapter(hidden_states.to(self.adapter.up_proj.weight.dtype)).to(hidden_states.dtype)


def apply_adapter(
    model: nn.Module, bottleneck: int = 8, activation: str = "gelu", towers: tuple[str, ...] = ("vision", "text")
) -> TempMeTunerModel:
    """Add a Houlsby bottleneck adapter to every block of `towers` of a `TempMeCLIPModel`.

    Everything else is frozen except the clip position embeddings, which are trained and saved with the adapter.
    Returns a `TempMeTunerModel`: `print_trainable_parameters()`, `save_pretrained(folder)`, and
    `load_tempme(adapter=folder)` to load it back.
    """
    require_untuned(model, "apply_adapter")
    return TempMeTunerModel(model, HoulsbyAdapterConfig(bottleneck=bottleneck, activation=activation, towers=list(towers)))


__all__ = ["HoulsbyAdapterConfig", "HoulsbyAdapter", "AdaptedMLP", "apply_adapter"]
