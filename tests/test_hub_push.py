"""`tempme push`: the dry-run folder is complete and is exactly what an upload sends (no network)."""

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

from transformers_tempme import REMOTE_CODE_FILES, TempMeCLIPModel, TempMeProcessor, apply_lora, save_adapter
from transformers_tempme.hub.auto import PIPELINE_CODE_FILES, PROCESSOR_CODE_FILES, save_with_pipeline

BASE_MODEL = "openai/clip-vit-base-patch32"


def load_script():
    from transformers_tempme.cli import push

    return push


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
    assert load_script().main([*argv, "--dry-run", str(out)]) == 0

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
    assert load_script().main(argv) == 0
    assert {p.name for p in out.iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "README.md",
                                               *PROCESSOR_FILES}
    assert (out / "adapter_model.safetensors").read_bytes() == (root / "adapter" / "adapter_model.safetensors").read_bytes()
    card = (out / "README.md").read_text()
    assert 'PeftModel.from_pretrained(base, "owner/tempme-tiny-lora")' in card  # ours, not peft's default card


def test_upload_sends_exactly_the_dry_run_folder(saved, tmp_path, monkeypatch):
    root, _, card_args = saved
    argv = [str(root / "model"), "--repo-id", "owner/tempme-tiny", "--base-model", BASE_MODEL, *card_args,
            "--private", "--revision", "v1"]
    script = load_script()
    assert script.main([*argv, "--dry-run", str(tmp_path / "dry")]) == 0

    calls = {}

    def fake_create_repo(repo_id, private, exist_ok, repo_type):
        calls["create_repo"] = (repo_id, private, exist_ok, repo_type)
        return f"https://huggingface.co/{repo_id}"

    def fake_create_branch(repo_id, branch, exist_ok, repo_type):
        calls["create_branch"] = (repo_id, branch)

    def fake_upload_folder(repo_id, folder_path, revision, commit_message, repo_type):
        calls["upload_folder"] = (repo_id, revision, folder_digest(Path(folder_path)))

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
        (lambda folder: (folder / "pipeline_tempme.py").unlink(), "not the pipeline (['pipeline_tempme.py'])"),
        (without_custom_pipelines, "no custom_pipelines in config.json"),
    ],
    ids=["no-remote-code", "pickle", "no-weights", "no-processor-code", "no-pipeline-code", "no-custom-pipelines"],
)
def test_incomplete_folders_are_refused(saved, tmp_path, capsys, break_folder, message):
    import shutil

    root, _, card_args = saved
    folder = Path(shutil.copytree(root / "model", tmp_path / "model"))
    break_folder(folder)
    argv = [str(folder), "--repo-id", "o/m", "--base-model", BASE_MODEL, "--dry-run", str(tmp_path / "out")]
    assert load_script().main(argv) == 2
    assert message in capsys.readouterr().err


def test_dry_run_refuses_a_non_empty_folder(saved, tmp_path, capsys):
    root, _, _ = saved
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    argv = [str(root / "model"), "--repo-id", "o/m", "--base-model", BASE_MODEL, "--dry-run", str(tmp_path / "out")]
    assert load_script().main(argv) == 2
    assert "not empty" in capsys.readouterr().err


def test_a_model_without_a_processor_is_published_alone_with_a_warning(saved, tmp_path, caplog):
    root, _, card_args = saved
    out = tmp_path / "staged"
    argv = [str(root / "model_alone"), "--repo-id", "o/m", "--base-model", BASE_MODEL, *card_args, "--dry-run", str(out)]
    with caplog.at_level("WARNING", logger="transformers_tempme.hub.upload"):
        assert load_script().main(argv) == 0
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "README.md", *REMOTE_CODE_FILES}
    assert "has no processor" in caplog.text
    card = (out / "README.md").read_text()
    assert "AutoProcessor" not in card and "pipeline(" not in card
