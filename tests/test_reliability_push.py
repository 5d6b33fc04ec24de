"""`tempme push` takes a training output folder as it is, and names the file behind every refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_model
from hub_card_checks import write_inputs

from transformers_tempme import TempMeCLIPModel, TempMeProcessor, apply_lora, load_tempme, save_adapter
from transformers_tempme.cli import push
from transformers_tempme.cli.evaluate import load_model as evaluate_load_model
from transformers_tempme.data.word_tokenizer import build_word_level_tokenizer
from transformers_tempme.hub.integrity import IncompleteFileError


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

