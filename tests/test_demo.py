"""The demo script end to end at toy size: benchmark generation, two training runs, table, JSON and plot."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_runs_end_to_end_at_toy_size(tmp_path):
    output_dir = tmp_path / "demo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, str(ROOT / "examples" / "demo.py"), "--output-dir", str(output_dir),
               "--train-pairs", "4", "--test-pairs", "3", "--max-steps", "2", "--eval-steps", "1",
               "--pairs-per-batch", "2", "--hidden-size", "16", "--warmup-steps", "1", "--threads", "1"]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]

    results = json.loads((output_dir / "results.json").read_text())
    models = {model["variant"]: model for model in results["models"]}
    assert set(models) == {"baseline", "tempme"}
    for model in models.values():
        assert 0.0 <= model["pair_accuracy"] <= 1.0
        assert model["steps"] == 2 and model["seconds_per_step"] > 0 and model["peak_memory_mib"] > 0
        assert {"R@1", "R@5", "R@10", "MdR", "MnR"} <= model["text_to_video"].keys()
        # Each result names its data as an evaluation JSON does: the synthetic benchmark, not MSR-VTT.
        assert (model["dataset"], model["synthetic"], model["split"]) == ("synthetic-temporal", True, "test")
    # TempMe merges tokens: fewer FLOPs than the same tower without merging.
    assert models["tempme"]["gflops"] < models["baseline"]["gflops"]
    table = (output_dir / "results.md").read_text()
    assert "pair accuracy" in table and table.count("\n| ") >= 3
    assert "pair accuracy" in completed.stdout
    if (output_dir / "r1_vs_gflops.png").exists():
        assert (output_dir / "r1_vs_gflops.png").stat().st_size > 1000


def test_demo_videos_and_their_reversals_hold_the_same_frames(tmp_path):
    """The demo samples every frame of 8-frame losslessly encoded clips, so a clip's frames are exactly its
    reversal's frames in reverse order: a frame-independent model has no per-frame cue of the direction of time."""
    import numpy as np

    from transformers_tempme import make_synthetic_benchmark, read_video_frames

    make_synthetic_benchmark(tmp_path, num_train_pairs=3, num_test_pairs=0, frames_per_video=8, size=64, seed=0)
    for pair in range(3):
        forward, _ = read_video_frames(tmp_path / "videos" / f"video{2 * pair}.mp4", 8, sampling="uniform")
        backward, _ = read_video_frames(tmp_path / "videos" / f"video{2 * pair + 1}.mp4", 8, sampling="uniform")
        np.testing.assert_array_equal(forward, backward[::-1], err_msg=f"pair {pair}")
