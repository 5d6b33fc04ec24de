"""Exact token and FLOP accounting for a TempMe vision tower, derived from the merge plan.

FLOP convention (the paper's, fvcore's): one multiply-add is one FLOP. Counted: every matmul (linear layers,
q @ k^T, attention @ v, the similarity matrices of the matchings) and the patch convolution; LayerNorm at 5 FLOPs
per element. Element-wise work (softmax, activations, residual adds, gathers and scatters) counts zero, and LoRA
is taken as folded into the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def count_flops(config: TempMeConfig, num_frames: int | None = None) -> FlopCount:
    """FLOPs per video of the vision tower (embeddings to projected frame embeddings), by kind."""
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
        attention = 4 * n_attn * dim * dim + 2 * n_attn * n_attn * dim  # q, k, v, out projections; qk^T and av
        mlp = 2 * n_mlp * dim * mlp_dim
        matmul += sequences * (attention + mlp)
        layer_norm += sequences * (n_attn + n_mlp) * dim
        if step.cross_merge > 0:
            matching += sequences * _matching_flops(n_attn + step.cross_merge - step.num_cls, dim)
        if step.intra_merge > 0:
            matching += sequences * _matching_flops(n_attn - step.num_cls, head_dim)
    # post_layernorm and the projection see one CLS token per frame.
    layer_norm += frames * dim
    matmul += frames * dim * config.projection_dim
    return FlopCount(matmul=matmul, matching=matching, layer_norm=LAYER_NORM_FLOPS_PER_ELEMENT * layer_norm)


def count_gflops(config: TempMeConfig, num_frames: int | None = None) -> float:
    """Vision-tower GFLOPs per video in the paper's convention (1 multiply-add = 1 FLOP, LayerNorm 5/element)."""
    return count_flops(config, num_frames).gflops


__all__ = ["token_schedule", "count_flops", "count_gflops", "FlopCount"]
