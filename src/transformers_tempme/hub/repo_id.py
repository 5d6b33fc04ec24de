"""Telling a Hub repo id from a local path."""

from __future__ import annotations

import os

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id


def is_repo_id(name: str, require_owner: bool = False) -> bool:
    """Whether `name` is a valid Hub repo id (`name` or `owner/name`, `owner/name` only with `require_owner`) that
    is not a local path."""
    if os.path.exists(name) or (require_owner and name.count("/") != 1):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


__all__ = ["is_repo_id"]
