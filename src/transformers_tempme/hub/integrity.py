"""Is a saved file complete? Header-only checks that name a file cut short by an interrupted save or download.

Loaders fail on such files deep inside (`SafetensorError: incomplete metadata, file not fully covered`, a zip
error from `torch.load`) without saying which file it was. These checks read a few bytes of each file.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

SAFETENSORS_HEADER_LENGTH_BYTES = 8


class IncompleteFileError(ValueError):
    """A saved file is truncated or corrupt: `path` is the file, `reason` what is wrong with it."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(
            f"{path} is incomplete or corrupt: {reason}. It was probably cut short by an interrupted save or "
            "download; save or download it again."
        )


def check_safetensors(path: str | os.PathLike) -> None:
    """Raise `IncompleteFileError` unless `path` is a whole safetensors file: a readable header whose tensors
    end exactly where the file ends."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(SAFETENSORS_HEADER_LENGTH_BYTES)
        if len(prefix) < SAFETENSORS_HEADER_LENGTH_BYTES:
            raise IncompleteFileError(path, f"{size} bytes, too short for a safetensors header")
        header_length = int.from_bytes(prefix, "little")
        data_start = SAFETENSORS_HEADER_LENGTH_BYTES + header_length
        if data_start > size:
            raise IncompleteFileError(path, f"its header announces {header_length} bytes but the file has {size}")
        try:
            header = json.loads(f.read(header_length))
            data_end = max((entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError) as error:
            raise IncompleteFileError(path, f"its header is not a safetensors header ({error})") from None
    if data_start + data_end != size:
        raise IncompleteFileError(path, f"its tensors need {data_start + data_end} bytes but the file has {size}")


def check_torch_archive(path: str | os.PathLike) -> None:
    """Raise `IncompleteFileError` unless `path` is a whole `torch.save` file (a zip archive, whose directory is
    written last)."""
    if not zipfile.is_zipfile(path):
        raise IncompleteFileError(path, "not a complete torch.save archive (its zip directory is missing)")


def check_saved_file(path: str | os.PathLike) -> None:
    """`check_safetensors` or `check_torch_archive`, by the file's suffix; other files are not checked."""
    suffix = Path(path).suffix
    if suffix == ".safetensors":
        check_safetensors(path)
    elif suffix in (".pt", ".pth", ".bin"):
        check_torch_archive(path)


def check_weights_in(folder: str | os.PathLike) -> None:
    """`check_safetensors` on every safetensors file of a local model or adapter folder (Hub ids are skipped)."""
    folder = Path(folder)
    if folder.is_dir():
        for path in sorted(folder.glob("*.safetensors")):
            check_safetensors(path)


__all__ = ["IncompleteFileError", "check_safetensors", "check_torch_archive", "check_saved_file", "check_weights_in"]
