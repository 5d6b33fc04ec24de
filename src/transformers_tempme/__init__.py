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
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .configuration_tempme import PRESETS, TempMeConfig
from .hub.auto import REMOTE_CODE_FILES, register_auto_classes, save_with_pipeline
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
    # accounting
    "FlopCount": ".analysis.accounting",
    "count_flops": ".analysis.accounting",
    "count_gflops": ".analysis.accounting",
    "token_schedule": ".analysis.accounting",
    # parameter-efficient fine-tuning and the Hub
    "apply_lora": ".tuners.lora",
    "lora_config": ".tuners.lora",
    "apply_peft": ".tuners.peft_methods",
    "apply_adapter": ".tuners.adapter",
    "HoulsbyAdapterConfig": ".tuners.adapter",
    "apply_prompt": ".tuners.prompt",
    "DeepPromptConfig": ".tuners.prompt",
    "TempMeTunerModel": ".tuners.tuner_model",
    "save_adapter": ".hub.loading",
    "load_tempme": ".hub.loading",
    "adapter_base_model": ".hub.loading",
    # inputs
    "TempMeProcessor": ".processing_tempme",
    "CLIP_MEAN": ".frame_transforms",
    "CLIP_STD": ".frame_transforms",
    "VideoRandAugment": ".frame_transforms",
    "preprocess_video": ".frame_transforms",
    "stack_videos": ".frame_transforms",
    "VideoDecodeError": ".video_io",
    "read_video_frames": ".video_io",
    "sample_frame_indices": ".video_io",
    "VideoTextDataset": ".data.video_text",
    "GroupedDataset": ".data.video_text",
    "TooManyBadVideosError": ".data.video_text",
    "collate_video_text": ".data.video_text",
    "reversal_groups": ".data.video_text",
    "BENCHMARKS": ".data.retrieval_datasets",
    "MissingVideosError": ".data.retrieval_datasets",
    "MissingVideosWarning": ".data.retrieval_datasets",
    "find_missing_videos": ".data.retrieval_datasets",
    "load_retrieval_dataset": ".data.retrieval_datasets",
    "load_reversal_pairs": ".data.synthetic_video",
    "make_synthetic_benchmark": ".data.synthetic_video",
    "write_video": ".data.synthetic_video",
    "build_clip_tokenizer": ".data.tokenizer",
    # training and evaluation
    "retrieval_metrics": ".evaluation.metrics",
    "text_video_retrieval_metrics": ".evaluation.metrics",
    "pair_accuracy": ".evaluation.metrics",
    "TempMeTrainer": ".training.trainer",
    "encode_split": ".evaluation.retrieval",
    "evaluate_retrieval": ".evaluation.retrieval",
    # video search
    "VideoSearchIndex": ".search",
    "IndexingOptions": ".search",
    "IndexingReport": ".search",
    "SearchHit": ".search",
    "VectorIndexSettings": ".search",
    "EmbeddingSpaceMismatchError": ".search",
    "load_search_model": ".search",
    # inference
    "optimize_for_inference": ".inference.optimize",
    "cpu_features": ".inference.cpu_features",
}

if TYPE_CHECKING:
    from .analysis.accounting import FlopCount, count_flops, count_gflops, token_schedule
    from .data.retrieval_datasets import (
        BENCHMARKS,
        MissingVideosError,
        MissingVideosWarning,
        find_missing_videos,
        load_retrieval_dataset,
    )
    from .data.synthetic_video import load_reversal_pairs, make_synthetic_benchmark, write_video
    from .data.tokenizer import build_clip_tokenizer
    from .data.video_text import (
        GroupedDataset,
        TooManyBadVideosError,
        VideoTextDataset,
        collate_video_text,
        reversal_groups,
    )
    from .evaluation.metrics import pair_accuracy, retrieval_metrics, text_video_retrieval_metrics
    from .evaluation.retrieval import encode_split, evaluate_retrieval
    from .frame_transforms import CLIP_MEAN, CLIP_STD, VideoRandAugment, preprocess_video, stack_videos
    from .hub.loading import adapter_base_model, load_tempme, save_adapter
    from .inference.cpu_features import cpu_features
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
    from .training.trainer import TempMeTrainer
    from .tuners.adapter import HoulsbyAdapterConfig, apply_adapter
    from .tuners.lora import apply_lora, lora_config
    from .tuners.peft_methods import apply_peft
    from .tuners.prompt import DeepPromptConfig, apply_prompt
    from .tuners.tuner_model import TempMeTunerModel
    from .video_io import VideoDecodeError, read_video_frames, sample_frame_indices


def __getattr__(name: str) -> Any:
    module_name = _LAZY_ATTRIBUTES.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_ATTRIBUTES})


register_auto_classes()

__all__ = [
    "PRESETS",
    "REMOTE_CODE_FILES",
    "TempMeConfig",
    "TempMeCLIPModel",
    "TempMePreTrainedModel",
    "TempMeOutput",
    "TempMeVideoOutput",
    "TempMeVisionOutput",
    "register_auto_classes",
    "save_with_pipeline",
    "TempMePipeline",
    *_LAZY_ATTRIBUTES,
]
