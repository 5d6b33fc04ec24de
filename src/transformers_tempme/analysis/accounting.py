"""Exact token and FLOP accounting for a TempMe vision tower, derived from the merge plan.

FLOP convention (the paper's, fvcore's): one multiply-add is one FLOP. Counted: every matmul (linear layers,
q @ k^T, attention @ v, the similarity matrices of the matchings) and the patch convolution; LayerNorm at 5 FLOPs
per element. Element-wise work (softmax, activations, residual adds, gathers and scatters) counts zero, and LoRA
is taken as folded into the weights.

Tuners that cannot be folded add their own work: bottleneck adapters (`adapter_bottleneck`) 2 x D x bottleneck per
token and block after the block's merge; deep prompts (`num_prompts`) the keys and values of the prompts (once per
video: they do not depend on the input) and every token's attention to them. `prompts_as_tokens=True` counts
instead what running the prompts as tokens through whole blocks computes (queries, attention rows and MLP of
`num_prompts` tokens per frame, all of it discarded by deep prompting): the convention of the paper's Prompt row.
Pass a tuned model instead of a config to count what that model computes.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..configuration_tempme import TempMeConfig

LAYER_NORM_FLOPS_PER_ELEMENT = 5


def token_schedule(config: TempMeConfig, num_frames: int | None = None) -> tuple[tuple[int, int], ...]:
    """For each vision block, `(sequences_per_video, tokens_per_sequence)` at its output.

    The same form as `TempMeCLIPModel.encode_video(...).token_counts`, computed without running the model.
    """
    return tuple((step.clips, step.tokens_out) for step in config.merge_plan(num_frames))


@dataclass(frozen=True)
class FlopCount:
    """Vision-tower FLOPs (multiply-adds) per video, by kind.

    Attributes:
        matmul: linear layers, attention products and the patch convolution.
        matching: similarity matrices of the bipartite matchings.
        layer_norm: every LayerNorm, at 5 FLOPs per element.
    """

    matmul: int
    matching: int
    layer_norm: int

    @property
    def total(self) -> int:
        return self.matmul + self.matching + self.layer_norm

    @property
    def gflops(self) -> float:
        return self.total / 1e9


def _matching_flops(num_patches: int, metric_dim: int) -> int:
    """One bipartite matching over `num_patches` patch tokens: |A| x |B| dot products."""
    return ((num_patches + 1) // 2) * (num_patches // 2) * metric_dim


def count_flops(
    config: TempMeConfig | nn.Module,
    num_frames: int | None = None,
    *,
    num_prompts: int = 0,
    adapter_bottleneck: int = 0,
    prompts_as_tokens: bool = False,
) -> FlopCount:
    """FLOPs per video of the vision tower (embeddings to projected frame embeddings), by kind.

    Args:
        config: a `TempMeConfig`, or a model (plain, peft-wrapped or tuned), whose tuners are then counted too.
        num_frames: frames per video (default: the config's).
        num_prompts: deep prompts per block of the vision tower.
        adapter_bottleneck: bottleneck width of an adapter after the MLP of every vision block.
        prompts_as_tokens: count the prompts as tokens run through whole blocks (the paper's Prompt row).
    """
    if isinstance(config, nn.Module):
        settings = vision_tuner_settings(config)
        num_prompts = num_prompts or settings["num_prompts"]
        adapter_bottleneck = adapter_bottleneck or settings["adapter_bottleneck"]
        config = config.config
    vision = config.vision_config
    frames = config.num_frames if num_frames is None else num_frames
    dim, mlp_dim = vision.hidden_size, vision.intermediate_size
    head_dim = dim // vision.num_attention_heads
    tokens = config.tokens_per_frame

    patch_conv = (tokens - 1) * vision.patch_size**2 * vision.num_channels * dim
    matmul = frames * patch_conv
    layer_norm = frames * tokens * dim  # pre_layrnorm
    matching = 0
    for step in config.merge_plan(frames):
        n_attn, n_mlp, sequences = step.tokens_attention, step.tokens_out, step.clips
        # Deep prompts as this model runs them: extra keys and values, projected once per video.
        queries, keys, mlp_tokens = n_attn, n_attn + num_prompts, n_mlp
        if prompts_as_tokens:  # one set of prompt tokens per frame through the whole block
            prompt_tokens = step.num_cls * num_prompts
            queries, keys, mlp_tokens = n_attn + prompt_tokens, n_attn + prompt_tokens, n_mlp + prompt_tokens
        else:
            matmul += 2 * num_prompts * dim * dim
            layer_norm += num_prompts * dim
        attention = 4 * queries * dim * dim + 2 * queries * keys * dim  # q, k, v, out projections; qk^T and av
        mlp = 2 * mlp_tokens * dim * (mlp_dim + adapter_bottleneck)  # the adapter: down and up projections
        matmul += sequences * (attention + mlp)
        layer_norm += sequences * (queries + mlp_tokens) * dim
        if step.cross_merge > 0:
            matching += sequences * _matching_flops(n_attn + step.cross_merge - step.num_cls, dim)
        if step.intra_merge > 0:
            matching += sequences * _matching_flops(n_attn - step.num_cls, head_dim)
    # post_layernorm and the projection see one CLS token per frame.
    layer_norm += frames * dim
    matmul += frames * dim * config.projection_dim
    return FlopCount(matmul=matmul, matching=matching, layer_norm=LAYER_NORM_FLOPS_PER_ELEMENT * layer_norm)


def count_gflops(config: TempMeConfig | nn.Module, num_frames: int | None = None, **tuning) -> float:
    """Vision-tower GFLOPs per video in the paper's convention (1 multiply-add = 1 FLOP, LayerNorm 5/element).

    `config` may be a model, whose tuners are then counted; `tuning` takes `count_flops`'s keyword arguments.
    """
    return count_flops(config, num_frames, **tuning).gflops


def vision_tuner_settings(model: nn.Module) -> dict[str, int]:
    """`num_prompts` and `adapter_bottleneck` of the tuner on a model's vision tower (0 without one)."""
    tuner_config = getattr(model, "tuner_config", None)
    if tuner_config is None or "vision" not in tuner_config.towers:
        return {"num_prompts": 0, "adapter_bottleneck": 0}
    return {
        "num_prompts": getattr(tuner_config, "num_prompts", 0),
        "adapter_bottleneck": getattr(tuner_config, "bottleneck", 0),
    }


__all__ = ["token_schedule", "count_flops", "count_gflops", "vision_tuner_settings", "FlopCount"]
