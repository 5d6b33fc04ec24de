"""A real `tempme index` process killed with SIGKILL in the middle of an update: the index stays readable at the
previous generation, and running the command again finishes the job with the same rows and embeddings as an
uninterrupted run (no duplicate, no missing, no corrupt row)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from search_helpers import make_many_videos, save_tiny_search_model, stored_rows, subprocess_env

from transformers_tempme import VideoSearchIndex


def index_command(videos: Path, model: Path, index: Path) -> list[str]:
    # One work shard per video and no time threshold, so that a kill lands between many small commits.
    return [sys.executable, "-m", "transformers_tempme.cli", "index", str(videos), "--model", str(model), "--index",
            str(index), "--num-workers", "1", "--batch-size", "2", "--shard-rows", "1", "--commit-seconds", "0",
            "--no-progress"]


VIDEOS = 10


def build_in_process(videos: Path, model: Path, index: Path) -> None:
    """What `index_command` does, without a subprocess (same batches, workers and shards)."""
    from transformers_tempme import TempMeCLIPModel, TempMeProcessor

    VideoSearchIndex.build(videos, index, TempMeCLIPModel.from_pretrained(model), TempMeProcessor.from_pretrained(model),
                           model_info={"name_or_path": str(model)}, num_workers=1, batch_size=2, shard_rows=1,
                           commit_seconds=0, progress=False)


def run(command: list[str]) -> str:
    completed = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


@pytest.mark.slow
def test_an_update_killed_mid_run_resumes_to_the_uninterrupted_result(tmp_path):
    model = save_tiny_search_model(tmp_path / "model")
    everything = make_many_videos(tmp_path / "videos", VIDEOS)
    straight = tmp_path / "straight.index"
    build_in_process(everything, model, straight)

    # Generation 1 of the other index: 4 of the videos (a copy of the folder, same sizes and times, with the others
    # moved out while it is indexed and moved back after).
    staged, holding = tmp_path / "staged", tmp_path / "holding"
    shutil.copytree(everything, staged)
    for path in sorted(staged.rglob("*.mp4"))[4:]:
        (holding / path.relative_to(staged)).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, holding / path.relative_to(staged))
    interrupted = tmp_path / "interrupted.index"
    build_in_process(staged, model, interrupted)
    for path in sorted(holding.rglob("*.mp4")):
        shutil.move(path, staged / path.relative_to(holding))
    before = VideoSearchIndex.open(interrupted)
    assert len(before.videos) == 4

    # The update (the other videos) is killed once a few of them are committed to work shards.
    process = subprocess.Popen(index_command(staged, model, interrupted), env=subprocess_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = interrupted / "work"
    deadline = time.monotonic() + 240
    while len(list(work.glob("g*.parquet"))) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the update finished before it could be killed"
    done_before_kill = len(list(work.glob("g*.parquet")))  # finished shards (a shard being written is .tmp-*)
    assert 3 <= done_before_kill < VIDEOS - 4

    # Killed: the index is still generation 1, readable and searchable.
    after_kill = VideoSearchIndex.open(interrupted)
    assert after_kill.manifest.generation == 1 and len(after_kill.videos) == 4
    assert len(after_kill.search("a red square moves from left to right", k=3)) == 3

    output = run(index_command(staged, model, interrupted))
    assert f"added {VIDEOS - 4}, updated 0, removed 0, unchanged 4, failed 0" in output
    assert f"({done_before_kill} finished by an interrupted run)" in output

    rows_straight, embeddings_straight = stored_rows(VideoSearchIndex.open(straight))
    rows_resumed, embeddings_resumed = stored_rows(VideoSearchIndex.open(interrupted))
    assert len(rows_resumed) == len(set(rows_resumed)) == VIDEOS * 3  # no duplicate: 3 windows per video
    # Same files (relative paths, sizes, times, hashes) and windows; the same embeddings up to float summation order.
    assert rows_resumed == rows_straight
    np.testing.assert_allclose(embeddings_resumed, embeddings_straight, rtol=0, atol=1e-6)
    assert not list((interrupted / "work").glob("*"))  # the work shards were merged and removed


@pytest.mark.slow
def test_ctrl_c_commits_the_videos_encoded_and_says_how_to_resume(tmp_path):
    model = save_tiny_search_model(tmp_path / "model")
    videos = make_many_videos(tmp_path / "videos", VIDEOS)
    index = tmp_path / "lib.index"
    # Ctrl-C in a terminal interrupts the whole foreground process group: the command and its decoding workers.
    process = subprocess.Popen(index_command(videos, model, index), env=subprocess_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while len(list((index / "work").glob("g*.parquet"))) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=240)
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert f"Resume with the same command: tempme index {videos} --index {index}" in err

    interrupted = VideoSearchIndex.open(index)
    committed = len(interrupted.videos)
    assert 2 <= committed < VIDEOS and interrupted.report.interrupted
    assert f"interrupted, {VIDEOS - committed} not reached yet" in out

    output = run(index_command(videos, model, index))
    assert f"added {VIDEOS - committed}, updated 0, removed 0, unchanged {committed}, failed 0" in output
    straight = tmp_path / "straight.index"
    build_in_process(videos, model, straight)
    rows_straight, embeddings_straight = stored_rows(VideoSearchIndex.open(straight))
    rows_resumed, embeddings_resumed = stored_rows(VideoSearchIndex.open(index))
    assert rows_resumed == rows_straight
    np.testing.assert_allclose(embeddings_resumed, embeddings_straight, rtol=0, atol=1e-6)
