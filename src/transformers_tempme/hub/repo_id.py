"""Where a model comes from: a local folder or a Hub repo id, told apart and checked before anything loads.

A mistyped path must not end as `Repo id must be in the form 'repo_name'` from deep inside `from_pretrained`, a
folder of videos must not be taken for a CLIP checkpoint, and an unreachable Hub must not cost a minute of retries:
`check_model_source` answers each case in one sentence that names the fix.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from huggingface_hub import constants, try_to_load_from_cache
from huggingface_hub.errors import HFValidationError, HfHubHTTPError
from huggingface_hub.utils import get_session, validate_repo_id
from transformers.utils.peft_utils import ADAPTER_CONFIG_NAME
from transformers.utils import CONFIG_NAME

logger = logging.getLogger(__name__)

# How long the one connectivity check before a download waits for the Hub.
HUB_PROBE_TIMEOUT_S = 5.0
OFFLINE_HINT = (
    "Set HF_HUB_OFFLINE=1 to load only what the Hugging Face cache holds (without a minute of retries), or give a "
    "local folder instead"
)
MODEL_FOLDER_CONTENT = (
    f"A model folder holds {CONFIG_NAME} and *.safetensors weights (what TempMeCLIPModel.save_pretrained or "
    f"CLIPModel.save_pretrained write); an adapter folder holds {ADAPTER_CONFIG_NAME} and adapter_model.safetensors "
    "(what save_adapter and tempme train write)."
)


class HubUnreachableError(ConnectionError):
    """The Hub cannot be reached (no network, a firewall, a wrong `HF_ENDPOINT`) for something only it holds."""


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


def check_repo_id(repo_id: str, option: str = "--repo-id") -> str:
    """`repo_id`, or a `ValueError` saying why the Hub would refuse it (huggingface_hub's own rules)."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"{option} {repo_id!r} is not a valid Hub repo id: {error}") from None
    return repo_id


def check_model_folder(folder: str | os.PathLike) -> Path:
    """`folder` as a `Path`, after checking it is a model or adapter folder (an error says what one contains)."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"No such folder: {folder}. Give a model folder or a Hub id (owner/name). "
                                f"{MODEL_FOLDER_CONTENT}")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, not a model folder. {MODEL_FOLDER_CONTENT}")
    if not (folder / CONFIG_NAME).is_file() and not (folder / ADAPTER_CONFIG_NAME).is_file():
        raise ValueError(f"{folder} is not a model folder: it has no {CONFIG_NAME} or {ADAPTER_CONFIG_NAME}. "
                         f"{MODEL_FOLDER_CONTENT}")
    return folder


def _looks_like_a_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.endswith(("/", os.sep)) or name.count("/") > 1


def _in_cache(repo_id: str, revision: str | None, cache_dir: str | os.PathLike | None) -> bool:
    return any(
        isinstance(try_to_load_from_cache(repo_id, name, cache_dir=cache_dir, revision=revision), str)
        for name in (CONFIG_NAME, ADAPTER_CONFIG_NAME)
    )


@functools.lru_cache(maxsize=None)
def hub_unreachable_reason(endpoint: str, timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why `endpoint` cannot be reached (one request, `timeout` seconds at most), or `None` when it answers.

    Any HTTP answer counts as reachable; asked once per endpoint and process.
    """
    try:
        get_session().head(endpoint, timeout=timeout, follow_redirects=False)
    except Exception as error:  # noqa: BLE001 - the HTTP client's transport errors have no common public base here
        return f"{type(error).__name__}: {error}"
    return None


def check_model_source(
    name_or_path: str | os.PathLike, revision: str | None = None, cache_dir: str | os.PathLike | None = None
) -> dict:
    """Check that a model can be loaded from `name_or_path` before `from_pretrained` tries; returns the keyword
    arguments the loading needs (`{"local_files_only": True}` when the Hub is unreachable but the cache holds it).

    - a local path must be a model or adapter folder (`check_model_folder`);
    - anything else must be a valid Hub repo id;
    - a repo id is then downloaded only if the Hub answers within `HUB_PROBE_TIMEOUT_S`, else taken from the cache,
      else refused with the hint to set `HF_HUB_OFFLINE=1` or give a local folder. With `HF_HUB_OFFLINE=1` it must
      be in the cache.
    """
    name = os.fspath(name_or_path)
    if os.path.exists(os.path.expanduser(name)) or _looks_like_a_path(name):
        check_model_folder(name)
        return {}
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise FileNotFoundError(
            f"{name} is neither a local folder nor a Hub repo id (owner/name). {MODEL_FOLDER_CONTENT}"
        ) from None
    if constants.HF_HUB_OFFLINE:
        if not _in_cache(name, revision, cache_dir):
            raise HubUnreachableError(
                f"{name} is not a local folder, and with HF_HUB_OFFLINE=1 it is loaded from the Hugging Face cache "
                f"({cache_dir or constants.HF_HUB_CACHE}), which does not hold it. Download it once with the Hub reachable (unset "
                "HF_HUB_OFFLINE), or give a local folder."
            )
        return {}
    reason = hub_unreachable_reason(constants.ENDPOINT)
    if reason is None:
        return {}
    if _in_cache(name, revision, cache_dir):
        logger.warning("The Hub (%s) cannot be reached (%s): loading %s from the local cache.", constants.ENDPOINT,
                       reason, name)
        return {"local_files_only": True}
    raise HubUnreachableError(
        f"{name} is not a local folder and the Hub ({constants.ENDPOINT}) cannot be reached to download it ({reason}). "
        f"{OFFLINE_HINT}."
    )


def hub_request_errors() -> tuple[type[BaseException], ...]:
    """The errors of a failed Hub request: huggingface_hub's HTTP errors and its HTTP client's transport errors
    (`ConnectError`, timeouts), which subclass the client's `HTTPError` (a base of `HfHubHTTPError`)."""
    return (OSError, *HfHubHTTPError.__bases__)


def check_hub_reachable(action: str) -> None:
    """Raise `HubUnreachableError` saying why `action` (e.g. "pushing to owner/name") cannot reach the Hub."""
    if constants.HF_HUB_OFFLINE:
        raise HubUnreachableError(f"{action} needs the Hub, and HF_HUB_OFFLINE=1 is set: unset it to go online.")
    reason = hub_unreachable_reason(constants.ENDPOINT)
    if reason is not None:
        raise HubUnreachableError(f"{action} needs the Hub, which cannot be reached at {constants.ENDPOINT} ({reason}).")


__all__ = [
    "HubUnreachableError",
    "is_repo_id",
    "check_repo_id",
    "check_model_folder",
    "check_model_source",
    "check_hub_reachable",
    "hub_request_errors",
    "hub_unreachable_reason",
    "MODEL_FOLDER_CONTENT",
]
