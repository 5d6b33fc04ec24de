"""The optimised merging functions merge the same tokens, in the same order, to the same values as the
straightforward reference in `reference_merging.py`, on random inputs and inside a whole tiny model."""

import pytest
import torch
from reference_merging import (
    reference_join_clips,
    reference_matching,
    reference_merge_sum,
    reference_merge_weighted_average,
    reference_split,
)

from conftest import tiny_config
from transformers_tempme import TempMeCLIPModel
from transformers_tempme import modeling_tempme
from transformers_tempme.merging import (
    bipartite_soft_matching,
    join_clips,
    merge_rows,
    merge_sum,
    merge_weighted_average,
    source_destination_positions,
)

# (sequences, tokens, metric dim, CLS tokens, tokens to merge): odd and even CLS counts and token counts, r from
# 1 to the cap of half the patches.
CASES = [
    (3, 17, 8, 1, 4),
    (2, 34, 8, 2, 10),
    (4, 50, 16, 1, 2),
    (2, 97, 16, 3, 30),
    (2, 20, 4, 4, 8),
    (1, 9, 4, 1, 4),
    (2, 10, 4, 2, 4),
    (5, 26, 8, 12, 7),
]


@pytest.mark.parametrize("num_sequences, num_tokens, metric_dim, num_cls, num_merge", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matching_and_merges_equal_reference(num_sequences, num_tokens, metric_dim, num_cls, num_merge, dtype):
    generator = torch.Generator().manual_seed(num_tokens * 31 + num_cls)
    metric = torch.randn(num_sequences, num_tokens, metric_dim, generator=generator).to(dtype)
    x = torch.randn(num_sequences, num_tokens, 24, generator=generator).to(dtype)
    sizes = torch.randint(1, 6, (num_sequences, num_tokens, 1), generator=generator).float()

    matching = bipartite_soft_matching(metric, num_merge, num_cls)
    reference = reference_matching(metric, num_merge, num_cls)
    for name in ("kept", "merged", "targets"):
        assert torch.equal(getattr(matching, name), getattr(reference, name)), name

    for token_sizes in (None, sizes):
        merged, merged_sizes = merge_weighted_average(x, token_sizes, matching)
        expected, expected_sizes = reference_merge_weighted_average(x, token_sizes, reference)
        assert torch.equal(merged, expected)
        assert torch.equal(merged_sizes, expected_sizes)
    assert torch.equal(merge_sum(x, matching), reference_merge_sum(x, reference))


@pytest.mark.parametrize("num_tokens, num_cls", [(17, 1), (18, 1), (20, 4), (21, 3), (26, 12)])
def test_positions_are_those_of_the_split(num_tokens, num_cls):
    positions = torch.arange(num_tokens).view(1, num_tokens, 1)
    _, sources, destinations = reference_split(positions, num_cls)
    source_positions, destination_positions = source_destination_positions(num_tokens, num_cls, torch.device("cpu"))
    assert torch.equal(sources.flatten(), source_positions)
    assert torch.equal(destinations.flatten(), destination_positions)


@pytest.mark.parametrize("num_sequences, num_tokens, group, num_cls", [(12, 5, 2, 1), (6, 9, 2, 2), (6, 7, 3, 4), (4, 3, 4, 1)])
@pytest.mark.parametrize("feature_shape", [(8,), (1,), (2, 3)])
def test_join_clips_equals_reference(num_sequences, num_tokens, group, num_cls, feature_shape):
    x = torch.randn(num_sequences, num_tokens, *feature_shape, generator=torch.Generator().manual_seed(2))
    assert torch.equal(join_clips(x, group, num_cls), reference_join_clips(x, group, num_cls))


def test_merge_rows_cover_every_token_once():
    metric = torch.randn(3, 21, 8, generator=torch.Generator().manual_seed(0))
    matching = bipartite_soft_matching(metric, 6, 3)
    rows = merge_rows(matching, 21)
    every_row = torch.cat([rows.output, rows.moved]).sort().values
    assert torch.equal(every_row, torch.arange(3 * 21))
    assert rows.num_out == 21 - 6


@pytest.mark.parametrize("with_sizes", [False, True])
def test_gradients_equal_reference(with_sizes):
    generator = torch.Generator().manual_seed(1)
    metric = torch.randn(4, 34, 8, generator=generator)
    sizes = torch.randint(1, 6, (4, 34, 1), generator=generator).float() if with_sizes else None
    x = torch.randn(4, 34, 16, generator=generator, requires_grad=True)
    weights = torch.randn(2, 58, 16, generator=generator)
    matching = bipartite_soft_matching(join_clips(metric, 2, 2), 10, 4)
    joined_sizes = None if sizes is None else reference_join_clips(sizes, 2, 2)
    (merge_weighted_average(join_clips(x, 2, 2), joined_sizes, matching)[0] * weights).sum().backward()
    grad, x.grad = x.grad, None
    merged = reference_merge_weighted_average(reference_join_clips(x, 2, 2), joined_sizes, matching)[0]
    (merged * weights).sum().backward()
    assert torch.equal(grad, x.grad)


@pytest.mark.parametrize("schedule", ["tome", "tempme"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_model_merges_like_reference(schedule, attn, monkeypatch):
    config = tiny_config(schedule, clip_position_embedding_init_std=0.02, attn_implementation=attn)
    torch.manual_seed(0)
    model = TempMeCLIPModel(config).eval()
    pixel_values = torch.randn(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        optimised = model.encode_video(pixel_values, output_merge_sources=True)
        monkeypatch.setattr(modeling_tempme, "bipartite_soft_matching", reference_matching)
        monkeypatch.setattr(modeling_tempme, "merge_weighted_average", reference_merge_weighted_average)
        monkeypatch.setattr(modeling_tempme, "merge_sum", reference_merge_sum)
        monkeypatch.setattr(modeling_tempme, "join_clips", reference_join_clips)
        reference = model.encode_video(pixel_values, output_merge_sources=True)
    assert optimised.token_counts == reference.token_counts
    assert torch.equal(optimised.vision_model_output.merge_sources, reference.vision_model_output.merge_sources)
    assert torch.equal(optimised.vision_model_output.token_sizes, reference.vision_model_output.token_sizes)
    torch.testing.assert_close(optimised.frame_embeds, reference.frame_embeds, rtol=0, atol=0)
