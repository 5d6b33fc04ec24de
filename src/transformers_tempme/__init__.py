"""transformers-tempme: TempMe (Temporal Token Merging) for text-video retrieval on Hugging Face transformers.

The model (configuration, modeling, merging) is imported with the package and registered with transformers'
Auto classes. Everything else loads on first use, so that using the model alone needs neither the Trainer,
`datasets`, `peft` nor PyAV: `from transformers_tempme import TempMeCLIPModel` imports torch and transformers only.

Layout:

- `configuration_tempme`, `modeling_tempme`, `merging`: the model; the files written next to saved weights as
  remote code, so they import only torch, transformers and each other.
- `processing_tempme`, `video_io`, `frame_transforms`: the processor (tokenisation, PyAV decoding, CLIP frame
  preprocessing).
- `data/`: retrieval datasets, the training dataset and collator, tokenizers, the synthetic benchmark.
- `training/`, `evaluation/`: the Trainer and the retrieval metrics and evaluation loop.
- `tuners/`: parameter-efficient fine-tuning (LoRA through peft).
- `hub/`: Auto-class registration, loading, staging for upload and model cards.
- `analysis/`: token and FLOP accounting, merge visualisations.
- `cli/`: the `tempme` command.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .configuration_tempme import PRESETS, TempMeConfig
from .hub.auto import REMOTE_CODE_FILES, register_auto_classes
from .modeling_tempme import (
    TempMeCLIPModel,
    TempMeOutput,
    TempMePreTrainedModel,
    TempMeVideoOutput,
    TempMeVisionOutput,
)

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
    "TempMeDataCollator": ".data.collator",
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
    # inference
    "optimize_for_inference": ".inference.model",
    "TempMeInferenceModel": ".inference.model",
    "cpu_features": ".inference.cpu_features",
}

if TYPE_CHECKING:
    from .analysis.accounting import FlopCount, count_flops, count_gflops, token_schedule
    from .data.collator import TempMeDataCollator
    from .data.retrieval_datasets import (
        BENCHMARKS,
        MissingVideosError,
        MissingVideosWarning,
        find_missing_videos,
        load_retrieval_dataset,
    )
    from .data.synthetic_video import load_reversal_pairs, make_synthetic_benchmark, write_video
    from .data.tokenizer import build_clip_tokenizer
    from .evaluation.metrics import pair_accuracy, retrieval_metrics, text_video_retrieval_metrics
    from .frame_transforms import CLIP_MEAN, CLIP_STD, VideoRandAugment, preprocess_video, stack_videos
    from .hub.loading import adapter_base_model, load_tempme, save_adapter
    from .inference.cpu_features import cpu_features
    from .inference.model import TempMeInferenceModel, optimize_for_inference
    from .processing_tempme import TempMeProcessor
    from .training.trainer import TempMeTrainer
    from .tuners.lora import apply_lora, lora_config
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
    *_LAZY_ATTRIBUTES,
]
