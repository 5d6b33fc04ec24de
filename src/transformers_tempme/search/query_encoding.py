"""`QueryEncoder`: text queries to embeddings through the model's text tower prepared for speed at one precision.

A query is a handful of tokens, so its encoding reads every weight of the text tower to multiply it by a few rows:
on a CPU the time goes to reading weights, and the fewer bytes per weight the faster. The text tower is prepared by
`optimize_for_inference(model, precision, towers=("text",))` (fused q/k/v, oneDNN linears, bf16 or int8 weights);
the vision tower, which encoded the index's videos, is the model's own. Only the text side changes: the stored video
embeddings, and the fingerprint that checks the model against the index, are those of the model as loaded.

Precisions (`query_precision`):

- `"model"`: the model's own forward, as it is (the reference).
- `"fp32"`: the prepared tower in float32: the model's embeddings within float error.
- `"bf16"`: bfloat16 matmuls; fast on CPUs with native bfloat16 (AVX512-BF16, AMX), slow elsewhere.
- `"int8"`: int8 weights, activations quantized per tensor at run time (7 bits on CPUs without VNNI). The activation
  scale is taken over the tensor, so several queries encoded in one matmul would change each other's embeddings:
  int8 encodes each query alone, and a batch gives each query exactly the embedding it has alone.
- `"auto"` (the default): on a CPU, the first of int8, bf16 (only where `cpu_features()` reports native bfloat16)
  and fp32 whose embeddings of `CALIBRATION_QUERIES` all stay within cosine `AUTO_MIN_COSINE` of the model's own; on
  a GPU, or for a text tower the fast path cannot run (deep prompts), `"model"`. The check runs on the model loaded,
  so a model that int8 degrades is encoded at a safer precision.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from ..inference.cpu_features import cpu_features
from ..inference.linear import PRECISIONS
from ..inference.optimize import optimize_for_inference

logger = logging.getLogger(__name__)

QUERY_PRECISIONS: tuple[str, ...] = ("auto", "model", *PRECISIONS)
# "auto" keeps a precision only when every calibration query's embedding has at least this cosine similarity to the
# model's own: above it, the top-10 of a search change by a near-tie at most (docs/search.md, "Query precision").
AUTO_MIN_COSINE = 0.999
CALIBRATION_QUERIES: tuple[str, ...] = (
    "a dog catches a frisbee in the park",
    "cooking",
    "a man is talking to the camera about a new phone",
    "two people dance at a wedding while the guests clap",
    "a red car drives along a mountain road at sunset",
    "close-up of hands playing the piano",
    "a child falls off a bicycle",
    "news anchor reading the headlines in a studio",
    "a cat jumps onto the kitchen table and knocks over a glass of water",
    "football match, goal in the last minute",
    "aerial view of a city at night",
    "someone explains how to solve a math equation on a whiteboard",
    "snow",
    "a woman puts on make-up in front of a mirror",
    "fireworks over the river",
    "a group of friends laughing around a campfire at the beach",
)


def check_query_precision(precision: str) -> str:
    if precision not in QUERY_PRECISIONS:
        raise ValueError(f"Unknown query precision {precision!r}; choose one of {', '.join(QUERY_PRECISIONS)}.")
    return precision


def text_inputs(processor, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask `(texts, length)` int64, `length` the longest text's: CLIP's text attention is
    causal and pooled at the end-of-text token, so the padding after a caption changes nothing, and dropping what
    follows the longest one makes a short query 1.5x faster to encode."""
    input_ids, attention_mask = processor.encode_text(list(texts))
    length = max(int(attention_mask.sum(axis=1).max()), 1)
    return input_ids[:, :length], attention_mask[:, :length]


@torch.inference_mode()
def text_embeddings(model, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """L2-normalised `model.get_text_features` `(texts, dim)` float32 of token ids and mask."""
    device = next(model.parameters()).device
    embeds = model.get_text_features(
        input_ids=torch.from_numpy(input_ids).to(device), attention_mask=torch.from_numpy(attention_mask).to(device)
    ).pooler_output
    return torch.nn.functional.normalize(embeds.float(), dim=-1).cpu().numpy()


def min_cosine(embeddings: np.ndarray, reference: np.ndarray) -> float:
    """The smallest cosine similarity between the rows of two sets of unit embeddings, row by row."""
    return float(np.min(np.sum(embeddings * reference, axis=1)))


class QueryEncoder:
    """Encodes text queries with `model`'s text tower prepared at `precision` (see the module docstring).

    Attributes:
        precision (`str`): the precision used: `"model"`, `"fp32"`, `"bf16"` or `"int8"` (what `"auto"` chose).
        requested (`str`): the precision asked for (`"auto"`, or one of the above).
        calibration_cosine (`float` or `None`): for `"auto"`, the smallest cosine between the chosen precision's
            embeddings of `CALIBRATION_QUERIES` and the model's own.
    """

    def __init__(self, model, processor, precision: str = "auto"):
        self.model, self.processor = model, processor
        self.requested = check_query_precision(precision)
        self.calibration_cosine: float | None = None
        if precision == "auto":
            self.precision, self.text_model = self._choose()
        else:
            self.precision, self.text_model = precision, self._prepare(precision)

    def _prepare(self, precision: str):
        if precision == "model":
            return self.model
        try:
            return optimize_for_inference(self.model, precision, towers=("text",))
        except NotImplementedError as error:  # deep prompts in the text tower
            raise ValueError(f"query precision {precision!r}: {error} Use query precision 'model'.") from None

    def _choose(self) -> tuple[str, object]:
        if next(self.model.parameters()).device.type != "cpu":
            return "model", self.model
        candidates = ["int8", *(["bf16"] if cpu_features()["onednn_bf16"] else []), "fp32"]
        reference = text_embeddings(self.model, *text_inputs(self.processor, CALIBRATION_QUERIES))
        for precision in candidates:
            try:
                text_model = self._prepare(precision)
            except ValueError as error:  # a text tower the fast path cannot run (deep prompts): the model's own
                logger.info("Query precision %s: %s", precision, error)
                return "model", self.model
            cosine = min_cosine(self._encode(text_model, precision, CALIBRATION_QUERIES), reference)
            if cosine >= AUTO_MIN_COSINE:
                self.calibration_cosine = cosine
                return precision, text_model
            logger.info("Query precision %s: cosine %.5f to the model's own, below %g: not used", precision, cosine,
                        AUTO_MIN_COSINE)
        return "model", self.model

    def _encode(self, text_model, precision: str, texts: Sequence[str]) -> np.ndarray:
        if precision == "int8" and len(texts) > 1:  # per-tensor activation scales: each query alone (docstring)
            return np.concatenate([self._encode(text_model, precision, [text]) for text in texts])
        return text_embeddings(text_model, *text_inputs(self.processor, texts))

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings `(texts, dim)` float32 of `texts` (cut by the caller to what the model reads)."""
        return self._encode(self.text_model, self.precision, texts)

    def describe(self) -> str:
        """One line for a log or a server's start: the precision used and, for `"auto"`, why."""
        if self.requested != "auto":
            return f"queries encoded at {self.precision}"
        if self.calibration_cosine is None:
            return f"queries encoded at {self.precision} (auto: the model's own forward on this device)"
        return (f"queries encoded at {self.precision} (auto: cosine >= {self.calibration_cosine:.4f} to the model's own "
                f"on {len(CALIBRATION_QUERIES)} calibration queries)")


__all__ = ["AUTO_MIN_COSINE", "CALIBRATION_QUERIES", "QUERY_PRECISIONS", "QueryEncoder", "check_query_precision"]
