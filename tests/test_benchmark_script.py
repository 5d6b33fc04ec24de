"""benchmarks/benchmark.py runs end to end on narrow layers and writes complete records (no timing is asserted)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "benchmark.py"


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("benchmark_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def records(benchmark, tmp_path_factory):
    path = tmp_path_factory.mktemp("benchmark") / "records.json"
    threads = torch.get_num_threads()
    benchmark.main(
        ["--tiny", "--backbones", "vit-b-32", "--batch", "1", "--train-batch", "1", "--repeats", "1",
         "--train-repeats", "1", "--warmup", "0", "--threads", "1", "--json", str(path),
         "--markdown", str(path.with_suffix(".md"))]
    )
    torch.set_num_threads(threads)
    return json.loads(path.read_text()), path.with_suffix(".md").read_text()


def test_one_record_per_method_with_the_required_fields(records):
    rows, _ = records
    assert [row["method"] for row in rows] == ["no-merge", "tome", "tempme"]
    for row in rows:
        assert row["backbone"] == "vit-b-32" and row["frames"] == 12
        assert row["videos_per_s"] > 0 and row["gflops"] > 0 and row["output_tokens"] > 0
        assert row["lora_step_s"] > 0 and row["full_step_s"] > 0
        assert row["lora_saved_activation_mb"] > 0 and row["full_saved_activation_mb"] > 0
        assert len(row["machine"]["load_average_before"]) == 3


def test_tiny_widths_keep_the_papers_token_schedules(records):
    rows, _ = records
    for row in rows:
        assert row["output_tokens_layout"] == row["paper"]["output_tokens"]
    assert [row["output_tokens"] for row in rows] == [600, 312, 97]


def test_merging_saves_activations(records):
    rows, _ = records
    by_method = {row["method"]: row for row in rows}
    assert by_method["tempme"]["full_saved_activation_mb"] < by_method["no-merge"]["full_saved_activation_mb"]
    assert by_method["no-merge"]["speedup_vs_no_merge"] == 1.0


def test_markdown_names_the_command_and_every_method(records):
    _, markdown = records
    assert "python benchmarks/benchmark.py --tiny" in markdown
    for method in ("no-merge", "tome", "tempme"):
        assert f"| {method} |" in markdown


def test_tempme_has_no_schedule_for_vit_b_16_at_64_frames(benchmark):
    with pytest.raises(SystemExit, match="No TempMe preset"):
        benchmark.preset_name("tempme", "vit-b-16", 64)


def test_unknown_backbone_is_refused(benchmark):
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--backbones", "vit-l-14"])


def test_frame_scaling_leaves_one_clip_and_grows_linearly_without_merging():
    spec = importlib.util.spec_from_file_location("frame_scaling_script", SCRIPT.parent / "frame_scaling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.scaling_rows(["vit-b-32"], [12, 24, 48, 64])
    no_merge = {row["frames"]: row["gflops"] for row in rows if row["method"] == "no-merge"}
    assert no_merge[64] == pytest.approx(no_merge[12] * 64 / 12)
    for row in rows:
        if row["method"] == "tempme":
            assert row["output_tokens_layout"].startswith("1 x ")
            assert row["gflops_vs_no_merge"] < 0.7
    assert [row["output_tokens_layout"] for row in rows if row["method"] == "tempme"][0] == "1 x 97"


def test_inference_paths_run_beside_eager_with_accuracy_and_efficiency(benchmark, tmp_path):
    path = tmp_path / "paths.json"
    threads = torch.get_num_threads()
    benchmark.main(
        ["--tiny", "--backbones", "vit-b-32", "--methods", "no-merge,tempme", "--paths", "fp32,int8", "--batch", "1",
         "--repeats", "1", "--warmup", "0", "--threads", "1", "--no-train", "--authors-code", str(tmp_path / "none"),
         "--json", str(path)]
    )
    torch.set_num_threads(threads)
    rows = json.loads(path.read_text())
    assert [(row["method"], row["path"]) for row in rows] == [
        ("no-merge", "eager"), ("tempme", "eager"), ("tempme", "fp32"), ("tempme", "int8")
    ]
    by_path = {row["path"]: row for row in rows if row["method"] == "tempme"}
    assert by_path["fp32"]["max_abs_diff_to_fp32"] < 1e-5
    assert by_path["int8"]["cosine_to_fp32_min"] > 0.99
    machine = rows[0]["machine"]
    assert isinstance(machine["cpu_features"]["flags"], list)
    assert machine["matmul_probe_gmacs_per_s"]["torch.mm"] > 0
    for row in rows:
        assert row["gmacs_per_s"] > 0 and row["cpu_seconds_per_batch"] > 0 and row["fraction_of_matmul_peak"] > 0
        assert row["speedup_vs_authors"] is None  # no checkout of the authors' code there: skipped


def test_unknown_path_is_refused(benchmark):
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--paths", "fp16"])


@pytest.mark.slow
def test_revision_comparison_runs_both_sides_interleaved(tmp_path):
    """benchmarks/compare_revisions.py at tiny widths, this checkout against its own HEAD: every path on both sides,
    the baseline imported from an exported copy, equal embeddings where the code is the same."""
    import subprocess

    root = SCRIPT.parents[1]
    if subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout: no revision to compare against")
    path = tmp_path / "compare.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT.parent / "compare_revisions.py"), "--baseline", "HEAD", "--tiny", "--batch", "1",
         "--repeats", "2", "--warmup", "0", "--threads", "1", "--paths", "eager,fp32,int8", "--json", str(path),
         "--markdown", str(tmp_path / "compare.md")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(path.read_text())
    assert [row["path"] for row in rows] == ["eager", "fp32", "int8"]
    for row in rows:
        assert set(row["videos_per_s"]) == {"baseline", "checkout"} and min(row["videos_per_s"].values()) > 0
        assert len(row["speed_ratio_per_round"]) == 2 and row["speed_ratio"] > 0
        assert row["min_cosine"] > 0.999
    assert rows[0]["max_abs_diff"] < 1e-5 and rows[1]["max_abs_diff"] < 1e-5
    machine = rows[0]["machine"]
    assert isinstance(machine["cpu_features"]["flags"], list) and len(machine["commits"]["baseline"]) == 40
    assert "tempme-compare-" in result.stderr  # the baseline worker imported the exported copy
    assert "python benchmarks/compare_revisions.py --baseline HEAD" in (tmp_path / "compare.md").read_text()
    bad = subprocess.run([sys.executable, str(SCRIPT.parent / "compare_revisions.py"), "--baseline", "no-such-rev"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "is not a commit" in bad.stderr


# ------------------------------------------------------------------ what every benchmark shares: the machine, its files

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", sorted([*ROOT.glob("benchmarks/*.py"), *ROOT.glob("tools/*.py")]), ids=lambda p: p.name)
def test_every_script_imports_by_its_path_alone(script):
    """`python benchmarks/X.py` from any folder: a script imports the package and, by path, its siblings; never a
    sibling by bare name (which only works from inside its folder)."""
    assert str(script.parent) not in sys.path
    spec = importlib.util.spec_from_file_location(f"script_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    assert module.__doc__ and (callable(getattr(module, "main", None)) or "__main__" not in script.read_text())  # a script, or a library


def test_machine_description_and_records(tmp_path):
    from transformers_tempme.analysis.benchmark_records import (
        describe_machine,
        load_average,
        machine_description,
        write_results,
    )
    from transformers_tempme.inference.cpu_features import cpu_features

    machine = machine_description(faiss=True)
    assert machine["cpu_features"] == cpu_features() and machine["cpu"] == cpu_features()["cpu"]
    assert machine["cpu_count"] >= 1 and machine["torch"] == torch.__version__ and machine["torch_threads"] >= 1
    assert "faiss" not in machine_description() and machine["faiss"].split()[0].count(".") == 2  # its version
    assert describe_machine(machine) == f"{machine['cpu']} ({machine['cpu_count']} cores)"
    gpu = {**machine, "gpu": "H100", "driver": "550.1", "cuda": "12.8", "cudnn": 91000}
    assert describe_machine(gpu).startswith("H100 (driver 550.1, CUDA 12.8, cuDNN 91000) on ")
    assert len(load_average()) == 3
    results = {"command": "python benchmarks/x.py", "machine": machine}
    write_results(results, tmp_path / "out" / "x.json", tmp_path / "out" / "x.md", "| a |\n|---|")
    assert json.loads((tmp_path / "out" / "x.json").read_text())["machine"]["load_average_end"] == results["machine"]["load_average_end"]
    assert (tmp_path / "out" / "x.md").read_text() == "| a |\n|---|\n"
