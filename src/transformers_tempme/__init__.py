"""transformers-tempme: TempMe (Temporal Token Merging) for text-video retrieval on Hugging Face transformers."""

from .accounting import FlopCount, count_flops, count_gflops, token_schedule
from .adapters import adapter_base_model, load_tempme, save_adapter
from .auto import REMOTE_CODE_FILES, register_auto_classes
from .collator import TempMeDataCollator
from .configuration_tempme import PRESETS, TempMeConfig
from .frame_transforms import CLIP_MEAN, CLIP_STD, VideoRandAugment, preprocess_video, stack_videos
from .lora import apply_lora, lora_config
from .modeling_tempme import (
    TempMeCLIPModel,
    TempMeOutput,
    TempMePreTrainedModel,
    TempMeVideoOutput,
    TempMeVisionOutput,
)
from .processing_tempme import TempMeProcessor
from .retrieval_datasets import (
    BENCHMARKS,
    MissingVideosError,
    MissingVideosWarning,
    find_missing_videos,
    load_retrieval_dataset,
)
from .retrieval_metrics import pair_accuracy, retrieval_metrics, text_video_retrieval_metrics
from .synthetic_video import load_reversal_pairs, make_synthetic_benchmark, write_video
from .tokenizer import build_clip_tokenizer
from .trainer import TempMeTrainer
from .video_io import VideoDecodeError, read_video_frames, sample_frame_indices

register_auto_classes()

__all__ = [
    # model
    "PRESETS",
    "TempMeConfig",
    "TempMeCLIPModel",
    "TempMePreTrainedModel",
    "TempMeOutput",
    "TempMeVideoOutput",
    "TempMeVisionOutput",
    "token_schedule",
    "count_flops",
    "count_gflops",
    "FlopCount",
    # LoRA and the Hub
    "apply_lora",
    "lora_config",
    "register_auto_classes",
    "save_adapter",
    "load_tempme",
    "adapter_base_model",
    "REMOTE_CODE_FILES",
    # inputs
    "BENCHMARKS",
    "CLIP_MEAN",
    "CLIP_STD",
    "MissingVideosError",
    "MissingVideosWarning",
    "TempMeDataCollator",
    "TempMeProcessor",
    "VideoDecodeError",
    "VideoRandAugment",
    "build_clip_tokenizer",
    "find_missing_videos",
    "load_retrieval_dataset",
    "load_reversal_pairs",
    "make_synthetic_benchmark",
    "preprocess_video",
    "read_video_frames",
    "sample_frame_indices",
    "stack_videos",
    "write_video",
    # training and evaluation
    "retrieval_metrics",
    "text_video_retrieval_metrics",
    "pair_accuracy",
    "TempMeTrainer",
]
