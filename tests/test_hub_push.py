"""`tempme push`: the dry-run folder is complete and is exactly what an upload sends (no network); a training output
folder is pushed as it is, and every refusal names the file behind it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_BACKBONE, tiny_inputs, tiny_model
from data_helpers import clip_tokenizer  # noqa: F401 (fixture)
from hub_card_checks import BENCHMARK, BENCHMARK_COMMAND, EVALUATION, numbers_not_from_sources, source_numbers, write_inputs
from safetensors.torch import load_file

from transformers_tempme import TempMeCLIPModel, TempMeProcessor, apply_lora, load_tempme, save_adapter
from transformers_tempme.cli import push
from transformers_tempme.cli.evaluate import load_model as evaluate_load_model
from transformers_tempme.data.word_tokenizer import build_word_level_tokenizer
from transformers_tempme.hub.auto import PIPELINE_CODE_FILES, PROCESSOR_CODE_FILES, REMOTE_CODE_FILES, save_with_pipeline
from transformers_tempme.hub.integrity import IncompleteFileError

BASE_MODEL = "openai/clip-vit-base-patch32"


def folder_digest(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


# What a processor leaves beside the weights: its settings, the tokenizer and its remote code.
PROCESSOR_FILES = {"processor_config.json", "tokenizer.json", "tokenizer_config.json", *PROCESSOR_CODE_FILES}


@pytest.fixture(scope="module")
def saved(tmp_path_factory, clip_tokenizer):  # noqa: F811
    root = tmp_path_factory.mktemp("push")
    model = tiny_model(text_config={**TINY_BACKBONE["text_config"], "vocab_size": 49408, "bos_token_id": 49406,
                                    "eos_token_id": 49407})
    processor = TempMeProcessor(clip_tokenizer, num_frames=4, max_words=16, image_size=32)
    save_with_pipeline(model, processor, root / "model")
    model.save_pretrained(root / "model_alone")
    peft_model = apply_lora(TempMeCLIPModel.from_pretrained(root / "model"))
    save_adapter(peft_model, root / "adapter")
    processor.save_pretrained(root / "adapter")
    eval_path, bench_path = write_inputs(root / "results")
    card_args = ["--eval-json", str(eval_path), "--benchmark-json", str(bench_path),
                 "--benchmark-command", BENCHMARK_COMMAND]
    return root, model, card_args


def test_dry_run_of_a_model_writes_config_weights_code_and_card(saved, tmp_path):
    root, model, card_args = saved
    out = tmp_path / "staged"
    argv = [str(root / "model"), "--repo-id", "owner/tempme-tiny", "--base-model", BASE_MODEL, *card_args]
    assert push.main([*argv, "--dry-run", str(out)]) == 0

    published = {"config.json", "model.safetensors", *REMOTE_CODE_FILES, *PROCESSOR_FILES, *PIPELINE_CODE_FILES}
    assert {p.name for p in out.iterdir()} == {*published, "README.md"}
    for name in published:
        assert (out / name).read_bytes() == (root / "model" / name).read_bytes()

    card = (out / "README.md").read_text()
    config = json.loads((out / "config.json").read_text())
    weights = sum(t.numel() for t in load_file(out / "model.safetensors").values())
    assert numbers_not_from_sources(card, source_numbers(EVALUATION, BENCHMARK, BENCHMARK_COMMAND, config) + [weights]) == []
    assert "trust_remote_code=True" in card and "model-index" in card
    assert 'pipeline(model="owner/tempme-tiny", trust_remote_code=True)' in card
    assert 'AutoProcessor.from_pretrained("owner/tempme-tiny", trust_remote_code=True)' in card

    # The staged folder is a working model.
    inputs = tiny_inputs(model.config)
    with torch.no_grad():
        torch.testing.assert_close(
            TempMeCLIPModel.from_pretrained(out).eval()(**inputs).logits_per_text, model(**inputs).logits_per_text
        )


def test_dry_run_of_an_adapter_writes_the_adapter_and_its_card(saved, tmp_path):
    root, _, card_args = saved
    out = tmp_path / "staged"
    argv = [str(root / "adapter"), "--repo-id", "owner/tempme-tiny-lora", *card_args, "--dry-run", str(out)]
    assert push.main(argv) == 0
    assert {p.name for p in out.iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "README.md",
                                               *PROCESSOR_FILES}
    assert (out / "adapter_model.safetensors").read_bytes() == (root / "adapter" / "adapter_model.safetensors").read_bytes()
    card = (out / "README.md").read_text()
    assert 'PeftModel.from_pretrained(base, "owner/tempme-tiny-lora")' in card  # ours, not peft's default card


def test_upload_sends_exactly_the_dry_run_folder(saved, tmp_path, monkeypatch):
    root, _, card_args = saved
    argv = [str(root / "model"), "--repo-id", "owner/tempme-tiny", "--base-model", BASE_MODEL, *card_args,
            "--private", "--revision", "v1"]
    script = push
    assert script.main([*argv, "--dry-run", str(tmp_path / "dry")]) == 0

    calls = {}

    def fake_create_repo(repo_id, private, exist_ok, repo_type):
        calls["create_repo"] = (repo_id, private, exist_ok, repo_type)
        return f"https://huggingface.co/{repo_id}"

    def fake_create_branch(repo_id, branch, exist_ok, repo_type):
        calls["create_branch"] = (repo_id, branch)

    def fake_upload_folder(repo_id, folder_path, revision, commit_message, repo_type):
        calls["upload_folder"] = (repo_id, revision, folder_digest(Path(folder_path)))

    monkeypatch.setattr(script, "check_hub_reachable", lambda action: None)  # the tests run with HF_HUB_OFFLINE=1
    monkeypatch.setattr(script, "create_repo", fake_create_repo)
    monkeypatch.setattr(script, "create_branch", fake_create_branch)
    monkeypatch.setattr(script, "upload_folder", fake_upload_folder)
    assert script.main(argv) == 0

    assert calls["create_repo"] == ("owner/tempme-tiny", True, True, "model")
    assert calls["create_branch"] == ("owner/tempme-tiny", "v1")
    repo_id, revision, uploaded = calls["upload_folder"]
    assert (repo_id, revision) == ("owner/tempme-tiny", "v1")
    assert uploaded == folder_digest(tmp_path / "dry")


def without_custom_pipelines(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    del config["custom_pipelines"]
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "break_folder, message",
    [
        (lambda folder: (folder / "merging.py").unlink(), "missing ['merging.py']"),
        (lambda folder: (folder / "pytorch_model.bin").write_bytes(b"pickle"), "pickled weights"),
        (lambda folder: (folder / "model.safetensors").unlink(), "no safetensors weights"),
        (lambda folder: (folder / "video_io.py").unlink(), "lacks its remote code (['video_io.py'])"),
    ],
    ids=["no-remote-code", "pickle", "no-weights", "no-processor-code"],
)
def test_incomplete_folders_are_refused(saved, tmp_path, capsys, break_folder, message):
    import shutil

    root, _, card_args = saved
    folder = Path(shutil.copytree(root / "model", tmp_path / "model"))
    break_folder(folder)
    argv = [str(folder), "--repo-id", "o/m", "--base-model", BASE_MODEL, "--dry-run", str(tmp_path / "out")]
    assert push.main(argv) == 2
    assert message in capsys.readouterr().err


def test_dry_run_refuses_a_non_empty_folder(saved, tmp_path, capsys):
    root, _, _ = saved
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    argv = [str(root / "model"), "--repo-id", "o/m", "--base-model", BASE_MODEL, "--dry-run", str(tmp_path / "out")]
    assert push.main(argv) == 2
    assert "not empty" in capsys.readouterr().err


def test_a_model_without_a_processor_is_published_alone_with_a_warning(saved, tmp_path, caplog):
    root, _, card_args = saved
    out = tmp_path / "staged"
    argv = [str(root / "model_alone"), "--repo-id", "o/m", "--base-model", BASE_MODEL, *card_args, "--dry-run", str(out)]
    with caplog.at_level("WARNING", logger="transformers_tempme.hub.upload"):
        assert push.main(argv) == 0
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "README.md", *REMOTE_CODE_FILES}
    assert "has no processor" in caplog.text
    card = (out / "README.md").read_text()
    assert "AutoProcessor" not in card and "pipeline(" not in card


# --- a folder saved the standard way gets its pipeline; bad repo ids and failed pushes are one error line -------------


def standard_save(model, root: Path, folder: Path) -> None:
    """`model.save_pretrained(folder)` + `processor.save_pretrained(folder)`: a model folder without the pipeline."""
    model.save_pretrained(folder)
    TempMeProcessor.from_pretrained(root / "model").save_pretrained(folder)


def copy_then(break_folder):
    def make(model, root: Path, folder: Path) -> None:
        import shutil

        shutil.copytree(root / "model", folder)
        break_folder(folder)

    return make


@pytest.mark.parametrize(
    "make_folder, added",
    [
        (standard_save, "pipeline_tempme.py, custom_pipelines in config.json"),
        (copy_then(lambda folder: (folder / "pipeline_tempme.py").unlink()), "pipeline_tempme.py"),
        (copy_then(without_custom_pipelines), "custom_pipelines in config.json"),
    ],
    ids=["model-and-processor-saved", "no-pipeline-code", "no-custom-pipelines"],
)
def test_push_adds_the_pipeline_a_folder_with_a_processor_lacks(saved, tmp_path, capsys, make_folder, added):
    root, model, card_args = saved
    folder = tmp_path / "model"
    make_folder(model, root, folder)
    before = folder_digest(folder)
    complete, staged = tmp_path / "complete", tmp_path / "staged"
    for source, out in ((root / "model", complete), (folder, staged)):
        capsys.readouterr()
        argv = [str(source), "--repo-id", "owner/tempme-tiny", "--base-model", BASE_MODEL, *card_args, "--dry-run", str(out)]
        assert push.main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"Adding the pipeline the folder was saved without ({added})" in out and "  pipeline_tempme.py" in out
    # The staged folder is what save_with_pipeline writes: the same files, the same pipeline code and entry.
    assert {p.name for p in staged.iterdir()} == {p.name for p in complete.iterdir()}
    assert (staged / "pipeline_tempme.py").read_bytes() == (complete / "pipeline_tempme.py").read_bytes()
    config = json.loads((staged / "config.json").read_text())
    assert config["custom_pipelines"] == json.loads((complete / "config.json").read_text())["custom_pipelines"]
    assert 'pipeline(model="owner/tempme-tiny", trust_remote_code=True)' in (staged / "README.md").read_text()
    assert folder_digest(folder) == before  # the user's folder is left as it was


@pytest.mark.slow
def test_a_completed_folder_runs_its_pipeline_without_the_package(saved, tmp_path):
    from test_hub_remote_code import run_without_package

    root, model, card_args = saved
    standard_save(model, root, tmp_path / "model")
    staged = tmp_path / "staged"
    argv = [str(tmp_path / "model"), "--repo-id", "o/m", "--base-model", BASE_MODEL, *card_args, "--dry-run", str(staged)]
    assert push.main(argv) == 0
    script = (
        "import json, os, sys\n"
        "sys.path += [p for p in json.loads(os.environ['TEMPME_TEST_SITE_PACKAGES'])"
        " if not os.path.isdir(os.path.join(p, 'transformers_tempme'))]\n"
        "import numpy as np\n"
        "from transformers import pipeline\n"
        "pipe = pipeline(model=sys.argv[1], trust_remote_code=True)\n"
        "frames = np.zeros((4, 32, 32, 3), dtype=np.uint8)\n"
        "labels = [r['label'] for r in pipe(frames, candidate_labels=['a dog', 'a cat'])]\n"
        "print(type(pipe).__module__.split('.')[0], sorted(labels))\n"
    )
    result = run_without_package(script, str(staged), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["transformers_modules", "['a", "cat',", "'a", "dog']"]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("repo_id", ["me/bad name!!", "a/b/c", "owner/" + "x" * 100])
def test_an_invalid_repo_id_is_refused_before_anything_is_written(saved, tmp_path, capsys, repo_id):
    root, _, card_args = saved
    argv = [str(root / "model"), "--repo-id", repo_id, "--base-model", BASE_MODEL, *card_args,
            "--dry-run", str(tmp_path / "staged")]
    assert push.main(argv) == 2
    assert f"--repo-id {repo_id!r} is not a valid Hub repo id" in one_error_line(capsys)
    assert not (tmp_path / "staged").exists()


def test_an_unreachable_hub_fails_at_once_with_one_line(saved, monkeypatch, capsys):
    import time

    from huggingface_hub import constants

    root, _, card_args = saved
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    script = push
    monkeypatch.setattr(script, "create_repo", lambda *a, **k: pytest.fail("no request after the Hub check failed"))
    started = time.perf_counter()
    assert script.main([str(root / "model"), "--repo-id", "owner/m", "--base-model", BASE_MODEL, *card_args]) == 2
    assert time.perf_counter() - started < 20
    line = one_error_line(capsys)
    assert "Pushing to owner/m needs the Hub, which cannot be reached at http://127.0.0.1:9" in line


def test_a_failed_upload_is_one_error_line(saved, monkeypatch, capsys):
    from huggingface_hub.errors import HfHubHTTPError

    root, _, card_args = saved
    script = push
    connect_error = next(cls for cls in HfHubHTTPError.__bases__ if cls is not OSError)  # the HTTP client's base error

    def failing_create_repo(*args, **kwargs):
        raise type("ConnectError", (connect_error,), {})("[Errno 111] Connection refused")

    monkeypatch.setattr(script, "check_hub_reachable", lambda action: None)
    monkeypatch.setattr(script, "create_repo", failing_create_repo)
    assert script.main([str(root / "model"), "--repo-id", "owner/m", "--base-model", BASE_MODEL, *card_args]) == 2
    line = one_error_line(capsys)
    assert "Pushing to owner/m failed: ConnectError: [Errno 111] Connection refused" in line
    assert "run the same command again" in line


# --- `tempme push` takes a training output folder as it is, and names the file behind every refusal. ------------------


def training_output(root: Path, base: str | None = None) -> Path:
    """A folder laid out like `tempme train`'s output for a LoRA run, with the Trainer's own files and checkpoints."""
    model = tiny_model()
    model.save_pretrained(root / "base")
    out = root / "run"
    save_adapter(apply_lora(TempMeCLIPModel.from_pretrained(root / "base")), out, base_model_name_or_path=base or root / "base")
    model.config.save_pretrained(out)
    tokenizer = build_word_level_tokenizer(["a cat sleeps", "a dog runs"], model_max_length=16)
    TempMeProcessor(tokenizer, num_frames=4, image_size=32).save_pretrained(out)
    torch.save({"learning_rate": 1e-3}, out / "training_args.bin")  # the Trainer's pickled arguments
    for name in ("trainer_state.json", "all_results.json", "train_results.json"):
        (out / name).write_text("{}")
    (out / "README.md").write_text("peft's generic card")
    (out / "checkpoint-2").mkdir()
    (out / "checkpoint-2" / "optimizer.pt").write_bytes(b"state")
    return out


@pytest.fixture(scope="module")
def card_args(tmp_path_factory):
    eval_path, bench_path = write_inputs(tmp_path_factory.mktemp("results"))
    return ["--eval-json", str(eval_path)]


@pytest.mark.parametrize("base", [None, "owner/tempme-base"], ids=["local-base", "hub-base"])
def test_a_training_output_folder_is_pushed_as_it_is(tmp_path, card_args, capsys, base):
    folder = training_output(tmp_path, base)
    staged = tmp_path / "staged"
    # No --config: the TempMe config is in the folder (for a Hub base too, which the card cannot read).
    assert push.main([str(folder), "--repo-id", "owner/tempme-lora", *card_args, "--dry-run", str(staged)]) == 0
    published = {path.name for path in staged.iterdir()}
    # config.json comes with the code AutoConfig needs for it (written by config.save_pretrained), the processor
    # with the code AutoProcessor needs for it.
    assert published == {"adapter_config.json", "adapter_model.safetensors", "config.json", "configuration_tempme.py",
                         "merging.py", "processor_config.json", "processing_tempme.py", "video_io.py",
                         "frame_transforms.py", "tokenizer.json", "tokenizer_config.json", "README.md"}
    out = capsys.readouterr().out
    assert "Not published" in out and "training_args.bin" in out and "checkpoint-2/" in out
    assert "peft's generic card" not in (staged / "README.md").read_text()
    # What was staged loads: the adapter on its base, with the processor beside it.
    if base is None:
        assert load_tempme(adapter=staged, merge=True).config.num_frames == 4
    assert TempMeProcessor.from_pretrained(staged).num_frames == 4


def test_a_file_instead_of_a_folder(tmp_path, capsys):
    folder = training_output(tmp_path)
    capsys.readouterr()
    code = push.main([str(folder / "adapter_model.safetensors"), "--repo-id", "o/m", "--dry-run", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert "adapter_model.safetensors is a file" in err and f"tempme push {folder}" in err


@pytest.mark.parametrize("weights", ["adapter_model.safetensors", "model.safetensors"])
def test_a_truncated_safetensors_file_is_named(tmp_path, capsys, card_args, weights):
    if weights == "model.safetensors":
        folder = tmp_path / "model"
        tiny_model().save_pretrained(folder)
    else:
        folder = training_output(tmp_path)
    path = folder / weights
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    capsys.readouterr()
    code = push.main([str(folder), "--repo-id", "o/m", *card_args, "--dry-run", str(tmp_path / "staged")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert f"{path} is incomplete or corrupt" in err and "save or download it again" in err
    assert not (tmp_path / "staged").exists()

    # Loading names it too.
    with pytest.raises(IncompleteFileError, match=str(path)):
        load_tempme(folder) if weights == "model.safetensors" else load_tempme(adapter=folder)
    with pytest.raises(IncompleteFileError, match=str(path)):
        evaluate_load_model(type("Args", (), {"model": str(folder), "base_model": None, "preset": "tempme-vit-b-32"}))


def test_pickled_weights_are_still_refused(tmp_path, capsys):
    folder = tmp_path / "model"
    tiny_model().save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(tiny_model().state_dict(), folder / "pytorch_model.bin")
    capsys.readouterr()
    assert push.main([str(folder), "--repo-id", "o/m", "--dry-run", str(tmp_path / "s")]) == 2
    assert "pickled weights ['pytorch_model.bin']" in capsys.readouterr().err
