"""`TempMeTrainer`: the `Trainer` for contrastive text-video training, with negatives from every process.

Each process encodes its local batch; text and video embeddings are then all-gathered so that every process
computes the symmetric InfoNCE over the logits of the whole global batch (spec section 6, as in the authors'
code). The gather passes gradients back to the local slice only. Unlike the authors' `AllGather`, whose backward
keeps only the local rows of the local gradient, the backward here first sums the gradient over processes: every
process holds the same global loss, so after DDP averages the parameter gradients they equal the gradients of a
single process running the whole global batch (the authors' are that divided by the number of processes, which
Adam largely absorbs).

Evaluation encodes the eval split (sharded over processes), gathers the embeddings and reports retrieval metrics
of both directions (`eval_text_to_video_R@1`, ..., `eval_rsum`).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from transformers import EvalPrediction, Trainer

from ..modeling_tempme import symmetric_contrastive_loss
from ..evaluation.metrics import text_video_retrieval_metrics

MODEL_INPUT_NAMES = ("input_ids", "attention_mask", "pixel_values", "video_mask")
VIDEO_INDEX_KEY = "video_index"


class _GatherWithGradient(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums the gradient over processes and returns the local slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world_size = dist.get_world_size()
        ctx.rank, ctx.local_size = dist.get_rank(), tensor.shape[0]
        gathered = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(gathered, tensor.contiguous())
        return torch.cat(gathered, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.local_size
        return grad[start : start + ctx.local_size]


def gather_with_gradient(tensor: torch.Tensor) -> torch.Tensor:
    """`(local_batch, ...)` -> `(world_size * local_batch, ...)` in rank order; identity without distributed.

    Every process must pass the same local batch size (Accelerate's `even_batches`, on by default, ensures it).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device))
    if len({int(size) for size in sizes}) > 1:
        raise ValueError(
            f"Processes hold different batch sizes ({[int(s) for s in sizes]}); the contrastive loss gathers equal "
            "slices. Keep Accelerate's even_batches on or set dataloader_drop_last=True."
        )
    return _GatherWithGradient.apply(tensor)


def unwrap_tempme(model: nn.Module) -> nn.Module:
    """The `TempMeCLIPModel` inside DDP and peft wrappers (for `logit_scale` and the encoders)."""
    while hasattr(model, "module"):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def global_contrastive_loss(
    text_embeds: torch.Tensor, video_embeds: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE over the embeddings of all processes (L2-normalised `(local_batch, dim)` each)."""
    all_texts = gather_with_gradient(text_embeds)
    all_videos = gather_with_gradient(video_embeds)
    logits_per_text = logit_scale.exp() * all_texts @ all_videos.t()
    return symmetric_contrastive_loss(logits_per_text)


class TempMeTrainer(Trainer):
    """`Trainer` whose loss is the symmetric InfoNCE over the global batch and whose `evaluate` is retrieval.

    Batches are dicts with `input_ids`, `attention_mask`, `pixel_values` `(batch, frames, 3, H, W)` and
    `video_mask`; row `i`'s text describes row `i`'s video. Eval batches may add `video_index` `(batch,)`: the
    video each text describes, when videos have several captions (each video is then encoded once per caption
    but counted once).

    Train with `remove_unused_columns=False` (there are no labels for the Trainer to keep).
    """

    # compute_loss returns a per-batch mean: the Trainer divides it by the gradient-accumulation steps.
    loss_is_scaled_for_ga = False

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        outputs = model(**{name: inputs[name] for name in MODEL_INPUT_NAMES if name in inputs})
        logit_scale = unwrap_tempme(model).logit_scale
        loss = global_contrastive_loss(outputs.text_embeds, outputs.video_embeds, logit_scale)
        return (loss, outputs) if return_outputs else loss

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def encode_eval_split(self, dataset) -> tuple[torch.Tensor, torch.Tensor, np.ndarray | None, float]:
        """Text and video embeddings of a split (all processes' shards, in dataset order) and the encoding time.

        Returns:
            `(text_embeds (texts, dim), video_embeds (videos, dim), video_of_text or None, seconds)`.
        """
        # Not get_eval_dataloader: it drops the last incomplete batch with dataloader_drop_last, and evaluation
        # needs every sample. Accelerate shards the batches; gather_for_metrics drops the padding it adds.
        dataloader = self.accelerator.prepare(
            DataLoader(
                dataset,
                batch_size=self.args.eval_batch_size,
                collate_fn=self.data_collator,
                num_workers=self.args.dataloader_num_workers,
                pin_memory=self.args.dataloader_pin_memory,
            )
        )
        model = unwrap_tempme(self.model)
        was_training = model.training
        model.eval()
        texts, videos, indices = [], [], []
        start = time.perf_counter()
        for batch in dataloader:
            batch = self._prepare_inputs(batch)
            video = model.encode_video(batch["pixel_values"], batch.get("video_mask")).video_embeds
            text = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"))
            text = text.pooler_output
            local = {"text": text / text.norm(dim=-1, keepdim=True), "video": video / video.norm(dim=-1, keepdim=True)}
            if VIDEO_INDEX_KEY in batch:
                local[VIDEO_INDEX_KEY] = batch[VIDEO_INDEX_KEY]
            gathered = self.accelerator.gather_for_metrics(local)
            texts.append(gathered["text"].float().cpu())
            videos.append(gathered["video"].float().cpu())
            if VIDEO_INDEX_KEY in gathered:
                indices.append(gathered[VIDEO_INDEX_KEY].cpu())
        seconds = time.perf_counter() - start
        model.train(was_training)
        text_embeds, video_embeds = torch.cat(texts), torch.cat(videos)
        if not indices:
            return text_embeds, video_embeds, None, seconds
        # One column per distinct video, in order of first appearance.
        video_index = torch.cat(indices).numpy()
        unique, first_row, video_of_text = np.unique(video_index, return_index=True, return_inverse=True)
        order = np.argsort(first_row)
        column_of = np.empty_like(order)
        column_of[order] = np.arange(len(unique))
        return text_embeds, video_embeds[first_row[order]], column_of[video_of_text], seconds

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Retrieval metrics of the eval split, logged and returned as `{prefix}_text_to_video_R@1`, ...,
        `{prefix}_rsum` (select checkpoints with `metric_for_best_model="rsum"`).

        A `compute_metrics` given to the Trainer is called with `EvalPrediction(predictions=similarity (texts,
        videos), label_ids=video of each text)` and its results are added.
        """
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        if dataset is None:
            raise ValueError("TempMeTrainer.evaluate needs an eval_dataset (pass one to the Trainer or to evaluate).")
        if isinstance(dataset, dict):
            metrics = {}
            for name, split in dataset.items():
                metrics.update(self.evaluate(split, ignore_keys, f"{metric_key_prefix}_{name}"))
            return metrics
        text_embeds, video_embeds, video_of_text, seconds = self.encode_eval_split(dataset)
        results = text_video_retrieval_metrics(text_embeds @ video_embeds.t(), video_of_text)
        metrics = {f"{metric_key_prefix}_rsum": results["rsum"], f"{metric_key_prefix}_runtime": round(seconds, 4)}
        for direction in ("text_to_video", "video_to_text"):
            for name, value in results[direction].items():
                metrics[f"{metric_key_prefix}_{direction}_{name}"] = value
        if self.compute_metrics is not None:
            # Extra metrics see the (texts, videos) similarity as predictions and each text's video as labels.
            similarity = (text_embeds @ video_embeds.t()).numpy()
            labels = np.arange(len(video_embeds)) if video_of_text is None else video_of_text
            extra = self.compute_metrics(EvalPrediction(predictions=similarity, label_ids=labels))
            metrics.update({f"{metric_key_prefix}_{name}": value for name, value in extra.items()})
        if math.isfinite(seconds) and seconds > 0:
            metrics[f"{metric_key_prefix}_videos_per_second"] = round(len(video_embeds) / seconds, 3)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


__all__ = ["TempMeTrainer", "gather_with_gradient", "global_contrastive_loss", "unwrap_tempme"]
