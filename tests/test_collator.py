"""The Trainer collator: decodes in DataLoader workers and batches text and video."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_helpers import clip_tokenizer, numbered_frames  # noqa: F401 (fixture)

from transformers_tempme import TempMeDataCollator, TempMeProcessor, VideoDecodeError, load_retrieval_dataset
from transformers_tempme.data.synthetic_video import make_synthetic_benchmark, write_video


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = make_synthetic_benchmark(
        tmp_path_factory.mktemp("bench"), num_train_pairs=3, num_test_pairs=1, frames_per_video=8, fps=4, size=32
    )
    return load_retrieval_dataset("msrvtt", root / "annotations", root / "videos", "train")


@pytest.fixture()
def processor(clip_tokenizer):  # noqa: F811
    return TempMeProcessor(clip_tokenizer, num_frames=4, max_words=16, image_size=32)


def test_collator_output_shapes_and_types(dataset, processor):
    batch = TempMeDataCollator(processor)([dataset[i] for i in range(3)])
    assert set(batch) == {"input_ids", "attention_mask", "pixel_values", "video_mask"}
    assert batch["input_ids"].shape == (3, 16) and batch["input_ids"].dtype == torch.int64
    assert batch["attention_mask"].shape == (3, 16)
    assert batch["pixel_values"].shape == (3, 4, 3, 32, 32) and batch["pixel_values"].dtype == torch.float32
    assert batch["video_mask"].tolist() == [[1] * 4] * 3


def test_collator_in_dataloader_worker_processes(dataset, processor):
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=4, num_workers=2, collate_fn=TempMeDataCollator(processor, augment=True, seed=0)
    )
    batches = list(loader)
    assert sum(len(b["input_ids"]) for b in batches) == len(dataset)
    assert all(b["pixel_values"].shape[1:] == (4, 3, 32, 32) for b in batches)


def test_broken_videos_raise_or_are_skipped(dataset, processor, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 100)
    rows = [dataset[0], {"video_path": str(bad), "caption": "nothing"}]
    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        TempMeDataCollator(processor)(rows)
    batch = TempMeDataCollator(processor, on_decode_error="skip")(rows)
    assert batch["input_ids"].shape[0] == 1 and batch["pixel_values"].shape[0] == 1


def test_custom_columns(processor, tmp_path):
    path = tmp_path / "v.mp4"
    write_video(path, numbered_frames(8), fps=4)
    rows = [{"file": str(path), "text": "a clip"}, {"file": numbered_frames(4), "text": "frames given as an array"}]
    batch = TempMeDataCollator(processor, video_column="file", text_column="text")(rows)
    assert batch["pixel_values"].shape == (2, 4, 3, 32, 32)
    np.testing.assert_array_equal(batch["attention_mask"][0].numpy()[:4], [1, 1, 1, 1])
