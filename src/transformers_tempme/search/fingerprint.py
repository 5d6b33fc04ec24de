"""Which embedding space an index lives in, as one hash, so that a query is never scored in the wrong space.

Embeddings from two models are only comparable when both compute the same function: the same weights, the same
backbone shape and merge schedule, and the same frame and text preprocessing. The fingerprint hashes exactly those:

- every tensor of the model's state dict (name, dtype, shape and bytes);
- the configuration fields that shape the encoders (backbone sizes, activation, merge schedule, projection size);
- the processor's video and text settings (frames, sampling, image size and normalisation, text length) and the
  tokenizer's vocabulary.

Bookkeeping that does not change the output (file paths, library versions, attention implementation) is left out,
so that saving and reloading a model keeps its fingerprint.
"""

from __future__ import annotations

import hashlib
import json

import torch

from .storage import SearchIndexError

_VISION_FIELDS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels", "image_size",
    "patch_size", "hidden_act", "layer_norm_eps",
)
_TEXT_FIELDS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
    "max_position_embeddings", "hidden_act", "layer_norm_eps", "eos_token_id",
)
_PROCESSOR_FIELDS = ("num_frames", "frame_sampling", "image_size", "image_mean", "image_std", "max_words")


class EmbeddingSpaceMismatchError(SearchIndexError):
    """The model (or processor) differs from the one an index was built with: its scores would be meaningless."""


def _encoder_settings(config, processor) -> dict:
    return {
        "schedule": config.merge_schedule,
        "projection_dim": config.projection_dim,
        "vision": {name: getattr(config.vision_config, name, None) for name in _VISION_FIELDS},
        "text": {name: getattr(config.text_config, name, None) for name in _TEXT_FIELDS},
        "processor": {name: getattr(processor, name, None) for name in _PROCESSOR_FIELDS},
    }


@torch.no_grad()
def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over every state-dict tensor (sorted by name): its name, dtype, shape and raw bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_fingerprint(model, processor) -> str:
    """Hex SHA-256 naming the embedding space of `model` with `processor` (see the module docstring)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(_encoder_settings(model.config, processor), sort_keys=True, default=str).encode())
    vocabulary = processor.tokenizer.get_vocab()
    digest.update(json.dumps(sorted(vocabulary.items())).encode())
    digest.update(weights_sha256(model).encode())
    return digest.hexdigest()


def check_fingerprint(index_fingerprint: str, fingerprint: str, index_dir, index_model: str) -> None:
    """Raise `EmbeddingSpaceMismatchError` naming both models and the fix when the fingerprints differ."""
    if index_fingerprint == fingerprint:
        return
    raise EmbeddingSpaceMismatchError(
        f"The index {index_dir} was built with a different model or processor ({index_model}, fingerprint "
        f"{index_fingerprint[:12]}) than the one given (fingerprint {fingerprint[:12]}): its weights, merge schedule, "
        "frame or text settings differ, so scores against this index would be meaningless. Use the model the index "
        "was built with, or rebuild the index with this model (`tempme index VIDEO_DIR --index NEW_DIR --model ...`, "
        "or `--overwrite` to re-encode this index in place)."
    )


__all__ = ["EmbeddingSpaceMismatchError", "check_fingerprint", "model_fingerprint", "weights_sha256"]
