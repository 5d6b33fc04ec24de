"""Text-video retrieval metrics: Recall@K, median and mean rank, in both directions, from one similarity matrix.

Ranks are tie-safe: a candidate that scores exactly as high as the ground truth is counted as ranked before it,
so a model that gives every candidate the same score ranks the ground truth last, not first.

Three evaluation modes share these functions:

- one caption per video (MSR-VTT 1k-A): a square `(texts, videos)` matrix with the pairs on the diagonal;
- paragraphs (ActivityNet, DiDeMo): the captions of a video joined into one text, again a square matrix;
- several captions per video (MSVD, MSR-VTT full test): `(texts, videos)` with `video_of_text[t]` the video of
  text `t`. A text query is a hit when its video is retrieved; for a video query the rank is the best rank of
  any of its captions among all texts (its other captions are not counted as competitors).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

RECALL_LEVELS: tuple[int, ...] = (1, 5, 10)
DIRECTIONS: tuple[str, ...] = ("text_to_video", "video_to_text")


def _as_float_array(similarity) -> np.ndarray:
    if isinstance(similarity, torch.Tensor):
        similarity = similarity.detach().float().cpu().numpy()
    array = np.asarray(similarity, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"similarity must be a 2-D matrix (queries, candidates), got shape {array.shape}.")
    if np.isnan(array).any():
        raise ValueError("similarity contains NaN; the embeddings it was computed from are broken.")
    return array


def metrics_from_ranks(ranks: Sequence[int] | np.ndarray) -> dict[str, float]:
    """`R@1`, `R@5`, `R@10` (percent of queries whose rank is at most K), `MdR` and `MnR` of 1-based ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ValueError("No queries to evaluate: the similarity matrix is empty.")
    metrics = {f"R@{k}": float(100.0 * np.mean(ranks <= k)) for k in RECALL_LEVELS}
    metrics["MdR"] = float(np.median(ranks))
    metrics["MnR"] = float(np.mean(ranks))
    return metrics


def ground_truth_ranks(similarity) -> np.ndarray:
    """1-based rank of the diagonal entry of every row: 1 + candidates other than itself scoring at least as high."""
    similarity = _as_float_array(similarity)
    if similarity.shape[0] != similarity.shape[1]:
        raise ValueError(
            f"Ground truth on the diagonal needs a square matrix, got {similarity.shape}. With several captions per "
            "video use text_video_retrieval_metrics(similarity, video_of_text=...)."
        )
    diagonal = np.diag(similarity)[:, None]
    at_least_as_high = similarity >= diagonal
    return at_least_as_high.sum(axis=1)  # the diagonal itself counts once: rank = 1 + the others


def retrieval_metrics(similarity) -> dict[str, float]:
    """Retrieval metrics of a `(queries, candidates)` similarity matrix whose ground truth is on the diagonal.

    Returns:
        `dict` with `R@1`, `R@5`, `R@10` (percent), `MdR` (median rank) and `MnR` (mean rank).
    """
    return metrics_from_ranks(ground_truth_ranks(similarity))


def multi_caption_ranks(similarity, video_of_text: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of both directions when videos have several captions.

    Args:
        similarity: `(num_texts, num_videos)`.
        video_of_text: `(num_texts,)` column of the video that text `t` describes; every video needs one caption.

    Returns:
        `(text_to_video_ranks (num_texts,), video_to_text_ranks (num_videos,))`.
    """
    similarity = _as_float_array(similarity)
    num_texts, num_videos = similarity.shape
    video_of_text = np.asarray(video_of_text, dtype=np.int64)
    if video_of_text.shape != (num_texts,):
        raise ValueError(f"video_of_text must have one entry per text ({num_texts}), got shape {video_of_text.shape}.")
    if video_of_text.min(initial=0) < 0 or video_of_text.max(initial=0) >= num_videos:
        raise ValueError(f"video_of_text must index the {num_videos} video columns, got values outside [0, {num_videos}).")
    captioned = np.zeros(num_videos, dtype=bool)
    captioned[video_of_text] = True
    if not captioned.all():
        raise ValueError(f"Videos {np.flatnonzero(~captioned).tolist()} have no caption; drop them from the matrix.")

    texts = np.arange(num_texts)
    true_scores = similarity[texts, video_of_text][:, None]
    text_to_video = (similarity >= true_scores).sum(axis=1)

    is_own_caption = video_of_text[:, None] == np.arange(num_videos)[None, :]  # (texts, videos)
    best_own = np.where(is_own_caption, similarity, -np.inf).max(axis=0)  # (videos,)
    competitors = (similarity >= best_own[None, :]) & ~is_own_caption
    video_to_text = 1 + competitors.sum(axis=0)
    return text_to_video, video_to_text


def text_video_retrieval_metrics(
    similarity, video_of_text: Sequence[int] | np.ndarray | None = None
) -> dict[str, dict[str, float] | float]:
    """Both retrieval directions from one `(texts, videos)` similarity matrix, and their R-sum.

    Args:
        similarity: `(num_texts, num_videos)` scores, e.g. `text_embeds @ video_embeds.T`.
        video_of_text: for several captions per video, the video column of every text. `None` (one caption or one
            paragraph per video): the matrix is square with the pairs on the diagonal.

    Returns:
        `{"text_to_video": {...}, "video_to_text": {...}, "rsum": float}`; R-sum adds R@1, R@5 and R@10 of both
        directions.
    """
    similarity = _as_float_array(similarity)
    if video_of_text is None:
        text_to_video = ground_truth_ranks(similarity)
        video_to_text = ground_truth_ranks(similarity.T)
    else:
        text_to_video, video_to_text = multi_caption_ranks(similarity, video_of_text)
    results = {"text_to_video": metrics_from_ranks(text_to_video), "video_to_text": metrics_from_ranks(video_to_text)}
    results["rsum"] = float(sum(results[d][f"R@{k}"] for d in DIRECTIONS for k in RECALL_LEVELS))
    return results


def pair_accuracy(similarity, partner_of: Sequence[int] | np.ndarray) -> float:
    """Share of videos that score their own caption strictly above the caption of a paired video.

    With `partner_of[i]` the time reversal of video `i` (and texts in the same order as videos), this is the
    purely temporal test of the synthetic benchmark: a model blind to frame order is at 0.5 at best.

    Args:
        similarity: square `(texts, videos)` with the pairs on the diagonal.
        partner_of: `(num_videos,)` index of each video's partner.
    """
    similarity = _as_float_array(similarity)
    partner_of = np.asarray(partner_of, dtype=np.int64)
    videos = np.arange(similarity.shape[1])
    own = similarity[videos, videos]
    partner_caption = similarity[partner_of, videos]
    return float(np.mean(own > partner_caption))


__all__ = [
    "retrieval_metrics",
    "text_video_retrieval_metrics",
    "ground_truth_ranks",
    "multi_caption_ranks",
    "metrics_from_ranks",
    "pair_accuracy",
]
