"""The search page: a Gradio app with a query box whose hits play from the matching moment.

`build_app(index)` returns a FastAPI application holding two things:

- `/media/PATH`: the video files of the index, and nothing else. `PATH` is a video's path relative to the indexed
  folder exactly as the index stores it; any other request (a file of the folder that is not indexed, `..`, an
  absolute path) gets 404. Range requests are supported, so that the browser can start a long video in the middle.
- `/`: the Gradio page. Each hit is an HTML5 `<video>` whose source carries a media fragment (`#t=start,end`), so
  that the browser starts playback at the segment and stops at its end; the score, path and times are shown with
  it. Gradio is given no allowed paths: its own file route serves only the files of its upload cache.

`serve(index)` runs it with uvicorn, on 127.0.0.1 unless told otherwise. The page uses the system fonts and no
external resource, so it works offline.
"""

from __future__ import annotations

import html
import mimetypes
import os
import threading
from pathlib import Path
from urllib.parse import quote

from .index import VideoSearchIndex
from .results import SearchHit

MEDIA_ROUTE = "/media"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860

_CSS = """
.hits { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 12px; }
.hit { border: 1px solid #d0d0d0; border-radius: 8px; padding: 8px; }
.hit video { width: 100%; border-radius: 4px; background: #000; }
.hit .meta { font-size: 0.9em; margin-top: 4px; word-break: break-all; }
.hit .score { font-weight: 600; }
"""


def _clock(seconds: float) -> str:
    """`1:05.0`, or `1:02:05.0` past an hour."""
    minutes, secs = divmod(max(0.0, seconds), 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes}:{secs:04.1f}"


def media_url(hit: SearchHit) -> str:
    """The URL of a hit's video, starting at its segment: `/media/PATH#t=START,END`."""
    return f"{MEDIA_ROUTE}/{quote(hit.path)}#t={hit.start:.3f},{hit.end:.3f}"


def hits_html(hits: list[SearchHit]) -> str:
    if not hits:
        return "<p class='no-hits'>No hits.</p>"
    cards = []
    for hit in hits:
        cards.append(
            f"<div class='hit' data-path='{html.escape(hit.path, quote=True)}' data-start='{hit.start:.3f}'>"
            f"<video controls preload='metadata' src='{html.escape(media_url(hit), quote=True)}'></video>"
            f"<div class='meta'><span class='rank'>#{hit.rank}</span> "
            f"<span class='score'>{hit.score:.3f}</span> "
            f"<span class='path'>{html.escape(hit.path)}</span> "
            f"<span class='time'>{_clock(hit.start)}&ndash;{_clock(hit.end)}</span></div></div>"
        )
    return "<div class='hits'>" + "".join(cards) + "</div>"


def _short_path(path: str | os.PathLike) -> str:
    """`path` relative to the working directory when it lies inside it, else as it is."""
    relative = os.path.relpath(path) if os.path.isabs(path) else str(path)
    return str(path) if relative.startswith("..") else relative


def _indexed_file(index: VideoSearchIndex, indexed: frozenset[str], requested: str) -> Path | None:
    """The file to serve for `/media/<requested>`, or None when it is not a video of the index."""
    if requested not in indexed:
        return None
    path = index.video_dir / requested
    return path if path.is_file() else None


def build_blocks(index: VideoSearchIndex, k: int = 8):
    """The Gradio `Blocks` of the page (without the media route: see `build_app`)."""
    import gradio as gr

    lock = threading.Lock()  # one query at a time through the model

    def search(query: str, k: float, one_per_video: bool) -> str:
        if not query or not query.strip():
            return "<p class='no-hits'>Type what happens in the moment you are looking for.</p>"
        with lock:
            hits = index.search(query.strip(), k=int(k), max_per_video=1 if one_per_video else None)
        return hits_html(hits)

    def search_like(clip, k: float, one_per_video: bool) -> str:
        if clip is None:
            return "<p class='no-hits'>Choose a video clip.</p>"
        with lock:
            hits = index.search_like(clip, k=int(k), max_per_video=1 if one_per_video else None)
        return hits_html(hits)

    counts = index.manifest.counts
    model_name = _short_path(index.manifest.model.get("name_or_path") or "(model built in memory)")
    with gr.Blocks(title="TempMe video search") as blocks:
        gr.Markdown(
            f"## TempMe video search\n{counts['videos']} videos, {counts['segments']} segments of up to "
            f"{index.manifest.segment_seconds:g} s in `{_short_path(index.video_dir)}` — model `{model_name}`"
        )
        with gr.Row():
            query = gr.Textbox(label="Describe a moment", placeholder="a dog catches a frisbee", scale=4,
                               elem_id="query")
            button = gr.Button("Search", variant="primary", scale=1, elem_id="search-button")
        with gr.Row():
            top_k = gr.Slider(1, 50, value=k, step=1, label="Hits")
            one_per_video = gr.Checkbox(label="One hit per video", value=False)
        with gr.Accordion("Search by an example clip", open=False):
            clip = gr.File(label="Video clip", file_types=["video"], type="filepath")
        results = gr.HTML(elem_id="results")
        query.submit(search, [query, top_k, one_per_video], results)
        button.click(search, [query, top_k, one_per_video], results)
        clip.upload(search_like, [clip, top_k, one_per_video], results)
    return blocks


def build_app(index: VideoSearchIndex, k: int = 8):
    """The FastAPI application of the page: the media route and the Gradio app (see the module docstring)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import FileResponse

    indexed = frozenset(index.videos)
    app = FastAPI(title="TempMe video search")

    @app.get(MEDIA_ROUTE + "/{requested:path}")
    def media(requested: str):
        path = _indexed_file(index, indexed, requested)
        if path is None:
            raise HTTPException(status_code=404, detail="Not a video of this index.")
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type)

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    return gr.mount_gradio_app(app, build_blocks(index, k), path="/", allowed_paths=[], theme=theme, css=_CSS,
                               footer_links=[])


def serve(index: VideoSearchIndex, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, k: int = 8) -> None:
    """Run the search page until interrupted."""
    import uvicorn

    uvicorn.run(build_app(index, k), host=host, port=port, log_level="warning")


__all__ = ["MEDIA_ROUTE", "DEFAULT_HOST", "DEFAULT_PORT", "build_app", "build_blocks", "hits_html", "media_url", "serve"]
