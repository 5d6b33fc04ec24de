"""transformers-tempme: TempMe (Temporal Token Merging) for text-video retrieval on Hugging Face transformers.

The model (configuration, modeling, merging) is imported with the package and registered with transformers'
Auto classes. Everything else loads on first use, so that using the model alone needs neither the Trainer,
`datasets`, `peft` nor PyAV: `from transformers_tempme import TempMeCLIPModel` imports torch and transformers only.

Layout:

- `configuration_tempme`, `modeling_tempme`, `merging`: the model; the files written next to saved weights as
  remote code, so they import only torch, transformers and each other.
- `processing_tempme`, `video_io`, `frame_transforms`: the processor (tokenisation, PyAV decoding, CLIP frame
  preprocessing); `pipeline_tempme`: the pipeline (zero-shot video classification, text-to-video ranking). Both are
  written next to saved processors and models as remote code too.
- `data/`: retrieval datasets, the one dataset and collator of training, evaluation and indexing, tokenizers, the
  synthetic benchmark.
- `training/`, `evaluation/`: the Trainer, and the retrieval metrics and the one evaluation loop.
- `tuners/`: parameter-efficient fine-tuning (any peft method; bottleneck adapters and deep prompts).
- `hub/`: Auto-class registration, loading, staging for upload and model cards.
- `analysis/`: token and FLOP accounting, merge visualisations.
- `search/`: video search (index a folder of videos, find moments by text; the search page).
- `cli/`: the `tempme` command.

The root names what most users reach for: the model, its configuration, processor and pipeline, the tuners and
`load_tempme`, `optimize_for_inference`, the video search API, the retrieval metrics, and the data helpers of the
README's examples. Everything else is imported from its subpackage (`transformers_tempme.data.video_text`, ...).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .configuration_tempme import PRESETS, TempMeConfig
from .hub import auto as _auto
from .hub.auto import save_with_pipeline
from .modeling_tempme import (
    TempMeCLIPModel,
    TempMeOutput,
    TempMePreTrainedModel,
    TempMeVideoOutput,
    TempMeVisionOutput,
)
from .pipeline_tempme import TempMePipeline

__version__ = "0.1.0"

# Public names that load on first access, by the module (relative to this package) that defines them.
_LAZY_ATTRIBUTES: dict[str, str] = {
    # inputs
    "TempMeProcessor": ".processing_tempme",
    "build_clip_tokenizer": ".data.tokenizer",
    "load_retrieval_dataset": ".data.retrieval_datasets",
    "load_reversal_pairs": ".data.synthetic_video",
    "VideoTextDataset": ".data.video_text",
    "collate_video_text": ".data.video_text",
    # parameter-efficient fine-tuning, loading and saving
    "apply_lora": ".tuners.lora",
    "lora_config": ".tuners.lora",
    "apply_adapter": ".tuners.adapter",
    "HoulsbyAdapterConfig": ".tuners.adapter",
    "apply_prompt": ".tuners.prompt",
    "DeepPromptConfig": ".tuners.prompt",
    "apply_peft": ".tuners.peft_methods",
    "load_tempme": ".hub.loading",
    "save_adapter": ".hub.loading",
    # inference
    "optimize_for_inference": ".inference.optimize",
    "count_gflops": ".analysis.accounting",
    # metrics
    "retrieval_metrics": ".evaluation.metrics",
    "text_video_retrieval_metrics": ".evaluation.metrics",
    "pair_accuracy": ".evaluation.metrics",
    # video search
    "VideoSearchIndex": ".search",
    "IndexingOptions": ".search",
    "IndexingReport": ".search",
    "SearchHit": ".search",
    "VectorIndexSettings": ".search",
    "EmbeddingSpaceMismatchError": ".search",
    "load_search_model": ".search",
}

if TYPE_CHECKING:
    from .analysis.accounting import count_gflops
    from .data.retrieval_datasets import load_retrieval_dataset
    from .data.synthetic_video import load_reversal_pairs
    from .data.tokenizer import build_clip_tokenizer
    from .data.video_text import VideoTextDataset, collate_video_text
    from .evaluation.metrics import pair_accuracy, retrieval_metrics, text_video_retrieval_metrics
    from .hub.loading import load_tempme, save_adapter
    from .inference.optimize import optimize_for_inference
    from .processing_tempme import TempMeProcessor
    from .search import (
        EmbeddingSpaceMismatchError,
        IndexingOptions,
        IndexingReport,
        SearchHit,
        VectorIndexSettings,
        VideoSearchIndex,
        load_search_model,
    )
    from .tuners.adapter import HoulsbyAdapterConfig, apply_adapter
    from .tuners.lora import apply_lora, lora_config
    from .tuners.peft_methods import apply_peft
    from .tuners.prompt import DeepPromptConfig, apply_prompt


def __getattr__(name: str) -> Any:
    module_name = _LAZY_ATTRIBUTES.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_ATTRIBUTES})


_auto.register_auto_classes()

__all__ = [
    "PRESETS",
    "TempMeConfig",
    "TempMeCLIPModel",
    "TempMePreTrainedModel",
    "TempMeOutput",
    "TempMeVideoOutput",
    "TempMeVisionOutput",
    "TempMePipeline",
    "save_with_pipeline",
    *_LAZY_ATTRIBUTES,
]
