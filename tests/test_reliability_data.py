"""Annotation files and splits that cannot give a usable dataset are refused at load time, naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_helpers import numbered_frames

from transformers_tempme import MissingVideosError, load_retrieval_dataset
from transformers_tempme.data.retrieval_datasets import AnnotationFormatError
from transformers_tempme.data.synthetic_video import write_video

SENTENCES = {"sentences": [{"video_id": "video0", "caption": "a cat sleeps"}, {"video_id": "video1", "caption": "a dog"}]}


@pytest.fixture()
def msrvtt(tmp_path) -> tuple[Path, Path]:
    """A two-video MSR-VTT layout: annotations/ and videos/ with both files."""
    annotations, videos = tmp_path / "annotations", tmp_path / "videos"
    annotations.mkdir()
    videos.mkdir()
    (annotations / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\nvideo1\n")
    (annotations / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,video_id,sentence\nret0,msr0,video0,a cat\n")
    (annotations / "MSRVTT_data.json").write_text(json.dumps(SENTENCES))
    for name in ("video0", "video1"):
        write_video(videos / f"{name}.mp4", numbered_frames(4, 16, 16), fps=4)
    return annotations, videos


def test_every_video_missing_is_an_error_at_load_time(msrvtt, tmp_path):
    annotations, _ = msrvtt
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    with pytest.raises(MissingVideosError, match="0 samples left after dropping 2 missing videos") as error:
        load_retrieval_dataset("msrvtt", annotations, empty, "train")
    assert error.value.video_ids == ["video0", "video1"]
    assert "elsewhere" in str(error.value)


def test_a_bom_before_the_csv_header_is_accepted(msrvtt):
    annotations, videos = msrvtt
    for name in ("MSRVTT_train.9k.csv", "MSRVTT_JSFUSION_test.csv"):
        path = annotations / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    (annotations / "MSRVTT_data.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(SENTENCES).encode())
    assert len(load_retrieval_dataset("msrvtt", annotations, videos, "train")) == 2
    assert load_retrieval_dataset("msrvtt", annotations, videos, "test")["caption"] == ["a cat"]


BROKEN_FILES = [
    # split, file, content, what the error must say
    ("train", "MSRVTT_train.9k.csv", "vid\nvideo0\n",
     r"MSRVTT_train\.9k\.csv: expected a header row with the columns \['video_id'\]; found the header \['vid'\]"),
    ("train", "MSRVTT_train.9k.csv", "video0\nvideo1\n", r"found the header \['video0'\]"),
    ("test", "MSRVTT_JSFUSION_test.csv", "key,vid_key,video_id,text\nr,m,video0,a cat\n",
     r"MSRVTT_JSFUSION_test\.csv: expected a header row with the columns video_id and sentence \(or sentences\); "
     r"found the header \['key', 'vid_key', 'video_id', 'text'\]"),
    ("train", "MSRVTT_data.json", '{"sentences": [{"video_id": "video0", "caption": "a cat"}',
     r"MSRVTT_data\.json: expected a JSON file; found invalid JSON"),
    ("train", "MSRVTT_data.json", '[{"video_id": "video0", "caption": "a cat"}]',
     r"MSRVTT_data\.json: expected \{\"sentences\": \[\{\"video_id\": \.\.\., \"caption\": \.\.\.\}, \.\.\.\]\}; "
     r"found a list of 1 items"),
    ("train", "MSRVTT_data.json", '{"annotations": []}', r"found an object with keys \['annotations'\]"),
    ("train", "MSRVTT_data.json", '{"sentences": [{"video": "video0", "text": "a cat"}]}',
     r"every entry with \['video_id', 'caption'\]; found an entry that is an object with keys \['video', 'text'\]"),
]


@pytest.mark.parametrize("split, name, content, message", BROKEN_FILES)
def test_broken_annotation_files_name_the_file_the_layout_and_what_was_found(msrvtt, split, name, content, message):
    annotations, videos = msrvtt
    (annotations / name).write_text(content)
    with pytest.raises(AnnotationFormatError, match=message):
        load_retrieval_dataset("msrvtt", annotations, videos, split)


@pytest.mark.parametrize(
    "name, file, content, message",
    [
        ("didemo", "test_data.json", '{"video": "a.mp4"}', r"test_data\.json: expected \[\{\"video\""),
        ("didemo", "test_data.json", '[{"video": "a.mp4"}]', r"found an entry that is an object with keys \['video'\]"),
        ("activitynet", "val_1.json", '{"v_a": {"duration": 3}}', r"val_1\.json: expected .*every entry with \['sentences'\]"),
    ],
)
def test_paragraph_benchmarks_check_their_layout_too(tmp_path, name, file, content, message):
    (tmp_path / "videos").mkdir()
    (tmp_path / file).write_text(content)
    with pytest.raises(AnnotationFormatError, match=message):
        load_retrieval_dataset(name, tmp_path, tmp_path / "videos", "test")
