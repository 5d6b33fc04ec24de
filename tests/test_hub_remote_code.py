"""Saved TempMe folders load through transformers' Auto classes, with and without this package installed."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_inputs, tiny_model
from transformers import AutoConfig, AutoModel

from transformers_tempme import REMOTE_CODE_FILES, TempMeCLIPModel, TempMeConfig

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

for folder in sys.argv[1:]:
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


@pytest.fixture(scope="module")
def remote_code_run(tmp_path_factory):
    """Save one tiny model per preset family, then load them all in one fresh interpreter without the package."""
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
    result = run_without_package(CHILD_SCRIPT, *(str(root / family) for family in FAMILIES), cwd=root)
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
