"""What a finished training run leaves in its output folder, so that every later command loads it in one call.

- A tuned model (LoRA and peft's other methods, bottleneck adapters, deep prompts) is saved as an adapter folder:
  `adapter_config.json` naming its base, `adapter_model.safetensors` (with the clip position embeddings), the TempMe
  `config.json` it was trained with (the adapter alone does not say which merge schedule that was) and the
  processor. `load_tempme(folder)` puts it back on its base.
- A fully fine-tuned model, or a peft method folded into the weights (`fold_into_weights`: a random initialisation
  is no base an adapter could be loaded onto), is saved with its processor and pipeline (`save_with_pipeline`), so
  that the folder loads with `transformers` alone.
- `save_merged` also writes the method folded into a plain model in `merged/` (for the methods that can be folded).
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import Trainer

from ..hub.auto import save_with_pipeline
from ..tuners.peft_methods import can_merge
from ..tuners.tuner_model import TempMeTunerModel
from .trainer import unwrap_tempme

logger = logging.getLogger(__name__)

MERGED_DIR = "merged"


def save_trained_model(trainer: Trainer, processor, fold_into_weights: bool = False, save_merged: bool = False) -> Path:
    """Save `trainer.model` and `processor` into `trainer.args.output_dir` as the module docstring says; returns it.

    Call it on every process (the Trainer's own save gathers the weights); only the main process writes files.

    Args:
        trainer: the Trainer after `train()`.
        processor: the `TempMeProcessor` the model was trained with.
        fold_into_weights: fold a peft method into the weights and save the full model instead of an adapter.
        save_merged: also save the method folded into the weights in `merged/`.
    """
    output_dir = Path(trainer.args.output_dir)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if fold_into_weights:
        model = trainer.model = model.merge_and_unload()
    if isinstance(model, TempMeTunerModel):  # not a class the Trainer knows how to save as an adapter
        model.save_pretrained(output_dir, is_main_process=trainer.is_world_process_zero())
    else:
        trainer.save_model()  # a peft adapter (with the clip position embeddings) or the full model
    if not trainer.is_world_process_zero():
        return output_dir
    tuned = hasattr(model, "peft_config")
    if tuned:
        processor.save_pretrained(output_dir)
        unwrap_tempme(model).config.save_pretrained(output_dir)
    else:
        save_with_pipeline(model, processor, output_dir)  # loads with transformers alone (trust_remote_code)
    if save_merged:
        merged = model if fold_into_weights else model.merge_and_unload() if can_merge(model) else None
        if merged is None:
            logger.warning("--save-merged-model: full fine-tuning, adapters and prompts have nothing to fold in.")
        else:
            save_with_pipeline(merged, processor, output_dir / MERGED_DIR)
    return output_dir


__all__ = ["save_trained_model", "MERGED_DIR"]
