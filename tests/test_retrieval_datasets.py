"""Benchmark loaders: each public annotation layout, the real MSR-VTT 1k-A captions, missing videos; annotation files
and splits that cannot give a usable dataset are refused at load time, naming the file."""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path

import pytest
from data_helpers import numbered_frames, shared_data_dir

from transformers_tempme import load_retrieval_dataset
from transformers_tempme.data.retrieval_datasets import (
    AnnotationFormatError,
    MissingVideosError,
    MissingVideosWarning,
    find_missing_videos,
)
from transformers_tempme.data.synthetic_video import write_video
from transformers_tempme.video_io import read_video_frames


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_video(path, numbered_frames(6, 16, 16), fps=4)
    return path


def place_videos(videos_dir: Path, names: list[str], source: Path) -> None:
    for name in names:
        target = videos_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def make_msrvtt(root: Path, video: Path, text_column: str = "sentence") -> tuple[Path, Path]:
    annotations, videos = root / "msrvtt_data", root / "MSRVTT_Videos"
    annotations.mkdir()
    write_csv(annotations / "MSRVTT_train.9k.csv", ["video_id"], [["video0"], ["video1"]])
    write_csv(
        annotations / "MSRVTT_JSFUSION_test.csv",
        ["key", "vid_key", "video_id", text_column],
        [["ret0", "msr7", "video7", "a man sings"], ["ret1", "msr8", "video8", "a dog runs"]],
    )
    sentences = [
        {"video_id": "video0", "caption": "a cat sleeps", "sen_id": 0},
        {"video_id": "video1", "caption": "people dance", "sen_id": 1},
        {"video_id": "video0", "caption": "a kitten naps", "sen_id": 2},
        {"video_id": "video7", "caption": "a man sings", "sen_id": 3},  # a test video: not in train
    ]
    (annotations / "MSRVTT_data.json").write_text(json.dumps({"sentences": sentences}))
    place_videos(videos, ["video0.mp4", "video1.mp4", "video7.mp4", "video8.mp4"], video)
    return annotations, videos


def test_msrvtt_train_has_one_row_per_caption_of_the_9k_videos(tmp_path, tiny_video):
    annotations, videos = make_msrvtt(tmp_path, tiny_video)
    dataset = load_retrieval_dataset("msrvtt", annotations, videos, "train")
    assert dataset.column_names == ["video_id", "video_path", "caption", "captions"]
    assert sorted(zip(dataset["video_id"], dataset["caption"])) == [
        ("video0", "a cat sleeps"),
        ("video0", "a kitten naps"),
        ("video1", "people dance"),
    ]
    assert dataset[0]["captions"] == ["a cat sleeps", "a kitten naps"]
    assert all(Path(p).is_file() for p in dataset["video_path"])


@pytest.mark.parametrize("text_column", ["sentence", "sentences"])
def test_msrvtt_test_reads_jsfusion_with_either_column_name(tmp_path, tiny_video, text_column):
    annotations, videos = make_msrvtt(tmp_path, tiny_video, text_column)
    dataset = load_retrieval_dataset("MSR-VTT", annotations, videos, "test")
    assert dataset["video_id"] == ["video7", "video8"]
    assert dataset["caption"] == ["a man sings", "a dog runs"]
    frames, _ = read_video_frames(dataset[0]["video_path"], 3)
    assert frames.shape == (3, 16, 16, 3)


def test_real_msrvtt_1k_a_captions(tmp_path, tiny_video):
    real_csv = shared_data_dir() / "msrvtt" / "MSRVTT_JSFUSION_test.csv"
    annotations, videos = tmp_path / "annotations", tmp_path / "videos"
    annotations.mkdir()
    shutil.copyfile(real_csv, annotations / "MSRVTT_JSFUSION_test.csv")
    with open(real_csv) as f:
        video_ids = [row["video_id"] for row in csv.DictReader(f)]
    place_videos(videos, [f"{v}.mp4" for v in video_ids[:3]], tiny_video)  # only 3 of the 1000 videos exist
    with pytest.warns(MissingVideosWarning, match="997 videos of msrvtt test") as record:
        kept = load_retrieval_dataset("msrvtt", annotations, videos, "test", on_missing="keep")
    assert record[0].message.video_ids[:2] == ["video9773", "video7026"]
    assert len(kept) == 1000 and len(set(kept["video_id"])) == 1000
    assert kept[0] == {
        "video_id": "video9770",
        "video_path": str(videos / "video9770.mp4"),
        "caption": "a person is connecting something to system",
        "captions": ["a person is connecting something to system"],
    }
    with pytest.warns(MissingVideosWarning):
        dropped = load_retrieval_dataset("msrvtt", annotations, videos, "test")
    assert dropped["video_id"] == video_ids[:3]
    assert len(find_missing_videos("msrvtt", annotations, videos, "test")) == 997
    with pytest.raises(MissingVideosError, match="997 videos") as error:
        load_retrieval_dataset("msrvtt", annotations, videos, "test", on_missing="raise")
    assert len(error.value.video_ids) == 997


def test_didemo_concatenates_the_descriptions_of_a_video(tmp_path, tiny_video):
    annotations, videos = tmp_path / "didemo", tmp_path / "videos"
    annotations.mkdir()
    moments = [
        {"video": "123@N00_456.mov", "description": "a girl waves", "times": [[0, 1]]},
        {"video": "789@N00_012.mp4", "description": "a car stops", "times": [[2, 2]]},
        {"video": "123@N00_456.mov", "description": "she walks away ", "times": [[3, 4]]},
    ]
    (annotations / "test_data.json").write_text(json.dumps(moments))
    (annotations / "test_list.txt").write_text("123@N00_456.mov\n789@N00_012.mp4\n")
    # One file kept its name, the other was converted to mp4 (as preprocessing scripts do).
    place_videos(videos, ["123@N00_456.mp4", "sub/789@N00_012.mp4"], tiny_video)
    dataset = load_retrieval_dataset("didemo", annotations, videos, "test")
    rows = {row["video_id"]: row for row in dataset}
    assert rows["123@N00_456.mov"]["caption"] == "a girl waves she walks away"
    assert rows["123@N00_456.mov"]["captions"] == ["a girl waves", "she walks away"]
    assert rows["789@N00_012.mp4"]["video_path"].endswith("sub/789@N00_012.mp4")


def test_activitynet_paragraphs_with_and_without_v_prefix(tmp_path, tiny_video):
    annotations, videos = tmp_path / "anet", tmp_path / "videos"
    annotations.mkdir()
    captions = {
        "v_abc": {"duration": 20.0, "timestamps": [[0, 5], [5, 20]], "sentences": ["A man enters.", " He sits."]},
        "v_xyz": {"duration": 10.0, "timestamps": [[0, 10]], "sentences": ["Kids play."]},
        "v_gone": {"duration": 10.0, "timestamps": [[0, 10]], "sentences": ["Nobody."]},
    }
    (annotations / "val_1.json").write_text(json.dumps(captions))
    (annotations / "val_ids.json").write_text(json.dumps(["v_abc", "v_xyz", "v_gone"]))
    place_videos(videos, ["v_abc.mp4", "xyz.mkv"], tiny_video)
    with pytest.warns(MissingVideosWarning, match="1 videos of activitynet test .*v_gone"):
        dataset = load_retrieval_dataset("activitynet", annotations, videos, "test")
    assert dataset["video_id"] == ["v_abc", "v_xyz"]
    assert dataset["caption"] == ["A man enters. He sits.", "Kids play."]
    assert dataset[1]["video_path"].endswith("xyz.mkv")


def test_lsmdc_tab_separated_one_caption_per_clip(tmp_path, tiny_video):
    annotations, videos = tmp_path / "lsmdc", tmp_path / "videos"
    annotations.mkdir()
    clip, times = "0001_American_Beauty_00.00.5{}.000-00.00.5{}.000", ["00.00.51.926", "00.00.54.129"] * 2
    lines = [
        "\t".join([clip.format(1, 4), *times, "SOMEONE looks out."]),
        "\t".join([clip.format(6, 8), *times, "She smiles."]),
    ]
    (annotations / "LSMDC16_challenge_1000_publictect.csv").write_text("\n".join(lines) + "\n")
    place_videos(
        videos,
        [f"0001_American_Beauty/{line.split(chr(9))[0]}.avi" for line in lines],
        tiny_video,
    )
    dataset = load_retrieval_dataset("lsmdc", annotations, videos, "test")
    assert dataset["caption"] == ["SOMEONE looks out.", "She smiles."]
    assert dataset[0]["video_id"] == "0001_American_Beauty_00.00.51.000-00.00.54.000"
    assert Path(dataset[1]["video_path"]).parent.name == "0001_American_Beauty"


def test_malformed_lsmdc_line_names_the_file_and_line(tmp_path):
    annotations = tmp_path / "lsmdc"
    annotations.mkdir()
    (annotations / "LSMDC16_annos_training.csv").write_text("clip\tonly three\tfields\n")
    (tmp_path / "videos").mkdir()
    with pytest.raises(ValueError, match=r"LSMDC16_annos_training.csv:1: expected 6 tab-separated fields"):
        load_retrieval_dataset("lsmdc", annotations, tmp_path / "videos", "train")


@pytest.mark.parametrize(
    "name, split, message",
    [
        ("msrvtt", "test", "Missing MSR-VTT 1k-A test captions"),
        ("msrvtt", "val7k", "MSR-VTT splits are"),
        ("didemo", "train", "Missing DiDeMo train annotations"),
        ("activitynet", "test", "Missing ActivityNet Captions val_1.json"),
        ("lsmdc", "val", "Missing LSMDC val annotations"),
        ("youcook2", "test", "Unknown benchmark"),
    ],
)
def test_missing_annotations_and_bad_names_are_clear_errors(tmp_path, name, split, message):
    (tmp_path / "videos").mkdir()
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        load_retrieval_dataset(name, tmp_path, tmp_path / "videos", split)


def test_no_warning_when_every_video_exists(tmp_path, tiny_video):
    annotations, videos = make_msrvtt(tmp_path, tiny_video)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_retrieval_dataset("msrvtt", annotations, videos, "test")) == 2


@pytest.mark.parametrize(
    "name, synthetic, fields",
    [
        ("msrvtt", False, {"dataset": "msrvtt"}),
        ("MSR-VTT", False, {"dataset": "msrvtt"}),
        ("anet", False, {"dataset": "activitynet"}),
        ("owner/my-videos", False, {"dataset": "owner/my-videos"}),
        ("msrvtt", True, {"dataset": "synthetic-temporal", "synthetic": True, "annotation_layout": "msrvtt"}),
    ],
)
def test_evaluation_dataset_fields_name_the_synthetic_benchmark(tmp_path, name, synthetic, fields):
    from transformers_tempme.data.retrieval_datasets import evaluation_dataset_fields
    from transformers_tempme.data.synthetic_video import make_synthetic_benchmark

    annotations = tmp_path / "annotations"
    if synthetic:
        make_synthetic_benchmark(tmp_path, num_train_pairs=1, num_test_pairs=1, frames_per_video=2, size=16)
    else:
        annotations.mkdir()
    assert evaluation_dataset_fields(name, annotations) == fields


# --- Annotation files and splits that cannot give a usable dataset are refused at load time, naming the file. ---------


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
