"""The demo script end to end at toy size: benchmark generation, two training runs, table, JSON and plot; and over
several seeds, the mean and standard deviation of every column."""

import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOY_SIZE = ["--train-pairs", "4", "--test-pairs", "3", "--max-steps", "2", "--eval-steps", "1", "--pairs-per-batch",
            "2", "--hidden-size", "16", "--warmup-steps", "1", "--threads", "1"]


def run_demo(*arguments: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, str(ROOT / "examples" / "demo.py"), *arguments, *TOY_SIZE]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed


def demo_module():
    spec = importlib.util.spec_from_file_location("demo", ROOT / "examples" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_demo_runs_end_to_end_at_toy_size(tmp_path):
    output_dir = tmp_path / "demo"
    completed = run_demo("--output-dir", str(output_dir))

    results = json.loads((output_dir / "results.json").read_text())
    # The run records its own wall time, search included, and the machine it ran on.
    assert results["seed"] == 0 and results["total_seconds"] > 0 and results["search_included"]
    assert results["machine"]["cpu_count"] >= 1 and "cpu" in results["machine"] and "load_average_at_start" in results["machine"]
    assert "Wall time of the whole demo, video search included" in (output_dir / "results.md").read_text()
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

    from transformers_tempme.data.synthetic_video import make_synthetic_benchmark
    from transformers_tempme.video_io import read_video_frames

    make_synthetic_benchmark(tmp_path, num_train_pairs=3, num_test_pairs=0, frames_per_video=8, size=64, seed=0)
    for pair in range(3):
        forward, _ = read_video_frames(tmp_path / "videos" / f"video{2 * pair}.mp4", 8, sampling="uniform")
        backward, _ = read_video_frames(tmp_path / "videos" / f"video{2 * pair + 1}.mp4", 8, sampling="uniform")
        np.testing.assert_array_equal(forward, backward[::-1], err_msg=f"pair {pair}")


@pytest.mark.slow
def test_demo_over_seeds_reports_mean_and_spread(tmp_path):
    output_dir = tmp_path / "seeds"
    run_demo("--seeds", "0", "1", "--output-dir", str(output_dir))
    summary = json.loads((output_dir / "results.json").read_text())
    runs = [json.loads((output_dir / f"seed-{seed}" / "results.json").read_text()) for seed in (0, 1)]
    assert summary["seeds"] == [0, 1] and [run["seed"] for run in runs] == [0, 1]
    assert summary["total_seconds"] >= sum(summary["seconds_per_seed"]) > 0 and summary["machine"]["cpu_count"] >= 1
    assert not any(run["search_included"] for run in runs)  # the seeds' runs skip the video search
    for position, variant in enumerate(("baseline", "tempme")):
        values = [run["models"][position]["pair_accuracy"] for run in runs]
        column = summary["models"][variant]["pair accuracy"]
        assert column["values"] == values and column["mean"] == pytest.approx(statistics.mean(values))
        assert column["std"] == pytest.approx(statistics.stdev(values))
    table = (output_dir / "results.md").read_text()
    assert "Mean ± standard deviation over seeds 0, 1" in table and table.count(" ± ") >= 2 * 12


def test_seed_table_gives_mean_and_sample_standard_deviation():
    demo = demo_module()
    runs = []
    for r1, pair in ((91.7, 0.992), (95.8, 1.0), (93.3, 0.975)):
        model = {"variant": "tempme", "label": "TempMe", "rsum": 500.0, "pair_accuracy": pair, "gflops": 0.018,
                 "trainable_parameters": 1, "seconds_per_step": 0.3, "cpu_seconds_per_step": 0.29,
                 "peak_memory_mib": 756.0, "text_to_video": {"R@1": r1, "R@5": 100.0, "R@10": 100.0},
                 "video_to_text": {"R@1": r1, "R@5": 100.0, "R@10": 100.0}}
        runs.append([model])
    r1 = demo.seed_statistics(runs)["tempme"]["t2v R@1"]
    assert r1["values"] == [91.7, 95.8, 93.3] and (r1["min"], r1["max"]) == (91.7, 95.8)
    assert r1["mean"] == pytest.approx(93.6) and r1["std"] == pytest.approx(statistics.stdev([91.7, 95.8, 93.3]))
    row = demo.seeds_table(runs).splitlines()[2]
    assert row.startswith("| TempMe | 93.6 ± 2.1 | 100.0 ± 0.0 |") and "| 0.989 ± 0.013 |" in row
    assert "trained parameters" not in demo.seeds_table(runs)  # counted only for parameter-efficient variants


def test_seeds_are_not_passed_on_to_each_run():
    demo = demo_module()
    assert demo.without_option(["--seeds", "0", "1", "2", "--max-steps", "5"], "--seeds") == ["--max-steps", "5"]
    assert demo.without_option(["--max-steps", "5", "--seeds=3"], "--seeds") == ["--max-steps", "5"]
