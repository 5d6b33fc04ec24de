"""What the search server answers, and to whom: one ASGI middleware in front of every route.

Each request passes three checks before any route sees it:

1. Its `Host` header names this server (`HostPolicy`): loopback names, the bound address, the names given with
   `--allowed-host`, or, when the server listens on every address, any IP address. Anything else gets 400: a page
   on another site that rebinds its own name to this machine (DNS rebinding) sends that name as `Host`, so it
   is refused before it can read a byte.
2. Its method and path are in the server's route table (`Route`): the page, its assets and the Gradio calls the
   page makes, the media route and whatever routes the application declares. Anything else gets 404, whatever
   Gradio or FastAPI would have answered (`/docs`, `/openapi.json`, Gradio's file and proxy routes, ...).
3. Its body is no larger than its route allows (413): a few tens of KiB for a query, more for an uploaded clip. A
   `Content-Length` over the limit is refused before the body is read; a chunked body when it goes past it.

Refusals are plain text, or JSON (`{"error": MESSAGE}`) under the prefix of a JSON API (`json_under`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})
# A host name or an IPv6 address in brackets, then an optional port: what a browser puts in `Host`.
_HOST_HEADER = re.compile(r"(?P<name>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::\d{1,5})?")


def normalize_host_name(name: str) -> str:
    """`name` as `Host` headers are compared: lower case, no brackets around an IPv6 address, no final dot."""
    return name.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")


def host_name(text: str) -> str:
    """The host name (or address) a `Host` header or a `--allowed-host` value gives, port dropped, normalised.

    Raises:
        ValueError: `text` is not a host name or address (with an optional port).
    """
    match = _HOST_HEADER.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a host name or address.")
    return normalize_host_name(match["name"])


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps a server to this machine (`localhost` or a loopback address)."""
    name = normalize_host_name(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class HostPolicy:
    """The `Host` header values a server accepts.

    Attributes:
        names (`frozenset[str]`): accepted names and addresses, normalised (`normalize_host_name`).
        any_address (`bool`): also accept any IP address (the server listens on every address of the machine). An
            address cannot be rebound: a browser sends the name it resolved, never the address, as `Host`.
    """

    names: frozenset[str]
    any_address: bool = False

    @classmethod
    def for_bind(cls, host: str, allowed_hosts: Iterable[str] = ()) -> "HostPolicy":
        """The policy of a server bound to `host`: loopback names, `host` itself and `allowed_hosts`."""
        bound = normalize_host_name(host)
        names = set(LOOPBACK_NAMES) | {host_name(name) for name in allowed_hosts}
        if bound not in WILDCARD_ADDRESSES:
            names.add(bound)
        return cls(frozenset(names), any_address=bound in WILDCARD_ADDRESSES)

    def allows(self, header: str | None) -> bool:
        """Whether a request with this `Host` header (None: none sent) is for this server."""
        try:
            name = host_name(header or "")
        except ValueError:
            return False
        return name in self.names or (self.any_address and _is_ip_address(name))


@dataclass(frozen=True)
class Route:
    """A method and path pattern the server answers, and the largest request body it takes.

    `path` is a regular expression matched in full against the decoded path (`.` matches a newline too, so that a
    file name holding one is still a path).
    """

    methods: frozenset[str]
    path: str
    max_body_bytes: int = 0

    def matches(self, method: str, path: str) -> bool:
        return method in self.methods and re.fullmatch(self.path, path, re.DOTALL) is not None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _declared_length(scope: Scope) -> int:
    """The body size `Content-Length` announces (0 when it is absent or not a number: the body limit counts what
    actually arrives)."""
    value = _header(scope, b"content-length")
    return int(value) if value is not None and value.strip().isdigit() else 0


class RequestGate:
    """ASGI middleware that answers only requests for this server, on its routes, with bodies they allow.

    Args:
        app: the application behind the gate.
        hosts (`HostPolicy`): the accepted `Host` headers (else 400).
        routes (`Sequence[Route]`): what the server answers (else 404); the first route that matches sets the
            body limit (else 413).
        json_under (`str`, *optional*): a path prefix (e.g. `/api/`) under which refusals are JSON.
    """

    def __init__(self, app: ASGIApp, hosts: HostPolicy, routes: Sequence[Route], json_under: str | None = None):
        self.app = app
        self.hosts = hosts
        self.routes = tuple(routes)
        self.json_under = json_under
        self._limited = {limit: RequestBodyLimitMiddleware(app, limit) for limit in {r.max_body_bytes for r in routes}}

    def _refusal(self, scope: Scope, status: int, message: str) -> Response:
        if self.json_under is not None and scope["path"].startswith(self.json_under):
            return JSONResponse({"error": message}, status_code=status)
        return PlainTextResponse(message, status_code=status)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # no route of the server is one
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        if not self.hosts.allows(_header(scope, b"host")):
            await self._refusal(scope, 400, "Invalid host header.")(scope, receive, send)
            return
        route = next((route for route in self.routes if route.matches(scope["method"], scope["path"])), None)
        if route is None:
            await self._refusal(scope, 404, "Not found.")(scope, receive, send)
            return
        if _declared_length(scope) > route.max_body_bytes:
            await self._refusal(scope, 413, "Content too large.")(scope, receive, send)
            return
        await self._limited[route.max_body_bytes](scope, receive, send)


__all__ = ["HostPolicy", "RequestGate", "Route", "host_name", "is_loopback", "normalize_host_name"]
