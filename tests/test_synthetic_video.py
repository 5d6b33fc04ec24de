"""The synthetic temporal benchmark: MSR-VTT layout, reversal pairs that only frame order tells apart."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from transformers_tempme import load_retrieval_dataset, load_reversal_pairs
from transformers_tempme.data.synthetic_video import make_synthetic_benchmark
from transformers_tempme.video_io import read_video_frames


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    return make_synthetic_benchmark(
        tmp_path_factory.mktemp("synthetic"), num_train_pairs=6, num_test_pairs=20, frames_per_video=12, fps=4, size=32
    )


def test_the_loader_reads_both_splits(benchmark):
    train = load_retrieval_dataset("msrvtt", benchmark / "annotations", benchmark / "videos", "train")
    test = load_retrieval_dataset("msrvtt", benchmark / "annotations", benchmark / "videos", "test")
    assert len(set(train["video_id"])) == 12 and len(train) == 24  # two captions per training video
    assert len(test) == 40 and len(set(test["video_id"])) == 40
    assert not set(train["video_id"]) & set(test["video_id"])
    frames, mask = read_video_frames(test[0]["video_path"], 12)
    assert frames.shape == (12, 32, 32, 3) and mask.sum() == 12


def test_every_test_video_has_its_time_reversal_in_the_test_split(benchmark):
    pairs = load_reversal_pairs(benchmark / "annotations")
    test = load_retrieval_dataset("msrvtt", benchmark / "annotations", benchmark / "videos", "test")
    captions = dict(zip(test["video_id"], test["caption"]))
    for video_id in captions:
        partner = pairs[video_id]
        assert pairs[partner] == video_id and partner in captions
        assert captions[partner] != captions[video_id]


def test_reversed_clips_hold_the_same_frames_in_reverse_order(benchmark):
    pairs = load_reversal_pairs(benchmark / "annotations")
    test = load_retrieval_dataset("msrvtt", benchmark / "annotations", benchmark / "videos", "test")
    for video_id, path in list(zip(test["video_id"], test["video_path"]))[:6]:
        forward, _ = read_video_frames(path, 12, sampling="uniform")
        backward, _ = read_video_frames(benchmark / "videos" / f"{pairs[video_id]}.mp4", 12, sampling="uniform")
        # Exactly the same frames (lossless coding), in the other order.
        np.testing.assert_array_equal(forward, backward[::-1])
        assert not np.array_equal(forward, backward)


def test_test_captions_are_diverse_and_order_dependent(benchmark):
    test = load_retrieval_dataset("msrvtt", benchmark / "annotations", benchmark / "videos", "test")
    counts = Counter(test["caption"])
    assert max(counts.values()) == 1
    order_words = ("from left to right", "from right to left", "from top to bottom", "from bottom to top", "grows",
                   "shrinks", "appears", "disappears", "turns from")
    assert all(any(word in caption for word in order_words) for caption in test["caption"])


def test_generation_is_deterministic(benchmark, tmp_path):
    again = make_synthetic_benchmark(
        tmp_path, num_train_pairs=6, num_test_pairs=20, frames_per_video=12, fps=4, size=32
    )
    for name in ("MSRVTT_JSFUSION_test.csv", "MSRVTT_train.9k.csv", "MSRVTT_data.json", "reversal_pairs.json"):
        assert (again / "annotations" / name).read_text() == (benchmark / "annotations" / name).read_text()
    first, _ = read_video_frames(benchmark / "videos" / "video13.mp4", 6)
    second, _ = read_video_frames(again / "videos" / "video13.mp4", 6)
    np.testing.assert_array_equal(first, second)
    data = json.loads((again / "annotations" / "MSRVTT_data.json").read_text())
    assert len(data["sentences"]) == 2 * 52


def test_odd_size_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="size must be even"):
        make_synthetic_benchmark(tmp_path, 1, 1, size=33)
