"""The model and processor an index is built and searched with, from a folder, a Hub id, an adapter or CLIP.

`--model` (or `name_or_path`) may be:

- a saved TempMe folder (what `TempMeCLIPModel.save_pretrained` and `TempMeProcessor.save_pretrained` write into one
  folder), or its Hub id;
- a peft adapter folder written by `save_adapter` / `tempme train` (its base model is loaded and the adapter merged);
- with `from_clip=True`, a plain CLIP checkpoint (folder or Hub id) turned into zero-shot TempMe with a preset
  schedule (`TempMeCLIPModel.from_clip`).

The processor comes from the same place when one is saved there. Otherwise one is built offline: OpenAI CLIP's
tokenizer from the `open-clip-torch` wheel (`build_clip_tokenizer`), the model's frame count and image size, the
paper's one-frame-per-second sampling; a message says so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..processing_tempme import TempMeProcessor

logger = logging.getLogger(__name__)

PROCESSOR_CONFIG_NAME = "processor_config.json"


def _describe_source(name_or_path: str) -> str:
    """An absolute path for local folders (so an index keeps working from another directory), else the Hub id."""
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else str(name_or_path)


def load_search_model(
    name_or_path: str | os.PathLike,
    *,
    from_clip: bool = False,
    preset: str = "tempme-vit-b-32",
    revision: str | None = None,
    processor_source: str | os.PathLike | None = None,
):
    """Load `(model, processor, model_info)` for building or searching an index.

    Args:
        name_or_path: a TempMe model folder or Hub id, an adapter folder, or (with `from_clip`) a CLIP checkpoint.
        from_clip (`bool`): build zero-shot TempMe on a plain CLIP checkpoint with the schedule `preset`.
        preset (`str`): the TempMe preset applied with `from_clip`.
        revision (`str`, *optional*): the Hub revision.
        processor_source (*optional*): where to load the processor from, when not next to the model.

    Returns:
        The model in eval mode, its `TempMeProcessor`, and `model_info` (what the index's manifest records:
        `name_or_path`, `revision`, `from_clip`, `preset`, `schedule`).
    """
    from ..hub.loading import is_adapter_folder, load_tempme

    source = str(name_or_path)
    kwargs = {"revision": revision} if revision else {}
    if from_clip:
        model = load_tempme(source, schedule=preset, **kwargs)
    elif Path(source).is_dir() and is_adapter_folder(source):
        model = load_tempme(adapter=source, merge=True)
    else:
        model = load_tempme(source, **kwargs)
    processor = load_search_processor(processor_source or source, model, revision=revision)
    model_info = {
        "name_or_path": _describe_source(source),
        "revision": revision or getattr(model.config, "_commit_hash", None),
        "from_clip": bool(from_clip),
        "preset": preset if from_clip else None,
        "schedule": model.config.merge_schedule,
    }
    return model, processor, model_info


def load_search_processor(source: str | os.PathLike, model, revision: str | None = None) -> TempMeProcessor:
    """The processor saved at `source`, or one built offline for `model` (see the module docstring)."""
    folder = Path(source)
    if folder.is_dir():
        if (folder / PROCESSOR_CONFIG_NAME).is_file():
            return TempMeProcessor.from_pretrained(folder)
    else:
        try:
            return TempMeProcessor.from_pretrained(str(source), **({"revision": revision} if revision else {}))
        except (OSError, ValueError):
            pass
    from ..data.tokenizer import build_clip_tokenizer

    processor = TempMeProcessor(
        build_clip_tokenizer(),
        num_frames=model.config.num_frames,
        image_size=model.config.vision_config.image_size,
    )
    logger.warning(
        "No TempMe processor is saved with %s: using OpenAI CLIP's tokenizer (built offline), %d frames per segment "
        "and one-frame-per-second sampling. Save the processor next to the model (processor.save_pretrained) to "
        "index with its own settings.", source, processor.num_frames,
    )
    return processor


__all__ = ["load_search_model", "load_search_processor"]
