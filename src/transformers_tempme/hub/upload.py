"""Staging a saved TempMe model or adapter folder for the Hub: weights, config, remote code, processor, pipeline and
model card.

`stage_for_upload` writes the exact folder that `tempme push` uploads with `upload_folder`, so a dry
run shows what a push would publish. A `tempme train` output folder goes as it is: only the files a model repo
needs are published (`PUBLISHED_FILES`); the Trainer's state, arguments, metrics and checkpoints stay behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import ModelCard

from transformers.utils import (
    CONFIG_NAME,
    FEATURE_EXTRACTOR_NAME,
    PROCESSOR_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
)

from .auto import (
    PIPELINE_CODE_FILES,
    PROCESSOR_CODE_FILES,
    REMOTE_CODE_FILES,
    custom_pipelines_entry,
)
from .integrity import check_safetensors
from .loading import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, is_adapter_folder
from .repo_id import check_model_folder

logger = logging.getLogger(__name__)

# The package's own folder, which holds the remote-code files.
PACKAGE_DIR = Path(__file__).resolve().parents[1]
CARD_NAME = "README.md"
# Pickled weights run code when loaded; only safetensors are published.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
# The Trainer's pickled TrainingArguments: not weights, and never published.
TRAINER_PICKLES = ("training_args.bin",)
# What a model or adapter repo holds: weights (every *.safetensors), configs, remote code, processor and tokenizer.
PUBLISHED_FILES = (
    CONFIG_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    ADAPTER_CONFIG_NAME,
    *REMOTE_CODE_FILES,
    *PROCESSOR_CODE_FILES,
    *PIPELINE_CODE_FILES,
    PROCESSOR_NAME,
    FEATURE_EXTRACTOR_NAME,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)


def is_published(path: Path) -> bool:
    return path.is_file() and (path.name in PUBLISHED_FILES or path.suffix == ".safetensors")


def files_to_upload(folder: str | os.PathLike) -> list[Path]:
    """The files of a saved model or adapter folder that belong on the Hub, after checking they are complete.

    The top-level files named in `PUBLISHED_FILES` and the safetensors weights; everything else (an existing
    README.md, which the rendered card replaces, the Trainer's state and arguments, checkpoint sub-folders) stays
    behind. Every safetensors file is checked to be whole.
    """
    folder = Path(folder)
    if folder.is_file():
        raise NotADirectoryError(
            f"{folder} is a file; tempme push takes the folder that holds config.json (or adapter_config.json) and "
            f"the weights, e.g. tempme push {folder.parent} ..."
        )
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist; give the folder written by tempme train or save_pretrained.")
    check_model_folder(folder)
    files = sorted(path for path in folder.iterdir() if is_published(path))
    names = {path.name for path in files}
    pickles = sorted(
        path.name for path in folder.iterdir() if path.name.endswith(PICKLE_SUFFIXES) and path.name not in TRAINER_PICKLES
    )
    if pickles:
        raise ValueError(
            f"{folder} holds pickled weights {pickles}; only safetensors are published. Re-save with "
            "save_pretrained (safetensors is the default) and remove the pickles."
        )
    if is_adapter_folder(folder):
        required = [ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME]
    else:
        required = [CONFIG_NAME, *REMOTE_CODE_FILES]
        if not any(name.endswith(".safetensors") for name in names):
            raise ValueError(f"{folder} has no safetensors weights ({SAFE_WEIGHTS_NAME}).")
    missing = [name for name in required if name not in names]
    if missing:
        raise ValueError(
            f"{folder} is not a complete {'adapter' if is_adapter_folder(folder) else 'model'} folder: missing "
            f"{missing}. Save it with `import transformers_tempme` done first, e.g. "
            "TempMeCLIPModel.from_pretrained(folder).save_pretrained(folder), which writes the remote code and "
            "auto_map."
        )
    for path in files:
        if path.suffix == ".safetensors":
            check_safetensors(path)
    if not is_adapter_folder(folder):
        auto_map = json.loads((folder / CONFIG_NAME).read_text()).get("auto_map", {})
        if "AutoModel" not in auto_map or "AutoConfig" not in auto_map:
            raise ValueError(
                f"{folder}/config.json has no auto_map for AutoConfig and AutoModel, so trust_remote_code would not "
                "find the code. Re-save the model with transformers_tempme imported."
            )
    check_inference_files(folder, names)
    return files


def check_inference_files(folder: Path, names: set[str]) -> None:
    """A processor goes up with its code and auto_map (AutoProcessor); a model without a processor is published
    alone (a warning says what it lacks). A model's pipeline, when missing, is added by `stage_for_upload`."""
    adapter = is_adapter_folder(folder)
    if PROCESSOR_NAME not in names:
        logger.warning(
            "%s has no processor (%s): the Hub repo will not load with AutoProcessor or pipeline(). Save the "
            "processor beside the %s (TempMeProcessor.save_pretrained, or save_with_pipeline for a model).",
            folder, PROCESSOR_NAME, "adapter" if adapter else "model",
        )
        return
    missing = [name for name in PROCESSOR_CODE_FILES if name not in names]
    auto_map = json.loads((folder / PROCESSOR_NAME).read_text()).get("auto_map", {})
    if missing or "AutoProcessor" not in auto_map:
        raise ValueError(
            f"The processor in {folder} lacks its remote code ({missing or 'no AutoProcessor auto_map'}), so "
            "AutoProcessor.from_pretrained(..., trust_remote_code=True) would fail. Re-save it with transformers_tempme "
            "imported: processor.save_pretrained(folder)."
        )


def pipeline_additions(folder: str | os.PathLike) -> list[str]:
    """What `stage_for_upload` adds so that `pipeline(model=repo, trust_remote_code=True)` loads a model folder that
    has a processor but was saved without its pipeline (`model.save_pretrained` + `processor.save_pretrained`):
    the pipeline code and the `custom_pipelines` entry of config.json. Empty for adapters, folders without a
    processor, and folders that have both."""
    folder = Path(folder)
    if is_adapter_folder(folder) or not (folder / PROCESSOR_NAME).is_file():
        return []
    additions = [name for name in PIPELINE_CODE_FILES if not (folder / name).is_file()]
    if not json.loads((folder / CONFIG_NAME).read_text()).get("custom_pipelines"):
        additions.append(f"custom_pipelines in {CONFIG_NAME}")
    return additions


def _add_pipeline(out_dir: Path) -> None:
    """Write the package's pipeline code and `custom_pipelines` entry into a staged model folder."""
    for name in PIPELINE_CODE_FILES:
        shutil.copyfile(PACKAGE_DIR / name, out_dir / name)
    config_path = out_dir / CONFIG_NAME
    config = json.loads(config_path.read_text())
    config["custom_pipelines"] = config.get("custom_pipelines") or custom_pipelines_entry()
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")  # as PretrainedConfig writes it


def stage_for_upload(
    folder: str | os.PathLike, out_dir: str | os.PathLike, render_card: Callable[[Path], ModelCard]
) -> list[Path]:
    """Copy what `files_to_upload` lists into `out_dir` (new or empty), add the pipeline a model folder with a
    processor lacks (`pipeline_additions`), and write `render_card(out_dir)` as README.md: the card describes the
    folder as staged. Returns the staged files."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; give a new or empty folder.")
    files = files_to_upload(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copy2(path, out_dir / path.name)
    if pipeline_additions(folder):
        _add_pipeline(out_dir)
    render_card(out_dir).save(out_dir / CARD_NAME)
    return sorted(out_dir.iterdir())


def files_left_behind(folder: str | os.PathLike) -> list[str]:
    """The top-level entries of `folder` that `files_to_upload` does not publish (folders end with `/`)."""
    return sorted(
        path.name + ("/" if path.is_dir() else "") for path in Path(folder).iterdir() if not is_published(path)
    )


__all__ = [
    "files_to_upload",
    "files_left_behind",
    "check_inference_files",
    "pipeline_additions",
    "stage_for_upload",
    "CARD_NAME",
    "PUBLISHED_FILES",
]
