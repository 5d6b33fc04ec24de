"""The one evaluation path: encode every video of a split once and every caption once, and score all pairs.

`encode_split` is what `TempMeTrainer.evaluate`, `tempme evaluate` and the demo run. With an `accelerate.Accelerator`
the videos and captions are sharded over its processes and the embeddings gathered (`gather_for_metrics`, which drops
the samples Accelerate repeats to even out the last batch); without one they are encoded in this process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..analysis.accounting import count_gflops, token_schedule
from ..data.video_text import VideoTextDataset, collate_video_text
from ..evaluation.metrics import pair_accuracy, text_video_retrieval_metrics


@dataclass
class EncodedSplit:
    """Embeddings of a split.

    Attributes:
        text_embeds (`torch.Tensor` of shape `(num_texts, projection_dim)`): L2-normalised, one per caption whose
            video decoded.
        video_embeds (`torch.Tensor` of shape `(num_videos, projection_dim)`): L2-normalised, one per distinct video
            that decoded.
        video_of_text (`np.ndarray` of shape `(num_texts,)`): the video row each text describes.
        video_ids (`list[str]`): the id of every video row.
        video_seconds (`float`): wall time spent in the video encoder (this process).
        seconds (`float`): wall time of the whole encoding, decoding included.
        skipped_video_ids (`list[str]`): videos left out because they do not decode (with their captions).
    """

    text_embeds: torch.Tensor
    video_embeds: torch.Tensor
    video_of_text: np.ndarray
    video_ids: list[str]
    video_seconds: float
    seconds: float
    skipped_video_ids: list[str] = field(default_factory=list)

    @property
    def similarity(self) -> torch.Tensor:
        """`(num_texts, num_videos)` cosine similarities."""
        return self.text_embeds @ self.video_embeds.t()

    @property
    def one_text_per_video(self) -> bool:
        return len(self.video_of_text) == len(self.video_embeds) and bool(
            np.all(self.video_of_text == np.arange(len(self.video_embeds)))
        )


def _loader(dataset, batch_size: int, num_workers: int, accelerator):
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_video_text)
    # Not the Trainer's eval dataloader: that one drops the last incomplete batch with dataloader_drop_last, and
    # evaluation needs every sample.
    return accelerator.prepare(loader) if accelerator is not None else loader


def _gather(accelerator, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if accelerator is not None:
        values = accelerator.gather_for_metrics(values)
    return {key: value.cpu() for key, value in values.items()}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def encode_split(
    model,
    dataset: VideoTextDataset,
    batch_size: int = 32,
    num_workers: int = 0,
    accelerator=None,
    progress: bool = True,
) -> EncodedSplit:
    """Encode each distinct video of `dataset` once and every caption, with progress bars.

    Args:
        model (`TempMeCLIPModel`): on the accelerator's device when one is given; put in eval mode.
        dataset (`VideoTextDataset`): the split; its videos are never augmented here.
        batch_size (`int`): videos per batch (captions go 4 times as many per batch).
        num_workers (`int`): DataLoader worker processes decoding the videos.
        accelerator (`accelerate.Accelerator`, *optional*): shard over its processes and gather the embeddings.
        progress (`bool`): show progress bars (on the main process).

    Returns:
        `EncodedSplit`. Videos that do not decode are skipped under the dataset's policy and left out together with
        their captions (`skipped_video_ids`).
    """
    if not isinstance(dataset, VideoTextDataset):
        raise TypeError(
            f"encode_split needs a VideoTextDataset (it encodes each distinct video once), got {type(dataset).__name__}."
        )
    model.eval()
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    show = progress and (accelerator is None or accelerator.is_local_main_process)
    start = time.perf_counter()

    videos, video_numbers, decoded, video_seconds = [], [], [], 0.0
    for batch in tqdm(_loader(dataset.video_view(), batch_size, num_workers, accelerator), desc="Encoding videos", disable=not show):
        pixel_values, video_mask = batch["pixel_values"].to(device), batch["video_mask"].to(device)
        _synchronize(device)
        encode_start = time.perf_counter()
        embeds = F.normalize(model.encode_video(pixel_values, video_mask).video_embeds, dim=-1)
        _synchronize(device)
        video_seconds += time.perf_counter() - encode_start
        gathered = _gather(accelerator, {"embeds": embeds.float(), "index": batch["video_index"].to(device),
                                         "decoded": batch["decoded"].to(device)})
        videos.append(gathered["embeds"])
        video_numbers.append(gathered["index"])
        decoded.append(gathered["decoded"])

    texts, text_videos = [], []
    for batch in tqdm(_loader(dataset.text_view(), 4 * batch_size, num_workers, accelerator), desc="Encoding texts", disable=not show):
        output = model.get_text_features(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        )
        gathered = _gather(accelerator, {"embeds": F.normalize(output.pooler_output, dim=-1).float(),
                                         "video": batch["video_index"].to(device)})
        texts.append(gathered["embeds"])
        text_videos.append(gathered["video"])

    # Keep the videos that decoded (in video order) and the captions of those videos.
    video_number, is_decoded = torch.cat(video_numbers).numpy(), torch.cat(decoded).numpy().astype(bool)
    video_embeds = torch.cat(videos)[np.argsort(video_number)]
    is_decoded = is_decoded[np.argsort(video_number)]
    column_of = np.cumsum(is_decoded) - 1
    video_of_row = torch.cat(text_videos).numpy()
    keep_text = is_decoded[video_of_row]
    return EncodedSplit(
        text_embeds=torch.cat(texts)[torch.from_numpy(keep_text)],
        video_embeds=video_embeds[torch.from_numpy(is_decoded)],
        video_of_text=column_of[video_of_row[keep_text]],
        video_ids=[video_id for video_id, ok in zip(dataset.video_ids, is_decoded) if ok],
        video_seconds=video_seconds,
        seconds=time.perf_counter() - start,
        skipped_video_ids=[video_id for video_id, ok in zip(dataset.video_ids, is_decoded) if not ok],
    )


def evaluate_retrieval(
    model,
    dataset: VideoTextDataset,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
    partner_of_video: dict[str, str] | None = None,
    accelerator=None,
) -> dict:
    """Metrics of both directions, R-sum, GFLOPs per video, output tokens per video and videos/s.

    Args:
        partner_of_video: `{video_id: video_id}` (e.g. each video's time reversal) to add `pair_accuracy`; needs one
            caption per video.

    Returns:
        `{"text_to_video": {...}, "video_to_text": {...}, "rsum", "gflops", "output_tokens", "videos_per_s",
        "num_texts", "num_videos", "skipped_videos"}` (plus `"pair_accuracy"`).
    """
    encoded = encode_split(model, dataset, batch_size, num_workers, accelerator, progress)
    results = text_video_retrieval_metrics(encoded.similarity, encoded.video_of_text)
    config = model.config
    num_frames = dataset.processor.num_frames
    clips, tokens = token_schedule(config, num_frames)[-1]
    results["gflops"] = count_gflops(model, num_frames)  # with the cost of adapters or prompts
    results["output_tokens"] = clips * tokens
    results["videos_per_s"] = len(encoded.video_embeds) / encoded.video_seconds if encoded.video_seconds > 0 else None
    results["num_texts"], results["num_videos"] = len(encoded.text_embeds), len(encoded.video_embeds)
    results["skipped_videos"] = encoded.skipped_video_ids
    if partner_of_video is not None:
        if not encoded.one_text_per_video:
            raise ValueError("pair_accuracy needs exactly one caption per video, in video order.")
        row_of = {video_id: i for i, video_id in enumerate(encoded.video_ids)}
        partners = [row_of[partner_of_video[video_id]] for video_id in encoded.video_ids]
        results["pair_accuracy"] = pair_accuracy(encoded.similarity, partners)
    return results


__all__ = ["EncodedSplit", "encode_split", "evaluate_retrieval"]
