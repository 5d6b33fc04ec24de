"""Which checkpoint a rerun of `tempme train` resumes from, when the newest one may be incomplete.

The `Trainer` writes `checkpoint-N/` file by file: the model or adapter weights, the optimizer, the scheduler, the
RNG state and, last, `trainer_state.json`. A process killed during a save (kill -9, out of memory, a preempted
node) leaves the newest folder partial, and resuming from it fails with `FileNotFoundError`, `JSONDecodeError` or
`SafetensorError`, or, without `optimizer.pt`, silently restarts the optimizer. `find_resume_checkpoint` takes the
newest *complete* checkpoint instead and logs which ones it skipped and why.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from transformers.trainer_utils import sort_checkpoints
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_NAME
from transformers.utils.peft_utils import ADAPTER_SAFE_WEIGHTS_NAME

from ..hub.integrity import IncompleteFileError, check_saved_file

logger = logging.getLogger(__name__)

TRAINER_STATE_NAME = "trainer_state.json"
# What `Trainer._save_checkpoint` writes, in its order; the first weights file found is the model.
WEIGHTS_NAMES = (ADAPTER_SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME)
OPTIMIZER_NAMES = ("optimizer.pt", "scheduler.pt")


def checkpoint_problem(folder: str | os.PathLike, expect_optimizer: bool = True) -> str | None:
    """Why `folder` cannot be resumed from, or `None` when it is complete.

    Args:
        folder: a `checkpoint-N` folder.
        expect_optimizer: require `optimizer.pt` and `scheduler.pt` (`False` for runs with `save_only_model`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return "it is not a folder"
    state = folder / TRAINER_STATE_NAME
    if not state.is_file():
        return f"it has no {TRAINER_STATE_NAME}, which the Trainer writes last: the save did not finish"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        return f"its {TRAINER_STATE_NAME} is not valid JSON ({error})"
    if any(folder.glob("global_step*")) or any(folder.glob("pytorch_model_fsdp*")):
        return None  # DeepSpeed and FSDP save their own layouts; their loaders check them
    weights = next((folder / name for name in WEIGHTS_NAMES if (folder / name).is_file()), None)
    if weights is None:
        return f"it has no model or adapter weights (none of {', '.join(WEIGHTS_NAMES)})"
    files = [weights]
    if weights.name.endswith(".index.json"):
        try:
            shards = json.loads(weights.read_text(encoding="utf-8"))["weight_map"].values()
        except (ValueError, KeyError, TypeError, AttributeError):
            return f"its {weights.name} is not a readable shard index"
        files = [folder / name for name in sorted(set(shards))]
    if expect_optimizer:
        missing = [name for name in OPTIMIZER_NAMES if not (folder / name).is_file()]
        if missing:
            return f"it has no {' or '.join(missing)}"
        files += [folder / name for name in OPTIMIZER_NAMES]
    files += sorted(folder.glob("rng_state*.pth"))
    for path in files:
        if not path.is_file():
            return f"{path.name} is missing"
        try:
            check_saved_file(path)
        except IncompleteFileError as error:
            return f"{path.name} is incomplete ({error.reason})"
    return None


def find_resume_checkpoint(
    output_dir: str | os.PathLike, expect_optimizer: bool = True
) -> tuple[str | None, list[tuple[str, str]]]:
    """The newest complete `checkpoint-N` in `output_dir` (or `None`), and the newer ones skipped with the reason."""
    skipped = []
    for folder in reversed(sort_checkpoints(os.fspath(output_dir))):
        problem = checkpoint_problem(folder, expect_optimizer)
        if problem is None:
            return folder, skipped
        skipped.append((folder, problem))
    return None, skipped


def resume_checkpoint(training_args) -> str | None:
    """The checkpoint `tempme train` passes to `Trainer.train(resume_from_checkpoint=...)`, logged at the default level.

    An explicit `--resume-from-checkpoint FOLDER` must be complete (the error names the newest complete one). Without
    it, the newest complete checkpoint in `--output-dir` is used, skipping partial ones with a warning each.
    """
    if not training_args.do_train:
        return None
    expect_optimizer = not training_args.save_only_model
    log = logger.warning if training_args.process_index == 0 else logger.debug
    requested = training_args.resume_from_checkpoint
    requested = None if requested in (None, False, "") else str(requested)
    if requested is not None and requested.lower() != "true":  # the Trainer's `True`: the last checkpoint in output_dir
        problem = checkpoint_problem(requested, expect_optimizer)
        if problem is not None:
            newest, _ = find_resume_checkpoint(Path(requested).parent, expect_optimizer)
            alternative = f" The newest complete checkpoint next to it is {newest}." if newest else ""
            raise ValueError(f"Cannot resume from {requested}: {problem}.{alternative}")
        log("Resuming from %s.", requested)
        return requested
    if not os.path.isdir(training_args.output_dir):
        checkpoint, skipped = None, []
    else:
        checkpoint, skipped = find_resume_checkpoint(training_args.output_dir, expect_optimizer)
    for folder, problem in skipped:
        log("Skipping %s: %s.", folder, problem)
    if checkpoint is not None:
        log("Resuming from %s (the newest complete checkpoint in %s).", checkpoint, training_args.output_dir)
    elif skipped:
        log("No complete checkpoint in %s: training starts from the beginning.", training_args.output_dir)
    elif requested:
        raise ValueError(f"--resume-from-checkpoint true, but {training_args.output_dir} holds no checkpoint-N folder.")
    return checkpoint


__all__ = ["checkpoint_problem", "find_resume_checkpoint", "resume_checkpoint"]
