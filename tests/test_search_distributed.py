"""`accelerate launch` with 4 CPU processes (gloo): the processes share the videos, each writes its own shards, the
main process merges them, and the index equals the one a single process builds, also when the processes are those of
two "machines" (two launchers joined over 127.0.0.1). A process that does not see the main process's index folder or
video folder (another machine without a shared filesystem) stops the run before any video is encoded, with one error
line naming it. When a machine dies, the others stop, and a rerun with fewer processes takes the work shards of every
process as done."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import psutil
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

INDEX_OPTIONS = ["--num-workers", "0", "--batch-size", "4", "--shard-rows", "2"]


def accelerate_launch(processes: int, *program: str, machines: int = 1, machine_rank: int = 0,
                      port: int | None = None) -> list[str]:
    """`accelerate launch` of `program` (`-m module ...` or `script.py ...`) on this machine's CPUs, over gloo:
    `processes` in all, or one machine's command of a launch over `machines` (the 2-machine launch in docs/search.md,
    its "machines" being launchers on this one joined over 127.0.0.1 at `port`)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", str(machines),
            "--machine_rank", str(machine_rank), "--num_processes", str(processes), "--main_process_ip", "127.0.0.1",
            "--main_process_port", str(port or free_port()), "--mixed_precision", "no", "--dynamo_backend", "no",
            *program]


def run_launchers(commands: list[list[str]], cwd, timeout: float = 500) -> list[tuple[int, str, str]]:
    """Run launchers side by side; `(returncode, stdout, stderr)` of each. Whatever still runs at the end is killed,
    the launcher's processes included (torchrun starts each in a session of its own)."""
    launchers = [subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, cwd=cwd) for command in commands]
    try:
        outputs = [launcher.communicate(timeout=timeout) for launcher in launchers]
    finally:
        for launcher in launchers:
            if launcher.poll() is None:
                family = psutil.Process(launcher.pid)
                for process in [*family.children(recursive=True), family]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        process.kill()
                launcher.wait()
    return [(launcher.returncode, *output) for launcher, output in zip(launchers, outputs)]


def machine_launch(machine_rank: int, port: int, *program: str) -> list[str]:
    """One machine's command of a launch over 2 machines of 2 processes each."""
    return accelerate_launch(4, *program, machines=2, machine_rank=machine_rank, port=port)


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
    (main_code, main_stdout, main_stderr), (other_code, other_stdout, other_stderr) = run_launchers(
        [machine_launch(0, port, *program), machine_launch(1, port, *program)], cwd=tmp_path)
    assert main_code == 0, main_stderr[-4000:]
    assert other_code == 0, other_stderr[-4000:]
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


# The second machine dies after its first process wrote its first work shard (the processes of one machine die
# together: torchrun stops the others when one fails).
DYING_MACHINE = """
import os, signal, sys
from transformers_tempme.cli import main
from transformers_tempme.search.storage import WorkShardWriter

if os.environ["GROUP_RANK"] == "1" and os.environ["LOCAL_RANK"] == "0":
    write = WorkShardWriter.write

    def write_then_die(self):
        path = write(self)
        if path is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return path

    WorkShardWriter.write = write_then_die
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_when_a_machine_dies_the_others_stop_and_a_rerun_with_one_process_finishes_the_update(tmp_path):
    model = save_tiny_search_model(tmp_path / "model")
    videos = make_many_videos(tmp_path / "videos", 8, seconds=12)  # 2 videos per process, 2 windows each
    script = tmp_path / "dying_machine.py"
    script.write_text(DYING_MACHINE)
    index_dir = tmp_path / "videos.index"

    port = free_port()
    program = [str(script), "index", str(videos), "--model", str(model), "--index", str(index_dir), *INDEX_OPTIONS]
    (main_code, _, main_stderr), (other_code, _, _) = run_launchers(
        [machine_launch(0, port, *program), machine_launch(1, port, *program)], cwd=tmp_path, timeout=300)
    assert other_code != 0
    assert main_code != 0, main_stderr[-4000:]  # the main machine stopped by itself: nothing committed
    errors = {line for line in main_stderr.splitlines() if line.startswith("error: ")}
    assert errors == {"error: Another process of this run stopped before the others (its machine died, or it failed or "
                      "was killed: see its log). Nothing was committed; the work shards written so far are kept. Run "
                      "the same command again, with any number of processes, to finish the update."}, main_stderr[-4000:]
    assert not (index_dir / "index.json").exists()
    shards = sorted(path.name[7:11] for path in (index_dir / "work").glob("g*.parquet"))
    assert {"p000", "p001", "p002"} <= set(shards) and shards.count("p002") == 1

    loaded = TempMeCLIPModel.from_pretrained(model), TempMeProcessor.from_pretrained(model)
    build = functools.partial(VideoSearchIndex.build, videos, model=loaded[0], processor=loaded[1],
                              model_info={"name_or_path": str(model)}, num_workers=0, batch_size=4, progress=False)
    resumed = build(index_dir=index_dir)
    assert 5 <= resumed.last_report.resumed < 8  # the main machine's 4 videos and the dead process's first, at least
    assert resumed.last_report.processes == 1
    single = build(index_dir=tmp_path / "single.index")
    rows_single, embeddings_single = stored_rows(single)
    rows_resumed, embeddings_resumed = stored_rows(resumed)
    assert rows_resumed == rows_single and resumed.manifest.counts == single.manifest.counts
    np.testing.assert_allclose(embeddings_resumed, embeddings_single, rtol=0, atol=1e-6)


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
    [(code, _, stderr)] = run_launchers([command], cwd=tmp_path, timeout=300)
    assert code != 0
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2, stderr[-4000:]  # one line from each process, the same one
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
