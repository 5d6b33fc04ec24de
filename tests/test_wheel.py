"""The built wheel carries its package data: installed into a fresh venv, it renders a model card and its files hold
the code that saved models and processors ship."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import tiny_model

from transformers_tempme.hub.auto import PIPELINE_CODE_FILES, PROCESSOR_CODE_FILES, REMOTE_CODE_FILES

ROOT = Path(__file__).resolve().parents[1]
BASE_MODEL = "openai/clip-vit-base-patch32"


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    assert completed.returncode == 0, f"{' '.join(command)}\n{completed.stdout[-2000:]}\n{completed.stderr[-3000:]}"
    return completed


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built offline from a copy of the sources (so that the build leaves nothing in the checkout)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(root / "dist"), str(source)])
    (built,) = (root / "dist").glob("transformers_tempme-*.whl")
    return built


@pytest.mark.slow
def test_wheel_holds_the_card_template_and_the_shipped_code(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    package_files = ["hub/model_card_template.md", *REMOTE_CODE_FILES, *PROCESSOR_CODE_FILES, *PIPELINE_CODE_FILES]
    for name in package_files:
        assert f"transformers_tempme/{name}" in names, name
    assert any(name.endswith("entry_points.txt") for name in names)


@pytest.mark.slow
def test_card_renders_from_the_wheel_installed_in_a_fresh_venv(wheel, tmp_path):
    # A venv of its own with the wheel inside; the dependencies (torch, transformers, ...) come from this
    # interpreter's site-packages through a .pth file, which does not process the editable install's own .pth.
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    venv_site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(venv_site), str(wheel)])
    parents = [p for p in [*site.getsitepackages(), sysconfig.get_paths()["purelib"]] if os.path.isdir(p)]
    (venv_site / "zz_dependencies.pth").write_text("\n".join(dict.fromkeys(parents)) + "\n")

    model_dir = tmp_path / "model"
    tiny_model().save_pretrained(model_dir)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    where = run([str(python), "-c", "import transformers_tempme; print(transformers_tempme.__file__)"], cwd=tmp_path, env=env)
    assert Path(where.stdout.strip()).is_relative_to(venv_site), where.stdout

    card = tmp_path / "README.md"
    run([str(python), "-m", "transformers_tempme.cli", "card", str(model_dir), "--repo-id", "owner/tempme-tiny",
         "--base-model", BASE_MODEL, "-o", str(card)], cwd=tmp_path, env=env)
    text = card.read_text()
    assert f"**Base model:** `{BASE_MODEL}`" in text
    assert 'AutoModel.from_pretrained("owner/tempme-tiny", trust_remote_code=True)' in text
