"""Token counts and GFLOPs: analytic accounting against the paper's tables and against real forwards."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import TINY_BACKBONE, random_video, tiny_config
from transformers_tempme import TempMeCLIPModel, TempMeConfig, count_gflops
from transformers_tempme.analysis.accounting import count_flops, token_schedule

# preset, final (clips, tokens) per video, paper GFLOPs (Tables 1 and 5)
PAPER_ROWS = [
    ("clip-vit-b-32", (12, 50), 53.0),
    ("tome-vit-b-32", (12, 26), 40.2),
    ("tempme-vit-b-32", (1, 97), 34.8),
    ("clip-vit-b-16", (12, 197), 211.3),
    ("tome-vit-b-16", (12, 77), 144.4),
    ("tempme-vit-b-16", (1, 127), 121.4),
]


@pytest.mark.parametrize("preset, final_tokens, paper_gflops", PAPER_ROWS)
def test_paper_token_counts_and_gflops(preset, final_tokens, paper_gflops):
    config = TempMeConfig.from_preset(preset)
    assert token_schedule(config)[-1] == final_tokens
    assert count_gflops(config) == pytest.approx(paper_gflops, rel=0.005)


def test_b32_tempme_per_block_counts():
    schedule = token_schedule(TempMeConfig.from_preset("tempme-vit-b-32"))
    image_blocks = [(12, 50 - 2 * (block + 1)) for block in range(8)]
    assert list(schedule) == image_blocks + [(6, 44), (3, 56), (1, 107), (1, 97)]


def test_64_frames():
    """The paper prints 276.7 / 208.5 / 180.3 GFLOPs for 64 frames; the FLOP formula and fvcore over the
    authors' code both give 2-3.4% more, and so do we."""
    tempme = TempMeConfig.from_preset("tempme-vit-b-32-64f")
    assert token_schedule(tempme)[-1] == (1, 500)
    assert count_gflops(tempme) == pytest.approx(186.43, abs=0.01)
    assert count_gflops(TempMeConfig.from_preset("clip-vit-b-32", num_frames=64)) == pytest.approx(282.47, abs=0.01)
    assert count_gflops(TempMeConfig.from_preset("tome-vit-b-32", num_frames=64)) == pytest.approx(214.28, abs=0.01)


# Table 10: ClipMe blocks (0-indexed), groups, final (clips, tokens), paper GFLOPs.
TABLE_10 = [
    ([8, 9], [3, 4], (1, 134), 35.4),
    ([8], [12], (1, 189), 37.0),
    ([8, 9], [2, 2], (3, 46), 35.4),
    ([8], [3], (4, 49), 36.8),
    ([6, 8, 10], [2, 2, 3], (1, 90), 31.9),
    ([3, 6, 9], [2, 2, 3], (1, 76), 25.8),
    ([0, 4, 8], [2, 2, 3], (1, 64), 18.1),
]


@pytest.mark.parametrize("layers, groups, final_tokens, paper_gflops", TABLE_10)
def test_table_10_schedules(layers, groups, final_tokens, paper_gflops):
    config = TempMeConfig.from_preset("tempme-vit-b-32", clip_merge_layers=layers, clip_merge_groups=groups)
    assert token_schedule(config)[-1] == final_tokens
    assert count_gflops(config) == pytest.approx(paper_gflops, rel=0.005)


def measured_flops(model, pixel_values):
    """FlopCounterMode counts 2 per multiply-add; LayerNorm is not counted."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        outputs = model.encode_video(pixel_values)
    return counter.get_total_flops() // 2, outputs


@pytest.mark.parametrize("schedule", ["clip", "tome", "tempme"])
def test_flop_count_matches_flop_counter_on_tiny_models(schedule):
    config = tiny_config(schedule, num_frames=4, attn_implementation="eager")
    model = TempMeCLIPModel(config).eval()
    batch = 2
    flops, outputs = measured_flops(model, random_video(batch, 4, config))
    expected = count_flops(config)
    assert flops == batch * (expected.matmul + expected.matching)
    assert outputs.token_counts == token_schedule(config)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tempme-vit-b-32", "tome-vit-b-32", "tempme-vit-b-16"])
def test_real_shapes_match_accounting(preset):
    """ViT-B shapes with random weights: the forward's measured tokens and FLOPs are the analytic ones."""
    # The text tower plays no part here: keep it tiny so that building the model is quick.
    config = TempMeConfig.from_preset(preset, text_config=TINY_BACKBONE["text_config"], attn_implementation="eager")
    model = TempMeCLIPModel(config).eval()
    flops, outputs = measured_flops(model, random_video(1, 12, config))
    expected = count_flops(config)
    assert flops == expected.matmul + expected.matching
    assert outputs.token_counts == token_schedule(config)
