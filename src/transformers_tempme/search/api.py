"""The JSON API of `tempme serve`, beside the page and answered by the same engine (`QueryService`):

    GET  /api/search?q=TEXT&k=N&one_per_video=1  -> {"query", "generation", "hits": [{"rank", "path", "start", "end",
                                                    "score"}, ...], "unknown_words": [...]}
    POST /api/search_like?k=N&one_per_video=1    a clip as multipart/form-data, in a field named `clip` -> {"hits"}
    GET  /api/status                             -> the index's counts, model and generation, the engine's counters

`path` is a video's path relative to the indexed folder (as `/media/PATH` serves it); `start` and `end` are seconds;
`score` is the cosine similarity; `unknown_words` names the query's words the model cannot read (they count as
unknown tokens). Errors are JSON, `{"error": MESSAGE}`, with a 4xx code (500 when the server
fails): 400 for a missing, unknown or bad parameter, 413 for a body over its limit, 415 for a body that is not
multipart or a clip that is not a video, 503 when every slot for clips is taken. No message names a server path.

An uploaded clip is written, as it arrives, into the server's private upload folder, searched, and deleted.

The routes run on the server's event loop and wait for the engine without blocking it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
from pathlib import Path

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..video_io import VideoDecodeError
from .results import SearchHit
from .service import QueryService, ServiceBusyError

logger = logging.getLogger(__name__)

API_ROUTE = "/api"
DEFAULT_API_HITS = 10
MAX_API_HITS = 100
CLIP_FIELD = "clip"
_FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


class ApiError(Exception):
    """A request the API refuses: the status code and the message the client gets."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _parameters(request: Request, known: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, each given at most once and each one of `known` (else 400)."""
    given: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in known:
            takes = f"takes {', '.join(known)}" if known else "takes no parameter"
            raise ApiError(400, f"Unknown parameter {name!r}: this route {takes}.")
        if name in given:
            raise ApiError(400, f"The parameter {name!r} is given more than once.")
        given[name] = value
    return given


def _hits_parameter(given: dict[str, str]) -> tuple[int, bool]:
    """`k` (1 to `MAX_API_HITS`, default `DEFAULT_API_HITS`) and `one_per_video` (1/0, true/false, yes/no)."""
    k = given.get("k", str(DEFAULT_API_HITS))
    if not re.fullmatch(r"\s*\d{1,4}\s*", k) or not 1 <= int(k) <= MAX_API_HITS:
        raise ApiError(400, f"k must be a whole number from 1 to {MAX_API_HITS}.")
    flag = given.get("one_per_video", "0").strip().lower()
    if flag not in _FLAGS:
        raise ApiError(400, "one_per_video must be 1 or 0 (true or false).")
    return int(k), _FLAGS[flag]


def hit_json(hit: SearchHit) -> dict:
    """A hit as the API gives it: no absolute path of the server."""
    return {"rank": hit.rank, "path": hit.path, "start": hit.start, "end": hit.end, "score": hit.score}


class _ClipPart:
    """Multipart callbacks that write the part named `clip` into `out` as it arrives and drop every other part."""

    def __init__(self, out):
        self.out, self.found, self._writing = out, False, False
        self._field, self._value, self._disposition = b"", b"", b""

    def callbacks(self) -> dict:
        return {"on_part_begin": self._begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._data, "on_part_end": self._end}

    def _begin(self) -> None:
        self._disposition, self._writing = b"", False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._field.strip().lower() == b"content-disposition":
            self._disposition = self._value
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._writing = options.get(b"name") == CLIP_FIELD.encode() and not self.found

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._writing:
            self.out.write(data[start:end])

    def _end(self) -> None:
        if self._writing:
            self.found, self._writing = True, False


async def receive_clip(request: Request, folder: Path) -> Path:
    """Write the clip of a multipart request into a new private file of `folder` as the body arrives; the caller
    deletes it.

    Raises:
        ApiError: 415 (not multipart), 400 (malformed, or no `clip` field), 413 (over the route's body limit).
    """
    media_type, options = parse_options_header(request.headers.get("content-type", ""))
    if media_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise ApiError(415, f"Send the clip as multipart/form-data, in a field named {CLIP_FIELD!r}.")
    descriptor, name = tempfile.mkstemp(prefix="clip-", dir=folder)  # mode 0600
    path = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as out:
            part = _ClipPart(out)
            parser = MultipartParser(options[b"boundary"], part.callbacks())
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finalize()
        if not part.found:
            raise ApiError(400, f"The request holds no field named {CLIP_FIELD!r}.")
        return path
    except FormParserError:
        path.unlink(missing_ok=True)
        raise ApiError(400, "The multipart body is malformed.") from None
    except HTTPException as error:  # the body limit (413)
        path.unlink(missing_ok=True)
        raise ApiError(error.status_code, str(error.detail)) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def add_api_routes(app, service: QueryService, clip_folder: str | os.PathLike) -> None:
    """Add the routes of the API to a FastAPI `app` (the request gate lets them through: `SERVER_ROUTES`)."""
    clip_folder = Path(clip_folder)

    @app.get(API_ROUTE + "/search")
    async def api_search(request: Request):
        try:
            given = _parameters(request, ("q", "k", "one_per_video"))
            k, one_per_video = _hits_parameter(given)
            if not given.get("q", "").strip():
                raise ApiError(400, "Give the query as q=TEXT.")
            result = await service.search_async(given["q"], k, one_per_video)
        except ApiError as error:
            return error_response(error.status, error.message)
        except Exception:
            logger.exception("search failed")
            return error_response(500, "The search failed.")
        return {"query": result.query, "generation": result.generation, "hits": [hit_json(h) for h in result.hits],
                "unknown_words": list(result.unknown_words)}

    @app.post(API_ROUTE + "/search_like")
    async def api_search_like(request: Request):
        clip = None
        try:
            k, one_per_video = _hits_parameter(_parameters(request, ("k", "one_per_video")))
            with service.clip_slot():  # before reading a byte of the upload
                clip = await receive_clip(request, clip_folder)
                hits = await service.search_like_async(clip, k, one_per_video)
        except ApiError as error:
            return error_response(error.status, error.message)
        except ServiceBusyError as error:
            return JSONResponse({"error": str(error)}, status_code=503, headers={"Retry-After": "5"})
        except VideoDecodeError as error:  # the client learns that the clip failed; the log says why
            logger.warning("search by clip: %s", error)
            return error_response(415, "This file could not be read as a video.")
        except Exception:
            logger.exception("search by clip failed")
            return error_response(500, "The search failed.")
        finally:
            if clip is not None:
                clip.unlink(missing_ok=True)
        return {"hits": [hit_json(h) for h in hits]}

    @app.get(API_ROUTE + "/status")
    async def api_status(request: Request):
        try:
            _parameters(request, ())
        except ApiError as error:
            return error_response(error.status, error.message)
        return await asyncio.to_thread(service.status)


__all__ = ["API_ROUTE", "CLIP_FIELD", "MAX_API_HITS", "add_api_routes", "error_response", "hit_json", "receive_clip"]
