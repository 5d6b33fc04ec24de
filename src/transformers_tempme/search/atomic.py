"""Writing index files so that a crash (kill -9 included) leaves either the old file or the new one, never half.

Every file is written under a temporary name in its final folder, flushed to disk, then renamed over its final name
(`os.replace` is atomic on POSIX and Windows); the folder is synced so that the rename itself survives a power cut.
Temporary names start with `.tmp-`, which readers never look at and the next run deletes.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

TEMP_PREFIX = ".tmp-"


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # folders cannot be opened on some platforms: the rename is still atomic there
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(temporary_path)`, then move the finished file to `path` in one step.

    `write` creates the file at the path it is given (any writer that takes a path: `to_parquet`,
    `faiss.write_index`, ...). On any error the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=path.suffix, dir=path.parent)
    os.close(descriptor)
    temporary = Path(temporary)
    try:
        write(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def write_json_atomically(path: str | os.PathLike, data: Any) -> Path:
    """Write `data` as indented JSON, atomically."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    return write_atomically(path, lambda temporary: temporary.write_text(text))


def remove_temporary_files(folder: str | os.PathLike) -> int:
    """Delete the `.tmp-*` files a killed run left in `folder` (not recursive); returns how many."""
    removed = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    for leftover in folder.glob(f"{TEMP_PREFIX}*"):
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed


__all__ = ["TEMP_PREFIX", "write_atomically", "write_json_atomically", "remove_temporary_files"]
