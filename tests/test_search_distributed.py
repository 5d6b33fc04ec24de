"""`accelerate launch` with 4 CPU processes (gloo): the processes share the videos, each writes its own shards, the
main process merges them, and the index equals the one a single process builds. A process that does not see the
main process's index folder or video folder (another machine without a shared filesystem) stops the run before any
video is encoded, with one error line naming it."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict, replace

import numpy as np
import pytest
from search_helpers import (
    free_port,
    make_many_videos,
    make_video_folder,
    save_tiny_search_model,
    stored_rows,
    subprocess_env,
)

from transformers_tempme import TempMeCLIPModel, TempMeProcessor, VideoSearchIndex
from transformers_tempme.search.discovery import VideoFile
from transformers_tempme.search.distributed import _share_problem
from transformers_tempme.search.indexer import _work_record
from transformers_tempme.search.storage import WORK_DIR, WorkShardWriter

INDEX_OPTIONS = ["--num-workers", "0", "--batch-size", "4", "--shard-rows", "2"]


def accelerate_launch(processes: int, *program: str) -> list[str]:
    """`accelerate launch` of `program` (`-m module ...` or `script.py ...`) on this machine's CPUs, over gloo."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
            "--dynamo_backend", "no", *program]


def machine_launch(machine_rank: int, port: int, *program: str) -> list[str]:
    """One machine's command of the 2-machine launch in docs/search.md, 2 processes each (4 in all), the "machines"
    being two launchers on this one, joined over 127.0.0.1."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2",
            "--machine_rank", str(machine_rank), "--num_processes", "4", "--main_process_ip", "127.0.0.1",
            "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no", *program]


@pytest.mark.slow
def test_four_processes_on_two_machines_build_the_same_index_as_one(tmp_path):
    model = save_tiny_search_model(tmp_path / "model")
    videos = make_video_folder(tmp_path / "videos")  # bad files included: every process skips and reports them
    make_many_videos(videos / "more", 5)

    single = VideoSearchIndex.build(videos, tmp_path / "single.index", TempMeCLIPModel.from_pretrained(model),
                                    TempMeProcessor.from_pretrained(model), model_info={"name_or_path": str(model)},
                                    num_workers=0, batch_size=4, progress=False)

    port = free_port()
    program = ["-m", "transformers_tempme.cli", "index", str(videos), "--model", str(model),
               "--index", str(tmp_path / "four.index"), *INDEX_OPTIONS]
    machines = [subprocess.Popen(machine_launch(rank, port, *program), env=subprocess_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                                 start_new_session=True) for rank in (0, 1)]
    try:
        outputs = [machine.communicate(timeout=500) for machine in machines]
    finally:
        for machine in machines:
            if machine.poll() is None:  # a launcher that hangs must not outlive the test, nor its processes
                os.killpg(machine.pid, signal.SIGKILL)
    for machine, (_, stderr) in zip(machines, outputs):
        assert machine.returncode == 0, stderr[-4000:]
    main_stdout, other_stdout = outputs[0][0], outputs[1][0]
    assert "shared among 4 processes" in main_stdout
    assert main_stdout.count("Index ") == 1 and "Index " not in other_stdout  # the main process reports once

    four = VideoSearchIndex.open(tmp_path / "four.index")
    report = json.loads((tmp_path / "four.index" / four.manifest.report).read_text())
    assert report["processes"] == 4
    assert report["failed"] == [asdict(failure) for failure in single.last_report.failed]
    assert report["skipped"] == [asdict(skipped) for skipped in single.last_report.skipped]
    rows_single, embeddings_single = stored_rows(single)
    rows_four, embeddings_four = stored_rows(four)
    assert rows_four == rows_single and len(rows_four) == 7 + 5 * 3
    np.testing.assert_allclose(embeddings_four, embeddings_single, rtol=0, atol=1e-6)
    assert four.manifest.counts == single.manifest.counts == {"videos": 10, "segments": 22, "failed": 2}
    assert not list((tmp_path / "four.index" / "work").iterdir())  # merged, then cleared


# A process on "another machine": the same command, but the index and video paths name other folders there.
OTHER_MACHINE = """
import os, sys
from transformers_tempme.cli import main

videos, index, other_videos, other_index, *options = sys.argv[1:]
if os.environ["RANK"] != "0":
    videos, index = other_videos, other_index
sys.exit(main(["index", videos, "--index", index, *options]))
"""


@pytest.mark.slow
def test_a_process_that_does_not_see_the_folders_stops_the_run_before_encoding(tmp_path):
    model = save_tiny_search_model(tmp_path / "model")
    videos = make_many_videos(tmp_path / "videos", 4, seconds=3)
    (tmp_path / "elsewhere" / "videos").mkdir(parents=True)  # an empty local folder at "the same path"
    script = tmp_path / "other_machine.py"
    script.write_text(OTHER_MACHINE)

    command = accelerate_launch(2, str(script), str(videos), str(tmp_path / "main.index"),
                                str(tmp_path / "elsewhere" / "videos"), str(tmp_path / "elsewhere" / "main.index"),
                                "--model", str(model), *INDEX_OPTIONS)
    completed = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert completed.returncode != 0
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2, completed.stderr[-4000:]  # one line from each process, the same one
    assert errors[0] == errors[1]
    assert "process 1 of 2 (host " in errors[0] and "process 0 of 2" not in errors[0]
    assert f"does not see the index folder {tmp_path / 'elsewhere' / 'main.index'}" in errors[0]
    assert f"finds none of the 2 videos of its share in {tmp_path / 'elsewhere' / 'videos'}" in errors[0]
    assert "on a filesystem every machine shares" in errors[0] and "Nothing was encoded." in errors[0]
    # Nothing encoded, nothing committed, no probe left behind.
    assert not (tmp_path / "main.index" / "index.json").exists()
    assert list((tmp_path / "main.index" / "work").iterdir()) == []
    assert not (tmp_path / "elsewhere" / "main.index").exists()


SHARE = [VideoFile("a.mp4", 10, 1), VideoFile("sub/b.mp4", 10, 1)]


@pytest.mark.parametrize(
    ("present", "share", "problem"),
    [
        (["a.mp4", "sub/b.mp4"], SHARE, None),
        (["a.mp4"], SHARE, None),  # a file deleted since the plan fails as usual: not a sharing problem
        ([], SHARE, "finds none of the 2 videos of its share in {videos} (e.g. a.mp4)"),
        ([], [], None),  # a process with nothing to encode needs only the folder
        (None, SHARE, "has no video folder {videos}"),
    ],
)
def test_share_problem(tmp_path, present, share, problem):
    videos = tmp_path / "videos"
    for name in present or []:
        (videos / name).parent.mkdir(parents=True, exist_ok=True)
        (videos / name).write_bytes(b"0" * 10)
    if present is not None:
        videos.mkdir(exist_ok=True)
    assert _share_problem(videos, share) == (problem.format(videos=videos) if problem else None)


def test_one_process_checks_nothing(tmp_path):
    from transformers_tempme.search.distributed import ProcessGroup, check_folders_shared

    check_folders_shared(ProcessGroup(), tmp_path / "no.index", tmp_path / "no videos", SHARE)  # no error, no file
    assert not (tmp_path / "no.index").exists()


def test_a_rerun_with_fewer_processes_takes_the_work_shards_of_a_dead_machine_as_done(tmp_path):
    """A machine died mid-run: the work shards its processes wrote (here process 3's, of two videos) stay in the
    shared `work/` folder, and the rerun (here one process) encodes only the rest."""
    model = save_tiny_search_model(tmp_path / "model")
    videos = make_many_videos(tmp_path / "videos", 4, seconds=12)
    loaded = TempMeCLIPModel.from_pretrained(model), TempMeProcessor.from_pretrained(model)
    build = functools.partial(VideoSearchIndex.build, videos, model=loaded[0], processor=loaded[1],
                              model_info={"name_or_path": str(model)}, num_workers=0, batch_size=4, progress=False)
    complete = build(index_dir=tmp_path / "complete.index")

    # What process 3 had written when its machine died: the rows of two videos, as an update of a new index records.
    done = ["part0/video00.mp4", "part1/video01.mp4"]
    rows = complete.to_dataset().filter(lambda row: row["path"] in done)
    writer = WorkShardWriter(tmp_path / "resumed.index" / WORK_DIR, 3,
                             _work_record(replace(complete.manifest, generation=0)))
    for path in done:
        video = rows.filter(lambda row: row["path"] == path)
        stat = (videos / path).stat()
        writer.add_video({"path": path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": "",
                          "duration": video["duration"][0], "warnings": []},
                         list(zip(video["path"], video["segment"], video["start"], video["end"])),
                         np.asarray(video["embedding"], np.float32))
    writer.write()

    resumed = build(index_dir=tmp_path / "resumed.index")
    assert resumed.last_report.resumed == 2
    assert resumed.manifest.counts == complete.manifest.counts
    rows_complete, embeddings_complete = stored_rows(complete)
    rows_resumed, embeddings_resumed = stored_rows(resumed)
    assert rows_resumed == rows_complete
    np.testing.assert_allclose(embeddings_resumed, embeddings_complete, rtol=0, atol=1e-6)
