"""The search page: a Gradio app with a query box whose hits play from the matching moment.

`build_app(index)` returns a FastAPI application holding three things:

- `/media/PATH`, `/clip/START-END/PATH`, `/poster/START/PATH`: the video files of the index, browser copies of a
  hit's window and posters, and nothing else (`media.py`: indexed paths inside the video folder that are videos).
  Range requests are supported, so that the browser can start a long video in the middle.
- `/api/...`: the JSON API (`api.py`): search by text or by an uploaded clip, and the index's status.
- `/`: the Gradio page. Each hit is an HTML5 `<video>` with a poster of its first frame; a file browsers play is
  played itself from the segment (a media fragment, `#t=start,end`), any other through a copy of its window made
  when played. The score (with a legend), path, times and, for a user on this machine, the file's full path are
  shown with it; a query's words outside the model's vocabulary are named. A clip can be uploaded to search by
  example.

The page and the API ask one engine, a `QueryService` (`service.py`): queries arriving together are encoded as one
batch, vector searches run in a thread pool and repeated queries come from a cache, so many users are served at
once. The set of files `/media` serves follows the index to each new generation (`VideoSearchIndex.video_paths`).

Every request first passes the `RequestGate` (`request_gate.py`): a `Host` naming this server, a route of
`SERVER_ROUTES` (the page, its assets, the Gradio calls the page makes, the media route, the API) and a bounded body;
anything else is refused. The search-by-clip handler takes only files the browser uploaded into Gradio's upload
folder, and errors reach the browser without details (they are logged here).

`serve(index)` runs it with uvicorn, on 127.0.0.1 unless told otherwise. The page uses the system fonts and no
external resource, so it works offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import mimetypes
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from starlette.convertors import Convertor, register_url_convertor

from ..video_io import VideoDecodeError
from .api import API_ROUTE, add_api_routes
from .index import VideoSearchIndex
from .media import CLIP_ROUTE, MEDIA_ROUTE, POSTER_ROUTE, HitMedia, IndexedMedia, indexed_file, parse_seconds
from .request_gate import HostPolicy, RequestGate, Route, host_name, is_loopback, normalize_host_name
from .results import SearchHit
from .service import DEFAULT_BATCH_SIZE, DEFAULT_BATCH_WAIT_MS, DEFAULT_CACHE_SIZE, QueryService, display_name

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_QUERY_BODY_BYTES = 64 * 1024  # a Gradio call carrying a query: the text and a few small fields
MAX_UPLOAD_BYTES = 256 * 1024 * 1024  # an example clip to search by
_GET = frozenset({"GET", "HEAD"})
_MEDIA_HEADERS = {"X-Content-Type-Options": "nosniff"}
# Posters and copies are named by the hit, not by the file's version: the browser must not reuse an old one.
_DERIVED_HEADERS = {**_MEDIA_HEADERS, "Cache-Control": "no-cache"}
_POST = frozenset({"POST"})
_GET_ONLY = frozenset({"GET"})

# Everything the server answers (see `request_gate.py`); any other request gets 404. The Gradio routes are those the
# page itself calls (and `gradio_client`, which calls the same ones). Not here, so never answered: Gradio's file and
# proxy routes (`/gradio_api/file=...`, which would serve its upload folder and fetch URLs), its API schema, run
# history, monitoring and editor routes, and FastAPI's `/docs`, `/redoc` and `/openapi.json`.
SERVER_ROUTES: tuple[Route, ...] = (
    Route(_GET, MEDIA_ROUTE + "/.+"),
    Route(_GET, POSTER_ROUTE + r"/[0-9]{1,9}(\.[0-9]{1,6})?/.+"),
    Route(_GET, CLIP_ROUTE + r"/[0-9]{1,9}(\.[0-9]{1,6})?-[0-9]{1,9}(\.[0-9]{1,6})?/.+"),
    Route(_GET, r"/|/config/?|/theme\.css|/favicon\.ico|/(assets|static)/.+"),
    Route(_GET, r"/gradio_api/(theme\.css|info/?|startup-events|queue/data|queue/status|upload_progress)"),
    Route(_GET, r"/gradio_api/(heartbeat/[^/]+|call/[^/]+/[^/]+)"),
    Route(_POST, r"/gradio_api/(queue/join|cancel|reset/?|call/[^/]+/?)", MAX_QUERY_BODY_BYTES),
    Route(_POST, r"/gradio_api/upload", MAX_UPLOAD_BYTES + 64 * 1024),  # + the multipart envelope
    Route(_GET_ONLY, API_ROUTE + r"/(search|status)"),  # the JSON API (api.py): the query is in the URL
    Route(_POST, API_ROUTE + r"/search_like", MAX_UPLOAD_BYTES + 64 * 1024),
)

_CSS = """
.hits { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 12px; }
.hit { border: 1px solid #d0d0d0; border-radius: 8px; padding: 8px; }
.hit video { width: 100%; aspect-ratio: 16 / 10; object-fit: contain; border-radius: 4px; background: #000; }
.hit .unplayable { font-size: 0.9em; color: #666; }
.hit .meta { font-size: 0.9em; margin-top: 4px; word-break: break-all; }
.hit .score { font-weight: 600; }
.hit .score.negative { font-weight: 400; color: #888; }
.hit .copy-note { display: block; font-size: 0.8em; color: #666; word-break: normal; }
.hit .local { font-size: 0.8em; margin-top: 4px; display: flex; gap: 6px; align-items: center; }
.hit .local-path { user-select: all; word-break: break-all; flex: 1; }
.hit .copy-path { font-size: 0.9em; padding: 0 6px; border: 1px solid #ccc; border-radius: 4px; cursor: pointer; }
.legend, .unknown-words { font-size: 0.85em; color: #555; margin: 0 0 8px 0; }
.unknown-words { color: #8a4b00; }
"""

# The search box's example: the first of these whose words the model knows (any, for a subword vocabulary).
EXAMPLE_QUERIES = ("a dog catches a frisbee", "a person rides a bike", "a red circle moves from left to right",
                   "a blue square moves from left to right")

SCORE_LEGEND = (
    "Score: the model's similarity between the query and the moment (cosine similarity, from \u22121 to 1; higher "
    "is closer). It ranks the hits of one query: it is not a probability, and at 0 or below the model sees no "
    "likeness."
)

# A failure to play the file itself (a codec the probe took for playable) plays the window's copy instead.
_FALL_BACK = "if (this.dataset.fallback) { this.src = this.dataset.fallback; delete this.dataset.fallback; }"
_COPY_PATH = "navigator.clipboard && navigator.clipboard.writeText(this.dataset.path)"


def _clock(seconds: float) -> str:
    """`1:05.0`, or `1:02:05.0` past an hour."""
    minutes, secs = divmod(max(0.0, seconds), 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes}:{secs:04.1f}"


def format_score(score: float) -> str:
    """A similarity as the page shows it: three decimals, with a true minus sign when negative."""
    return f"{score:.3f}".replace("-", "\u2212")


def _attributes(**values: str | None) -> str:
    """HTML attributes, escaped (`data_path="x"` is `data-path='x'`; None: an attribute without a value)."""
    return " ".join(
        name.replace("_", "-") if value is None else f"{name.replace('_', '-')}='{html.escape(value, quote=True)}'"
        for name, value in values.items()
    )


def _player(shown: HitMedia | None) -> str:
    if shown is None:
        return ("<p class='unplayable'>Not played here: the file is gone, lies outside the video folder or is not a "
                "video.</p>")
    fallback = {"data_fallback": shown.fallback, "onerror": _FALL_BACK} if shown.fallback else {}
    # A copy is made when played (preload none), so that a page of hits does not transcode all of them at once.
    return (f"<video {_attributes(controls=None, preload='none' if shown.copy else 'metadata', poster=shown.poster)} "
            f"{_attributes(src=shown.src, **fallback)}></video>")


def hits_html(hits: list[SearchHit], media: Callable[[SearchHit], HitMedia | None] = lambda hit: None,
              local_paths: bool = False) -> str:
    """The hit cards, under the score legend.

    Args:
        hits: what to show, best first.
        media: what each hit plays (`IndexedMedia.hit_media`); None: the file is not served (the card says so).
        local_paths: show each file's full path on this machine, with a button that copies it (for a page served
            to this machine only).
    """
    if not hits:
        return "<p class='no-hits'>No hits.</p>"
    cards = []
    for hit in hits:
        shown = media(hit)
        source = "none" if shown is None else "copy" if shown.copy else "file"
        note = (f" <span class='copy-note'>played from a copy of this window ({html.escape(shown.format)} does not "
                "play in browsers)</span>" if source == "copy" else "")
        local = (f"<div class='local'><code class='local-path'>{html.escape(hit.video_path)}</code>"
                 f"<button type='button' class='copy-path' {_attributes(data_path=hit.video_path, onclick=_COPY_PATH)}>"
                 "Copy path</button></div>" if local_paths else "")
        card = _attributes(data_path=hit.path, data_start=f"{hit.start:.3f}", data_end=f"{hit.end:.3f}",
                           data_source=source)
        cards.append(
            f"<div class='hit' {card}>{_player(shown)}"
            f"<div class='meta'><span class='rank'>#{hit.rank}</span> "
            f"<span class='score{' negative' if hit.score <= 0 else ''}' title='similarity of the query and this "
            f"moment (cosine)'>{format_score(hit.score)}</span> "
            f"<span class='path'>{html.escape(hit.path)}</span> "
            f"<span class='time'>{_clock(hit.start)}&ndash;{_clock(hit.end)}</span>{note}</div>{local}</div>"
        )
    return f"<p class='legend'>{SCORE_LEGEND}</p><div class='hits'>" + "".join(cards) + "</div>"


def unknown_words_html(unknown: list[str]) -> str:
    """The note above the hits naming the query's words the model cannot read (empty when there are none)."""
    if not unknown:
        return ""
    words = ", ".join(f"<b>{html.escape(word)}</b>" for word in unknown)
    return (f"<p class='unknown-words'>Not in the model's vocabulary, so read as unknown: {words}. The hits match "
            "the rest of the query.</p>")


def placeholder_query(known: list[str] | None) -> str:
    """The search box's example: the first of `EXAMPLE_QUERIES` made of words the model knows (any example, for a
    subword vocabulary), else the first of its words."""
    if known is None:
        return EXAMPLE_QUERIES[0]
    vocabulary = set(known)
    for example in EXAMPLE_QUERIES:
        if vocabulary.issuperset(example.split()):
            return example
    return " ".join([word for word in known if word.isalpha()][:6])


def vocabulary_markdown(known: list[str] | None) -> str:
    """The line under the page's title that lists a small word-level vocabulary (empty for CLIP's BPE)."""
    if known is None:
        return ""
    return (f"\n\nThis model knows only these {len(known)} words (a word-level vocabulary): "
            f"{', '.join(f'`{word}`' for word in known)}. Other words are read as unknown.")


class _AnyPathConvertor(Convertor[str]):
    """A path parameter holding any character, newlines included (Starlette's `path` stops at a newline, so a video
    whose name holds one would not be served)."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("any_path", _AnyPathConvertor())


def build_blocks(service: QueryService, k: int = 8, media: IndexedMedia | None = None, local_paths: bool = False):
    """The Gradio `Blocks` of the page (without the media routes and the gate: see `build_app`).

    Args:
        media (`IndexedMedia`, *optional*): what the hits play (by default `IndexedMedia.of_index(service.index)`).
        local_paths (`bool`): show each hit's full path on this machine (see `hits_html`).
    """
    import gradio as gr

    index = service.index
    media = media or IndexedMedia.of_index(index)
    known_words = index.known_words()

    def show(hits: list[SearchHit]) -> str:
        return hits_html(hits, lambda hit: media.hit_media(hit.path, hit.start, hit.end), local_paths)

    # Both handlers wait for the engine without holding a thread, and the events run with no concurrency limit
    # (Gradio's default is one at a time): the engine batches the page's queries with the API's. `show` looks at the
    # files, so it runs off the event loop.
    async def search(query: str, k: float, one_per_video: bool) -> str:
        if not query or not query.strip():
            return "<p class='no-hits'>Type what happens in the moment you are looking for.</p>"
        result = await service.search_async(query, int(k), one_per_video)
        shown = await asyncio.to_thread(show, list(result.hits))
        return unknown_words_html(list(result.unknown_words)) + shown

    async def search_like(clip: str | None, k: float, one_per_video: bool) -> str:
        # `clip` is a file of Gradio's upload folder: Gradio refuses any other path a client names (see build_app).
        if clip is None:
            return "<p class='no-hits'>Choose a video clip.</p>"
        try:
            hits = await service.search_like_async(clip, int(k), one_per_video)
        except VideoDecodeError as error:  # the browser learns that the clip failed; the log says why
            logger.warning("search by clip: %s", error)
            raise gr.Error("This file could not be read as a video.") from None
        return await asyncio.to_thread(show, list(hits))

    counts = index.manifest.counts
    model_name = display_name(index.manifest.model.get("name_or_path") or "(model built in memory)")
    with gr.Blocks(title="TempMe video search", delete_cache=(3600, 3600)) as blocks:
        gr.Markdown(
            f"## TempMe video search\n{counts['videos']} videos, {counts['segments']} segments of up to "
            f"{index.manifest.segment_seconds:g} s in `{display_name(str(index.video_dir))}` — model `{model_name}`"
            + vocabulary_markdown(known_words)
        )
        with gr.Row():
            query = gr.Textbox(label="Describe a moment", placeholder=placeholder_query(known_words), scale=4,
                               elem_id="query")
            button = gr.Button("Search", variant="primary", scale=1, elem_id="search-button")
        with gr.Row():
            top_k = gr.Slider(1, 50, value=k, step=1, label="Hits")
            one_per_video = gr.Checkbox(label="One hit per video", value=False)
        with gr.Accordion("Search by an example clip", open=False):
            clip = gr.File(label="Video clip", file_types=["video"], type="filepath")
        results = gr.HTML(elem_id="results")
        query.submit(search, [query, top_k, one_per_video], results, concurrency_limit=None)
        button.click(search, [query, top_k, one_per_video], results, concurrency_limit=None)
        clip.upload(search_like, [clip, top_k, one_per_video], results, concurrency_limit=None)
    return blocks


def build_app(index: VideoSearchIndex | QueryService, k: int = 8, host: str = DEFAULT_HOST,
              allowed_hosts: Iterable[str] = (), upload_dir: str | os.PathLike | None = None):
    """The FastAPI application of the page: the media route, the JSON API and the Gradio app behind the request gate.

    Args:
        index (`VideoSearchIndex` or `QueryService`): what the page and the API search and play; an index gets a
            `QueryService` with the default settings, closed when the application stops.
        k (`int`): hits shown at first.
        host (`str`): the address the server binds; with `allowed_hosts`, the `Host` headers it answers
            (`HostPolicy.for_bind`).
        upload_dir: the private folder where clips sent to `/api/search_like` are written while they are searched
            (default: Gradio's upload folder, `GRADIO_TEMP_DIR`, when set; else a new private folder).
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import FileResponse

    own_service = not isinstance(index, QueryService)
    service = QueryService(index) if own_service else index
    index = service.index
    own_clips = upload_dir is None and not os.environ.get("GRADIO_TEMP_DIR")
    clips = Path(tempfile.mkdtemp(prefix="tempme-api-clips-")) if own_clips else _clip_folder(
        upload_dir or os.environ["GRADIO_TEMP_DIR"])
    library = IndexedMedia.of_index(index)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:  # what was made here is undone here
            if own_service:
                await asyncio.to_thread(service.close)
            if own_clips:
                shutil.rmtree(clips, ignore_errors=True)

    app = FastAPI(title="TempMe video search", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.query_service = service
    not_served = HTTPException(status_code=404, detail="Not a video of this index.")
    # The routes are plain functions: FastAPI runs them in its thread pool, so that a decode or a transcode never
    # holds up the event loop. Each first follows the index to a newer generation, so that a video it added is
    # served at once and one it removed is not.

    @app.get(MEDIA_ROUTE + "/{requested:any_path}")
    def media(requested: str):
        service.refresh()
        video = library.video(requested)
        if video is None:
            raise not_served
        media_type = video.probe.browser_type or mimetypes.guess_type(video.path.name)[0] or "application/octet-stream"
        return FileResponse(video.path, media_type=media_type, headers=_MEDIA_HEADERS)

    @app.get(POSTER_ROUTE + "/{start}/{requested:any_path}")
    def poster(start: str, requested: str):
        service.refresh()
        start_s = parse_seconds(start)
        path = library.poster(requested, start_s) if start_s is not None else None
        if path is None:
            raise not_served
        return FileResponse(path, media_type="image/jpeg", headers=_DERIVED_HEADERS)

    @app.get(CLIP_ROUTE + "/{window}/{requested:any_path}")
    def clip(window: str, requested: str):
        service.refresh()
        start_s, _, end_s = (parse_seconds(part) for part in window.partition("-"))
        path = library.browser_copy(requested, start_s, end_s) if None not in (start_s, end_s) else None
        if path is None:
            raise not_served
        return FileResponse(path, media_type="video/mp4", headers=_DERIVED_HEADERS)

    add_api_routes(app, service, clips)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    blocks = build_blocks(service, k, media=library, local_paths=is_loopback(host))
    gr.mount_gradio_app(app, blocks, path="/", allowed_paths=[], theme=theme, css=_CSS, footer_links=[],
                        show_error=False, max_file_size=MAX_UPLOAD_BYTES, app_kwargs={"openapi_url": None})
    # `launch()` sets this flag and `mount_gradio_app` does not; without it Gradio skips its check that an event's
    # file inputs lie in its upload folder, and would copy any server file a client names into its cache.
    blocks.has_launched = True
    app.add_middleware(RequestGate, hosts=HostPolicy.for_bind(host, allowed_hosts), routes=SERVER_ROUTES,
                       json_under=API_ROUTE + "/")
    return app


def _clip_folder(upload_dir: str | os.PathLike) -> Path:
    """The private folder (mode 0700) for the clips of `/api/search_like` in an upload folder."""
    folder = Path(upload_dir) / "api-clips"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def exposure_warning(host: str, port: int, index: VideoSearchIndex, allowed_hosts: Iterable[str] = ()) -> str | None:
    """What binding `host` makes reachable, and to whom, when that is more than this machine (else None)."""
    if is_loopback(host):
        return None
    name = normalize_host_name(host)
    if HostPolicy.for_bind(host).any_address:
        where, under = "every address of this machine", "any of its IP addresses"
    else:
        where, under = f"the address {name}", name
    names = sorted({host_name(h) for h in allowed_hosts} - {name})
    return (
        f"warning: --host {host} serves the page on {where}, port {port}: anyone who can reach it (other machines on "
        f"its networks, and further if a router forwards the port) can search this index (on the page and through "
        f"its JSON API), play its "
        f"{index.manifest.counts['videos']} videos from {index.video_dir} and upload clips to search by, with no "
        f"login. Browsers reach it under {', '.join([under, *names])} (add names with --allowed-host). Leave out "
        f"--host (127.0.0.1 by default) to keep it to this machine."
    )


@contextlib.contextmanager
def _private_upload_folder():
    """Gradio's upload folder for this process: a new private folder, removed on exit, unless GRADIO_TEMP_DIR
    names one. (Gradio's default, `/tmp/gradio`, is shared by every Gradio app of every user of the machine.)"""
    if os.environ.get("GRADIO_TEMP_DIR"):
        yield os.environ["GRADIO_TEMP_DIR"]
        return
    with tempfile.TemporaryDirectory(prefix="tempme-serve-uploads-") as folder:
        os.environ["GRADIO_TEMP_DIR"] = folder
        try:
            yield folder
        finally:
            del os.environ["GRADIO_TEMP_DIR"]


def serve(index: VideoSearchIndex, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, k: int = 8,
          allowed_hosts: Iterable[str] = (), batch_size: int = DEFAULT_BATCH_SIZE,
          batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
    """Run the search page and the JSON API until interrupted (see `build_app` for `host` and `allowed_hosts`,
    `QueryService` for `batch_size`, `batch_wait_ms` and `cache_size`)."""
    import uvicorn

    with (_private_upload_folder() as uploads, QueryService(index, batch_size, batch_wait_ms, cache_size) as service,
          _sigterm_exits()):
        app = build_app(service, k, host=host, allowed_hosts=allowed_hosts, upload_dir=uploads)
        uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)


@contextlib.contextmanager
def _sigterm_exits():
    """Make SIGTERM end `serve` as Ctrl-C does, through the `finally` blocks. uvicorn stops gracefully on it, then
    raises the signal again for the handler it found: Python's default one would kill the process right there,
    leaving the private upload folder behind."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread handles signals
        yield
        return

    def stop(signum, frame):
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__ = [
    "CLIP_ROUTE",
    "MEDIA_ROUTE",
    "POSTER_ROUTE",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "SERVER_ROUTES",
    "build_app",
    "build_blocks",
    "exposure_warning",
    "format_score",
    "hits_html",
    "indexed_file",
    "placeholder_query",
    "serve",
    "unknown_words_html",
]
