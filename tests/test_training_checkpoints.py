"""Resuming picks the newest complete checkpoint; saved files cut short are named, never loaded blindly."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from transformers_tempme.hub.integrity import IncompleteFileError, check_safetensors, check_torch_archive
from transformers_tempme.training.checkpoints import checkpoint_problem, find_resume_checkpoint, resume_checkpoint


def write_checkpoint(folder: Path, weights: str = "adapter_model.safetensors") -> Path:
    """What the Trainer writes, in its order, with small real files."""
    folder.mkdir(parents=True)
    save_file({"lora_A": torch.randn(4, 8), "lora_B": torch.randn(8, 4)}, folder / weights)
    (folder / "adapter_config.json").write_text("{}")
    torch.save({"state": {0: torch.randn(8)}}, folder / "optimizer.pt")
    torch.save({"last_epoch": 2}, folder / "scheduler.pt")
    torch.save({"python": 1}, folder / "rng_state.pth")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": int(folder.name.split("-")[1])}))
    return folder


def truncate(path: Path, fraction: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * fraction)])


PARTIAL = [
    # how the save was cut short, the reason given
    (lambda f: (f / "trainer_state.json").unlink(), "no trainer_state.json, which the Trainer writes last"),
    (lambda f: (f / "trainer_state.json").write_text('{"global_step": 4'), "trainer_state.json is not valid JSON"),
    (lambda f: truncate(f / "adapter_model.safetensors"), "adapter_model.safetensors is incomplete (its tensors need"),
    (lambda f: truncate(f / "adapter_model.safetensors", 0.001), "adapter_model.safetensors is incomplete"),
    (lambda f: (f / "adapter_model.safetensors").unlink(), "no model or adapter weights"),
    (lambda f: truncate(f / "optimizer.pt"), "optimizer.pt is incomplete (not a complete torch.save archive"),
    (lambda f: (f / "scheduler.pt").unlink(), "it has no scheduler.pt"),
    (lambda f: truncate(f / "rng_state.pth"), "rng_state.pth is incomplete"),
]


@pytest.mark.parametrize("cut_short, reason", PARTIAL)
def test_partial_checkpoints_are_skipped_with_the_reason(tmp_path, cut_short, reason):
    write_checkpoint(tmp_path / "checkpoint-2")
    cut_short(write_checkpoint(tmp_path / "checkpoint-4"))
    assert checkpoint_problem(tmp_path / "checkpoint-2") is None
    assert reason in checkpoint_problem(tmp_path / "checkpoint-4")
    chosen, skipped = find_resume_checkpoint(tmp_path)
    assert chosen == str(tmp_path / "checkpoint-2")
    assert [(Path(folder).name, reason in why) for folder, why in skipped] == [("checkpoint-4", True)]


def test_newest_by_step_number_not_by_name(tmp_path):
    for step in (9, 10, 100):
        write_checkpoint(tmp_path / f"checkpoint-{step}")
    (tmp_path / "checkpoint-100" / "trainer_state.json").unlink()
    assert find_resume_checkpoint(tmp_path)[0] == str(tmp_path / "checkpoint-10")


def test_full_model_checkpoints_and_save_only_model(tmp_path):
    folder = write_checkpoint(tmp_path / "checkpoint-3", weights="model.safetensors")
    (folder / "optimizer.pt").unlink()
    assert "no optimizer.pt" in checkpoint_problem(folder)
    assert checkpoint_problem(folder, expect_optimizer=False) is None


def training_args(output_dir: Path, resume_from_checkpoint: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(output_dir=str(output_dir), resume_from_checkpoint=resume_from_checkpoint, do_train=True,
                           save_only_model=False, process_index=0)


def test_resume_logs_what_it_skips_and_where_it_resumes_at_the_default_level(tmp_path, caplog):
    write_checkpoint(tmp_path / "checkpoint-2")
    truncate(write_checkpoint(tmp_path / "checkpoint-4") / "adapter_model.safetensors")
    with caplog.at_level(logging.WARNING):
        assert resume_checkpoint(training_args(tmp_path)) == str(tmp_path / "checkpoint-2")
    assert f"Skipping {tmp_path / 'checkpoint-4'}: adapter_model.safetensors is incomplete" in caplog.text
    assert f"Resuming from {tmp_path / 'checkpoint-2'}" in caplog.text


def test_no_complete_checkpoint_starts_over_and_says_so(tmp_path, caplog):
    (write_checkpoint(tmp_path / "checkpoint-2") / "trainer_state.json").unlink()
    with caplog.at_level(logging.WARNING):
        assert resume_checkpoint(training_args(tmp_path)) is None
    assert "training starts from the beginning" in caplog.text
    assert resume_checkpoint(training_args(tmp_path / "new-run")) is None  # a fresh output_dir: nothing to say


def test_an_explicit_partial_checkpoint_is_an_error_naming_the_newest_complete_one(tmp_path):
    write_checkpoint(tmp_path / "checkpoint-2")
    truncate(write_checkpoint(tmp_path / "checkpoint-4") / "optimizer.pt")
    with pytest.raises(ValueError, match=r"Cannot resume from .*checkpoint-4: optimizer\.pt is incomplete.*"
                                         r"The newest complete checkpoint next to it is .*checkpoint-2"):
        resume_checkpoint(training_args(tmp_path, str(tmp_path / "checkpoint-4")))
    assert resume_checkpoint(training_args(tmp_path, "true")) == str(tmp_path / "checkpoint-2")
    assert resume_checkpoint(training_args(tmp_path, True)) == str(tmp_path / "checkpoint-2")


def test_integrity_checks_name_the_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.randn(16, 16)}, path)
    check_safetensors(path)
    whole = path.read_bytes()
    for cut in (4, 20, len(whole) - 1):
        path.write_bytes(whole[:cut])
        with pytest.raises(IncompleteFileError, match=rf"{path} is incomplete or corrupt: .* save or download it again"):
            check_safetensors(path)
    path.write_bytes(whole + b"extra")
    with pytest.raises(IncompleteFileError, match="but the file has"):
        check_safetensors(path)
    archive = tmp_path / "optimizer.pt"
    torch.save({"x": torch.randn(8)}, archive)
    check_torch_archive(archive)
    truncate(archive)
    with pytest.raises(IncompleteFileError, match="optimizer.pt"):
        check_torch_archive(archive)
