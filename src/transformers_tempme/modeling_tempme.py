"""TempMe: CLIP with temporal token merging for text-video retrieval.

The text tower is HF's `CLIPTextModel`, unchanged. The vision tower keeps CLIP's weights and parameter names
but runs each block as the merge plan says (see `merging.plan_merges`):

- ImgMe block: attention within each frame, merge `r` tokens (keys as the metric), MLP.
- ClipMe block: join `g` adjacent clips, add the clip position embeddings, merge across the joined clips
  (residual stream as the metric), attention, merge within the clip (keys as the metric), MLP.
- Later blocks: attention, merge within the clip, MLP.

Every original frame keeps its CLS token through all merges, so the video embedding is the mean of the
normalised per-frame CLS projections, exactly as for frame-independent CLIP (CLIP4Clip meanP).

One forward: `TempMeVisionEncoder.forward` owns the block loop and `TempMeVisionLayer` runs its steps as methods
(`cross_clip_merge`, `attend`, `intra_clip_merge`, `feed_forward`). Token counts come from the plan alone (the config
and the frame count), so every shape is known before a forward runs. Kernels are chosen as in transformers: attention
through `ALL_ATTENTION_FUNCTIONS` by `attn_implementation`; faster modules (a fused q/k/v projection, lower
precisions) are swapped in for `self_attn`, `mlp` and `embeddings`, leaving this forward as it is.

This file is part of the remote code written next to saved models: it imports only `torch`, `transformers`
and its two siblings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import CLIPModel, CLIPTextModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.clip.modeling_clip import (
    CLIPAttention,
    CLIPMLP,
    CLIPPreTrainedModel,
    CLIPVisionEmbeddings,
    eager_attention_forward,
)
from transformers.utils import ModelOutput

from .configuration_tempme import TempMeConfig
from .merging import (
    MergeStep,
    add_clip_position_embedding,
    bipartite_soft_matching,
    join_clips,
    merge_sum,
    merge_weighted_average,
    proportional_attention_bias,
)


@dataclass
class TempMeVisionOutput(ModelOutput):
    r"""
    Output of the TempMe vision tower.

    last_hidden_state (`torch.FloatTensor` of shape `(batch_size * clips, tokens, hidden_size)`):
        Tokens leaving the last block; each row is one clip, its first `frames / clips` tokens are CLS tokens.
    pooler_output (`torch.FloatTensor` of shape `(batch_size, frames, hidden_size)`):
        The CLS token of every original frame, in temporal order, after the final layer norm.
    token_sizes (`torch.FloatTensor` of shape `(batch_size * clips, tokens, 1)`, *optional*):
        Input patches each final token stands for (`None` when nothing was merged).
    token_counts (`tuple[tuple[int, int]]`):
        For each block, `(sequences_per_video, tokens_per_sequence)` at its output.
    merge_sources (`torch.FloatTensor` of shape `(batch_size * clips, tokens, frames * tokens_per_frame)`, *optional*):
        Returned with `output_merge_sources=True`: row `i` marks the input tokens (frame-major, CLS first in
        each frame) that final token `i` holds.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    token_sizes: torch.FloatTensor | None = None
    token_counts: tuple[tuple[int, int], ...] | None = None
    merge_sources: torch.FloatTensor | None = None


@dataclass
class TempMeVideoOutput(ModelOutput):
    r"""
    Output of [`TempMeCLIPModel.encode_video`].

    video_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
        Masked mean over frames of the L2-normalised per-frame embeddings (not re-normalised).
    frame_embeds (`torch.FloatTensor` of shape `(batch_size, frames, projection_dim)`):
        L2-normalised projection of every frame's CLS token.
    token_counts (`tuple[tuple[int, int]]`):
        For each vision block, `(sequences_per_video, tokens_per_sequence)` at its output.
    vision_model_output (`TempMeVisionOutput`):
        The vision tower's output.
    """

    video_embeds: torch.FloatTensor | None = None
    frame_embeds: torch.FloatTensor | None = None
    token_counts: tuple[tuple[int, int], ...] | None = None
    vision_model_output: TempMeVisionOutput | None = None


@dataclass
class TempMeOutput(ModelOutput):
    r"""
    Output of [`TempMeCLIPModel.forward`].

    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
        Symmetric InfoNCE: the mean of the text-to-video and video-to-text cross-entropies.
    logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, video_batch_size)`):
        `logit_scale.exp()` times the cosine similarity of every text to every video.
    logits_per_video (`torch.FloatTensor` of shape `(video_batch_size, text_batch_size)`):
        The transpose of `logits_per_text`.
    text_embeds (`torch.FloatTensor` of shape `(text_batch_size, projection_dim)`):
        L2-normalised text embeddings.
    video_embeds (`torch.FloatTensor` of shape `(video_batch_size, projection_dim)`):
        L2-normalised video embeddings.
    text_model_output (`BaseModelOutputWithPooling`):
        The text tower's output.
    video_model_output (`TempMeVideoOutput`):
        The video encoding, with per-frame embeddings and token counts.
    """

    loss: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    logits_per_video: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    video_embeds: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    video_model_output: TempMeVideoOutput | None = None

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(
            self[key] if key not in ("text_model_output", "video_model_output") else getattr(self, key).to_tuple()
            for key in self.keys()
        )


def symmetric_contrastive_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    """InfoNCE in both directions over `(texts, videos)` logits whose matching pairs lie on the diagonal."""
    targets = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
    text_to_video = nn.functional.cross_entropy(logits_per_text, targets)
    video_to_text = nn.functional.cross_entropy(logits_per_text.t(), targets)
    return (text_to_video + video_to_text) / 2


class TempMeVisionAttention(CLIPAttention):
    """CLIP attention that takes an additive bias (proportional attention) and can return its mean key.

    The mean of the keys over heads is the similarity metric for merging after attention (ToMe). The attention itself
    is dispatched through transformers' registry (`ALL_ATTENTION_FUNCTIONS`, by the model's `attn_implementation`),
    with the bias as its additive `attention_mask`. `project` (the q/k/v projections) and `apply_attention` (that call)
    are methods of their own, so that a module swapped in for this one (a fused q/k/v projection, a lower precision)
    changes what it must and runs the rest as it is.
    """

    def __init__(self, config: TempMeConfig):
        super().__init__(config.vision_config)
        # The vision tower is not a PreTrainedModel of its own, so the attention implementation is dispatched on
        # the model's config, not on `vision_config`.
        self.model_config = config

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        return_key_metric: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            hidden_states: `(n, t, hidden_size)`.
            attention_mask: an additive bias `(n, 1, 1, t)` added to every query's logits (log of each key's size
                under proportional attention), any mask the attention implementation takes, or `None`.
            return_key_metric: also return the keys averaged over heads, `(n, t, head_dim)`.
            kwargs: passed on to the attention implementation (e.g. `is_causal`).

        Returns:
            The attention output `(n, t, hidden_size)` and the key metric (or `None`).
        """
        queries, keys, values = self.project(hidden_states)
        key_metric = keys.mean(dim=2) if return_key_metric else None
        return self.out_proj(self.apply_attention(queries, keys, values, attention_mask, **kwargs)), key_metric

    def project(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of `(n, t, hidden_size)` tokens, each `(n, t, heads, head_dim)`."""
        head_shape = (*hidden_states.shape[:2], self.num_heads, self.head_dim)
        return tuple(projection(hidden_states).view(head_shape) for projection in (self.q_proj, self.k_proj, self.v_proj))

    def apply_attention(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        attention_mask: torch.Tensor | None,
        **kwargs,
    ) -> torch.Tensor:
        """Scaled dot-product attention of `(n, t, heads, head_dim)` queries over `(n, s, heads, head_dim)` keys and
        values, by the configured implementation: `(n, t, heads * head_dim)`, before the output projection."""
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.model_config._attn_implementation, eager_attention_forward
        )
        attn_output, _ = attention_interface(
            self,
            queries.transpose(1, 2),
            keys.transpose(1, 2),
            values.transpose(1, 2),
            attention_mask,
            scaling=self.scale,
            dropout=0.0 if not self.training else self.dropout,
            **kwargs,
        )
        return attn_output.reshape(*queries.shape[:2], -1)


class ClipPositionEmbedding(nn.Module):
    """One learned vector per clip entering a ClipMe block, added to every token of that clip.

    A module of its own so that it has a stable name (`...layers.{i}.clip_position_embedding`) by which it can be
    trained and saved apart from the frozen weights.
    """

    def __init__(self, num_clips: int, hidden_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_clips, hidden_size))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(batch * num_clips, t, hidden_size)` -> same shape, clip `j` of each video shifted by `weight[j]`."""
        return add_clip_position_embedding(hidden_states, self.weight)


class TempMeVisionLayer(GradientCheckpointingLayer):
    """A CLIP encoder block that merges tokens as its `MergeStep` says (ImgMe, ClipMe or intra-clip only).

    Its forward runs four steps, each a method: `cross_clip_merge` (ClipMe blocks), `attend`, `intra_clip_merge`
    (when the step merges after attention) and `feed_forward`. Token counts come from the step alone, never from
    the data, so every shape in the block is known before it runs.
    """

    def __init__(self, config: TempMeConfig, layer_idx: int):
        super().__init__()
        vision_config = config.vision_config
        self.layer_idx = layer_idx
        self.proportional_attention = config.proportional_attention
        self.self_attn = TempMeVisionAttention(config)
        self.layer_norm1 = nn.LayerNorm(vision_config.hidden_size, eps=vision_config.layer_norm_eps)
        self.mlp = CLIPMLP(vision_config)
        self.layer_norm2 = nn.LayerNorm(vision_config.hidden_size, eps=vision_config.layer_norm_eps)

        self.is_clip_merge_block = layer_idx in config.clip_merge_layers
        self.clip_position_embedding = None
        if self.is_clip_merge_block and config.clip_position_embedding:
            step = config.merge_plan()[layer_idx]
            clips_entering = step.clips * step.clip_group
            self.clip_position_embedding = ClipPositionEmbedding(clips_entering, vision_config.hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        sizes: torch.Tensor | None,
        step: MergeStep,
        sources: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """
        Args:
            hidden_states: `(batch * clips_in, step.tokens_in, hidden_size)`.
            sizes: `(batch * clips_in, step.tokens_in, 1)` patches per token, `None` before any merge.
            step: this block's counts, from the model's merge plan.
            sources: `(batch * clips_in, step.tokens_in, frames * tokens_per_frame)` or `None` (not tracked).
            kwargs: passed on to the attention module.

        Returns:
            Tokens `(batch * step.clips, step.tokens_out, hidden_size)`, their sizes and sources.
        """
        if self.is_clip_merge_block:
            hidden_states, sizes, sources = self.cross_clip_merge(hidden_states, sizes, sources, step)
        hidden_states, key_metric = self.attend(hidden_states, sizes, step, **kwargs)
        if step.intra_merge > 0:
            hidden_states, sizes, sources = self.intra_clip_merge(hidden_states, sizes, sources, key_metric, step)
        return self.feed_forward(hidden_states), sizes, sources

    def cross_clip_merge(
        self,
        hidden_states: torch.Tensor,
        sizes: torch.Tensor | None,
        sources: torch.Tensor | None,
        step: MergeStep,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """ClipMe's first half: join `step.clip_group` adjacent clips and merge `step.cross_merge` tokens.

        The metric is the residual stream itself, taken before the clip position embeddings are added; the
        embeddings go in only when something is merged, as in the authors' code.
        """
        group, num_cls_in = step.clip_group, step.num_cls // step.clip_group
        metric = join_clips(hidden_states.detach(), group, num_cls_in)
        if step.cross_merge > 0 and self.clip_position_embedding is not None:
            hidden_states = self.clip_position_embedding(hidden_states)
        hidden_states = join_clips(hidden_states, group, num_cls_in)
        sizes = None if sizes is None else join_clips(sizes, group, num_cls_in)
        sources = None if sources is None else join_clips(sources, group, num_cls_in)
        if step.cross_merge > 0:
            matching = bipartite_soft_matching(metric, step.cross_merge, step.num_cls)
            hidden_states, sizes = merge_weighted_average(hidden_states, sizes, matching)
            sources = None if sources is None else merge_sum(sources, matching)
        return hidden_states, sizes, sources

    def attend(
        self, hidden_states: torch.Tensor, sizes: torch.Tensor | None, step: MergeStep, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`x + attention(layer_norm1(x))`, and the keys averaged over heads when the block merges after attention.

        Under proportional attention every key's logits get log(size) added: a token that stands for `s` patches
        weighs as much as its `s` patches would.
        """
        bias = proportional_attention_bias(sizes, hidden_states.dtype) if self.proportional_attention else None
        attended, key_metric = self.self_attn(
            self.layer_norm1(hidden_states), attention_mask=bias, return_key_metric=step.intra_merge > 0, **kwargs
        )
        return hidden_states + attended, key_metric

    def intra_clip_merge(
        self,
        hidden_states: torch.Tensor,
        sizes: torch.Tensor | None,
        sources: torch.Tensor | None,
        key_metric: torch.Tensor,
        step: MergeStep,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Merge `step.intra_merge` tokens within each clip (ImgMe, or ClipMe's second half), keys as the metric."""
        matching = bipartite_soft_matching(key_metric, step.intra_merge, step.num_cls)
        hidden_states, sizes = merge_weighted_average(hidden_states, sizes, matching)
        return hidden_states, sizes, None if sources is None else merge_sum(sources, matching)

    def feed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`x + mlp(layer_norm2(x))`."""
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


@dataclass
class TempMeEncoderOutput(ModelOutput):
    r"""
    Output of [`TempMeVisionEncoder`].

    last_hidden_state (`torch.FloatTensor` of shape `(batch_size * clips, tokens, hidden_size)`):
        Tokens leaving the last block.
    token_sizes (`torch.FloatTensor` of shape `(batch_size * clips, tokens, 1)`, *optional*):
        Input patches each final token stands for (`None` when nothing was merged).
    token_counts (`tuple[tuple[int, int]]`):
        For each block, `(sequences_per_video, tokens_per_sequence)` at its output.
    merge_sources (`torch.FloatTensor` of shape `(batch_size * clips, tokens, frames * tokens_per_frame)`, *optional*):
        Which input tokens every final token holds, when tracked.
    """

    last_hidden_state: torch.FloatTensor | None = None
    token_sizes: torch.FloatTensor | None = None
    token_counts: tuple[tuple[int, int], ...] | None = None
    merge_sources: torch.FloatTensor | None = None


class TempMeVisionEncoder(nn.Module):
    """The stack of vision blocks (named `encoder.layers.{i}` like CLIP's, so CLIP weights load as they are)."""

    def __init__(self, config: TempMeConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            [TempMeVisionLayer(config, layer_idx) for layer_idx in range(config.vision_config.num_hidden_layers)]
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        plan: tuple[MergeStep, ...],
        batch_size: int,
        sources: torch.Tensor | None = None,
        **kwargs,
    ) -> TempMeEncoderOutput:
        """
        Args:
            hidden_states: `(batch_size * frames, tokens_per_frame, hidden_size)`, frames of a video consecutive.
            plan: one `MergeStep` per block (`TempMeConfig.merge_plan`).
            batch_size: videos in the batch.
            sources: `(batch_size * frames, tokens_per_frame, frames * tokens_per_frame)` to track merge sources.
            kwargs: passed on to every block's attention.
        """
        sizes, token_counts = None, []
        for layer, step in zip(self.layers, plan):
            hidden_states, sizes, sources = layer(hidden_states, sizes, step, sources, **kwargs)
            token_counts.append((hidden_states.shape[0] // batch_size, hidden_states.shape[1]))
        return TempMeEncoderOutput(
            last_hidden_state=hidden_states, token_sizes=sizes, token_counts=tuple(token_counts), merge_sources=sources
        )


class TempMeVisionTransformer(nn.Module):
    """CLIP's vision transformer over videos: frames in, one CLS token per frame out, merging in between."""

    def __init__(self, config: TempMeConfig):
        super().__init__()
        self.config = config
        vision_config = config.vision_config
        self.embeddings = CLIPVisionEmbeddings(vision_config)
        self.pre_layrnorm = nn.LayerNorm(vision_config.hidden_size, eps=vision_config.layer_norm_eps)
        self.encoder = TempMeVisionEncoder(config)
        self.post_layernorm = nn.LayerNorm(vision_config.hidden_size, eps=vision_config.layer_norm_eps)

    def check_frame_count(self, num_frames: int) -> None:
        if self.config.has_clip_merging and num_frames != self.config.num_frames:
            raise ValueError(
                f"This TempMe model merges clips for exactly {self.config.num_frames} frames per video "
                f"(clip_merge_groups={self.config.clip_merge_groups}), but the input has {num_frames}. Sample "
                f"{self.config.num_frames} frames per video, or build a model whose schedule fits {num_frames} "
                f"frames (TempMeConfig(num_frames={num_frames}, clip_merge_groups=...))."
            )

    def check_schedule_fits_weights(self, plan: tuple[MergeStep, ...]) -> None:
        """The blocks were built for the schedule of the config at construction; an edit since must still fit them."""
        for layer, step in zip(self.encoder.layers, plan):
            embedding = layer.clip_position_embedding
            added = layer.layer_idx in self.config.clip_merge_layers and not layer.is_clip_merge_block
            resized = embedding is not None and step.cross_merge > 0 and len(embedding.weight) != step.clips * step.clip_group
            if added or resized:
                found = (
                    "was built without ClipMe"
                    if added
                    else f"has clip position embeddings for {len(embedding.weight)} clips, the schedule now joins "
                    f"{step.clips * step.clip_group}"
                )
                raise ValueError(
                    f"The merge schedule was edited after the model was built: vision block {layer.layer_idx} {found}. "
                    "Build a new model from the edited config (TempMeCLIPModel(config), or TempMeCLIPModel.from_clip "
                    "for CLIP weights)."
                )

    def forward(
        self, pixel_values: torch.Tensor, output_merge_sources: bool = False, clip_merging: bool = True, **kwargs
    ) -> TempMeVisionOutput:
        """
        Args:
            pixel_values: `(batch, frames, channels, height, width)`.
            output_merge_sources: also track which input tokens every final token holds (slower; for plots).
            clip_merging: `False` runs every frame on its own (the frame-level plan of `TempMeConfig.merge_plan`).
            kwargs: passed on to every block's attention.
        """
        batch, frames = pixel_values.shape[:2]
        if clip_merging:
            self.check_frame_count(frames)
        plan = self.config.merge_plan(frames, clip_merging=clip_merging)
        self.check_schedule_fits_weights(plan)

        hidden_states = self.embeddings(pixel_values.flatten(0, 1))
        hidden_states = self.pre_layrnorm(hidden_states)
        sources = None
        if output_merge_sources:
            tokens = hidden_states.shape[1]
            sources = torch.eye(frames * tokens, device=hidden_states.device).view(frames, tokens, -1)
            sources = sources.repeat(batch, 1, 1)
        encoded = self.encoder(hidden_states, plan, batch, sources, **kwargs)

        # Each final clip starts with the CLS tokens of its frames, in order: together, one per frame. The final layer
        # norm runs at its own precision, so that blocks computing at a lower one still give embeddings at the model's.
        num_cls = plan[-1].num_cls if plan else 1
        frame_tokens = encoded.last_hidden_state[:, :num_cls].reshape(batch, frames, -1)
        return TempMeVisionOutput(
            last_hidden_state=encoded.last_hidden_state,
            pooler_output=self.post_layernorm(frame_tokens.to(self.post_layernorm.weight.dtype)),
            token_sizes=encoded.token_sizes,
            token_counts=encoded.token_counts,
            merge_sources=encoded.merge_sources,
        )


class TempMePreTrainedModel(CLIPPreTrainedModel):
    config_class = TempMeConfig
    config: TempMeConfig
    base_model_prefix = "tempme"
    input_modalities = ("video", "text")
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer", "CLIPVisionEmbeddings", "TempMeVisionLayer"]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, ClipPositionEmbedding):
            std = self.config.clip_position_embedding_init_std
            if std > 0:
                init.normal_(module.weight, std=std)
            else:
                init.zeros_(module.weight)
        elif isinstance(module, CLIPModel):
            # transformers skips modules of custom code that hold no parameters of their own, so CLIP's scaled
            # init of the attention and MLP projections never reaches our vision blocks, and their Linear layers
            # would keep the generic init (std = initializer_factor = 1.0), a residual stream hundreds of times
            # too large. The model itself is visited last: give the blocks CLIP's init from here. Weights loaded
            # from a checkpoint are marked initialised and left alone.
            for block in module.vision_model.encoder.layers:
                super()._init_weights(block.self_attn)
                super()._init_weights(block.mlp)


class TempMeCLIPModel(TempMePreTrainedModel, CLIPModel):
    """CLIP for text-video retrieval with TempMe's temporal token merging in the vision tower.

    Parameter names are CLIPModel's, plus `vision_model.encoder.layers.{i}.clip_position_embedding.weight`
    for every ClipMe block, so a CLIP checkpoint loads as it is (see `from_clip`).
    """

    def __init__(self, config: TempMeConfig):
        # CLIPModel.__init__ would build a frame-level vision tower only to replace it: build ours directly.
        TempMePreTrainedModel.__init__(self, config)
        self.projection_dim = config.projection_dim
        self.text_embed_dim = config.text_config.hidden_size
        self.vision_embed_dim = config.vision_config.hidden_size

        self.text_model = CLIPTextModel._from_config(config.text_config)
        self.vision_model = TempMeVisionTransformer(config)
        self.visual_projection = nn.Linear(self.vision_embed_dim, self.projection_dim, bias=False)
        self.text_projection = nn.Linear(self.text_embed_dim, self.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.post_init()

    # ------------------------------------------------------------------ building

    @classmethod
    def from_clip(
        cls,
        clip_model_or_path: CLIPModel | str,
        config_or_preset: TempMeConfig | str = "tempme-vit-b-32",
        **from_pretrained_kwargs,
    ) -> "TempMeCLIPModel":
        """Turn a plain HF `CLIPModel` (object, local folder or Hub id) into TempMe with identical CLIP weights.

        The backbone dimensions come from the CLIP model; the merge schedule from `config_or_preset` (a
        `TempMeConfig` or a preset name such as `"tempme-vit-b-16"`). Only the clip position embeddings are new.
        A `TempMeCLIPModel` works too (see `with_schedule`): its clip position embeddings carry over where the new
        schedule has the same ones (same block, same number of clips).
        """
        clip = clip_model_or_path
        if isinstance(clip, str):
            clip = CLIPModel.from_pretrained(clip, **from_pretrained_kwargs)
        schedule = config_or_preset
        if isinstance(schedule, str):
            schedule = TempMeConfig.from_preset(schedule)
        config = TempMeConfig(
            text_config=clip.config.text_config.to_dict(),
            vision_config=clip.config.vision_config.to_dict(),
            projection_dim=clip.config.projection_dim,
            logit_scale_init_value=clip.config.logit_scale_init_value,
            **schedule.merge_schedule,
        )
        config._attn_implementation = clip.config._attn_implementation
        model = cls(config).to(dtype=clip.dtype, device=clip.device)
        shapes = {name: tensor.shape for name, tensor in model.state_dict().items()}
        weights = {
            name: tensor
            for name, tensor in clip.state_dict().items()
            if ".clip_position_embedding." not in name or shapes.get(name) == tensor.shape
        }
        missing, unexpected = model.load_state_dict(weights, strict=False)
        new_parameters = [name for name in missing if ".clip_position_embedding." not in name]
        if new_parameters or unexpected:
            raise ValueError(
                f"The CLIP weights do not match the TempMe model: missing {new_parameters}, unexpected {unexpected}."
            )
        return model

    def with_schedule(self, config_or_preset: TempMeConfig | str) -> "TempMeCLIPModel":
        """The same weights under another merge schedule (e.g. ToMe beside TempMe), as a new model."""
        return type(self).from_clip(self, config_or_preset)

    # ------------------------------------------------------------------ encoders

    def _check_video_inputs(self, pixel_values: torch.Tensor, video_mask: torch.Tensor | None) -> None:
        if pixel_values.ndim != 5:
            raise ValueError(
                f"pixel_values must have shape (batch, frames, channels, height, width), got {tuple(pixel_values.shape)}. "
                "For a single video add the batch dimension with pixel_values.unsqueeze(0); for images use "
                "frames=1."
            )
        batch, frames, channels = pixel_values.shape[:3]
        if batch == 0 or frames == 0:
            raise ValueError(f"pixel_values holds no {'video' if batch == 0 else 'frame'}: shape {tuple(pixel_values.shape)}.")
        expected_channels = self.config.vision_config.num_channels
        if channels != expected_channels:
            layout = "channels-last; permute to (B, F, 3, H, W) with pixel_values.permute(0, 1, 4, 2, 3)"
            hint = layout if pixel_values.shape[-1] == expected_channels else "expected (batch, frames, channels, height, width)"
            raise ValueError(
                f"pixel_values has {channels} channels in dimension 2 (shape {tuple(pixel_values.shape)}), the model "
                f"takes {expected_channels}: {hint}."
            )
        if video_mask is not None and tuple(video_mask.shape) != tuple(pixel_values.shape[:2]):
            raise ValueError(
                f"video_mask must have shape (batch, frames) = {tuple(pixel_values.shape[:2])}, "
                f"got {tuple(video_mask.shape)}."
            )
        # A check on values, not shapes: skipped while tracing or compiling, where it would break the graph.
        tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()
        if video_mask is not None and not tracing and not video_mask.any(dim=1).all():
            empty = (~video_mask.any(dim=1)).nonzero().flatten().tolist()
            raise ValueError(
                f"video_mask marks no real frame in video(s) {empty}: every video needs at least one frame with mask 1 "
                "(its embedding is the mean over those frames)."
            )

    def _check_text_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
        if input_ids.ndim != 2:
            raise ValueError(
                f"input_ids must have shape (batch, words), got {tuple(input_ids.shape)}. For a single text add the "
                "batch dimension with input_ids.unsqueeze(0)."
            )
        if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
            raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}.")
        if input_ids.shape[0] == 0:
            raise ValueError(f"input_ids holds no text: shape {tuple(input_ids.shape)}.")
        if input_ids.shape[1] == 0:
            raise ValueError(
                f"input_ids holds no token: shape {tuple(input_ids.shape)}. Tokenise texts with the model's processor, "
                "which adds the start and end tokens."
            )
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise ValueError(
                f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}."
            )
        # A check on values, not shapes: skipped while tracing or compiling, where it would break the graph.
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return
        vocab_size = self.config.text_config.vocab_size
        low, high = (int(value) for value in torch.aminmax(input_ids))
        if low < 0 or high >= vocab_size:
            cause = "a padding value, not a token" if low < 0 else "from another tokenizer than the model's"
            raise ValueError(
                f"input_ids holds the token id {low if low < 0 else high}, outside the text model's vocabulary of "
                f"{vocab_size} ids (0 to {vocab_size - 1}): an id {cause}. Tokenise with the processor saved with "
                "the model."
            )

    def encode_video(
        self,
        pixel_values: torch.Tensor,
        video_mask: torch.Tensor | None = None,
        output_merge_sources: bool = False,
    ) -> TempMeVideoOutput:
        """Encode videos `(batch, frames, 3, H, W)` into per-frame and video embeddings.

        `video_mask` `(batch, frames)` marks real frames (1) and padding (0); padded frames still go through the
        encoder (their tokens may merge with real ones, as in the authors' code) but are left out of the mean.
        """
        self._check_video_inputs(pixel_values, video_mask)
        vision_outputs = self.vision_model(pixel_values, output_merge_sources=output_merge_sources)
        frame_embeds = self.visual_projection(vision_outputs.pooler_output)
        frame_embeds = frame_embeds / frame_embeds.norm(dim=-1, keepdim=True)
        if video_mask is None:
            video_embeds = frame_embeds.mean(dim=1)
        else:
            weights = video_mask.to(frame_embeds.dtype).unsqueeze(-1)
            video_embeds = (frame_embeds * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return TempMeVideoOutput(
            video_embeds=video_embeds,
            frame_embeds=frame_embeds,
            token_counts=vision_outputs.token_counts,
            vision_model_output=vision_outputs,
        )

    def get_video_features(
        self, pixel_values: torch.Tensor, video_mask: torch.Tensor | None = None
    ) -> BaseModelOutputWithPooling:
        """Video embeddings in `pooler_output` `(batch, projection_dim)`, like `CLIPModel.get_image_features`."""
        video_outputs = self.encode_video(pixel_values, video_mask)
        return BaseModelOutputWithPooling(
            last_hidden_state=video_outputs.vision_model_output.last_hidden_state,
            pooler_output=video_outputs.video_embeds,
        )

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        """Text embeddings in `pooler_output` `(batch, projection_dim)`, as `CLIPModel.get_text_features`, once the
        ids are checked to fit the text tower."""
        self._check_text_inputs(input_ids, attention_mask)
        return super().get_text_features(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        """Image embeddings in `pooler_output` `(batch, projection_dim)` for images `(batch, 3, H, W)`.

        Each image runs the frame-level path: the ImgMe blocks, then within-frame merging at `intra_clip_keep_ratio`
        in the ClipMe blocks and after them, without joining clips (there is one frame). For models without ClipMe
        blocks this is exactly `get_video_features` on one-frame videos.
        """
        if pixel_values.ndim != 4:
            raise ValueError(f"pixel_values must have shape (batch, channels, height, width), got {tuple(pixel_values.shape)}.")
        videos = pixel_values.unsqueeze(1)
        self._check_video_inputs(videos, None)
        vision_outputs = self.vision_model(videos, clip_merging=False)
        image_embeds = self.visual_projection(vision_outputs.pooler_output[:, 0])
        return BaseModelOutputWithPooling(
            last_hidden_state=vision_outputs.last_hidden_state,
            pooler_output=image_embeds / image_embeds.norm(dim=-1, keepdim=True),
        )

    # ------------------------------------------------------------------ retrieval

    def forward(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        return_loss: bool = False,
        **kwargs,
    ) -> TempMeOutput:
        """Similarity logits of every text against every video, and the symmetric InfoNCE loss when asked.

        Args:
            input_ids: `(text_batch, words)`.
            pixel_values: `(video_batch, frames, 3, H, W)`.
            attention_mask: `(text_batch, words)`.
            video_mask: `(video_batch, frames)`.
            return_loss: compute the loss; texts and videos must pair up on the diagonal.
        """
        self._check_text_inputs(input_ids, attention_mask)
        if return_loss and input_ids.shape[0] != pixel_values.shape[0]:
            raise ValueError(
                f"return_loss=True pairs text i with video i, but there are {input_ids.shape[0]} texts and "
                f"{pixel_values.shape[0]} videos. Give one text per video (repeat a video for each of its captions)."
            )
        video_outputs = self.encode_video(pixel_values, video_mask)
        text_outputs = self.get_text_features(input_ids=input_ids, attention_mask=attention_mask)

        video_embeds = video_outputs.video_embeds
        video_embeds = video_embeds / video_embeds.norm(dim=-1, keepdim=True)
        text_embeds = text_outputs.pooler_output
        text_embeds = text_embeds / text_embeds.norm(dim=-1, keepdim=True)

        logits_per_text = self.logit_scale.exp() * text_embeds @ video_embeds.t()
        loss = symmetric_contrastive_loss(logits_per_text) if return_loss else None
        return TempMeOutput(
            loss=loss,
            logits_per_text=logits_per_text,
            logits_per_video=logits_per_text.t(),
            text_embeds=text_embeds,
            video_embeds=video_embeds,
            text_model_output=text_outputs,
            video_model_output=video_outputs,
        )


__all__ = [
    "TempMeCLIPModel",
    "TempMePreTrainedModel",
    "TempMeVisionTransformer",
    "TempMeVisionOutput",
    "TempMeVideoOutput",
    "TempMeOutput",
    "symmetric_contrastive_loss",
]
