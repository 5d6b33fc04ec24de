"""Token merging for TempMe: bipartite soft matching, size-weighted merging, clip joining and merge counts.

Pure functions over tensors and integers: no modules, no config. Layout conventions used throughout:

- `x`: tokens, `(num_sequences, num_tokens, dim)`. A sequence is one clip of one video; the batch is
  video-major with clips in temporal order, so the clips of video `b` are rows `b * clips : (b + 1) * clips`.
- The first `num_cls` tokens of every sequence are CLS tokens. They are never merged and always stay first,
  in temporal order (one per original frame once clips have been joined).
- `sizes`: how many input patches each token stands for, `(num_sequences, num_tokens, 1)`, or `None` while
  no token has been merged (all sizes 1).

All sequences of a batch always hold the same number of tokens (counts depend on the schedule, not on the
content), so every function works on the whole batch at once.

This file is part of the remote code written next to saved models: it imports only `torch`.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import NamedTuple

import torch


# ---------------------------------------------------------------------------------------------------------------
# Merge counts and the per-block plan
# ---------------------------------------------------------------------------------------------------------------


# A pure function of integers and the config's ratios: `torch.compile` takes its result as a constant of the graph
# (it cannot trace `Fraction`), so that the whole vision tower compiles as one graph.
@torch.compiler.assume_constant_result
def merge_count(num_tokens: int, num_cls: int, fraction: float) -> int:
    """Tokens to merge away: `floor(num_tokens * fraction)` capped at half the non-CLS tokens.

    `num_tokens` counts the CLS tokens too, as the authors' code does; the cap is what one bipartite matching
    can merge. The product is taken in exact rational arithmetic, so that e.g. 10 * (1 - 0.9) is 1, not 0.
    """
    wanted = math.floor(num_tokens * Fraction(fraction).limit_denominator(1_000_000))
    return min(wanted, (num_tokens - num_cls) // 2)


class MergeStep(NamedTuple):
    """What one vision block does, for every video of a batch.

    Attributes:
        layer: 0-indexed vision block.
        clip_group: adjacent clips joined into one before attention (1: none joined).
        cross_merge: tokens merged per joined clip before attention (ClipMe's cross-clip step).
        intra_merge: tokens merged per clip after attention (ImgMe, or ClipMe's intra-clip step).
        clips: sequences per video inside this block (after joining).
        num_cls: CLS tokens per sequence inside this block.
        tokens_in: tokens per sequence entering the block (before joining).
        tokens_attention: tokens per sequence in attention.
        tokens_out: tokens per sequence leaving the block (what the MLP sees).
    """

    layer: int
    clip_group: int
    cross_merge: int
    intra_merge: int
    clips: int
    num_cls: int
    tokens_in: int
    tokens_attention: int
    tokens_out: int


def plan_merges(
    num_layers: int,
    tokens_per_frame: int,
    num_frames: int,
    img_merge_r: int,
    clip_merge_layers: list[int] | tuple[int, ...],
    clip_merge_groups: list[int] | tuple[int, ...],
    cross_clip_keep_ratio: float,
    intra_clip_keep_ratio: float,
) -> tuple[MergeStep, ...]:
    """The merge plan of a whole vision tower: one `MergeStep` per block.

    Blocks before the first ClipMe block are ImgMe blocks (`img_merge_r` tokens per frame, capped at half the
    patches). ClipMe blocks join `group` clips, merge `merge_count(T * g, c * g, 1 - R_C)` tokens across them,
    attend, then merge `merge_count(T', c', 1 - R_I)`. Later blocks merge intra-clip only.
    """
    groups = dict(zip(clip_merge_layers, clip_merge_groups))
    first_clip_layer = min(clip_merge_layers, default=num_layers)
    cross_fraction, intra_fraction = 1 - cross_clip_keep_ratio, 1 - intra_clip_keep_ratio
    clips, num_cls, tokens = num_frames, 1, tokens_per_frame
    plan = []
    for layer in range(num_layers):
        tokens_in, group, cross = tokens, groups.get(layer, 1), 0
        if layer in groups:
            if clips % group != 0:
                raise ValueError(
                    f"The merge schedule does not divide the frame count: block {layer} joins groups of {group} clips "
                    f"but {clips} clips enter it (num_frames={num_frames}, clip_merge_groups={list(clip_merge_groups)}). "
                    "Choose groups whose running product divides num_frames, e.g. [2, 2, 3] for 12 frames."
                )
            clips, num_cls, tokens = clips // group, num_cls * group, tokens * group
            cross = merge_count(tokens, num_cls, cross_fraction)
            tokens -= cross
        tokens_attention = tokens
        if layer < first_clip_layer:
            intra = min(img_merge_r, (tokens - num_cls) // 2)
        else:
            intra = merge_count(tokens, num_cls, intra_fraction)
        tokens -= intra
        plan.append(MergeStep(layer, group, cross, intra, clips, num_cls, tokens_in, tokens_attention, tokens))
    return tuple(plan)


# ---------------------------------------------------------------------------------------------------------------
# Bipartite soft matching (ToMe), with protected CLS tokens
# ---------------------------------------------------------------------------------------------------------------


class Matching(NamedTuple):
    """Which tokens one bipartite matching merges, as indices into its source (A) and destination (B) sets.

    A and B alternate over the patch tokens by their position in the whole sequence (CLS tokens included):
    even positions are sources, odd positions destinations.

    Attributes:
        num_cls: protected CLS tokens at the head of each sequence.
        kept: `(num_sequences, |A| - r)` sources that stay, in their original order.
        merged: `(num_sequences, r)` sources merged away, best-matching first.
        targets: `(num_sequences, r)` the destination each merged source joins.
    """

    num_cls: int
    kept: torch.Tensor
    merged: torch.Tensor
    targets: torch.Tensor


def split_patches(patches: torch.Tensor, num_cls: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sources A and destinations B of the patch tokens `(n, t - c, ...)` of sequences with `num_cls` CLS tokens."""
    # Parity of the global position: with an even CLS count the first patch sits at an even position.
    first, second = patches[:, 0::2], patches[:, 1::2]
    return (first, second) if num_cls % 2 == 0 else (second, first)


def source_destination_positions(num_tokens: int, num_cls: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions in the sequence of the sources A `(|A|,)` and destinations B `(|B|,)`, as `split_patches` splits
    the patch tokens."""
    first = num_cls + num_cls % 2  # sources sit at even positions
    sources = torch.arange(first, num_tokens, 2, device=device)
    destinations = torch.arange(num_cls + 1 - num_cls % 2, num_tokens, 2, device=device)
    return sources, destinations


@torch.no_grad()
def bipartite_soft_matching(metric: torch.Tensor, num_merge: int, num_cls: int) -> Matching:
    """Pick the `num_merge` sources most similar to a destination (cosine similarity of `metric`).

    Args:
        metric: `(num_sequences, num_tokens, metric_dim)`; only the patch tokens are compared.
        num_merge: r, at most half of the patch tokens.
        num_cls: protected CLS tokens at the head of each sequence.
    """
    num_sources = (metric.shape[1] - num_cls + 1 - num_cls % 2) // 2
    if num_merge > num_sources:
        raise ValueError(f"Cannot merge {num_merge} tokens: only {num_sources} source tokens are available.")
    # Normalising the patch tokens once, before the split, is one pass instead of two over strided halves.
    patches = metric[:, num_cls:]
    patches = patches / patches.norm(dim=-1, keepdim=True)
    sources, destinations = split_patches(patches, num_cls)
    scores = sources @ destinations.transpose(-1, -2)
    best_score, best_destination = scores.max(dim=-1)
    order = best_score.argsort(dim=-1, descending=True)
    merged = order[:, :num_merge]
    kept = order[:, num_merge:].sort(dim=-1).values
    targets = best_destination.gather(dim=-1, index=merged)
    return Matching(num_cls, kept, merged, targets)


class MergeRows(NamedTuple):
    """A matching as row indices into the batch flattened to `(num_sequences * num_tokens, ...)`.

    Merging is then one row gather for the output, one small row gather for the merged sources and one
    scatter-add onto the destinations, whatever the feature size: `index_select` copies whole rows, where `gather`
    with an expanded index reads one index per element.

    Attributes:
        output: `(n * (t - r),)` input row of every output token, in the output order [CLS, kept, destinations].
        moved: `(n * r,)` input row of every merged source, best-matching first.
        targets: `(n, r)` the destination each merged source joins, counted from `destination_start`.
        destination_start: position of the first destination in the output, `num_cls + |A| - r`.
        num_out: tokens per sequence after merging, `t - r`.
    """

    output: torch.Tensor
    moved: torch.Tensor
    targets: torch.Tensor
    destination_start: int
    num_out: int


def merge_rows(matching: Matching, num_tokens: int) -> MergeRows:
    """The flattened row indices that carry out `matching` on sequences of `num_tokens` tokens."""
    num_sequences = matching.merged.shape[0]
    num_cls, device = matching.num_cls, matching.merged.device
    source_positions, destination_positions = source_destination_positions(num_tokens, num_cls, device)
    output = torch.cat(
        [
            torch.arange(num_cls, device=device).expand(num_sequences, -1),
            source_positions[matching.kept],
            destination_positions.expand(num_sequences, -1),
        ],
        dim=1,
    )
    sequence_start = torch.arange(num_sequences, device=device).unsqueeze(1) * num_tokens
    moved = source_positions[matching.merged] + sequence_start
    destination_start = num_cls + matching.kept.shape[1]
    return MergeRows(
        (output + sequence_start).flatten(), moved.flatten(), matching.targets, destination_start, output.shape[1]
    )


def take_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """`x[rows]` along the first dimension of a 2-D tensor, by the fastest kernel for the case.

    `index_select` is the faster gather, but on CPU its backward (`index_add_`) sorts its indices first, several
    times slower than the backward of advanced indexing (`index_put_` with accumulation). Both give the same values.
    """
    if x.requires_grad and torch.is_grad_enabled():
        return x[rows]
    return x.index_select(0, rows)


def _merge_rows_sum(x: torch.Tensor, rows: MergeRows) -> torch.Tensor:
    """`(n, t, d)` -> `(n, t - r, d)`: gather the output rows, then add every merged source onto its destination."""
    n, t, dim = x.shape
    flat = x.reshape(n * t, dim)
    merged = take_rows(flat, rows.output).view(n, rows.num_out, dim)
    moved = take_rows(flat, rows.moved).view(n, -1, dim)
    # scatter_add_ on the destinations' view: one pass, where index_add_ over flattened rows runs a parallel
    # sort of its indices first.
    index = rows.targets.unsqueeze(-1).expand(-1, -1, dim)
    merged[:, rows.destination_start :].scatter_add_(1, index, moved)
    return merged


def merge_sum(x: torch.Tensor, matching: Matching) -> torch.Tensor:
    """Sum-merge `x` `(n, t, d)` by `matching`: `(n, t - r, d)` laid out as [CLS, kept sources, destinations].

    Used for sizes and for merge sources (which input patches each token holds), which add up.
    """
    return _merge_rows_sum(x, merge_rows(matching, x.shape[1]))


def merge_weighted_average(
    x: torch.Tensor, sizes: torch.Tensor | None, matching: Matching
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge tokens into their destinations as the size-weighted average; sizes add up.

    Args:
        x: `(n, t, d)` tokens.
        sizes: `(n, t, 1)` patches per token, or `None` for all ones.
        matching: from `bipartite_soft_matching` on the same sequences.

    Returns:
        `(n, t - r, d)` tokens and their float32 `(n, t - r, 1)` sizes, ordered [CLS, kept sources, destinations].
    """
    rows = merge_rows(matching, x.shape[1])
    if sizes is None:
        sizes = torch.ones(x.shape[0], x.shape[1], 1, device=x.device)
        weighted = x  # x * 1 is x: skip a pass over the tokens
    else:
        weighted = x * sizes.to(x.dtype)
    # Sizes stay float32: bfloat16 stops counting exactly above 256 patches.
    merged_sizes = _merge_rows_sum(sizes, rows)
    merged = _merge_rows_sum(weighted, rows)
    # In place: `merged` is a fresh tensor, so dividing it needs no further copy of the tokens.
    return merged.div_(merged_sizes.to(x.dtype)), merged_sizes


# ---------------------------------------------------------------------------------------------------------------
# Clip joining (ClipMe) and proportional attention
# ---------------------------------------------------------------------------------------------------------------


def join_clips(x: torch.Tensor, group: int, num_cls: int) -> torch.Tensor:
    """Concatenate every `group` adjacent clips of a video into one sequence.

    `(n, t, ...)` becomes `(n / group, group * t, ...)`, laid out as [CLS tokens of clip 1, ..., CLS tokens of
    clip g, patches of clip 1, ..., patches of clip g]. Groups never cross videos because the number of clips
    per video is a multiple of `group`.
    """
    n, t = x.shape[:2]
    # One row gather: slicing CLS and patches apart and concatenating them would copy every token three times.
    rows = joined_rows(n, t, group, num_cls, x.device)
    return take_rows(x.reshape(n * t, -1), rows).view(n // group, group * t, *x.shape[2:])


def joined_rows(num_sequences: int, num_tokens: int, group: int, num_cls: int, device: torch.device) -> torch.Tensor:
    """Row of the flattened `(num_sequences * num_tokens)` input that every token of `join_clips`'s output takes."""
    clip_start = torch.arange(group, device=device).unsqueeze(1) * num_tokens
    cls = (clip_start + torch.arange(num_cls, device=device)).flatten()
    patches = (clip_start + torch.arange(num_cls, num_tokens, device=device)).flatten()
    one_group = torch.cat([cls, patches])
    group_start = torch.arange(num_sequences // group, device=device).unsqueeze(1) * (group * num_tokens)
    return (group_start + one_group).flatten()


def add_clip_position_embedding(x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """Add `embedding[j]` `(clips, d)` to every token of the j-th clip of each video in `x` `(n, t, d)`."""
    clips, dim = embedding.shape
    n, t, _ = x.shape
    x = x.reshape(n // clips, clips, t, dim) + embedding.to(x.dtype)[None, :, None, :]
    return x.reshape(n, t, dim)


def proportional_attention_bias(sizes: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Additive attention bias `(n, 1, 1, t)`: log(size) of every key, for all heads and queries."""
    if sizes is None:
        return None
    return sizes.log().to(dtype).transpose(1, 2).unsqueeze(1)


__all__ = [
    "MergeStep",
    "Matching",
    "merge_count",
    "plan_merges",
    "split_patches",
    "bipartite_soft_matching",
    "MergeRows",
    "merge_rows",
    "take_rows",
    "source_destination_positions",
    "merge_sum",
    "merge_weighted_average",
    "join_clips",
    "joined_rows",
    "add_clip_position_embedding",
    "proportional_attention_bias",
]
