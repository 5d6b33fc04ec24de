"""`tempme index`, `tempme search` (table and --json) and the model choices: a saved TempMe folder, an adapter
folder and a plain CLIP checkpoint with a preset (zero-shot)."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
import torch
from data_helpers import wheel_cache_dir
from search_helpers import (
    BAD_FILES,
    NOT_VIDEOS,
    VIDEOS,
    make_video_folder,
    save_tiny_search_model,
    stored_rows,
    write_truncated_mp4,
)
from transformers import CLIPConfig, CLIPModel

from transformers_tempme.cli import main

QUERY = "a red square moves from left to right"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A saved model folder, a video folder and the index `tempme index` made of it."""
    root = tmp_path_factory.mktemp("search_cli")
    model_dir = save_tiny_search_model(root / "model")
    videos = make_video_folder(root / "videos")
    index_dir = root / "videos.index"
    assert main(["index", str(videos), "--model", str(model_dir), "--index", str(index_dir), "--num-workers", "1",
                 "--no-progress"]) == 0
    return model_dir, videos, index_dir


def test_index_prints_a_summary_with_the_failures(tmp_path, capsys):
    model_dir = save_tiny_search_model(tmp_path / "model")
    videos = make_video_folder(tmp_path / "videos")
    assert main(["index", str(videos), "--model", str(model_dir), "--index", str(tmp_path / "idx"),
                 "--num-workers", "0", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "5 videos, 7 segments" in out
    assert "added 5, updated 0, removed 0, unchanged 0, failed 2, skipped 1 (not videos)" in out
    for name in BAD_FILES:
        assert (f"skipped, not a video: {name}: " if name in NOT_VIDEOS else f"failed: {name}: ") in out
    # Run again without --model: the index's model is used and nothing is re-encoded.
    assert main(["index", str(videos), "--index", str(tmp_path / "idx"), "--no-progress"]) == 0
    assert "added 0, updated 0, removed 0, unchanged 5, failed 2, skipped 1" in capsys.readouterr().out
    # Another precision re-encodes nothing either: the embedding space is the model's.
    assert main(["index", str(videos), "--index", str(tmp_path / "idx"), "--precision", "int8", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "unchanged 5" in out and "precision int8" in out


def test_search_prints_rank_score_path_and_time(indexed, capsys):
    _, _, index_dir = indexed
    assert main(["search", str(index_dir), QUERY, "-k", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["rank", "score", "time", "path"]
    rows = [line.split() for line in lines[1:]]
    assert [int(row[0]) for row in rows] == [1, 2, 3, 4]
    assert all(row[3] in VIDEOS for row in rows)
    assert all("-" in row[2] and ":" in row[2] for row in rows)


def test_search_json_lists_hits_best_first(indexed, capsys):
    _, videos, index_dir = indexed
    assert main(["search", str(index_dir), QUERY, "-k", "10", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 7  # every segment of the index
    assert {"path", "start", "end", "score"} <= set(hits[0])
    assert [hit["score"] for hit in hits] == sorted((hit["score"] for hit in hits), reverse=True)
    assert sorted({hit["path"] for hit in hits}) == sorted(VIDEOS)
    long_windows = sorted((hit["start"], hit["end"]) for hit in hits if hit["path"] == "long.mp4")
    assert long_windows == [(0.0, 10.0), (10.0, 20.0), (15.0, 25.0)]
    assert all(hit["video_path"] == str(videos / hit["path"]) for hit in hits)


def test_search_like_an_example_clip(indexed, capsys):
    # A clip indexed as one segment finds itself first, with its own embedding (cosine 1). The tiny random model
    # scores every segment near 1, so only the clip's own segment is a safe answer.
    _, videos, index_dir = indexed
    assert main(["search", str(index_dir), "--like", str(videos / "red_right.mp4"), "-k", "2", "--json"]) == 0
    best, second = json.loads(capsys.readouterr().out)
    assert best["path"] == "red_right.mp4" and best["score"] == pytest.approx(1.0, abs=1e-5)
    assert second["score"] < best["score"]


def test_index_prints_partial_decodes_and_what_is_not_a_video(tmp_path, capsys):
    model_dir = save_tiny_search_model(tmp_path / "model")
    videos = make_video_folder(tmp_path / "videos")
    write_truncated_mp4(videos / "cut.mp4", seconds=30, keep=0.8)
    (videos / "notes.txt").write_text("not a video\n")
    assert main(["index", str(videos), "--model", str(model_dir), "--index", str(videos / "v.index"),
                 "--num-workers", "0"]) == 0
    captured = capsys.readouterr()
    assert f"10 files in {videos}: 10 new" in captured.out  # 5 + 3 + 2: the index's own files are not listed
    assert "added 6, updated 0, removed 0, unchanged 0, failed 2, skipped 2 (not videos)" in captured.out
    assert re.search(r"warning: cut\.mp4: indexed up to 1\d\.\d s of the 30\.0 s its header states", captured.out)
    assert "skipped, not a video: notes.txt: not a readable media container" in captured.out
    # The next run probes the files that are not videos again, and says so.
    assert main(["index", "--index", str(videos / "v.index")]) == 0
    assert "0 new, 0 changed, 0 removed, 6 unchanged, 2 that failed before (tried again), 2 not videos before " \
           "(probed again)" in capsys.readouterr().out


def test_search_like_a_long_clip_says_how_it_combines_its_windows(indexed, capsys):
    _, videos, index_dir = indexed
    assert main(["search", str(index_dir), "--like", str(videos / "long.mp4"), "-k", "3", "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 3  # stdout stays JSON
    notes = [line for line in captured.err.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {videos / 'long.mp4'} lasts 25.0 s: searching by the mean of its 3 windows of 10 s (cut "
                     "as the index cuts videos)"]
    assert main(["search", str(index_dir), "--like", str(videos / "red_right.mp4"), "-k", "1"]) == 0
    assert "note:" not in capsys.readouterr().err  # one window: nothing to combine


def test_search_with_another_model_is_refused(indexed, tmp_path, capsys):
    _, _, index_dir = indexed
    other = save_tiny_search_model(tmp_path / "other", seed=3)
    assert main(["search", str(index_dir), QUERY, "--model", str(other)]) == 2
    error = capsys.readouterr().err
    assert "error: The index" in error and "different model" in error and "Traceback" not in error


def test_bad_command_lines_are_errors(indexed, tmp_path, capsys):
    _, videos, index_dir = indexed
    with pytest.raises(SystemExit) as exit_info:
        main(["search", str(index_dir)])
    assert exit_info.value.code == 2 and "QUERY or --like" in capsys.readouterr().err
    assert main(["index", str(videos), "--index", str(tmp_path / "new")]) == 2
    assert "pass --model" in capsys.readouterr().err
    assert main(["search", str(tmp_path / "nothing"), QUERY]) == 2
    assert "is not a video index" in capsys.readouterr().err
    assert main(["search", str(index_dir), "--like", str(videos / "notes.mp4")]) == 2
    assert "Cannot decode video" in capsys.readouterr().err
    model_dir, _, _ = indexed
    assert main(["index", str(videos), "--index", str(index_dir), "--segment-seconds", "5"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_an_adapter_folder_is_a_model(tmp_path, capsys):
    from transformers_tempme import TempMeCLIPModel, apply_lora, save_adapter

    base = save_tiny_search_model(tmp_path / "base")
    adapter = tmp_path / "adapter"
    save_adapter(apply_lora(TempMeCLIPModel.from_pretrained(base)), adapter, base_model_name_or_path=str(base))
    videos = make_video_folder(tmp_path / "videos")
    assert main(["index", str(videos), "--model", str(adapter), "--index", str(tmp_path / "idx"),
                 "--num-workers", "0", "--no-progress"]) == 0
    assert "5 videos, 7 segments" in capsys.readouterr().out


def test_from_clip_builds_zero_shot_tempme_on_a_clip_checkpoint(tmp_path, capsys, monkeypatch):
    # A CLIP with ViT-B/32's depth, patch size and input size but a tiny width, saved as a plain CLIP checkpoint.
    monkeypatch.setenv("TEMPME_WHEEL_CACHE", str(wheel_cache_dir()))  # the CLIP tokenizer, built offline
    config = CLIPConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 12, "num_attention_heads": 2,
                       "image_size": 224, "patch_size": 32},
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(tmp_path / "clip")
    videos = make_video_folder(tmp_path / "videos")
    assert main(["index", str(videos), "--from-clip", str(tmp_path / "clip"), "--preset", "tempme-vit-b-32",
                 "--index", str(tmp_path / "idx"), "--num-workers", "0", "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert manifest["model"]["from_clip"] and manifest["model"]["preset"] == "tempme-vit-b-32"
    assert manifest["num_frames"] == 12 and manifest["model"]["schedule"]["clip_merge_layers"] == [8, 9, 10]
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), QUERY, "-k", "2", "--json"]) == 0  # the manifest's model
    assert len(json.loads(capsys.readouterr().out)) == 2


def exit_code(argv) -> int:
    """`main(argv)`'s exit code, whether returned or raised by argparse."""
    try:
        return main(argv)
    except SystemExit as exit_info:
        return exit_info.code


def one_error_line(capsys) -> str:
    """The `error:` line of a command that failed as a user error should (and nothing like a traceback)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def library(tmp_path, capsys):
    """A model, a video folder, its index `lib.index`, and what `tempme search` answers on it."""
    model_dir = save_tiny_search_model(tmp_path / "model")
    videos = make_video_folder(tmp_path / "videos")
    index_dir = tmp_path / "lib.index"
    assert main(["index", str(videos), "--model", str(model_dir), "--index", str(index_dir), "--num-workers", "0",
                 "--no-progress"]) == 0
    capsys.readouterr()
    return videos, index_dir, search_output(index_dir, capsys)


def search_output(index_dir, capsys) -> str:
    assert main(["search", str(index_dir), QUERY, "-k", "10"]) == 0
    return capsys.readouterr().out


def test_indexing_an_empty_or_wrong_folder_leaves_the_library_answering(library, tmp_path, capsys):
    videos, index_dir, answer = library
    empty = tmp_path / "EMPTY"
    empty.mkdir()
    assert main(["index", str(empty), "--index", str(index_dir), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert str(videos) in line and str(empty) in line and "--video-dir-moved" in line
    # The same folder with its videos gone (an unmounted drive): refused too, saying how many and why.
    videos.rename(tmp_path / "elsewhere")
    videos.mkdir()
    assert main(["index", str(videos), "--index", str(index_dir), "--no-progress"]) == 2
    assert "would remove 5 of the 5 videos" in one_error_line(capsys)
    assert search_output(index_dir, capsys) == answer


def test_index_without_video_dir_updates_the_indexed_folder(library, capsys):
    _, index_dir, _ = library
    assert main(["index", "--index", str(index_dir), "--no-progress"]) == 0
    assert "unchanged 5" in capsys.readouterr().out


def test_a_damaged_vector_file_is_an_error_line_then_check_and_repair(library, capsys):
    from search_helpers import flip_bytes

    from transformers_tempme.search.storage import read_manifest

    _, index_dir, answer = library
    vector_file = f"{read_manifest(index_dir).vector_file}/index.faiss"
    flip_bytes(index_dir / vector_file)
    assert main(["search", str(index_dir), QUERY]) == 2
    line = one_error_line(capsys)
    assert vector_file in line and "tempme index --repair" in line

    assert main(["index", "--check", "--index", str(index_dir)]) == 1
    captured = capsys.readouterr()
    assert f"{vector_file}: its content differs from the SHA-256" in captured.out
    assert "--repair" in captured.err
    assert main(["index", "--repair", "--index", str(index_dir)]) == 0
    assert "repaired: rebuilt from the Parquet rows" in capsys.readouterr().out
    assert main(["index", "--check", "--index", str(index_dir)]) == 0
    assert "5 videos, 7 segments" in capsys.readouterr().out
    assert search_output(index_dir, capsys) == answer


def test_a_damaged_index_json_is_an_error_line_and_does_not_block_overwrite(library, tmp_path, capsys):
    videos, index_dir, answer = library
    (index_dir / "index.json").write_text('{"format_version": 2, "gener')
    assert main(["search", str(index_dir), QUERY]) == 2
    assert "index.json is damaged: it is not valid JSON" in one_error_line(capsys)
    assert main(["index", str(videos), "--index", str(index_dir), "--no-progress"]) == 2
    assert "--repair" in one_error_line(capsys)
    model_dir = tmp_path / "model"
    assert main(["index", str(videos), "--model", str(model_dir), "--index", str(index_dir), "--overwrite",
                 "--num-workers", "0", "--no-progress"]) == 0
    capsys.readouterr()
    assert search_output(index_dir, capsys) == answer


def test_a_full_disk_is_an_error_line_naming_the_file(library, capsys, monkeypatch):
    import errno

    from transformers_tempme.search import storage

    videos, index_dir, answer = library
    real_replace = storage.os.replace

    def disk_full(source, destination):
        if str(destination).endswith("vectors-00002"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(source, destination)

    monkeypatch.setattr(storage.os, "replace", disk_full)
    (videos / "red_left.mp4").unlink()
    assert main(["index", str(videos), "--index", str(index_dir), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert "vectors-00002: the disk is full" in line and "nothing was committed" in line
    monkeypatch.undo()
    assert search_output(index_dir, capsys) == answer


def test_check_and_repair_of_a_folder_that_is_no_index(tmp_path, capsys):
    for flag in ("--check", "--repair"):
        assert main(["index", flag, "--index", str(tmp_path / "nothing")]) == 2
        assert "is not a video index" in one_error_line(capsys)
    assert not (tmp_path / "nothing").exists()


# --- what --model / --from-clip take, and one error line for what they do not ------------------------------------------


def small_clip(folder):
    config = CLIPConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 12, "num_attention_heads": 2,
                       "image_size": 224, "patch_size": 32},
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "model_option, message",
    [
        (lambda root: ["--model", "/nonexistent/model"], r"No such folder: /nonexistent/model\. Give a model folder"),
        (lambda root: ["--model", str(root / "videos")], r"videos is not a model folder: it has no config\.json or "
                                                          r"adapter_config\.json\. A model folder holds config\.json"),
        (lambda root: ["--model", str(root / "model" / "config.json")], r"config\.json is a file, not a model folder"),
        (lambda root: ["--model", "owner/not-downloaded"], r"owner/not-downloaded is not a local folder, and with "
                                                           r"HF_HUB_OFFLINE=1 it is loaded from the Hugging Face cache"),
        (lambda root: ["--model", "me/bad name!!"], r"is neither a local folder nor a Hub repo id"),
        (lambda root: ["--model", str(small_clip(root / "clip"))], r"clip is a plain CLIP checkpoint: give the TempMe "
                                                                   r"schedule .* --from-clip"),
    ],
    ids=["missing-path", "video-folder", "a-file", "not-in-cache-offline", "invalid-id", "clip-without-from-clip"],
)
def test_a_model_option_that_names_no_model_is_one_error_line(indexed, tmp_path, capsys, model_option, message):
    model_dir, videos, index_dir = indexed
    root = tmp_path
    (root / "videos").symlink_to(videos)
    (root / "model").symlink_to(model_dir)
    option = model_option(root)
    for argv in (["index", str(videos), *option, "--index", str(tmp_path / "new.index")],
                 ["search", str(index_dir), QUERY, *option]):
        assert exit_code(argv) == 2
        assert re.search(message, one_error_line(capsys))
    assert not (tmp_path / "new.index").exists()


@pytest.mark.parametrize("option", [["-k", "0"], ["-k", "-3"], ["--max-per-video", "0"], ["-k", "many"]])
def test_search_counts_must_be_positive(indexed, capsys, option):
    _, _, index_dir = indexed
    assert exit_code(["search", str(index_dir), QUERY, *option]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: argument {'-k/--top-k' if option[0] == '-k' else '--max-per-video'}: ")
    assert "(see `tempme search --help`)" in line


def test_an_unreachable_hub_fails_at_once_with_a_hint(indexed, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    _, videos, _ = indexed
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    started = time.perf_counter()
    assert exit_code(["index", str(videos), "--from-clip", "openai/clip-vit-base-patch32",
                      "--index", str(tmp_path / "idx")]) == 2
    assert time.perf_counter() - started < 20  # one probe, not a minute of retries
    line = one_error_line(capsys)
    assert "openai/clip-vit-base-patch32 is not a local folder and the Hub (http://127.0.0.1:9) cannot be reached" in line
    assert "Set HF_HUB_OFFLINE=1" in line and "or give a local folder" in line


def trained_adapter(base, folder, method: str):
    """An adapter of `method` on the saved `base`, saved without a processor, with weights that change the output."""
    from transformers_tempme import TempMeCLIPModel, apply_adapter, apply_lora, apply_prompt, save_adapter

    tuned = {"lora": apply_lora, "adapter": apply_adapter, "prompt": apply_prompt}[method](
        TempMeCLIPModel.from_pretrained(base))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in tuned.parameters():
            if parameter.requires_grad:
                parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
    save_adapter(tuned, folder, base_model_name_or_path=str(base))
    return folder


@pytest.mark.parametrize("method", ["lora", "adapter", "prompt"])
def test_an_adapter_folder_takes_its_base_processor_and_indexes_unmerged_when_it_must(indexed, tmp_path, capsys, method):
    from transformers_tempme import VideoSearchIndex
    from transformers_tempme.hub.loading import load_processor

    model_dir, videos, base_index = indexed
    adapter = trained_adapter(model_dir, tmp_path / "adapter", method)
    assert not (adapter / "processor_config.json").exists()
    for precision in ("fp32", "model"):  # fp32: what the fast path does with it; model: the model's own forward
        assert main(["index", str(videos), "--model", str(adapter), "--index", str(tmp_path / precision),
                     "--precision", precision, "--num-workers", "0", "--no-progress"]) == 0, capsys.readouterr().err
    fast, own = (VideoSearchIndex.open(tmp_path / name) for name in ("fp32", "model"))
    # oneDNN's linear and the model's differ in the last bits, and a merge decided by a near tie on these flat
    # synthetic frames can then go the other way: one full-suite run saw an embedding move by 1.8e-5.
    np.testing.assert_allclose(stored_rows(fast)[1], stored_rows(own)[1], rtol=0, atol=1e-4)
    # The tuner is on (the embeddings are not the base model's), and the base model's processor came with it.
    assert not np.allclose(stored_rows(own)[1], stored_rows(VideoSearchIndex.open(base_index))[1], atol=1e-3)
    assert own.processor.tokenizer.get_vocab() == load_processor(model_dir, own.model).tokenizer.get_vocab()
    capsys.readouterr()
    assert main(["search", str(tmp_path / "fp32"), QUERY, "-k", "3", "--json"]) == 0  # the manifest's model, reloaded
    assert len(json.loads(capsys.readouterr().out)) == 3


@pytest.mark.parametrize("arguments, message", [
    (["--max-memory", "4X"], "argument --max-memory: '4X' is not a size: write it like 512M or 4G"),
    (["--max-memory", "0G"], "is no memory at all"),
    (["--ann", "flat", "--max-memory", "1G"], "--max-memory is for --ann auto, not --ann flat"),
    (["--ef-search", "64"], "--hnsw-m, --ef-construction and --ef-search need --ann hnsw"),
    (["--ann", "ivfpq"], "needs at least 256 of them; this index has 7. Use --ann flat (or auto)"),
])
def test_bad_vector_index_options_are_one_error_line(indexed, tmp_path, capsys, arguments, message):
    model_dir, videos, _ = indexed
    argv = ["index", str(videos), "--model", str(model_dir), "--index", str(tmp_path / "idx"), "--num-workers", "0",
            "--no-progress", *arguments]
    assert exit_code(argv) == 2
    assert message in one_error_line(capsys)


def test_ann_auto_with_a_memory_budget_and_updates_that_keep_the_kind(library, capsys):
    from transformers_tempme.cli.index import memory_size
    from transformers_tempme.search.storage import read_manifest

    assert [memory_size(text) for text in ("512M", "4G", "1.5GiB", "1000")] == [2**29, 2**32, 3 * 2**29, 1000]
    videos, index_dir, answer = library
    assert read_manifest(index_dir).vector_index["kind"] == "flat"  # auto, 7 segments: exact
    # auto on an update keeps the index's kind (and adds to it); naming another kind rebuilds it from the rows.
    assert main(["index", str(videos), "--index", str(index_dir), "--ann", "auto", "--max-memory", "512M",
                 "--no-progress"]) == 0
    assert read_manifest(index_dir).vector_index["kind"] == "flat"
    assert main(["index", str(videos), "--index", str(index_dir), "--ann", "hnsw", "--hnsw-m", "8",
                 "--no-progress"]) == 0
    manifest = read_manifest(index_dir)
    assert (manifest.vector_index["kind"], manifest.vector_index["hnsw_m"]) == ("hnsw", 8)
    capsys.readouterr()
    assert search_output(index_dir, capsys) == answer
