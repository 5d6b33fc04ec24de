"""Merging primitives against a plain, loop-by-loop reading of the algorithm (one sequence at a time)."""

import pytest
import torch

from transformers_tempme.merging import (
    add_clip_position_embedding,
    bipartite_soft_matching,
    join_clips,
    merge_count,
    merge_sum,
    merge_weighted_average,
    proportional_attention_bias,
)


def reference_merge(x, sizes, metric, num_merge, num_cls):
    """One sequence, written step by step (ToMe's bipartite soft matching as TempMe uses it).

    Patch tokens at even global positions are sources, odd ones destinations; the `num_merge` sources with the
    highest best-cosine merge into their best destination by size-weighted average; output is
    [CLS, kept sources in original order, destinations in original order].
    """
    positions = range(num_cls, x.shape[0])
    sources = [i for i in positions if i % 2 == 0]
    destinations = [i for i in positions if i % 2 == 1]
    unit = metric / metric.norm(dim=-1, keepdim=True)
    best = {}
    for a in sources:
        scores = torch.stack([unit[a] @ unit[b] for b in destinations])
        best[a] = (scores.max().item(), destinations[int(scores.argmax())])
    by_score = sorted(sources, key=lambda a: -best[a][0])
    merged, kept = by_score[:num_merge], sorted(by_score[num_merge:])
    total = {b: sizes[b] * x[b] for b in destinations}
    weight = {b: sizes[b].clone() for b in destinations}
    for a in merged:
        b = best[a][1]
        total[b] = total[b] + sizes[a] * x[a]
        weight[b] = weight[b] + sizes[a]
    rows = [x[i] for i in range(num_cls)] + [x[a] for a in kept] + [total[b] / weight[b] for b in destinations]
    row_sizes = [sizes[i] for i in range(num_cls)] + [sizes[a] for a in kept] + [weight[b] for b in destinations]
    return torch.stack(rows), torch.stack(row_sizes)


MATCHING_CASES = [
    # sequences, tokens, CLS tokens, merged, with sizes
    (3, 50, 1, 2, False),
    (3, 68, 2, 20, True),
    (2, 62, 4, 6, True),
    (2, 118, 12, 11, True),
    (2, 41, 3, 19, True),
    (1, 9, 0, 4, False),
    (4, 17, 1, 0, True),
]


@pytest.mark.parametrize("sequences, tokens, num_cls, num_merge, with_sizes", MATCHING_CASES)
def test_batched_merge_equals_reference(sequences, tokens, num_cls, num_merge, with_sizes):
    generator = torch.Generator().manual_seed(tokens)
    x = torch.randn(sequences, tokens, 8, generator=generator, dtype=torch.float64)
    metric = torch.randn(sequences, tokens, 5, generator=generator, dtype=torch.float64)
    sizes = torch.randint(1, 5, (sequences, tokens, 1), generator=generator).double() if with_sizes else None

    matching = bipartite_soft_matching(metric, num_merge, num_cls)
    merged, merged_sizes = merge_weighted_average(x, sizes, matching)

    assert merged.shape == (sequences, tokens - num_merge, 8)
    for n in range(sequences):
        seq_sizes = sizes[n] if with_sizes else torch.ones(tokens, 1, dtype=torch.float64)
        expected, expected_sizes = reference_merge(x[n], seq_sizes, metric[n], num_merge, num_cls)
        torch.testing.assert_close(merged[n], expected)
        torch.testing.assert_close(merged_sizes[n].double(), expected_sizes)


def test_merge_conserves_mass_and_keeps_cls_first():
    x = torch.randn(2, 30, 6)
    sizes = torch.randint(1, 4, (2, 30, 1)).float()
    matching = bipartite_soft_matching(torch.randn(2, 30, 4), num_merge=13, num_cls=3)
    merged, merged_sizes = merge_weighted_average(x, sizes, matching)
    torch.testing.assert_close((merged * merged_sizes).sum(1), (x * sizes).sum(1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(merged_sizes.sum(1), sizes.sum(1))
    torch.testing.assert_close(merged[:, :3], x[:, :3])


def test_too_many_merges_is_an_error():
    with pytest.raises(ValueError, match="only 8 source tokens"):
        bipartite_soft_matching(torch.randn(1, 17, 4), num_merge=9, num_cls=1)


def test_gradients_flow_through_features_not_matching():
    x = torch.randn(2, 10, 4, requires_grad=True)
    matching = bipartite_soft_matching(x, num_merge=3, num_cls=1)
    assert not matching.merged.requires_grad
    merged, _ = merge_weighted_average(x, None, matching)
    merged.sum().backward()
    # Every input token reaches the output exactly once with weight 1 (averages of size-1 tokens sum back).
    assert torch.all(x.grad.sum(-1) != 0)


def test_merge_sum_tracks_sources():
    sources = torch.eye(9).repeat(2, 1, 1)
    matching = bipartite_soft_matching(torch.randn(2, 9, 3), num_merge=4, num_cls=1)
    merged = merge_sum(sources, matching)
    assert merged.shape == (2, 5, 9)
    torch.testing.assert_close(merged.sum(1), torch.ones(2, 9))  # every input token in exactly one output


def test_join_clips_puts_cls_tokens_of_the_group_first():
    # 2 videos x 4 clips x (2 CLS + 3 patches); values encode (video, clip, token).
    video, clip, token = torch.meshgrid(torch.arange(2), torch.arange(4), torch.arange(5), indexing="ij")
    x = (100 * video + 10 * clip + token).reshape(8, 5, 1).float()
    joined = join_clips(x, group=2, num_cls=2)
    assert joined.shape == (4, 10, 1)
    expected_first = [0, 1, 10, 11, 2, 3, 4, 12, 13, 14]
    assert joined[0, :, 0].tolist() == expected_first
    assert joined[3, :, 0].tolist() == [v + 120 for v in expected_first]  # video 1, clips 2 and 3


def test_clip_position_embedding_is_added_per_clip_of_each_video():
    x = torch.zeros(6, 4, 2)  # 2 videos x 3 clips
    embedding = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    out = add_clip_position_embedding(x, embedding)
    assert out[:, :, 0].tolist() == [[c] * 4 for c in [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]]


MERGE_COUNT_CASES = [
    # tokens (CLS included), CLS, fraction merged, expected
    (68, 2, 0.3, 20),
    (88, 4, 0.3, 26),
    (168, 12, 0.3, 50),
    (48, 2, 0.1, 4),
    (107, 12, 0.1, 10),
    (10, 1, 1 - 0.9, 1),  # exact arithmetic: 10 * (1 - 0.9) is 1
    (30, 0, 1 - 0.7, 9),
    (20, 4, 0.9, 8),  # capped at half the patches
    (13, 12, 0.5, 0),
]


@pytest.mark.parametrize("tokens, num_cls, fraction, expected", MERGE_COUNT_CASES)
def test_merge_count(tokens, num_cls, fraction, expected):
    assert merge_count(tokens, num_cls, fraction) == expected


def test_proportional_attention_bias():
    assert proportional_attention_bias(None, torch.float32) is None
    sizes = torch.tensor([[[1.0], [2.0], [4.0]]])
    bias = proportional_attention_bias(sizes, torch.bfloat16)
    assert bias.shape == (1, 1, 1, 3) and bias.dtype == torch.bfloat16
    torch.testing.assert_close(bias.float().flatten(), torch.log(sizes).flatten(), rtol=1e-2, atol=1e-2)
