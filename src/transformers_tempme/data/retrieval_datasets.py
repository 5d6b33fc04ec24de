"""Text-video retrieval benchmarks as `datasets.Dataset`s, read from the annotation layouts the community uses.

Every loader returns one row per (caption, video) sample with the columns

- `video_id` (`str`): the benchmark's id of the video,
- `video_path` (`str`): the video file,
- `caption` (`str`): the text of the sample (for paragraph-to-video benchmarks, all sentences of the video joined),
- `captions` (`list[str]`): every caption the benchmark has for that video (the sentences of the paragraph for
  DiDeMo and ActivityNet).

Layouts (see the Data section of the README for how to obtain them):

- `"msrvtt"` (CLIP4Clip's `msrvtt_data.zip`): `MSRVTT_train.9k.csv` (column `video_id`), `MSRVTT_JSFUSION_test.csv`
  (`key,vid_key,video_id,sentence`; some copies name the last column `sentences`), `MSRVTT_data.json`
  (`{"sentences": [{"video_id", "caption"}, ...]}`). train: every caption of the 9k videos; test: the 1000 JSFusion
  rows. Videos: `{video_id}.mp4`.
- `"didemo"`: `{split}_data.json`, a list of `{"video", "description", "times"}` (one entry per moment) and optional
  `{split}_list.txt` of video file names. Paragraph = the descriptions of a video in file order.
- `"activitynet"` (ActivityNet Captions): `train.json` / `val_1.json`, `{"v_<id>": {"duration", "timestamps",
  "sentences"}}`, and optional `train_ids.json` / `val_ids.json`; split `"test"` is `val_1` as in the paper.
  Paragraph = the sentences joined. Videos: `v_<id>.<ext>` or `<id>.<ext>`.
- `"lsmdc"`: tab-separated `LSMDC16_annos_training.csv`, `LSMDC16_annos_val.csv`,
  `LSMDC16_challenge_1000_publictect.csv` with `clip_id, start_aligned, end_aligned, start_extracted,
  end_extracted, sentence`; one caption per clip. Videos: `{clip_id}.<ext>` anywhere under `videos_dir`.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import datasets

from ..configuration_tempme import did_you_mean
from ..hub.repo_id import is_repo_id

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".3gp", ".flv")
MissingVideoPolicy = Literal["drop", "keep", "raise"]
RETRIEVAL_FEATURES = datasets.Features(
    {
        "video_id": datasets.Value("string"),
        "video_path": datasets.Value("string"),
        "caption": datasets.Value("string"),
        "captions": datasets.List(datasets.Value("string")),
    }
)
# How many missing ids a warning lists before it just counts.
_MISSING_IDS_SHOWN = 5


@dataclass(frozen=True)
class CaptionRecord:
    """One sample before its video is located: the file name or id to look for and the texts."""

    video_id: str
    video_file: str  # name (or stem) of the video file
    caption: str
    captions: tuple[str, ...]


class MissingVideosWarning(UserWarning):
    """Some annotated videos have no file. `video_ids` lists them all."""

    def __init__(self, dataset_name: str, split: str, videos_dir: str, video_ids: list[str], consequence: str):
        self.video_ids = video_ids
        shown = ", ".join(video_ids[:_MISSING_IDS_SHOWN]) + (", ..." if len(video_ids) > _MISSING_IDS_SHOWN else "")
        super().__init__(
            f"{len(video_ids)} videos of {dataset_name} {split} have no file under {videos_dir}: {shown}. "
            f"{consequence} Download the missing files or check videos_dir."
        )


class MissingVideosError(FileNotFoundError):
    """Raised with `on_missing="raise"`; `video_ids` lists every annotated video without a file."""

    def __init__(self, message: str, video_ids: list[str]):
        self.video_ids = video_ids
        super().__init__(message)


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"Missing {what}: {path}. See the Data section of the README for the expected annotation layout.")
    return path


class AnnotationFormatError(ValueError):
    """An annotation file does not have the layout its benchmark uses. The message names the file (and the line,
    when one is to blame), what was expected and what was found."""

    def __init__(self, path: Path, expected: str, found: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(
            f"{where}: expected {expected}; found {found}. See the Data section of the README for the annotation layouts."
        )


def _describe(value) -> str:
    """A short description of parsed JSON, for errors: its type and keys, its first item, or its value."""
    if isinstance(value, dict):
        keys = list(value)
        return f"an object with keys {keys[:8]}" + (" ..." if len(keys) > 8 else "")
    if isinstance(value, list):
        return f"a list of {len(value)} items" + (f", the first {_describe(value[0])}" if value else "")
    if value is None:
        return "null"
    if isinstance(value, (bool, int, float)):
        return f"the {type(value).__name__} {json.dumps(value)}"
    return f"{type(value).__name__} {str(value)[:60]!r}"


def _read_text(path: Path) -> str:
    """The text of an annotation file, which must be UTF-8; a byte that is not is an error naming its line."""
    data = path.read_bytes()
    # Files saved by Windows tools start with a byte-order mark.
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line_start = data.rfind(b"\n", 0, error.start) + 1
        raise AnnotationFormatError(
            path,
            "UTF-8 text",
            f"the byte 0x{data[error.start]:02x} at column {error.start - line_start + 1}, which is not UTF-8 (a file "
            "saved as Latin-1 or Windows-1252?). Convert it, e.g. iconv -f cp1252 -t utf-8 OLD > NEW",
            line=data.count(b"\n", 0, error.start) + 1,
        ) from None


def _read_json(path: Path):
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise AnnotationFormatError(path, "a JSON file", f"invalid JSON ({error})") from None


def _read_csv_rows(path: Path, required: Iterable[str] = ()) -> list[dict[str, str]]:
    """The rows of a CSV file with a header; every column in `required` must be in the header, and every row must
    have as many fields as the header (an unquoted comma in a caption would otherwise cut it silently)."""
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    header = next(reader, [])
    missing = [column for column in required if column not in header]
    if missing:
        raise AnnotationFormatError(path, f"a header row with the columns {list(required)}", f"the header {header}")
    rows = []
    line = reader.line_num + 1  # where the next row starts (a quoted field may span lines)
    for fields in reader:
        if fields and len(fields) != len(header):
            raise AnnotationFormatError(
                path,
                f"{len(header)} comma-separated fields as in the header {header} (quote a caption that holds a comma)",
                f"{len(fields)} fields {fields[:8]}",
                line=line,
            )
        if fields:
            rows.append(dict(zip(header, fields)))
        line = reader.line_num + 1
    return rows


def _check_records(path: Path, items, required_keys: tuple[str, ...], layout: str) -> None:
    """Every item of a parsed annotation file must be an object holding `required_keys`."""
    for item in items:
        if not isinstance(item, dict) or any(key not in item for key in required_keys):
            raise AnnotationFormatError(path, f"{layout}, every entry with {list(required_keys)}", f"an entry that is {_describe(item)}")


def _check_caption(path: Path, caption, entry: str) -> str:
    """A caption read from JSON must be a string: null, a number or a list is refused, naming the entry."""
    if not isinstance(caption, str):
        raise AnnotationFormatError(path, f"a caption string in {entry}", _describe(caption))
    return caption


# --- MSR-VTT -------------------------------------------------------------------------------------------------------
def _msrvtt_records(annotations_dir: Path, split: str) -> list[CaptionRecord]:
    if split in ("test", "val"):
        # The authors evaluate (and select checkpoints) on the 1k-A JSFusion split; MSR-VTT has no other val split.
        path = _require(annotations_dir / "MSRVTT_JSFUSION_test.csv", "MSR-VTT 1k-A test captions")
        rows = _read_csv_rows(path, ["video_id"])
        if not rows:
            raise ValueError(f"{path} has no rows.")
        text_column = next((c for c in ("sentence", "sentences") if c in rows[0]), None)
        if text_column is None:
            raise AnnotationFormatError(
                path, "a header row with the columns video_id and sentence (or sentences)", f"the header {list(rows[0])}"
            )
        return [
            CaptionRecord(row["video_id"], f"{row['video_id']}.mp4", row[text_column], (row[text_column],))
            for row in rows
        ]
    if split != "train":
        raise ValueError(f"MSR-VTT splits are 'train' (9k) and 'test' (1k-A JSFusion), got {split!r}.")
    train_list = _require(annotations_dir / "MSRVTT_train.9k.csv", "MSR-VTT 9k train list")
    train_ids = [row["video_id"] for row in _read_csv_rows(train_list, ["video_id"])]
    data_path = _require(annotations_dir / "MSRVTT_data.json", "MSR-VTT captions (MSRVTT_data.json)")
    data = _read_json(data_path)
    layout = '{"sentences": [{"video_id": ..., "caption": ...}, ...]}'
    if not isinstance(data, dict) or not isinstance(data.get("sentences"), list):
        raise AnnotationFormatError(data_path, layout, _describe(data))
    _check_records(data_path, data["sentences"], ("video_id", "caption"), layout)
    captions_of: dict[str, list[str]] = {}
    for number, sentence in enumerate(data["sentences"]):
        entry = f"sentences[{number}] (video_id {sentence['video_id']!r})"
        captions_of.setdefault(sentence["video_id"], []).append(_check_caption(data_path, sentence["caption"], entry))
    records = []
    for video_id in train_ids:
        captions = tuple(captions_of.get(video_id, ()))
        if not captions:
            logger.warning("MSR-VTT train video %s has no caption in MSRVTT_data.json; skipped.", video_id)
        records.extend(CaptionRecord(video_id, f"{video_id}.mp4", caption, captions) for caption in captions)
    return records


# --- DiDeMo --------------------------------------------------------------------------------------------------------
def _didemo_records(annotations_dir: Path, split: str) -> list[CaptionRecord]:
    if split not in ("train", "val", "test"):
        raise ValueError(f"DiDeMo splits are 'train', 'val' and 'test', got {split!r}.")
    moments_path = _require(annotations_dir / f"{split}_data.json", f"DiDeMo {split} annotations")
    moments = _read_json(moments_path)
    layout = '[{"video": ..., "description": ..., "times": ...}, ...]'
    if not isinstance(moments, list):
        raise AnnotationFormatError(moments_path, layout, _describe(moments))
    _check_records(moments_path, moments, ("video", "description"), layout)
    list_path = annotations_dir / f"{split}_list.txt"
    allowed = None
    if list_path.is_file():
        allowed = {line.strip() for line in _read_text(list_path).splitlines() if line.strip()}
    sentences_of: dict[str, list[str]] = {}
    for number, moment in enumerate(moments):
        video = moment["video"]
        description = _check_caption(moments_path, moment["description"], f"entry {number} (video {video!r}), description")
        if allowed is None or video in allowed:
            sentences_of.setdefault(video, []).append(description.strip())
    return [_paragraph_record(video, video, sentences) for video, sentences in sentences_of.items()]


def _paragraph_record(video_id: str, video_file: str, sentences: Iterable[str]) -> CaptionRecord:
    sentences = tuple(s.strip() for s in sentences)
    return CaptionRecord(video_id, video_file, " ".join(sentences), sentences)


# --- ActivityNet Captions --------------------------------------------------------------------------------------------
def _activitynet_records(annotations_dir: Path, split: str) -> list[CaptionRecord]:
    files = {"train": ("train.json", "train_ids.json"), "val": ("val_1.json", "val_ids.json")}
    # The paper (as CLIP4Clip) reports ActivityNet on val_1.
    key = "val" if split in ("val", "test") else split
    if key not in files:
        raise ValueError(f"ActivityNet splits are 'train' and 'val' (alias 'test': val_1), got {split!r}.")
    captions_file, ids_file = files[key]
    captions_path = _require(annotations_dir / captions_file, f"ActivityNet Captions {captions_file}")
    annotations = _read_json(captions_path)
    layout = '{"v_<id>": {"duration": ..., "timestamps": ..., "sentences": [...]}, ...}'
    if not isinstance(annotations, dict):
        raise AnnotationFormatError(captions_path, layout, _describe(annotations))
    _check_records(captions_path, annotations.values(), ("sentences",), layout)
    ids = list(annotations)
    if (annotations_dir / ids_file).is_file():
        listed = _read_json(annotations_dir / ids_file)
        ids = [pseudo_id for pseudo_id in dict.fromkeys(listed) if pseudo_id in annotations]
    for pseudo_id in ids:
        sentences = annotations[pseudo_id]["sentences"]
        if not isinstance(sentences, list):  # a string would be joined character by character
            raise AnnotationFormatError(captions_path, f'a list of caption strings in "{pseudo_id}" sentences', _describe(sentences))
        for number, sentence in enumerate(sentences):
            _check_caption(captions_path, sentence, f'"{pseudo_id}" sentences[{number}]')
    # Files are named either like the annotation key ("v_<youtube id>") or without the "v_" prefix.
    return [_paragraph_record(pseudo_id, pseudo_id, annotations[pseudo_id]["sentences"]) for pseudo_id in ids]


# --- LSMDC ---------------------------------------------------------------------------------------------------------
_LSMDC_FILES = {
    "train": "LSMDC16_annos_training.csv",
    "val": "LSMDC16_annos_val.csv",
    "test": "LSMDC16_challenge_1000_publictect.csv",
}


def _lsmdc_records(annotations_dir: Path, split: str) -> list[CaptionRecord]:
    if split not in _LSMDC_FILES:
        raise ValueError(f"LSMDC splits are {sorted(_LSMDC_FILES)}, got {split!r}.")
    path = _require(annotations_dir / _LSMDC_FILES[split], f"LSMDC {split} annotations")
    records = []
    # newline=None: lines end in \n, \r\n or \r, as when the file is opened as text.
    for line_number, line in enumerate(io.StringIO(_read_text(path), newline=None), start=1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        fields = line.split("\t", maxsplit=5)
        if len(fields) != 6:
            raise AnnotationFormatError(
                path, "6 tab-separated fields (clip_id, 4 timestamps, sentence)", f"{len(fields)} fields", line=line_number
            )
        clip_id, sentence = fields[0], fields[5].strip()
        records.append(CaptionRecord(clip_id, clip_id, sentence, (sentence,)))
    return records


_RECORD_READERS: dict[str, Callable[[Path, str], list[CaptionRecord]]] = {
    "msrvtt": _msrvtt_records,
    "didemo": _didemo_records,
    "activitynet": _activitynet_records,
    "lsmdc": _lsmdc_records,
}
BENCHMARKS: tuple[str, ...] = tuple(_RECORD_READERS)


def _index_video_files(videos_dir: Path) -> dict[str, Path]:
    """Every video file under `videos_dir` (recursively), by file name and by name without extension."""
    index: dict[str, Path] = {}
    for root, _, files in os.walk(videos_dir):
        for name in sorted(files):
            path = Path(root) / name
            if path.suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            index.setdefault(name, path)
            index.setdefault(path.stem, path)
    return index


def _locate(record: CaptionRecord, files: dict[str, Path]) -> Path | None:
    name = Path(record.video_file)
    stem = name.stem if name.suffix.lower() in VIDEO_EXTENSIONS else record.video_file
    candidates = [record.video_file, stem]
    if stem.startswith("v_"):  # ActivityNet files often drop the "v_" of the annotation key
        candidates.append(stem[2:])
    for candidate in candidates:
        if candidate in files:
            return files[candidate]
    return None


def _normalise_name(name: str) -> str:
    key = name.lower().replace("-", "").replace("_", "")
    return "activitynet" if key == "anet" else key


def load_retrieval_dataset(
    name: str,
    annotations_dir: str | os.PathLike | None = None,
    videos_dir: str | os.PathLike | None = None,
    split: str = "test",
    on_missing: MissingVideoPolicy = "drop",
) -> datasets.Dataset:
    """Load a text-video retrieval benchmark split as a `datasets.Dataset`.

    Args:
        name (`str`):
            `"msrvtt"`, `"didemo"`, `"activitynet"` or `"lsmdc"`; or a Hub dataset id (`"owner/name"`) whose split
            already has `video_id`, `video_path` and `caption` columns.
        annotations_dir (`str` or `os.PathLike`): folder with the benchmark's annotation files.
        videos_dir (`str` or `os.PathLike`): folder with the video files (searched recursively).
        split (`str`, defaults to `"test"`): split name; see each benchmark in the module docstring.
        on_missing (`str`, defaults to `"drop"`):
            What to do with samples whose video file is missing. A `MissingVideosWarning` (count and first ids; its
            `video_ids` has them all) is emitted in every case except `"raise"`. `"drop"` removes the samples,
            `"keep"` keeps them with the path where the file was expected, `"raise"` raises `MissingVideosError`.

    Returns:
        `datasets.Dataset` with columns `video_id`, `video_path`, `caption`, `captions`.
    """
    benchmark = _normalise_name(name)
    if benchmark not in _RECORD_READERS:
        if is_repo_id(name, require_owner=True) and annotations_dir is None:
            return _load_from_hub(name, split)
        raise ValueError(
            f"Unknown benchmark {name!r}{did_you_mean(name, BENCHMARKS)}; choose from {BENCHMARKS} or give a Hub "
            "dataset id owner/name."
        )
    if annotations_dir is None or videos_dir is None:
        raise ValueError(f"Loading {benchmark} needs annotations_dir and videos_dir.")
    if on_missing not in ("drop", "keep", "raise"):
        raise ValueError(f"on_missing must be 'drop', 'keep' or 'raise', got {on_missing!r}.")
    annotations_dir, videos_dir = Path(annotations_dir), Path(videos_dir)
    records = _RECORD_READERS[benchmark](annotations_dir, split)
    if not videos_dir.is_dir():
        raise FileNotFoundError(f"videos_dir {videos_dir} does not exist. See the Data section of the README for the expected layout.")
    files = _index_video_files(videos_dir)

    rows: dict[str, list] = {column: [] for column in RETRIEVAL_FEATURES}
    missing: list[str] = []
    for record in records:
        path = _locate(record, files)
        if path is None:
            if record.video_id not in missing:
                missing.append(record.video_id)
            if on_missing != "keep":
                continue
            path = videos_dir / record.video_file
        rows["video_id"].append(record.video_id)
        rows["video_path"].append(os.fspath(path))
        rows["caption"].append(record.caption)
        rows["captions"].append(list(record.captions))

    if not rows["video_id"]:
        if missing:
            raise MissingVideosError(
                f"{benchmark} {split}: 0 samples left after dropping {len(missing)} missing videos: no annotated video "
                f"has a file under {videos_dir} (first ids: {', '.join(missing[:_MISSING_IDS_SHOWN])}). Check "
                "videos_dir, or download the videos.",
                missing,
            )
        raise ValueError(f"{benchmark} {split}: the annotations in {annotations_dir} list no sample for this split.")
    if missing:
        consequences = {
            "drop": "Their samples were left out of the dataset.",
            "keep": "Their samples were kept with the path where the file was expected.",
            "raise": "",
        }
        warning = MissingVideosWarning(benchmark, split, os.fspath(videos_dir), missing, consequences[on_missing])
        if on_missing == "raise":
            raise MissingVideosError(str(warning), missing)
        logger.warning(str(warning))
        warnings.warn(warning, stacklevel=2)
    return datasets.Dataset.from_dict(rows, features=RETRIEVAL_FEATURES, split=datasets.NamedSplit(split))


def find_missing_videos(
    name: str, annotations_dir: str | os.PathLike, videos_dir: str | os.PathLike, split: str = "test"
) -> list[str]:
    """Ids of the videos a benchmark split annotates but `videos_dir` does not contain, in annotation order."""
    benchmark = _normalise_name(name)
    if benchmark not in _RECORD_READERS:
        raise ValueError(f"Unknown benchmark {name!r}; choose from {BENCHMARKS}.")
    files = _index_video_files(Path(videos_dir))
    records = _RECORD_READERS[benchmark](Path(annotations_dir), split)
    missing = [record.video_id for record in records if _locate(record, files) is None]
    return list(dict.fromkeys(missing))


def evaluation_dataset_fields(name: str, annotations_dir: str | os.PathLike | None = None) -> dict[str, object]:
    """What an evaluation JSON says about the data of a split loaded with `load_retrieval_dataset(name,
    annotations_dir, ...)`: `{"dataset": <benchmark>}`, or for the synthetic temporal benchmark (generated in the
    MSR-VTT layout by `make_synthetic_benchmark`) `{"dataset": "synthetic-temporal", "synthetic": True,
    "annotation_layout": "msrvtt"}`, so that results on generated videos are never labelled as MSR-VTT's."""
    from .synthetic_video import SYNTHETIC_BENCHMARK_NAME, is_synthetic_benchmark

    benchmark = _normalise_name(name)
    if annotations_dir is not None and is_synthetic_benchmark(annotations_dir):
        return {"dataset": SYNTHETIC_BENCHMARK_NAME, "synthetic": True, "annotation_layout": benchmark}
    return {"dataset": benchmark if benchmark in _RECORD_READERS else name}


def _load_from_hub(dataset_id: str, split: str) -> datasets.Dataset:
    """A Hub dataset already in the retrieval schema (needs network access to the Hub)."""
    dataset = datasets.load_dataset(dataset_id, split=split)
    required = {"video_id", "caption"}
    if not required <= set(dataset.column_names) or not ({"video_path", "video"} & set(dataset.column_names)):
        raise ValueError(
            f"Hub dataset {dataset_id} split {split} needs columns video_id, caption and video_path (or video); "
            f"it has {dataset.column_names}."
        )
    if "video_path" not in dataset.column_names:
        dataset = dataset.rename_column("video", "video_path")
    if "captions" not in dataset.column_names:
        dataset = dataset.map(lambda row: {"captions": [row["caption"]]})
    return dataset
