"""Benchmark loaders: each public annotation layout, the real MSR-VTT 1k-A captions, missing videos."""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path

import pytest
from data_helpers import numbered_frames, shared_data_dir

from transformers_tempme import (
    MissingVideosError,
    MissingVideosWarning,
    find_missing_videos,
    load_retrieval_dataset,
    read_video_frames,
)
from transformers_tempme.data.synthetic_video import write_video


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
