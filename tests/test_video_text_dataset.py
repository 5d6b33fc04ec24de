"""The one dataset and collator: random draws keyed on (seed, epoch, sample), skipped videos, the encoding views."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import TINY_BACKBONE, tiny_model
from data_helpers import clip_tokenizer  # noqa: F401 (fixture)
from torch.utils.data import DataLoader

from transformers_tempme import TempMeProcessor, VideoTextDataset, collate_video_text, load_retrieval_dataset
from transformers_tempme.data.synthetic_video import make_synthetic_benchmark
from transformers_tempme.data.video_text import GroupedDataset, TooManyBadVideosError
from transformers_tempme.evaluation.retrieval import encode_split
from transformers_tempme.video_io import VideoDecodeError


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    root = make_synthetic_benchmark(
        tmp_path_factory.mktemp("bench"), num_train_pairs=3, num_test_pairs=1, frames_per_video=8, fps=4, size=32
    )
    return load_retrieval_dataset("msrvtt", root / "annotations", root / "videos", "train")


@pytest.fixture()
def processor(clip_tokenizer):  # noqa: F811
    return TempMeProcessor(clip_tokenizer, num_frames=4, max_words=16, image_size=32)


def with_broken_videos(rows, tmp_path, count: int = 1, videos: tuple[int, ...] | None = None) -> list[dict]:
    """The rows, with the files of some distinct videos (numbers `videos`, else the first `count`) replaced by files
    that do not decode."""
    order = list(dict.fromkeys(row["video_id"] for row in rows))
    broken_ids = [order[i] for i in (videos if videos is not None else range(count))]
    rows = [dict(row) for row in rows]
    for row in rows:
        if row["video_id"] in broken_ids:
            path = tmp_path / f"broken_{row['video_id']}.mp4"
            path.write_bytes(b"\x00" * 100)
            row["video_path"] = str(path)
    return rows


def test_samples_have_the_model_inputs(rows, processor):
    batch = collate_video_text([VideoTextDataset(rows, processor)[i] for i in range(3)])
    assert set(batch) == {"input_ids", "attention_mask", "pixel_values", "video_mask", "video_index"}
    assert batch["input_ids"].shape == (3, 16) and batch["input_ids"].dtype == torch.int64
    assert batch["pixel_values"].shape == (3, 4, 3, 32, 32) and batch["pixel_values"].dtype == torch.float32
    assert batch["video_mask"].tolist() == [[1] * 4] * 3


def test_augmentation_is_a_function_of_seed_epoch_and_sample(rows, processor):
    dataset = VideoTextDataset(rows, processor, augment=True, random_caption=True, seed=3)
    again = VideoTextDataset(rows, processor, augment=True, random_caption=True, seed=3)
    first = dataset[2]["pixel_values"]
    dataset[0], dataset[1]  # other accesses in between draw nothing from sample 2's stream
    torch.testing.assert_close(dataset[2]["pixel_values"], first, rtol=0, atol=0)
    torch.testing.assert_close(again[2]["pixel_values"], first, rtol=0, atol=0)

    dataset.set_epoch(1)
    assert not torch.equal(dataset[2]["pixel_values"], first)
    assert not torch.equal(VideoTextDataset(rows, processor, augment=True, seed=4)[2]["pixel_values"], first)
    plain = VideoTextDataset(rows, processor)[2]["pixel_values"]
    assert not torch.equal(first, plain)


def test_seed_defaults_to_torch_initial_seed(rows, processor):
    torch.manual_seed(1234)
    assert VideoTextDataset(rows, processor, augment=True).seed == 1234


def test_workers_see_the_same_samples_and_the_epoch(rows, processor):
    dataset = VideoTextDataset(rows, processor, augment=True, random_caption=True, seed=0)
    dataset.set_epoch(2)
    in_process = collate_video_text([dataset[i] for i in range(len(dataset))])
    loader = DataLoader(dataset, batch_size=len(dataset), num_workers=2, collate_fn=collate_video_text)
    (in_workers,) = list(loader)
    for key in in_process:
        torch.testing.assert_close(in_workers[key], in_process[key], rtol=0, atol=0)


def test_random_caption_draws_from_the_video_captions(rows, processor):
    dataset = VideoTextDataset(rows, processor, random_caption=True, seed=0)
    drawn = set()
    for epoch in range(8):
        dataset.set_epoch(epoch)
        drawn.add(dataset.caption(0))
    assert drawn == set(rows[0]["captions"]) and len(drawn) == 2


def test_a_video_that_does_not_decode_is_skipped_logged_and_left_out(rows, processor, tmp_path, caplog):
    dataset = VideoTextDataset(with_broken_videos(rows, tmp_path, 1), processor, max_skipped_videos=1)
    with caplog.at_level(logging.WARNING, logger="transformers_tempme.data.video_text"):
        assert dataset[0] is None
        assert dataset[0] is None  # known bad: not decoded again, not logged again
    assert len(caplog.records) == 1 and "Skipping video video0" in caplog.records[0].getMessage()
    assert "broken_video0.mp4" in caplog.records[0].getMessage()
    assert dataset.skipped_video_ids == [rows[0]["video_id"]]
    batch = collate_video_text([dataset[0], dataset[2], dataset[3]])
    assert batch["pixel_values"].shape[0] == 2


def test_too_many_bad_videos_fail_loudly(rows, processor, tmp_path):
    dataset = VideoTextDataset(with_broken_videos(rows, tmp_path, 2), processor, max_skipped_videos=1)
    second_bad = next(i for i, index in enumerate(dataset.video_index) if index == 1)
    assert dataset[0] is None
    with pytest.raises(TooManyBadVideosError, match="2 of the 6 videos of this split do not decode") as error:
        dataset[second_bad]
    assert len(error.value.video_ids) == 2
    # A fraction counts the split's distinct videos, rounded up: 1% of 6 videos allows one.
    assert VideoTextDataset(rows, processor).max_skipped_videos == 1


def test_skips_are_counted_across_worker_processes(rows, processor, tmp_path):
    # Rows come two per video: with batches of 4, worker 0 loads videos 0-1 and worker 1 videos 2-3.
    broken = with_broken_videos(rows, tmp_path, videos=(0, 3))
    dataset = VideoTextDataset(broken, processor, max_skipped_videos=5)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_video_text)
    assert sum(len(batch["input_ids"]) for batch in loader) == len(dataset) - 4  # 2 videos x 2 captions
    assert dataset.skipped_video_ids == [rows[0]["video_id"], rows[6]["video_id"]]

    one_allowed = VideoTextDataset(broken, processor, max_skipped_videos=1)
    with pytest.raises(TooManyBadVideosError):
        list(DataLoader(one_allowed, batch_size=4, num_workers=2, collate_fn=collate_video_text))


def test_raise_policy_propagates_the_decode_error(rows, processor, tmp_path):
    dataset = VideoTextDataset(with_broken_videos(rows, tmp_path, 1), processor, on_decode_error="raise")
    with pytest.raises(VideoDecodeError, match="broken_"):
        dataset[0]


def test_grouped_dataset_keeps_groups_in_one_batch_and_passes_the_epoch(rows, processor):
    dataset = VideoTextDataset(rows, processor, augment=True, seed=0)
    grouped = GroupedDataset(dataset, [[0, 2], [4]])
    batch = collate_video_text([grouped[0], grouped[1]])
    assert batch["video_index"].tolist() == [dataset.video_index[i] for i in (0, 2, 4)]
    grouped.set_epoch(5)
    assert dataset.epoch == 5


# Rows whose caption is not a string are refused when the dataset is built, naming the row, not in a worker.
NOT_CAPTIONS = [
    ("null", {"caption": None}, r"Row 1 \(video_id 'video0'\): 'caption' must be a caption string, found None\."),
    ("list", {"caption": ["a", "b"]}, r"Row 1 .*found the list \['a', 'b'\] \(one caption per row; a video's other captions go in 'captions'\)"),
    ("number", {"caption": 7}, r"Row 1 .*found the int 7\."),
    ("captions with null", {"captions": ["a", None]}, r"Row 1 .*'captions' must be a list of caption strings, found the list \['a', None\]"),
    ("captions a string", {"captions": "a dog"}, r"Row 1 .*'captions' must be a list of caption strings, found the str 'a dog'"),
]


@pytest.mark.parametrize("what, change, message", NOT_CAPTIONS, ids=[row[0] for row in NOT_CAPTIONS])
def test_a_caption_that_is_not_a_string_is_refused_with_its_row(rows, processor, what, change, message):
    bad = [dict(row) for row in rows]
    bad[1].update(change)
    with pytest.raises(ValueError, match=message):
        VideoTextDataset(bad, processor)


def test_collate_of_only_skipped_samples_is_a_clear_error():
    with pytest.raises(ValueError, match="Every one of the 2 samples of this batch was skipped"):
        collate_video_text([None, [None]])


def test_encode_split_encodes_each_video_once_and_leaves_out_skipped_videos(rows, processor, tmp_path):
    clip_vocabulary = {"vocab_size": 49408, "bos_token_id": 49406, "eos_token_id": 49407}
    model = tiny_model(text_config={**TINY_BACKBONE["text_config"], **clip_vocabulary})
    clean = encode_split(model, VideoTextDataset(rows, processor), batch_size=4, progress=False)
    assert clean.video_embeds.shape[0] == 6 and clean.text_embeds.shape[0] == len(rows) == 12
    assert clean.video_of_text.tolist() == [i // 2 for i in range(12)]
    torch.testing.assert_close(clean.video_embeds.norm(dim=-1), torch.ones(6))

    broken = encode_split(model, VideoTextDataset(with_broken_videos(rows, tmp_path, 1), processor), batch_size=4,
                          progress=False)
    assert broken.skipped_video_ids == [rows[0]["video_id"]]
    assert broken.video_ids == clean.video_ids[1:]
    torch.testing.assert_close(broken.video_embeds, clean.video_embeds[1:])
    torch.testing.assert_close(broken.text_embeds, clean.text_embeds[2:])
    assert broken.video_of_text.tolist() == [i // 2 for i in range(10)]


def test_encode_split_needs_the_one_dataset(rows, processor):
    with pytest.raises(TypeError, match="VideoTextDataset"):
        encode_split(tiny_model(), [1, 2, 3])


def test_the_frames_of_a_video_share_their_augmentation(processor):
    still = np.repeat(np.random.default_rng(0).integers(0, 256, (1, 40, 40, 3), dtype=np.uint8), 4, axis=0)
    rows = [{"video_id": "still", "video_path": still, "caption": "a still"}]
    augmented = VideoTextDataset(rows, processor, augment=True, seed=0)[0]["pixel_values"]
    plain = VideoTextDataset(rows, processor)[0]["pixel_values"]
    assert not torch.equal(augmented, plain)
    for frame in range(1, 4):
        torch.testing.assert_close(augmented[frame], augmented[0], rtol=0, atol=0)


def test_the_trainer_tells_the_dataset_each_epoch_also_when_resuming(rows, processor, tmp_path):
    from transformers import TrainingArguments

    from transformers_tempme.training.trainer import TempMeTrainer

    clip_vocabulary = {"vocab_size": 49408, "bos_token_id": 49406, "eos_token_id": 49407}

    def run(output_dir, epochs_seen, resume=None):
        dataset = VideoTextDataset(rows, processor, augment=True, seed=0)
        accessed = dataset.__class__.__getitem__

        class Recording(VideoTextDataset):
            def __getitem__(self, i):
                epochs_seen.append(self.epoch)
                return accessed(self, i)

        dataset.__class__ = Recording
        args = TrainingArguments(
            output_dir=str(output_dir), per_device_train_batch_size=4, num_train_epochs=2, save_strategy="steps",
            save_steps=4, report_to=[], use_cpu=True, remove_unused_columns=False, disable_tqdm=True, seed=0,
        )
        model = tiny_model(text_config={**TINY_BACKBONE["text_config"], **clip_vocabulary}).train()
        TempMeTrainer(model=model, args=args, train_dataset=dataset, data_collator=collate_video_text).train(
            resume_from_checkpoint=resume
        )

    straight, resumed = [], []
    run(tmp_path / "run", straight)  # 12 samples, 3 steps per epoch
    assert straight == [0] * 12 + [1] * 12
    run(tmp_path / "run", resumed, resume=str(tmp_path / "run" / "checkpoint-4"))  # step 4 is inside epoch 1
    assert resumed == [1] * 8  # the 4 samples of step 4 are skipped without being loaded
