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


# A byte that is not UTF-8 (0xe9: "é" in Latin-1) in each kind of annotation file: the error names the file and line.
NOT_UTF8 = [
    # benchmark, split, file, content (bytes), what the error must say
    ("msrvtt", "test", "MSRVTT_JSFUSION_test.csv", b"key,vid_key,video_id,sentence\nret0,msr0,video0,a caf\xe9\n",
     r"MSRVTT_JSFUSION_test\.csv:2: expected UTF-8 text; found the byte 0xe9 at column 23"),
    ("msrvtt", "train", "MSRVTT_train.9k.csv", b"video_id\nvideo0\nvid\xe9o1\n",
     r"MSRVTT_train\.9k\.csv:3: expected UTF-8 text; found the byte 0xe9 at column 4"),
    ("msrvtt", "train", "MSRVTT_data.json", b'{"sentences": [\n{"video_id": "video0", "caption": "caf\xe9"}]}',
     r"MSRVTT_data\.json:2: expected UTF-8 text; found the byte 0xe9"),
    ("lsmdc", "test", "LSMDC16_challenge_1000_publictect.csv", b"c1\t1\t2\t3\t4\tok\nc2\t1\t2\t3\t4\tcaf\xe9\n",
     r"LSMDC16_challenge_1000_publictect\.csv:2: expected UTF-8 text; found the byte 0xe9 at column 15"),
    ("didemo", "test", "test_list.txt", b"a.mp4\n\xe9.mp4\n", r"test_list\.txt:2: expected UTF-8 text"),
]


@pytest.mark.parametrize("name, split, file, content, message", NOT_UTF8, ids=[row[2] for row in NOT_UTF8])
def test_a_byte_that_is_not_utf8_names_the_file_and_line(msrvtt, name, split, file, content, message):
    annotations, videos = msrvtt
    (annotations / "test_data.json").write_text('[{"video": "a.mp4", "description": "a cat"}]')
    (annotations / file).write_bytes(content)
    with pytest.raises(AnnotationFormatError, match=message + r".*iconv"):
        load_retrieval_dataset(name, annotations, videos, split)


def test_a_row_with_an_unquoted_comma_or_a_missing_field_names_its_line(msrvtt):
    annotations, videos = msrvtt
    path = annotations / "MSRVTT_JSFUSION_test.csv"
    path.write_text('key,vid_key,video_id,sentence\nret0,msr0,video0,"a cat, a dog"\nret1,msr1,video1,a man, a dog\n')
    with pytest.raises(AnnotationFormatError, match=r"MSRVTT_JSFUSION_test\.csv:3: expected 4 comma-separated fields.*"
                                                    r"found 5 fields \['ret1', 'msr1', 'video1', 'a man', ' a dog'\]"):
        load_retrieval_dataset("msrvtt", annotations, videos, "test")
    path.write_text("key,vid_key,video_id,sentence\nret0,msr0,video0\n")
    with pytest.raises(AnnotationFormatError, match=r"MSRVTT_JSFUSION_test\.csv:2: .*found 3 fields"):
        load_retrieval_dataset("msrvtt", annotations, videos, "test")
    path.write_text('key,vid_key,video_id,sentence\nret0,msr0,video0,"a cat,\na dog"\n\nret1,msr1,video1,a\n')
    assert load_retrieval_dataset("msrvtt", annotations, videos, "test")["caption"] == ["a cat,\na dog", "a"]


# Captions that are not strings, in each benchmark's JSON: the error names the file, the entry and what was found.
NOT_A_CAPTION = [
    ("msrvtt", "train", "MSRVTT_data.json", {"sentences": [SENTENCES["sentences"][0], {"video_id": "video1", "caption": None}]},
     r"MSRVTT_data\.json: expected a caption string in sentences\[1\] \(video_id 'video1'\); found null"),
    ("msrvtt", "train", "MSRVTT_data.json", {"sentences": [{"video_id": "video0", "caption": ["a cat", "a dog"]}]},
     r"sentences\[0\] \(video_id 'video0'\); found a list of 2 items, the first str 'a cat'"),
    ("msrvtt", "train", "MSRVTT_data.json", {"sentences": [{"video_id": "video0", "caption": 42}]},
     r"sentences\[0\] \(video_id 'video0'\); found the int 42"),
    ("didemo", "test", "test_data.json", [{"video": "a.mp4", "description": "x"}, {"video": "b.mp4", "description": 1.5}],
     r"test_data\.json: expected a caption string in entry 1 \(video 'b\.mp4'\), description; found the float 1\.5"),
    ("activitynet", "test", "val_1.json", {"v_a": {"sentences": ["a man", None]}},
     r"val_1\.json: expected a caption string in \"v_a\" sentences\[1\]; found null"),
    ("activitynet", "test", "val_1.json", {"v_a": {"sentences": "a man walks"}},
     r"val_1\.json: expected a list of caption strings in \"v_a\" sentences; found str 'a man walks'"),
]


@pytest.mark.parametrize("name, split, file, content, message", NOT_A_CAPTION)
def test_a_caption_that_is_not_a_string_is_refused_with_its_entry(msrvtt, name, split, file, content, message):
    annotations, videos = msrvtt
    (annotations / file).write_text(json.dumps(content))
    with pytest.raises(AnnotationFormatError, match=message):
        load_retrieval_dataset(name, annotations, videos, split)
