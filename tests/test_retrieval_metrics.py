import numpy as np
import pytest
import torch

from transformers_tempme import pair_accuracy, retrieval_metrics, text_video_retrieval_metrics
from transformers_tempme.evaluation.metrics import ground_truth_ranks, multi_caption_ranks


# Rows are queries; the ground truth of row i is column i.
PERFECT = np.eye(4)
# Row ranks: 1, 2 (one higher), 3 (two higher), 4 (all higher).
GRADED = np.array(
    [
        [0.9, 0.1, 0.2, 0.3],
        [0.8, 0.5, 0.1, 0.2],
        [0.7, 0.6, 0.4, 0.1],
        [0.9, 0.8, 0.7, 0.0],
    ]
)


@pytest.mark.parametrize(
    "similarity, ranks",
    [
        (PERFECT, [1, 1, 1, 1]),
        (GRADED, [1, 2, 3, 4]),
        (np.ones((3, 3)), [3, 3, 3]),  # all tied: the ground truth is ranked last, not first
        (np.array([[0.5, 0.5, 0.1], [0.0, 1.0, 0.2], [0.3, 0.3, 0.3]]), [2, 1, 3]),
    ],
)
def test_ground_truth_ranks(similarity, ranks):
    assert ground_truth_ranks(similarity).tolist() == ranks


def test_retrieval_metrics_on_graded_matrix():
    metrics = retrieval_metrics(GRADED)
    assert metrics == {"R@1": 25.0, "R@5": 100.0, "R@10": 100.0, "MdR": 2.5, "MnR": 2.5}


def test_retrieval_metrics_recall_at_5_and_10():
    # 12 candidates; query i's ground truth is beaten by i others (ranks 1..12).
    n = 12
    similarity = np.zeros((n, n))
    for i in range(n):
        similarity[i, i] = 0.5
        others = [j for j in range(n) if j != i][:i]
        similarity[i, others] = 0.9
    metrics = retrieval_metrics(torch.tensor(similarity))
    assert metrics["R@1"] == pytest.approx(100 / 12)
    assert metrics["R@5"] == pytest.approx(500 / 12)
    assert metrics["R@10"] == pytest.approx(1000 / 12)
    assert metrics["MdR"] == 6.5 and metrics["MnR"] == 6.5


def test_both_directions_and_rsum():
    results = text_video_retrieval_metrics(GRADED)
    # Video-to-text reads the columns: column 0 has a tie (0.9, 0.9) -> 2; column 1: 0.6 and 0.8 beat 0.5 -> 3;
    # column 2: 0.7 beats 0.4 -> 2; column 3: all beat 0.0 -> 4.
    assert results["text_to_video"]["R@1"] == 25.0
    assert ground_truth_ranks(GRADED.T).tolist() == [2, 3, 2, 4]
    assert results["video_to_text"] == {"R@1": 0.0, "R@5": 100.0, "R@10": 100.0, "MdR": 2.5, "MnR": 2.75}
    expected = sum(results[d][f"R@{k}"] for d in ("text_to_video", "video_to_text") for k in (1, 5, 10))
    assert results["rsum"] == pytest.approx(expected)


def test_multi_caption_mode():
    # 3 videos; texts 0,1 describe video 0, text 2 video 1, texts 3,4 video 2.
    video_of_text = [0, 0, 1, 2, 2]
    similarity = np.array(
        [
            [0.9, 0.1, 0.2],  # t2v rank 1
            [0.3, 0.8, 0.1],  # t2v rank 2
            [0.1, 0.7, 0.7],  # tie with video 2: rank 2
            [0.0, 0.0, 0.4],  # rank 1
            [0.5, 0.6, 0.2],  # rank 3
        ]
    )
    text_to_video, video_to_text = multi_caption_ranks(similarity, video_of_text)
    assert text_to_video.tolist() == [1, 2, 2, 1, 3]
    # Video 0: best own caption scores 0.9, nobody else reaches it -> 1.
    # Video 1: own caption 0.7; text 1 (0.8) beats it -> 2.
    # Video 2: best own caption 0.4; texts 2 (0.7) beats it, text 0 (0.2), text 1 (0.1) do not -> 2.
    assert video_to_text.tolist() == [1, 2, 2]
    results = text_video_retrieval_metrics(similarity, video_of_text)
    assert results["text_to_video"]["R@1"] == pytest.approx(40.0)
    assert results["video_to_text"]["R@1"] == pytest.approx(100 / 3)


def test_multi_caption_ignores_ties_between_own_captions():
    similarity = np.array([[0.5], [0.5]])  # two captions of the only video, tied
    _, video_to_text = multi_caption_ranks(similarity, [0, 0])
    assert video_to_text.tolist() == [1]


def test_one_caption_per_video_equals_diagonal_mode():
    rng = np.random.default_rng(0)
    similarity = rng.normal(size=(7, 7))
    diagonal = text_video_retrieval_metrics(similarity)
    indexed = text_video_retrieval_metrics(similarity, video_of_text=np.arange(7))
    assert diagonal == indexed


def test_paragraph_mode_is_one_text_per_video():
    # The loaders join a paragraph benchmark's captions (test_retrieval_datasets): one text per video, so a square
    # matrix with the ground truth on the diagonal.
    results = text_video_retrieval_metrics(np.array([[0.9, 0.2], [0.1, 0.3]]))
    assert results["text_to_video"]["R@1"] == 100.0 and results["video_to_text"]["R@1"] == 100.0


def test_pair_accuracy():
    # Videos 0 and 1 are each other's time reversal; video 0 prefers its caption, video 1 does not.
    similarity = np.array([[0.9, 0.8], [0.2, 0.7]])
    assert pair_accuracy(similarity, [1, 0]) == 0.5
    # A frame-order-blind model gives both videos one embedding: exactly one of the two can win.
    blind = np.array([[0.6, 0.6], [0.4, 0.4]])
    assert pair_accuracy(blind, [1, 0]) == 0.5


@pytest.mark.parametrize(
    "similarity, video_of_text, message",
    [
        (np.zeros((2, 3)), None, "square"),
        (np.zeros(3), None, "2-D"),
        (np.array([[np.nan]]), None, "NaN"),
        (np.zeros((2, 2)), [0, 5], "index"),
        (np.zeros((2, 3)), [0, 1], "no caption"),
    ],
)
def test_bad_input_is_named(similarity, video_of_text, message):
    with pytest.raises(ValueError, match=message):
        text_video_retrieval_metrics(similarity, video_of_text)
