"""Registration of TempMe with transformers' Auto classes and pipelines, for local use and for remote code.

Two ways a saved TempMe folder is loaded:

- With this package importable, `AutoConfig` / `AutoModel` know the `"tempme"` model type directly, so
  `AutoModel.from_pretrained(folder)` needs no `trust_remote_code`, and `pipeline("zero-shot-video-classification",
  model=folder)` finds `TempMePipeline`.
- `register_for_auto_class` makes `save_pretrained` write an `auto_map` and copy the code next to the weights:
  `configuration_tempme.py`, `modeling_tempme.py` and, through their relative imports, `merging.py` for the model;
  `processing_tempme.py`, `video_io.py` and `frame_transforms.py` for the processor (`processor.save_pretrained`).
  `save_with_pipeline` also writes `pipeline_tempme.py` and the `custom_pipelines` entry of `config.json`. A user who
  has only `transformers` then loads the folder (or its Hub repo) with `trust_remote_code=True`:
  `AutoModel.from_pretrained`, `AutoProcessor.from_pretrained` and `pipeline(model=...)`.
"""

from __future__ import annotations

import os

from transformers import AutoConfig, AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from ..configuration_tempme import TempMeConfig
from ..modeling_tempme import TempMeCLIPModel
from ..pipeline_tempme import TASK, TempMePipeline

# The files `save_pretrained` copies next to the weights (the model's module and its relative imports).
REMOTE_CODE_FILES: tuple[str, ...] = ("configuration_tempme.py", "modeling_tempme.py", "merging.py")
# The files `TempMeProcessor.save_pretrained` copies next to processor_config.json and the tokenizer.
PROCESSOR_CODE_FILES: tuple[str, ...] = ("processing_tempme.py", "video_io.py", "frame_transforms.py")
# The pipeline's code, written by `save_with_pipeline`.
PIPELINE_CODE_FILES: tuple[str, ...] = ("pipeline_tempme.py",)


def register_auto_classes() -> None:
    """Register TempMe with `AutoConfig` / `AutoModel` and its pipeline task, and mark the model for remote-code
    saving (the processor marks itself when it is imported). Safe to call twice."""
    AutoConfig.register(TempMeConfig.model_type, TempMeConfig, exist_ok=True)
    AutoModel.register(TempMeConfig, TempMeCLIPModel, exist_ok=True)
    TempMeConfig.register_for_auto_class("AutoConfig")
    TempMeCLIPModel.register_for_auto_class("AutoModel")
    if PIPELINE_REGISTRY.supported_tasks.get(TASK, {}).get("impl") is not TempMePipeline:
        # pt_model is AutoModel: a saved pipeline records the class by name, and a remote-code user resolves the
        # name in transformers, whose AutoModel finds TempMe through the auto_map.
        PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=TempMePipeline, pt_model=AutoModel, type="multimodal")


def custom_pipelines_entry() -> dict:
    """The `custom_pipelines` entry of `config.json` that `save_with_pipeline` writes (the task, the pipeline class
    by `module.name`, the Auto class it loads the model with), for folders saved without it."""
    register_auto_classes()
    entry = {}
    for task, info in TempMePipeline._registered_impl.items():
        if info["impl"] is TempMePipeline:  # named as `Pipeline.save_pretrained` names it
            entry[task] = {**info, "impl": f"{TempMePipeline.__module__.rsplit('.', 1)[-1]}.{TempMePipeline.__name__}",
                           "pt": [model_class.__name__ for model_class in info["pt"]]}
    return entry


def save_with_pipeline(model: TempMeCLIPModel, processor, folder: str | os.PathLike) -> None:
    """Save a model with its processor and its pipeline, everything a Hub user needs with `transformers` alone.

    Writes the model (weights, `config.json` with `auto_map` and `custom_pipelines`, modeling code), the processor
    (`processor_config.json`, tokenizer files, processing code) and `pipeline_tempme.py`, so that
    `AutoModel`, `AutoProcessor` and `pipeline(model=folder, trust_remote_code=True)` all load from the folder.
    """
    register_auto_classes()
    # Pipeline.save_pretrained records the pipeline in model.config; keep the caller's config as it was, so that a
    # later model.save_pretrained does not announce a pipeline whose code it does not write.
    had_pipelines, pipelines = hasattr(model.config, "custom_pipelines"), getattr(model.config, "custom_pipelines", None)
    try:
        TempMePipeline(model=model, processor=processor, task=TASK, device=model.device).save_pretrained(folder)
    finally:
        if had_pipelines:
            model.config.custom_pipelines = pipelines
        else:
            del model.config.custom_pipelines
    processor.save_pretrained(folder)


__all__ = [
    "register_auto_classes",
    "save_with_pipeline",
    "custom_pipelines_entry",
    "REMOTE_CODE_FILES",
    "PROCESSOR_CODE_FILES",
    "PIPELINE_CODE_FILES",
]
