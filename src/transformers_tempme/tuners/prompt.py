"""Deep prompt tuning (VPT-deep / MaPLe style) in both towers: the paper's "Prompt" rows.

Every block of each tower gets its own `num_prompts` learned tokens, inserted into the block's input and dropped
from its output (replaced by the next block's). The prompts' own outputs are thrown away, so a prompt acts on the
real tokens only through attention, as extra keys and values:

- vision tower: the prompts are not put into the token sequence at all. Two wrappers are swapped in per block:
  `PromptedVisionLayer` (around the `TempMeVisionLayer`, holding the block's prompts) hands the layer-normed
  prompts to the block's attention through the keyword arguments the block passes on, and `PromptedVisionAttention`
  (around its `self_attn`) appends their keys and values, one set per frame, so they are never merged by ImgMe or
  ClipMe and change no token count. A clip of `c` frames attends to `c` copies of the prompts, which is one copy
  with log(c) added to their attention logits. Only the keys and values are computed (once per forward, as the
  prompts do not depend on the input); the prompts' queries, attention rows and MLP, whose results deep prompting
  discards, are not.
- text tower (HF's `CLIPTextModel`, unchanged): the prompts are prepended to each block's input, where the causal
  mask lets every word see them, and removed from its output. Positions and the end-of-text pooling stay as they
  are; the per-block hidden states of `output_hidden_states=True` are the blocks' inputs, prompts first.

Parameters: `num_prompts x hidden_size` per block. With 5 prompts at ViT-B/32 that is
12 x 5 x 768 + 12 x 5 x 512 = 76,800 (the paper's 0.08M), and 92,928 with TempMe's clip position embeddings (0.09M).
The paper's 58.2 GFLOPs for Prompt at ViT-B/32 without merging is 5 prompts per frame run through whole blocks
(`count_gflops(config, num_prompts=5, prompts_as_tokens=True)`); this implementation computes less for the same
outputs (`count_gflops(model)`).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from .one_tuner import require_untuned
from .tuner_model import TempMeTunerModel, TunerConfig, TunerLayer, encoder_layers


@dataclasses.dataclass
class DeepPromptConfig(TunerConfig):
    """Learned prompt tokens in every block.

    Args:
        num_prompts: prompts per block (per frame in the vision tower). 5 gives the paper's parameter count and cost.
        init_std: standard deviation of the normal initialisation of the prompts.
    """

    peft_type = "DEEP_PROMPT"
    cannot_merge_reason = "prompts are extra keys and values in every attention, not a change of any weight."

    num_prompts: int = 5
    init_std: float = 0.02

    def __post_init__(self):
        super().__post_init__()
        if self.num_prompts < 1:
            raise ValueError(f"num_prompts must be a positive integer, got {self.num_prompts}.")

    def inject(self, model: nn.Module) -> None:
        for tower in self.towers:
            layers = encoder_layers(model, tower)
            for index, layer in enumerate(layers):
                hidden_size = layer.layer_norm1.normalized_shape[0]
                if tower == "vision":
                    layer.self_attn = PromptedVisionAttention(layer.self_attn)
                    layers[index] = PromptedVisionLayer(layer, self.num_prompts, hidden_size, self.init_std)
                else:
                    layers[index] = PromptedTextLayer(layer, self.num_prompts, hidden_size, self.init_std)


class PromptedLayer(TunerLayer):
    """A block with its own prompts, `(num_prompts, hidden_size)`."""

    def __init__(self, base_layer: nn.Module, num_prompts: int, hidden_size: int, init_std: float):
        super().__init__(base_layer)
        self.prompt = nn.Parameter(torch.randn(num_prompts, hidden_size) * init_std)


class PromptedVisionLayer(PromptedLayer):
    """A `TempMeVisionLayer` whose attention also sees this block's prompts (one set per frame).

    The prompts are normalised by the block's `layer_norm1`, as the block's own tokens are, and go to its attention
    (a `PromptedVisionAttention`) with the number of frames each sequence holds, `step.num_cls`.
    """

    def forward(self, hidden_states: torch.Tensor, sizes, step, *args, **kwargs):
        prompt_states = self.base_layer.layer_norm1(self.prompt.to(hidden_states.dtype))
        return self.base_layer(
            hidden_states, sizes, step, *args, prompt_states=prompt_states, prompt_copies=step.num_cls, **kwargs
        )


class PromptedVisionAttention(TunerLayer):
    """A `TempMeVisionAttention` that appends deep prompts to its keys and values (see the module docstring).

    It has no parameters of its own: the prompts are the block's (`PromptedVisionLayer`) and are projected by the
    attention's own `k_proj` and `v_proj`.
    """

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        return_key_metric: bool = False,
        prompt_states: torch.Tensor | None = None,
        prompt_copies: int = 1,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`TempMeVisionAttention.forward`, the tokens also attending to `prompt_states` `(p, hidden_size)` (already
        layer-normed), of which each sequence holds `prompt_copies` copies. The key metric holds the tokens' keys only."""
        attention = self.base_layer
        if prompt_states is None:
            return attention(hidden_states, attention_mask, return_key_metric, **kwargs)
        queries, keys, values = attention.project(hidden_states)
        key_metric = keys.mean(dim=2) if return_key_metric else None
        keys, values, attention_mask = self.append_prompts(keys, values, attention_mask, prompt_states, prompt_copies)
        return attention.out_proj(attention.apply_attention(queries, keys, values, attention_mask, **kwargs)), key_metric

    def append_prompts(
        self,
        keys: torch.Tensor,
        values: torch.Tensor,
        attention_mask: torch.Tensor | None,
        prompt_states: torch.Tensor,
        prompt_copies: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Append the prompts' keys and values `(n, p, heads, head_dim)` to a sequence's `(n, t, heads, head_dim)`.

        The prompts are the same for every sequence, so they are projected once. `c` identical copies of a key get
        `c` times its attention weight: one copy with log(c) added to its logits is the same attention. The additive
        mask `(n, 1, 1, t)` grows by those `p` logits.
        """
        attention = self.base_layer
        n, p = keys.shape[0], prompt_states.shape[0]
        prompt_shape = (1, p, attention.num_heads, attention.head_dim)
        prompt_keys = attention.k_proj(prompt_states).view(prompt_shape).expand(n, -1, -1, -1)
        prompt_values = attention.v_proj(prompt_states).view(prompt_shape).expand(n, -1, -1, -1)
        if attention_mask is not None or prompt_copies > 1:
            token_bias = attention_mask if attention_mask is not None else keys.new_zeros(n, 1, 1, keys.shape[1])
            prompt_bias = token_bias.new_full((n, 1, 1, p), math.log(prompt_copies))
            attention_mask = torch.cat([token_bias, prompt_bias], dim=-1)
        return torch.cat([keys, prompt_keys], dim=1), torch.cat([values, prompt_values], dim=1), attention_mask


class PromptedTextLayer(PromptedLayer):
    """A `CLIPEncoderLayer` run on `[prompts, tokens]`; only the tokens' outputs are kept."""

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args, **kwargs):
        batch, num_prompts = hidden_states.shape[0], self.prompt.shape[0]
        prompts = self.prompt.to(hidden_states.dtype).expand(batch, -1, -1)
        hidden_states = torch.cat([prompts, hidden_states], dim=1)
        outputs = self.base_layer(hidden_states, prompts_visible_mask(attention_mask, num_prompts), *args, **kwargs)
        return outputs[:, num_prompts:]


def prompts_visible_mask(attention_mask: torch.Tensor | None, num_prompts: int) -> torch.Tensor | None:
    """Extend a `(batch, 1, tokens, tokens)` attention mask (boolean, or additive float) to prompts put first.

    Every token may attend to the prompts; the prompts' own rows do not matter (their outputs are dropped) and see
    everything. `None` stays `None`: a causal mask over `[prompts, tokens]` already lets every token see the prompts.
    """
    if attention_mask is None:
        return None
    if attention_mask.ndim != 4:
        raise ValueError(
            f"Text prompts need a 4-D attention mask (batch, heads, queries, keys), got shape {tuple(attention_mask.shape)}"
            ": use attn_implementation='sdpa' or 'eager' for the text tower."
        )
    batch, heads, queries, keys = attention_mask.shape
    visible = True if attention_mask.dtype == torch.bool else 0.0
    prompt_columns = attention_mask.new_full((batch, heads, queries, num_prompts), visible)
    prompt_rows = attention_mask.new_full((batch, heads, num_prompts, num_prompts + keys), visible)
    return torch.cat([prompt_rows, torch.cat([prompt_columns, attention_mask], dim=-1)], dim=-2)


def apply_prompt(
    model: nn.Module, num_prompts: int = 5, towers: tuple[str, ...] = ("vision", "text"), init_std: float = 0.02
) -> TempMeTunerModel:
    """Add `num_prompts` deep prompts to every block of `towers` of a `TempMeCLIPModel`.

    Everything else is frozen except the clip position embeddings, which are trained and saved with the prompts.
    Returns a `TempMeTunerModel`: `print_trainable_parameters()`, `save_pretrained(folder)`, and
    `load_tempme(adapter=folder)` to load it back.
    """
    require_untuned(model, "apply_prompt")
    return TempMeTunerModel(model, DeepPromptConfig(num_prompts=num_prompts, towers=list(towers), init_std=init_std))


__all__ = [
    "DeepPromptConfig",
    "PromptedVisionAttention",
    "PromptedVisionLayer",
    "PromptedTextLayer",
    "prompts_visible_mask",
    "apply_prompt",
]
