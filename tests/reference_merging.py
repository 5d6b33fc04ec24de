"""Straightforward reference implementations of ToMe-style merging, to check the optimised ones against.

Written for clarity, one step per line: normalise A and B separately, gather kept and merged sources with
expanded indices, scatter-add onto a copy of the destinations, concatenate, divide. The package's
`merging.py` must merge the same tokens in the same order and produce the same values.
"""

from __future__ import annotations

import torch

from transformers_tempme.merging import Matching


def reference_split(x: torch.Tensor, num_cls: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CLS tokens `(n, c, ...)`, then the sources A (patch tokens at even positions of the whole sequence) and the
    destinations B (patch tokens at odd positions)."""
    positions = torch.arange(num_cls, x.shape[1])
    return x[:, :num_cls], x[:, positions[positions % 2 == 0]], x[:, positions[positions % 2 == 1]]


def reference_matching(metric: torch.Tensor, num_merge: int, num_cls: int) -> Matching:
    _, sources, destinations = reference_split(metric, num_cls)
    sources = sources / sources.norm(dim=-1, keepdim=True)
    destinations = destinations / destinations.norm(dim=-1, keepdim=True)
    scores = sources @ destinations.transpose(-1, -2)
    best_score, best_destination = scores.max(dim=-1)
    order = best_score.argsort(dim=-1, descending=True)
    merged = order[:, :num_merge]
    kept = order[:, num_merge:].sort(dim=-1).values
    targets = best_destination.gather(dim=-1, index=merged)
    return Matching(num_cls, kept, merged, targets)


def reference_merge_sum(x: torch.Tensor, matching: Matching) -> torch.Tensor:
    cls, sources, destinations = reference_split(x, matching.num_cls)
    dim = x.shape[-1]
    kept = sources.gather(1, matching.kept.unsqueeze(-1).expand(-1, -1, dim))
    moved = sources.gather(1, matching.merged.unsqueeze(-1).expand(-1, -1, dim))
    destinations = destinations.scatter_add(1, matching.targets.unsqueeze(-1).expand(-1, -1, dim), moved)
    return torch.cat([cls, kept, destinations], dim=1)


def reference_merge_weighted_average(
    x: torch.Tensor, sizes: torch.Tensor | None, matching: Matching
) -> tuple[torch.Tensor, torch.Tensor]:
    if sizes is None:
        sizes = torch.ones(x.shape[0], x.shape[1], 1, device=x.device)
    merged_sizes = reference_merge_sum(sizes, matching)
    merged = reference_merge_sum(x * sizes.to(x.dtype), matching) / merged_sizes.to(x.dtype)
    return merged, merged_sizes


def reference_join_clips(x: torch.Tensor, group: int, num_cls: int) -> torch.Tensor:
    n, t = x.shape[:2]
    x = x.reshape(n // group, group, t, *x.shape[2:])
    cls = x[:, :, :num_cls].flatten(1, 2)
    patches = x[:, :, num_cls:].flatten(1, 2)
    return torch.cat([cls, patches], dim=1)
