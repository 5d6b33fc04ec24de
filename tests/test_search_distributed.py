"""`accelerate launch` with 2 CPU processes (gloo): the processes share the videos, each writes its own shards, the
main process merges them, and the index equals the one a single process builds."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict

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


@pytest.mark.slow
def test_two_processes_build_the_same_index_as_one(tmp_path):
    model = save_tiny_search_model(tmp_path / "model")
    videos = make_video_folder(tmp_path / "videos")  # bad files included: both processes skip and report them
    make_many_videos(videos / "more", 5)

    single = VideoSearchIndex.build(videos, tmp_path / "single.index", TempMeCLIPModel.from_pretrained(model),
                                    TempMeProcessor.from_pretrained(model), model_info={"name_or_path": str(model)},
                                    num_workers=0, batch_size=4, progress=False)

    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
               "--dynamo_backend", "no", "-m", "transformers_tempme.cli", "index", str(videos), "--model", str(model),
               "--index", str(tmp_path / "two.index"), "--num-workers", "0", "--batch-size", "4", "--shard-rows", "2"]
    completed = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=400)
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "shared among 2 processes" in completed.stdout
    assert completed.stdout.count("Index ") == 1  # the main process reports once

    two = VideoSearchIndex.open(tmp_path / "two.index")
    report = json.loads((tmp_path / "two.index" / two.manifest.report).read_text())
    assert report["processes"] == 2
    assert report["failed"] == [asdict(failure) for failure in single.last_report.failed]
    rows_single, embeddings_single = stored_rows(single)
    rows_two, embeddings_two = stored_rows(two)
    assert rows_two == rows_single and len(rows_two) == 7 + 5 * 3
    np.testing.assert_allclose(embeddings_two, embeddings_single, rtol=0, atol=1e-6)
    assert two.manifest.counts == single.manifest.counts
