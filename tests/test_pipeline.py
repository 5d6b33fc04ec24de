"""TempMePipeline's arguments: frame arrays of any length, top_k, hypothesis_template and empty inputs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_BACKBONE, tiny_model
from data_helpers import clip_tokenizer  # noqa: F401 (fixture)

from transformers_tempme import TempMeProcessor
from transformers_tempme.pipeline_tempme import TASK, TempMePipeline
from transformers_tempme.video_io import sample_frame_indices

CLIP_VOCABULARY = {"vocab_size": 49408, "bos_token_id": 49406, "eos_token_id": 49407}
LABELS = ["a dog runs", "a cat sleeps", "a car drives"]


@pytest.fixture(scope="module")
def pipe(clip_tokenizer):  # noqa: F811
    model = tiny_model(text_config={**TINY_BACKBONE["text_config"], **CLIP_VOCABULARY})  # ClipMe for 4 frames
    processor = TempMeProcessor(clip_tokenizer, num_frames=4, max_words=16, image_size=32)
    return TempMePipeline(model=model, processor=processor, task=TASK, device=-1)


def frames(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 36, 36, 3), dtype=np.uint8)


def scores(results: list[dict]) -> list[float]:
    return [result["score"] for result in results]


@pytest.mark.parametrize("length, video_fps", [(7, None), (30, None), (30, 10.0), (2, None)])
def test_frame_arrays_of_any_length_are_sampled_to_the_models_frames(pipe, length, video_fps):
    video = frames(length)
    # What the pipeline sees is the array sampled as a file of those frames at that rate would be.
    sampled = video[sample_frame_indices(length, video_fps or 1.0, 4, "fps")]
    classified = pipe(video, candidate_labels=LABELS, video_fps=video_fps)
    assert classified == pipe(sampled, candidate_labels=LABELS)
    ranked = pipe(videos=[video, frames(4, seed=1)], text="a dog runs", video_fps=video_fps)
    assert ranked == pipe(videos=[sampled, frames(4, seed=1)], text="a dog runs")


@pytest.mark.parametrize("top_k, kept", [(None, 3), (1, 1), (2, 2), (3, 3), (10, 3)])
def test_top_k_keeps_the_best_k_and_none_keeps_all(pipe, top_k, kept):
    everything = pipe(frames(4), candidate_labels=LABELS)
    assert scores(everything) == sorted(scores(everything), reverse=True)
    assert pipe(frames(4), candidate_labels=LABELS, top_k=top_k) == everything[:kept]
    ranked = pipe(videos=[frames(4, seed) for seed in range(3)], text="a dog runs", top_k=top_k)
    assert len(ranked) == kept


@pytest.mark.parametrize("top_k", [-1, 0, 1.5, True, "2"])
def test_a_top_k_that_is_not_a_positive_integer_is_an_error(pipe, top_k):
    with pytest.raises(ValueError, match=rf"top_k must be a positive integer \(or None, the default, for every entry\), got {top_k!r}"):
        pipe(frames(4), candidate_labels=LABELS, top_k=top_k)


@pytest.mark.parametrize(
    "template, message",
    [
        ("a video", r"hypothesis_template 'a video' has no \{\} where the label goes, so every label would get the same"),
        ("a video of {{}}", r"hypothesis_template 'a video of \{\{\}\}' has no \{\}"),
        ("a video of {label}", r"hypothesis_template 'a video of \{label\}' cannot be formatted with a label \(KeyError"),
        ("a video of {1}", r"cannot be formatted with a label \(IndexError"),
    ],
)
def test_a_hypothesis_template_without_a_place_for_the_label_is_an_error(pipe, template, message):
    with pytest.raises(ValueError, match=message):
        pipe(frames(4), candidate_labels=LABELS, hypothesis_template=template)


def test_a_hypothesis_template_puts_the_label_in_the_text(pipe):
    results = pipe(frames(4), candidate_labels=LABELS, hypothesis_template="a video of {}")
    assert {result["label"] for result in results} == set(LABELS)
    assert len(set(scores(results))) == len(LABELS)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda pipe: pipe(videos=[frames(4)], text=[]), r"text is an empty list: give a query"),
        (lambda pipe: pipe(videos=[], text="a dog"), r"videos is an empty list"),
        (lambda pipe: pipe(frames(4), candidate_labels=[]), r"candidate_labels must be a non-empty list"),
        (lambda pipe: pipe(videos=[frames(4)], text=["a dog", None]), r"text\[1\] is NoneType None: every query must be a string"),
    ],
)
def test_empty_or_malformed_inputs_are_value_errors(pipe, call, message):
    with pytest.raises(ValueError, match=message):
        call(pipe)
