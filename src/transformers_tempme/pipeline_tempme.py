"""`TempMePipeline`: zero-shot video classification and text-to-video ranking with a TempMe model.

Saved next to a model as remote code (with `custom_pipelines` in its `config.json`, and the processor beside it),
it loads with `transformers` alone:

    from transformers import pipeline

    pipe = pipeline(model="owner/tempme-vit-b-32-msrvtt", trust_remote_code=True)
    pipe("clip.mp4", candidate_labels=["a dog runs on a beach", "a man plays a guitar"])
    # [{"label": "a dog runs on a beach", "score": 0.93}, {"label": "a man plays a guitar", "score": 0.07}]
    pipe(videos=["a.mp4", "b.mp4", "c.mp4"], text="a dog runs on a beach")
    # [{"video": "b.mp4", "index": 1, "score": 0.88}, ...], best first

Scores are the softmax over the candidates of CLIP's scaled cosine similarities (`logits_per_video` /
`logits_per_text`). Videos are anything `TempMeProcessor` reads: a path, the file's bytes or a uint8 frame array
`(frames, height, width, 3)`; files are decoded with the processor's frame sampling.

This file is part of the remote code written next to saved models: it imports only `torch` and `transformers`.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import Pipeline

TASK = "zero-shot-video-classification"


class TempMePipeline(Pipeline):
    """Zero-shot classification of videos over candidate captions, or ranking of videos for a text query.

    Calls:
        `pipe(video, candidate_labels=[...], hypothesis_template="{}")`: one video (or a list of videos, each
        classified on its own) -> `[{"label", "score"}, ...]` sorted by score.
        `pipe(videos=[...], text="query")`: the videos ranked for the query -> `[{"video", "index", "score"}, ...]`
        sorted by score (`video` is the path when the video was given as one, `index` its position in the list);
        `text` may be a list of queries (one ranking each).
        `top_k` keeps the best `k` entries (`None`, the default, keeps them all, as in `transformers`' classification
        pipelines; more than there are keeps them all).
        `video_fps` is the frame rate of videos given as frame arrays: arrays of another length than the model's
        frame count are sampled to it the way files are (see `TempMeProcessor.load_video`).
    """

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def __call__(self, videos: Any = None, candidate_labels: list[str] | None = None, text=None, **kwargs):
        if (candidate_labels is None) == (text is None):
            raise ValueError(
                "Give candidate_labels to classify videos, e.g. pipe('clip.mp4', candidate_labels=['a dog', 'a cat']), "
                "or text to rank videos, e.g. pipe(videos=['a.mp4', 'b.mp4'], text='a dog'); not both."
            )
        if videos is None:
            raise ValueError("Give the video(s): a path, the file's bytes or a uint8 frame array.")
        if (kwargs.get("batch_size") or self._batch_size or 1) > 1:
            raise ValueError(
                "TempMePipeline runs one forward per call item (a ranking already encodes all its videos in one "
                "batch); leave batch_size at 1."
            )
        if candidate_labels is not None:
            if isinstance(candidate_labels, str) or not candidate_labels:
                raise ValueError(f"candidate_labels must be a non-empty list of captions, got {candidate_labels!r}.")
            return super().__call__(videos, candidate_labels=list(candidate_labels), **kwargs)
        videos = list(videos) if isinstance(videos, (list, tuple)) else [videos]
        if not videos:
            raise ValueError("videos is an empty list: give the videos to rank.")
        if isinstance(text, str):
            return super().__call__({"videos": videos, "text": text}, **kwargs)
        if not text:
            raise ValueError("text is an empty list: give a query (a string) or a list of queries to rank the videos for.")
        for number, query in enumerate(text):
            if not isinstance(query, str):
                raise ValueError(f"text[{number}] is {type(query).__name__} {query!r:.60}: every query must be a string.")
        return super().__call__([{"videos": videos, "text": query} for query in text], **kwargs)

    def _sanitize_parameters(
        self, candidate_labels=None, hypothesis_template=None, top_k=None, video_fps=None, **kwargs
    ):
        preprocess_params, postprocess_params = {}, {}
        if candidate_labels is not None:
            preprocess_params["candidate_labels"] = candidate_labels
        if hypothesis_template is not None:
            _check_hypothesis_template(hypothesis_template)
            preprocess_params["hypothesis_template"] = hypothesis_template
        if video_fps is not None:
            preprocess_params["video_fps"] = video_fps
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be a positive integer (or None, the default, for every entry), got {top_k!r}.")
            postprocess_params["top_k"] = top_k
        return preprocess_params, {}, postprocess_params

    def preprocess(self, inputs, candidate_labels=None, hypothesis_template="{}", video_fps=None):
        if isinstance(inputs, dict) and "videos" in inputs:  # ranking
            texts, videos = [inputs["text"]], inputs["videos"]
            names = [os.fspath(v) if isinstance(v, (str, os.PathLike)) else None for v in videos]
            meta = {"mode": "rank", "names": names}
        else:
            texts, videos = [hypothesis_template.format(label) for label in candidate_labels], [inputs]
            meta = {"mode": "classify", "labels": list(candidate_labels)}
        model_inputs = dict(self.processor(text=texts, videos=videos, return_tensors="pt", video_fps=video_fps))
        model_inputs["pixel_values"] = model_inputs["pixel_values"].to(self.model.dtype)
        return {**model_inputs, "meta": meta}

    def _forward(self, model_inputs):
        meta = model_inputs.pop("meta")
        outputs = self.model(**model_inputs)
        return {"logits_per_text": outputs.logits_per_text, "meta": meta}

    def postprocess(self, model_outputs, top_k: int | None = None):
        meta, logits_per_text = model_outputs["meta"], model_outputs["logits_per_text"].float()
        if meta["mode"] == "classify":
            scores = logits_per_text[:, 0].softmax(dim=0).tolist()  # the video's logits over the labels
            results = [{"label": label, "score": score} for label, score in zip(meta["labels"], scores)]
        else:
            scores = logits_per_text[0].softmax(dim=0).tolist()  # the query's logits over the videos
            results = [
                {"video": name, "index": index, "score": score}
                for index, (name, score) in enumerate(zip(meta["names"], scores))
            ]
        results.sort(key=lambda result: -result["score"])
        return results[:top_k] if top_k is not None else results


def _check_hypothesis_template(template: str) -> None:
    """The template must put each label somewhere (`{}`): without it every label is the same text, and so gets the
    same score."""
    try:
        differs = template.format("label one") != template.format("label two")
    except (IndexError, KeyError, ValueError) as error:
        raise ValueError(
            f"hypothesis_template {template!r} cannot be formatted with a label ({error!r}): write {{}} where the "
            "label goes, e.g. 'a video of {}'."
        ) from None
    if not differs:
        raise ValueError(
            f"hypothesis_template {template!r} has no {{}} where the label goes, so every label would get the same "
            "text and the same score: write e.g. 'a video of {}'."
        )


__all__ = ["TempMePipeline", "TASK"]
