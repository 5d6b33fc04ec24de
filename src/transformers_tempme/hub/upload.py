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
from pathlib import Path

from huggingface_hub import ModelCard

from .auto import PIPELINE_CODE_FILES, PROCESSOR_CODE_FILES, PROCESSOR_CONFIG_NAME, REMOTE_CODE_FILES
from .integrity import check_safetensors
from .loading import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, is_adapter_folder

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
# Pickled weights run code when loaded; only safetensors are published.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
# The Trainer's pickled TrainingArguments: not weights, and never published.
TRAINER_PICKLES = ("training_args.bin",)
# What a model or adapter repo holds: weights (every *.safetensors), configs, remote code, processor and tokenizer.
PUBLISHED_FILES = (
    "config.json",
    "model.safetensors.index.json",
    ADAPTER_CONFIG_NAME,
    *REMOTE_CODE_FILES,
    *PROCESSOR_CODE_FILES,
    *PIPELINE_CODE_FILES,
    PROCESSOR_CONFIG_NAME,
    "preprocessor_config.json",
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
        required = ["config.json", *REMOTE_CODE_FILES]
        if not any(name.endswith(".safetensors") for name in names):
            raise ValueError(f"{folder} has no safetensors weights (model.safetensors).")
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
        auto_map = json.loads((folder / "config.json").read_text()).get("auto_map", {})
        if "AutoModel" not in auto_map or "AutoConfig" not in auto_map:
            raise ValueError(
                f"{folder}/config.json has no auto_map for AutoConfig and AutoModel, so trust_remote_code would not "
                "find the code. Re-save the model with transformers_tempme imported."
            )
    check_inference_files(folder, names)
    return files


def check_inference_files(folder: Path, names: set[str]) -> None:
    """A processor goes up with its code and auto_map (AutoProcessor), and a model with a processor with its pipeline
    (`custom_pipelines` in config.json and `pipeline_tempme.py`); a model without a processor is published alone."""
    adapter = is_adapter_folder(folder)
    if PROCESSOR_CONFIG_NAME not in names:
        logger.warning(
            "%s has no processor (%s): the Hub repo will not load with AutoProcessor or pipeline(). Save the "
            "processor beside the %s (TempMeProcessor.save_pretrained, or save_with_pipeline for a model).",
            folder, PROCESSOR_CONFIG_NAME, "adapter" if adapter else "model",
        )
        return
    fix = "Re-save it with transformers_tempme imported: " + (
        "processor.save_pretrained(folder)." if adapter else "save_with_pipeline(model, processor, folder)."
    )
    missing = [name for name in PROCESSOR_CODE_FILES if name not in names]
    auto_map = json.loads((folder / PROCESSOR_CONFIG_NAME).read_text()).get("auto_map", {})
    if missing or "AutoProcessor" not in auto_map:
        raise ValueError(
            f"The processor in {folder} lacks its remote code ({missing or 'no AutoProcessor auto_map'}), so "
            f"AutoProcessor.from_pretrained(..., trust_remote_code=True) would fail. {fix}"
        )
    if adapter:
        return
    custom_pipelines = json.loads((folder / "config.json").read_text()).get("custom_pipelines", {})
    missing = [name for name in PIPELINE_CODE_FILES if name not in names]
    if missing or not custom_pipelines:
        raise ValueError(
            f"{folder} has a processor but not the pipeline ({missing or 'no custom_pipelines in config.json'}), so "
            f"pipeline(model=..., trust_remote_code=True) would fail. {fix}"
        )


def stage_for_upload(folder: str | os.PathLike, card: ModelCard, out_dir: str | os.PathLike) -> list[Path]:
    """Copy what `files_to_upload` lists into `out_dir` (new or empty) and write the card as README.md."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; give a new or empty folder.")
    out_dir.mkdir(parents=True, exist_ok=True)
    staged = [Path(shutil.copy2(path, out_dir / path.name)) for path in files_to_upload(folder)]
    card.save(out_dir / CARD_NAME)
    return sorted([*staged, out_dir / CARD_NAME])


def files_left_behind(folder: str | os.PathLike) -> list[str]:
    """The top-level entries of `folder` that `files_to_upload` does not publish (folders end with `/`)."""
    return sorted(
        path.name + ("/" if path.is_dir() else "") for path in Path(folder).iterdir() if not is_published(path)
    )


__all__ = [
    "files_to_upload",
    "files_left_behind",
    "check_inference_files",
    "stage_for_upload",
    "CARD_NAME",
    "PUBLISHED_FILES",
]
