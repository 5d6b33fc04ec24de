"""Saved TempMe folders load through the Auto classes and pipeline(), with and without this package installed."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_BACKBONE, tiny_inputs, tiny_model
from data_helpers import clip_tokenizer  # noqa: F401 (fixture)
from transformers import AutoConfig, AutoModel

from transformers_tempme import TempMeCLIPModel, TempMeConfig, TempMeProcessor
from transformers_tempme.data.synthetic_video import write_video
from transformers_tempme.hub.auto import REMOTE_CODE_FILES
from transformers_tempme.hub.auto import PIPELINE_CODE_FILES, PROCESSOR_CODE_FILES, save_with_pipeline
from transformers_tempme.pipeline_tempme import TASK, TempMePipeline

# Runs in a fresh interpreter started with `-I -S`: no PYTHONPATH, no cwd, and no `.pth` files, so the editable
# install of this package (a `.pth` entry in site-packages) is not on the path. Site-packages are added back by
# hand without any directory that holds the package.
CHILD_SCRIPT = r'''
import json, os, sys
sys.path.extend(
    p for p in json.loads(os.environ["TEMPME_TEST_SITE_PACKAGES"])
    if not os.path.isdir(os.path.join(p, "transformers_tempme"))
)
try:
    import transformers_tempme
except ImportError:
    pass
else:
    raise SystemExit(f"transformers_tempme is importable from {transformers_tempme.__file__}")

import torch
from transformers import AutoConfig, AutoModel

for folder in sys.argv[2:]:
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    inputs = torch.load(os.path.join(folder, "inputs.pt"))
    with torch.no_grad():
        output = model(**inputs)
    torch.save(
        {
            "logits_per_text": output.logits_per_text,
            "video_embeds": output.video_model_output.video_embeds,
            "text_embeds": output.text_embeds,
            "token_counts": output.video_model_output.token_counts,
            "config_class_module": type(config).__module__,
            "model_class_module": type(model).__module__,
            "merge_schedule": config.merge_schedule,
        },
        os.path.join(folder, "child_outputs.pt"),
    )

# The processor and the pipeline, from a folder that save_with_pipeline wrote.
import shutil

import numpy as np
from transformers import AutoProcessor, pipeline

folder = sys.argv[1]
video, frames = os.path.join(folder, "clip.mp4"), np.load(os.path.join(folder, "frames.npy"))
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
batch = processor(text=["a dog runs", "a cat"], videos=[video, frames], return_tensors="pt")
pipe = pipeline(model=folder, trust_remote_code=True)
results = {
    "processor_class_module": type(processor).__module__,
    "pipeline_class_module": type(pipe).__module__,
    "pipeline_model_class_module": type(pipe.model).__module__,
    "pipeline_task": pipe.task,
    "batch": dict(batch),
    "classified": pipe(video, candidate_labels=["a dog runs", "a cat sleeps", "a car"]),
    "ranked": pipe(videos=[video, frames], text="a dog runs"),
}

# Without PyAV the processor still loads and takes frame arrays; reading a file says what to install. (A copy of the
# folder, so that its code is imported afresh.)
sys.modules["av"] = None
without_av = shutil.copytree(folder, os.path.join(os.path.dirname(folder), "without_av"))
processor = AutoProcessor.from_pretrained(without_av, trust_remote_code=True)
results["frames_without_av"] = processor(videos=[frames], return_tensors="pt")["pixel_values"]
try:
    processor(videos=[video])
except ImportError as error:
    results["file_without_av"] = str(error)
torch.save(results, os.path.join(folder, "child_outputs.pt"))
'''


def run_without_package(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    site_packages = [p for p in site.getsitepackages() if os.path.isdir(p)]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(cwd),
        "HF_HOME": str(cwd / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "TEMPME_TEST_SITE_PACKAGES": json.dumps(site_packages),
    }
    script_path = cwd / "child.py"
    script_path.write_text(script)
    return subprocess.run(
        [sys.executable, "-I", "-S", str(script_path), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_package_is_hidden_from_the_child_interpreter(tmp_path):
    result = run_without_package("import transformers_tempme\n", cwd=tmp_path)
    assert result.returncode != 0
    assert "No module named 'transformers_tempme'" in result.stderr


def test_save_pretrained_writes_auto_map_remote_code_and_safetensors(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    saved = {path.name for path in tmp_path.iterdir()}
    assert set(REMOTE_CODE_FILES) <= saved
    assert "model.safetensors" in saved and not any(name.endswith(".bin") for name in saved)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_tempme.TempMeConfig",
        "AutoModel": "modeling_tempme.TempMeCLIPModel",
    }
    # The copied code imports nothing from this package beyond its siblings.
    for name in REMOTE_CODE_FILES:
        assert "transformers_tempme" not in (tmp_path / name).read_text()


FAMILIES = ("tempme", "tome", "clip")


CLIP_VOCABULARY = {"vocab_size": 49408, "bos_token_id": 49406, "eos_token_id": 49407}


@pytest.fixture(scope="module")
def inference_folder(tmp_path_factory, clip_tokenizer):  # noqa: F811
    """A tiny model saved with its processor and pipeline, a video file and a frame array beside it, and what the
    installed package computes on them."""
    folder = tmp_path_factory.mktemp("remote_code_inference") / "model"
    model = tiny_model(text_config={**TINY_BACKBONE["text_config"], **CLIP_VOCABULARY})
    processor = TempMeProcessor(clip_tokenizer, num_frames=4, max_words=16, image_size=32)
    save_with_pipeline(model, processor, folder)
    generator = np.random.default_rng(0)
    write_video(folder / "clip.mp4", generator.integers(0, 256, (12, 40, 48, 3), dtype=np.uint8), fps=4)
    frames = generator.integers(0, 256, (4, 36, 36, 3), dtype=np.uint8)
    np.save(folder / "frames.npy", frames)
    local = TempMePipeline(model=model, processor=processor, task=TASK, device=-1)
    expected = {
        "batch": dict(processor(text=["a dog runs", "a cat"], videos=[folder / "clip.mp4", frames], return_tensors="pt")),
        "classified": local(str(folder / "clip.mp4"), candidate_labels=["a dog runs", "a cat sleeps", "a car"]),
        "ranked": local(videos=[str(folder / "clip.mp4"), frames], text="a dog runs"),
    }
    return folder, expected


@pytest.fixture(scope="module")
def remote_code_run(tmp_path_factory, inference_folder):
    """Save one tiny model per preset family, then load them all, and the processor and pipeline, in one fresh
    interpreter without the package."""
    root = tmp_path_factory.mktemp("remote_code")
    expected = {}
    for family in FAMILIES:
        model = tiny_model(family)
        folder = root / family
        model.save_pretrained(folder)
        inputs = tiny_inputs(model.config)
        torch.save(inputs, folder / "inputs.pt")
        with torch.no_grad():
            expected[family] = (model.config, model(**inputs))
    folder, _ = inference_folder
    result = run_without_package(
        CHILD_SCRIPT, str(folder), *(str(root / family) for family in FAMILIES), cwd=root
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root, expected


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_remote_code_loads_without_the_package_and_matches(remote_code_run, family):
    root, expected_by_family = remote_code_run
    config, expected = expected_by_family[family]
    child = torch.load(root / family / "child_outputs.pt")

    # Loaded from the copied files, not from this package.
    assert child["config_class_module"].startswith("transformers_modules.")
    assert child["model_class_module"].startswith("transformers_modules.")
    assert child["merge_schedule"] == config.merge_schedule
    assert child["token_counts"] == expected.video_model_output.token_counts
    torch.testing.assert_close(child["logits_per_text"], expected.logits_per_text, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(child["video_embeds"], expected.video_model_output.video_embeds, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(child["text_embeds"], expected.text_embeds, rtol=1e-5, atol=1e-6)


def test_auto_classes_use_the_installed_package_without_trust_remote_code(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(config) is TempMeConfig
    assert type(loaded) is TempMeCLIPModel
    inputs = tiny_inputs(model.config)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits_per_text, model(**inputs).logits_per_text)


def test_save_with_pipeline_writes_processor_and_pipeline_code(inference_folder):
    folder, _ = inference_folder
    saved = {path.name for path in folder.iterdir()}
    assert {*REMOTE_CODE_FILES, *PROCESSOR_CODE_FILES, *PIPELINE_CODE_FILES, "processor_config.json"} <= saved
    config = json.loads((folder / "config.json").read_text())
    assert config["custom_pipelines"] == {
        TASK: {"impl": "pipeline_tempme.TempMePipeline", "pt": ["AutoModel"], "type": "multimodal"}
    }
    processor_config = json.loads((folder / "processor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoProcessor": "processing_tempme.TempMeProcessor"}
    for name in (*PROCESSOR_CODE_FILES, *PIPELINE_CODE_FILES):
        assert "transformers_tempme" not in (folder / name).read_text(), name


def test_pipeline_needs_labels_or_text(inference_folder):
    folder, _ = inference_folder
    model, processor = TempMeCLIPModel.from_pretrained(folder), TempMeProcessor.from_pretrained(folder)
    pipe = TempMePipeline(model=model, processor=processor, device=-1)
    with pytest.raises(ValueError, match="candidate_labels to classify videos"):
        pipe(str(folder / "clip.mp4"))
    with pytest.raises(ValueError, match="not both"):
        pipe(str(folder / "clip.mp4"), candidate_labels=["a dog"], text="a dog")
    with pytest.raises(ValueError, match="leave batch_size at 1"):
        pipe([str(folder / "clip.mp4")] * 2, candidate_labels=["a dog"], batch_size=2)


@pytest.mark.slow
def test_processor_and_pipeline_load_without_the_package_and_match(remote_code_run, inference_folder):
    folder, expected = inference_folder
    child = torch.load(folder / "child_outputs.pt", weights_only=False)
    for key in ("processor_class_module", "pipeline_class_module", "pipeline_model_class_module"):
        assert child[key].startswith("transformers_modules."), key
    assert child["pipeline_task"] == TASK
    for key, value in expected["batch"].items():
        torch.testing.assert_close(child["batch"][key], value, rtol=0, atol=0, msg=key)

    classified = child["classified"]
    assert [r["label"] for r in classified] == [r["label"] for r in expected["classified"]]
    assert sorted(r["label"] for r in classified) == ["a car", "a cat sleeps", "a dog runs"]
    np.testing.assert_allclose([r["score"] for r in classified], [r["score"] for r in expected["classified"]], rtol=1e-5)
    assert sum(r["score"] for r in classified) == pytest.approx(1.0)
    ranked = child["ranked"]
    assert [(r["video"], r["index"]) for r in ranked] == [(r["video"], r["index"]) for r in expected["ranked"]]
    assert {r["video"] for r in ranked} == {str(folder / "clip.mp4"), None}
    np.testing.assert_allclose([r["score"] for r in ranked], [r["score"] for r in expected["ranked"]], rtol=1e-5)

    torch.testing.assert_close(child["frames_without_av"], expected["batch"]["pixel_values"][1:], rtol=0, atol=0)
    assert "pip install av" in child["file_without_av"]
