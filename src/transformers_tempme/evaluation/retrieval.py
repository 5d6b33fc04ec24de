"""Evaluate a `TempMeCLIPModel` on a retrieval split: encode every video once, every caption once, score all pairs.

Used by `tempme evaluate` and the synthetic demo; `TempMeTrainer.evaluate` does the same inside training,
across processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from ..analysis.accounting import count_gflops, token_schedule
from ..evaluation.metrics import pair_accuracy, text_video_retrieval_metrics
from ..data.training_data import VideoTextDataset, collate_video_text


@dataclass
class EncodedSplit:
    """Embeddings of a split.

    Attributes:
        text_embeds (`torch.Tensor` of shape `(num_texts, projection_dim)`): L2-normalised.
        video_embeds (`torch.Tensor` of shape `(num_videos, projection_dim)`): L2-normalised, one per distinct video.
        video_of_text (`np.ndarray` of shape `(num_texts,)`): the video row each text describes.
        video_seconds (`float`): wall time spent in the video encoder.
    """

    text_embeds: torch.Tensor
    video_embeds: torch.Tensor
    video_of_text: np.ndarray
    video_seconds: float

    @property
    def similarity(self) -> torch.Tensor:
        """`(num_texts, num_videos)` cosine similarities."""
        return self.text_embeds @ self.video_embeds.t()

    @property
    def one_text_per_video(self) -> bool:
        return len(self.video_of_text) == len(self.video_embeds) and bool(
            np.all(self.video_of_text == np.arange(len(self.video_embeds)))
        )


def _normalise(embeds: torch.Tensor) -> torch.Tensor:
    return embeds / embeds.norm(dim=-1, keepdim=True)


@torch.no_grad()
def encode_split(
    model, dataset: VideoTextDataset, batch_size: int = 32, num_workers: int = 0, progress: bool = True
) -> EncodedSplit:
    """Encode each distinct video of `dataset` once (batched) and every caption, with progress bars."""
    model.eval()
    device = next(model.parameters()).device
    first_rows = list({video: row for row, video in reversed(list(enumerate(dataset.video_index)))}.values())
    first_rows.sort()
    video_loader = DataLoader(
        Subset(dataset, first_rows), batch_size=batch_size, num_workers=num_workers, collate_fn=collate_video_text
    )
    videos, seconds = [], 0.0
    for batch in tqdm(video_loader, desc="Encoding videos", disable=not progress):
        pixel_values, video_mask = batch["pixel_values"].to(device), batch["video_mask"].to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        videos.append(model.encode_video(pixel_values, video_mask).video_embeds)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start

    texts = []
    text_batch = 4 * batch_size
    for start in tqdm(range(0, len(dataset), text_batch), desc="Encoding texts", disable=not progress):
        rows = range(start, min(start + text_batch, len(dataset)))
        input_ids, attention_mask = dataset.processor.encode_text([dataset.caption(i) for i in rows])
        output = model.get_text_features(
            input_ids=torch.from_numpy(input_ids).to(device), attention_mask=torch.from_numpy(attention_mask).to(device)
        )
        texts.append(output.pooler_output)
    return EncodedSplit(
        text_embeds=_normalise(torch.cat(texts)).float().cpu(),
        video_embeds=_normalise(torch.cat(videos)).float().cpu(),
        video_of_text=np.asarray(dataset.video_index),
        video_seconds=seconds,
    )


def evaluate_retrieval(
    model,
    dataset: VideoTextDataset,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
    partner_of_video: dict[str, str] | None = None,
) -> dict:
    """Metrics of both directions, R-sum, GFLOPs per video, output tokens per video and videos/s.

    Args:
        partner_of_video: `{video_id: video_id}` (e.g. each video's time reversal) to add `pair_accuracy`; needs one
            caption per video.

    Returns:
        `{"text_to_video": {...}, "video_to_text": {...}, "rsum", "gflops", "output_tokens", "videos_per_s"}`
        (plus `"pair_accuracy"`).
    """
    encoded = encode_split(model, dataset, batch_size, num_workers, progress)
    results = text_video_retrieval_metrics(
        encoded.similarity, None if encoded.one_text_per_video else encoded.video_of_text
    )
    config = model.config
    num_frames = dataset[0]["pixel_values"].shape[0]
    clips, tokens = token_schedule(config, num_frames)[-1]
    results["gflops"] = count_gflops(model, num_frames)  # with the cost of adapters or prompts
    results["output_tokens"] = clips * tokens
    results["videos_per_s"] = len(encoded.video_embeds) / encoded.video_seconds if encoded.video_seconds > 0 else None
    if partner_of_video is not None:
        if not encoded.one_text_per_video:
            raise ValueError("pair_accuracy needs exactly one caption per video, in video order.")
        row_of = {video_id: i for i, video_id in enumerate(dataset.video_ids)}
        partners = [row_of[partner_of_video[video_id]] for video_id in dataset.video_ids]
        results["pair_accuracy"] = pair_accuracy(encoded.similarity, partners)
    return results


__all__ = ["EncodedSplit", "encode_split", "evaluate_retrieval"]
