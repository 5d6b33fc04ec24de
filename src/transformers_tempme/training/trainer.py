"""`TempMeTrainer`: the `Trainer` for contrastive text-video training, with negatives from every process.

Each process encodes its local batch; text and video embeddings are then all-gathered so that every process
computes the symmetric InfoNCE over the logits of the whole global batch, as in the authors' code. The gather passes
gradients back to the local slice only, summed over processes (`torch.distributed.nn.functional.all_gather`): every
process holds the same global loss, so after DDP averages the parameter gradients they equal the gradients of a
single process running the whole global batch. (The authors' `AllGather` keeps only the local gradient, i.e. that
divided by the number of processes, which Adam largely absorbs.)

Evaluation is `evaluation.retrieval.encode_split` on the eval split: every video encoded once (sharded over
processes, gathered with Accelerate), every caption once, and retrieval metrics of both directions
(`eval_text_to_video_R@1`, ..., `eval_rsum`).
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.distributed as dist
from torch import nn
from transformers import EvalPrediction, Trainer, TrainerCallback

from ..evaluation.metrics import text_video_retrieval_metrics
from ..evaluation.retrieval import encode_split
from ..modeling_tempme import symmetric_contrastive_loss

MODEL_INPUT_NAMES = ("input_ids", "attention_mask", "pixel_values", "video_mask")


def _all_gather_with_gradient(tensor: torch.Tensor) -> list[torch.Tensor]:
    from torch.distributed.nn.functional import all_gather

    # torch 2.13 marks this function deprecated in favour of one in a private module
    # (`torch.distributed._functional_collectives`); it is the public autograd all-gather (transformers' FLAVA uses it)
    # and tests/test_gathered_loss.py checks its gradients against a single process.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*nn\.functional\.all_gather is deprecated", category=FutureWarning)
        return list(all_gather(tensor))


def gather_with_gradient(tensor: torch.Tensor) -> torch.Tensor:
    """`(local_batch, ...)` -> `(sum of local batches, ...)` in rank order; identity without distributed.

    The backward returns each process the gradient of its own rows, summed over processes. Processes may hold
    different batch sizes (a skipped video makes a batch smaller): slices are padded to the largest for the
    collective and the padding is dropped again.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    local = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, local)
    sizes = [int(size) for size in sizes]
    padding = max(sizes) - tensor.shape[0]
    if padding:
        tensor = torch.cat([tensor, tensor.new_zeros(padding, *tensor.shape[1:])])
    gathered = _all_gather_with_gradient(tensor.contiguous())
    return torch.cat([part[:size] for part, size in zip(gathered, sizes)])


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


class _SetDatasetEpoch(TrainerCallback):
    """Tells the train dataset the epoch before its batches are drawn, so that its random draws (keyed on
    `(seed, epoch, sample)`) are those of that epoch, also in a run resumed mid-epoch."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        dataset = self.trainer.train_dataset
        if hasattr(dataset, "set_epoch"):
            # state.epoch is `epoch + steps done / steps per epoch`: an integer at an epoch's start, a fraction when
            # resuming inside one.
            dataset.set_epoch(math.floor(state.epoch or 0))


class TempMeTrainer(Trainer):
    """`Trainer` whose loss is the symmetric InfoNCE over the global batch and whose `evaluate` is retrieval.

    Train batches are dicts with `input_ids`, `attention_mask`, `pixel_values` `(batch, frames, 3, H, W)` and
    `video_mask` (`VideoTextDataset` + `collate_video_text`); row `i`'s text describes row `i`'s video. The eval
    dataset is a `VideoTextDataset`: each distinct video is encoded once, however many captions it has.

    Train with `remove_unused_columns=False` (there are no labels for the Trainer to keep).
    """

    # compute_loss returns a per-batch mean: the Trainer divides it by the gradient-accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_callback(_SetDatasetEpoch(self))

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        outputs = model(**{name: inputs[name] for name in MODEL_INPUT_NAMES if name in inputs})
        logit_scale = unwrap_tempme(model).logit_scale
        loss = global_contrastive_loss(outputs.text_embeds, outputs.video_embeds, logit_scale)
        return (loss, outputs) if return_outputs else loss

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
        model = unwrap_tempme(self.model)
        was_training = model.training
        encoded = encode_split(
            model,
            dataset,
            batch_size=self.args.eval_batch_size,
            num_workers=self.args.dataloader_num_workers,
            accelerator=self.accelerator,
            progress=not self.args.disable_tqdm,
        )
        model.train(was_training)
        similarity = encoded.similarity
        results = text_video_retrieval_metrics(similarity, encoded.video_of_text)
        metrics = {f"{metric_key_prefix}_rsum": results["rsum"], f"{metric_key_prefix}_runtime": round(encoded.seconds, 4)}
        for direction in ("text_to_video", "video_to_text"):
            for name, value in results[direction].items():
                metrics[f"{metric_key_prefix}_{direction}_{name}"] = value
        if encoded.skipped_video_ids:
            metrics[f"{metric_key_prefix}_skipped_videos"] = len(encoded.skipped_video_ids)
        if self.compute_metrics is not None:
            # Extra metrics see the (texts, videos) similarity as predictions and each text's video as labels.
            extra = self.compute_metrics(EvalPrediction(predictions=similarity.numpy(), label_ids=encoded.video_of_text))
            metrics.update({f"{metric_key_prefix}_{name}": value for name, value in extra.items()})
        if math.isfinite(encoded.seconds) and encoded.seconds > 0:
            metrics[f"{metric_key_prefix}_videos_per_second"] = round(len(encoded.video_embeds) / encoded.seconds, 3)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


__all__ = ["TempMeTrainer", "gather_with_gradient", "global_contrastive_loss", "unwrap_tempme"]
