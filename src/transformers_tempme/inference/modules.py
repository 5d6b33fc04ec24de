"""The modules `optimize_for_inference` swaps into a model: attention with one fused q/k/v projection, and the patch
embedding as a matmul. Both run at the precision of their `InferenceLinear` layers (`linear.py`).

The training modules keep CLIP's separate `q_proj`, `k_proj` and `v_proj` (their names are what checkpoints and
LoRA address); `FusedQKVAttention` stacks the three weights into one `(3 * hidden, hidden)` matrix, so each block runs
one matmul where the model runs three, as OpenAI's and the authors' fused `in_proj` does. Queries, keys and values
are strided views of its output: nothing is copied before the attention kernel, which is the model's own choice
(`attn_implementation`, through transformers' `ALL_ATTENTION_FUNCTIONS`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..modeling_tempme import TempMeVisionAttention
from .linear import InferenceLinear, compute_dtype


class FusedQKVAttention(TempMeVisionAttention):
    """`TempMeVisionAttention` (or HF's `CLIPAttention`, which it extends) with q, k and v in one prepared matmul.

    The forward is `TempMeVisionAttention`'s: only `project` and the output projection differ. In the text tower it
    stands in for `CLIPAttention` (same call, `(attn_output, None)` back) and dispatches on the text config, as that
    one does.
    """

    def __init__(self, attention: nn.Module, precision: str, reduce_range: bool = False):
        # The parent's constructor would build the three projections this module replaces: set its attributes here.
        nn.Module.__init__(self)
        self.config = attention.config
        self.model_config = getattr(attention, "model_config", attention.config)
        self.embed_dim, self.num_heads, self.head_dim = attention.embed_dim, attention.num_heads, attention.head_dim
        self.scale, self.dropout, self.is_causal = attention.scale, attention.dropout, attention.is_causal
        projections = (attention.q_proj, attention.k_proj, attention.v_proj)
        weight = torch.cat([projection.weight.detach() for projection in projections])
        bias = torch.cat([projection.bias.detach() for projection in projections])
        self.qkv_proj = InferenceLinear(weight, bias, precision, reduce_range=reduce_range)
        self.out_proj = InferenceLinear(
            attention.out_proj.weight.detach(), attention.out_proj.bias, precision, reduce_range=reduce_range
        )

    def project(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values, each `(n, t, heads, head_dim)`: strided views of one matmul's output."""
        n, t = hidden_states.shape[:2]
        return self.qkv_proj(hidden_states).view(n, t, 3, self.num_heads, self.head_dim).unbind(2)


class InferencePatchEmbeddings(nn.Module):
    """`CLIPVisionEmbeddings` with the patch convolution computed as a matmul over the flattened patches.

    The patches do not overlap (stride = kernel), so the convolution is a linear layer on each patch's pixels, laid
    out `(channels, row, column)` like the kernel. oneDNN runs that matmul faster than its direct convolution on
    these shapes (`python tools/kernel_microbench.py` times both). The class and position embeddings are the original
    module's; the sum is returned at the compute precision, which the tokens then keep up to the final layer norm.
    """

    def __init__(self, embeddings: nn.Module, precision: str, reduce_range: bool = False):
        super().__init__()
        self.image_size, self.patch_size = embeddings.image_size, embeddings.patch_size
        self.class_embedding, self.position_embedding = embeddings.class_embedding, embeddings.position_embedding
        self.dtype = compute_dtype(precision)
        weight = embeddings.patch_embedding.weight.detach()
        self.projection = InferenceLinear(weight.flatten(1), embeddings.patch_embedding.bias, precision,
                                          reduce_range=reduce_range)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(images, 3, H, W)` -> `(images, 1 + patches, hidden)`: CLS, then patches row by row."""
        images, channels, height, width = pixel_values.shape
        if height != self.image_size or width != self.image_size:
            raise ValueError(f"Input image size ({height}*{width}) doesn't match model ({self.image_size}*{self.image_size}).")
        rows, size = height // self.patch_size, self.patch_size
        patches = pixel_values.to(self.dtype).view(images, channels, rows, size, rows, size)
        patches = patches.permute(0, 2, 4, 1, 3, 5).reshape(images, rows * rows, channels * size * size)
        patch_embeds = self.projection(patches).float()
        class_embeds = self.class_embedding.float().expand(images, 1, -1)
        embeddings = torch.cat([class_embeds, patch_embeds], dim=1) + self.position_embedding.weight.float()
        return embeddings.to(self.dtype)


__all__ = ["FusedQKVAttention", "InferencePatchEmbeddings"]
