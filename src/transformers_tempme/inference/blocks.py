"""Attention for inference: one fused q/k/v projection, SDPA on strided views, the residual add in the output projection.

The training modules keep CLIP's separate `q_proj`, `k_proj` and `v_proj` (their names are what checkpoints and
LoRA address); here the three weights are stacked into one `(3 * hidden, hidden)` matrix, so each block runs one
matmul where the training path runs three, as OpenAI's and the authors' fused `in_proj` does. Queries, keys and
values are strided views of its output: nothing is copied before SDPA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .linear import InferenceLinear, InferenceMLP


class InferenceAttention(nn.Module):
    """Multi-head self-attention of a CLIP block, returning `residual + attention(x)` and optionally the mean key.

    Built from a module with `q_proj`, `k_proj`, `v_proj`, `out_proj` (`CLIPAttention` and its subclasses).
    """

    def __init__(self, attention: nn.Module, precision: str, reduce_range: bool = False):
        super().__init__()
        self.num_heads, self.head_dim, self.scale = attention.num_heads, attention.head_dim, attention.scale
        projections = (attention.q_proj, attention.k_proj, attention.v_proj)
        weight = torch.cat([projection.weight.detach() for projection in projections])
        bias = torch.cat([projection.bias.detach() for projection in projections])
        self.qkv_proj = InferenceLinear(weight, bias, precision, reduce_range=reduce_range)
        self.out_proj = InferenceLinear(
            attention.out_proj.weight.detach(), attention.out_proj.bias, precision, reduce_range=reduce_range
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        residual: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        return_key_metric: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            hidden_states: `(n, t, hidden)` normalised tokens.
            residual: `(n, t, hidden)` added to the attention output.
            attention_mask: additive float bias or boolean mask broadcastable to `(n, heads, t, t)`, or `None`.
            is_causal: causal attention (the text tower without padding).
            return_key_metric: also return the keys averaged over heads, `(n, t, head_dim)`.
        """
        n, t, hidden = hidden_states.shape
        queries, keys, values = self.qkv_proj(hidden_states).view(n, t, 3, self.num_heads, self.head_dim).unbind(2)
        key_metric = keys.mean(dim=2) if return_key_metric else None
        attended = F.scaled_dot_product_attention(
            queries.transpose(1, 2),
            keys.transpose(1, 2),
            values.transpose(1, 2),
            attn_mask=attention_mask,
            is_causal=is_causal,
            scale=self.scale,
        )
        return self.out_proj(attended.transpose(1, 2).reshape(n, t, hidden), residual=residual), key_metric


class InferenceEncoderBlock(nn.Module):
    """A CLIP encoder block split at the point where TempMe merges: `attend` then `feed_forward`.

    The layer norms are the original modules (shared, not copied); under `"bf16"` they take bfloat16 tokens and
    return bfloat16.
    """

    def __init__(self, layer: nn.Module, activation: str, precision: str, reduce_range: bool = False):
        super().__init__()
        self.layer_norm1, self.layer_norm2 = layer.layer_norm1, layer.layer_norm2
        self.self_attn = InferenceAttention(layer.self_attn, precision, reduce_range)
        self.mlp = InferenceMLP(layer.mlp, activation, precision, reduce_range)

    def attend(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        return_key_metric: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`x + attention(layer_norm1(x))` and the mean key (when asked)."""
        return self.self_attn(
            self.layer_norm1(hidden_states), hidden_states, attention_mask, is_causal, return_key_metric
        )

    def feed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`x + mlp(layer_norm2(x))`."""
        return self.mlp(self.layer_norm2(hidden_states), residual=hidden_states)


__all__ = ["InferenceAttention", "InferenceEncoderBlock"]
