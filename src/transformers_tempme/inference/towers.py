"""The vision and text towers for inference, built from a trained `TempMeCLIPModel`'s towers.

Both follow the training towers step for step (same merge plan, same merging functions, same pooling) and differ
only in how each block computes: `InferenceEncoderBlock` (fused q/k/v, oneDNN linears with the activation and the
residual add fused, or int8). Embeddings, layer norms and clip position embeddings are the original modules.

Under `"bf16"` the tokens are bfloat16 from the first block to the last; the patch embedding before and the final
layer norm after run in float32, so the per-frame and text embeddings come out in float32 at every precision.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..merging import bipartite_soft_matching, merge_weighted_average, proportional_attention_bias
from ..modeling_tempme import TempMeVisionOutput
from .blocks import InferenceEncoderBlock
from .linear import InferenceLinear, compute_dtype

# Parameters of a vision block that the inference block implements; anything else (prompt tokens, adapters) would
# be silently ignored, so a model that has more is refused.
VISION_BLOCK_PARAMETERS = frozenset(
    [f"self_attn.{p}_proj.{kind}" for p in ("q", "k", "v", "out") for kind in ("weight", "bias")]
    + [f"{m}.{kind}" for m in ("layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2") for kind in ("weight", "bias")]
    + ["clip_position_embedding.weight"]
)


def check_supported_block(layer: nn.Module, name: str) -> None:
    extra = sorted(set(dict(layer.named_parameters())) - VISION_BLOCK_PARAMETERS)
    if extra:
        raise NotImplementedError(
            f"{name} has parameters the inference path does not implement: {', '.join(extra)}. If they are LoRA "
            "adapters, merge them first (`model = model.merge_and_unload()`); otherwise encode with the model itself."
        )


class InferencePatchEmbeddings(nn.Module):
    """`CLIPVisionEmbeddings` with the patch convolution computed as a matmul over the flattened patches.

    The patches do not overlap (stride = kernel), so the convolution is a linear layer on each patch's pixels, laid
    out `(channels, row, column)` like the kernel. oneDNN runs that matmul faster than its direct convolution on
    these shapes (`python tools/kernel_microbench.py` times both).
    """

    def __init__(self, embeddings: nn.Module, precision: str):
        super().__init__()
        self.image_size, self.patch_size = embeddings.image_size, embeddings.patch_size
        self.class_embedding, self.position_embedding = embeddings.class_embedding, embeddings.position_embedding
        weight = embeddings.patch_embedding.weight.detach()
        self.precision = precision
        self.projection = InferenceLinear(weight.flatten(1), embeddings.patch_embedding.bias, precision)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(images, 3, H, W)` -> float32 `(images, 1 + patches, hidden)`: CLS, then patches row by row."""
        images, channels, height, width = pixel_values.shape
        if height != self.image_size or width != self.image_size:
            raise ValueError(f"Input image size ({height}*{width}) doesn't match model ({self.image_size}*{self.image_size}).")
        rows, size = height // self.patch_size, self.patch_size
        patches = pixel_values.to(compute_dtype(self.precision)).view(images, channels, rows, size, rows, size)
        patches = patches.permute(0, 2, 4, 1, 3, 5).reshape(images, rows * rows, channels * size * size)
        patch_embeds = self.projection(patches).float()
        class_embeds = self.class_embedding.float().expand(images, 1, -1)
        return torch.cat([class_embeds, patch_embeds], dim=1) + self.position_embedding.weight.float()


class InferenceVisionBlock(nn.Module):
    """One TempMe vision block (ImgMe, ClipMe or intra-clip merging, as its `MergeStep` says) for inference."""

    def __init__(self, layer: nn.Module, activation: str, precision: str, reduce_range: bool = False):
        super().__init__()
        self.block = InferenceEncoderBlock(layer, activation, precision, reduce_range)
        self.proportional_attention = layer.proportional_attention
        # The original block's cross-clip merge (join, clip position embeddings, matching) runs as it is; its clip
        # position embeddings are registered here too, so that they follow the inference model's `.to()`.
        self.clip_position_embedding = layer.clip_position_embedding
        self.cross_clip_merge = layer.cross_clip_merge if layer.is_clip_merge_block else None

    def forward(self, hidden_states: torch.Tensor, sizes: torch.Tensor | None, step) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(batch * clips_in, step.tokens_in, hidden)` -> `(batch * step.clips, step.tokens_out, hidden)` and sizes."""
        if self.cross_clip_merge is not None:
            hidden_states, sizes, _ = self.cross_clip_merge(hidden_states, sizes, None, step)
        bias = proportional_attention_bias(sizes, hidden_states.dtype) if self.proportional_attention else None
        hidden_states, key_metric = self.block.attend(hidden_states, bias, return_key_metric=step.intra_merge > 0)
        if step.intra_merge > 0:
            matching = bipartite_soft_matching(key_metric, step.intra_merge, step.num_cls)
            hidden_states, sizes = merge_weighted_average(hidden_states, sizes, matching)
        return self.block.feed_forward(hidden_states), sizes


class InferenceVisionTransformer(nn.Module):
    """`TempMeVisionTransformer` for inference: frames in, one CLS token per frame out (no merge-source tracking)."""

    def __init__(self, vision_model: nn.Module, precision: str, reduce_range: bool = False):
        super().__init__()
        self.config = vision_model.config
        self.dtype = compute_dtype(precision)
        self.embeddings = InferencePatchEmbeddings(vision_model.embeddings, precision)
        self.pre_layrnorm = vision_model.pre_layrnorm
        self.post_layernorm = vision_model.post_layernorm
        self.check_frame_count = vision_model.check_frame_count
        activation = self.config.vision_config.hidden_act
        blocks = []
        for index, layer in enumerate(vision_model.encoder.layers):
            check_supported_block(layer, f"vision block {index}")
            blocks.append(InferenceVisionBlock(layer, activation, precision, reduce_range))
        self.blocks = nn.ModuleList(blocks)

    def forward(
        self, pixel_values: torch.Tensor, output_merge_sources: bool = False, clip_merging: bool = True
    ) -> TempMeVisionOutput:
        """`pixel_values` `(batch, frames, 3, H, W)` -> `TempMeVisionOutput` (without `merge_sources`).

        `clip_merging=False` runs every frame on its own, as `TempMeVisionTransformer` does for images.
        """
        if output_merge_sources:
            raise ValueError(
                "The inference model does not track merge sources; call encode_video(..., output_merge_sources=True) "
                "on the original model (for plots, not for speed)."
            )
        batch, frames = pixel_values.shape[:2]
        if clip_merging:
            self.check_frame_count(frames)
        plan = self.config.merge_plan(frames, clip_merging=clip_merging)
        hidden_states = self.embeddings(pixel_values.flatten(0, 1))
        hidden_states = self.pre_layrnorm(hidden_states.to(self.pre_layrnorm.weight.dtype)).to(self.dtype)
        sizes, token_counts = None, []
        for block, step in zip(self.blocks, plan):
            hidden_states, sizes = block(hidden_states, sizes, step)
            token_counts.append((hidden_states.shape[0] // batch, hidden_states.shape[1]))
        num_cls = plan[-1].num_cls if plan else 1
        frame_tokens = hidden_states[:, :num_cls].reshape(batch, frames, -1)
        post_dtype = self.post_layernorm.weight.dtype
        return TempMeVisionOutput(
            last_hidden_state=hidden_states,
            pooler_output=self.post_layernorm(frame_tokens.to(post_dtype)),
            token_sizes=sizes,
            token_counts=tuple(token_counts),
        )


class InferenceTextTransformer(nn.Module):
    """`CLIPTextModel` for inference: causal attention over the caption, pooled at the end-of-text token."""

    def __init__(self, text_model: nn.Module, precision: str, reduce_range: bool = False):
        super().__init__()
        self.config = text_model.config
        self.dtype = compute_dtype(precision)
        self.embeddings, self.final_layer_norm = text_model.embeddings, text_model.final_layer_norm
        self.eos_token_id = text_model.eos_token_id
        activation = self.config.hidden_act
        self.blocks = nn.ModuleList(
            InferenceEncoderBlock(layer, activation, precision, reduce_range) for layer in text_model.encoder.layers
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """`input_ids` `(batch, words)` -> final hidden states and the pooled (end-of-text) hidden state."""
        input_ids = input_ids.view(-1, input_ids.shape[-1])
        hidden_states = self.embeddings(input_ids=input_ids, position_ids=position_ids).to(self.dtype)
        mask, is_causal = None, True
        if attention_mask is not None and not bool(attention_mask.all()):
            # Causal and padding together: query i sees the real tokens among 0..i.
            words = input_ids.shape[1]
            causal = torch.ones(words, words, dtype=torch.bool, device=input_ids.device).tril()
            mask, is_causal = (causal & attention_mask.bool()[:, None, None, :]), False
        for block in self.blocks:
            hidden_states, _ = block.attend(hidden_states, mask, is_causal)
            hidden_states = block.feed_forward(hidden_states)
        last_hidden_state = self.final_layer_norm(hidden_states.to(self.final_layer_norm.weight.dtype))
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=last_hidden_state[torch.arange(input_ids.shape[0]), self.pooled_positions(input_ids)],
        )

    def pooled_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Where CLIPTextModel pools: the first end-of-text token, or the largest id for old configs (eos id 2)."""
        if self.eos_token_id == 2:
            return input_ids.to(torch.int).argmax(dim=-1)
        return (input_ids.to(torch.int) == self.eos_token_id).int().argmax(dim=-1)


__all__ = ["InferencePatchEmbeddings", "InferenceTextTransformer", "InferenceVisionBlock", "InferenceVisionTransformer", "check_supported_block"]
