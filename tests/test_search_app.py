"""The search page: the media route serves the indexed videos and nothing else, and the page works in a real
browser (Debian's chromium, headless, driven by playwright): type a query, see the right files, playing from their
segment.

Run as a script to take the README's screenshot of any index:

    python tests/test_search_app.py INDEX_DIR "a red circle moves from left to right" docs/images/search_page.png
"""

from __future__ import annotations

import http.client
import shutil
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from search_helpers import free_port, make_video_folder, tiny_search_model

from transformers_tempme import VideoSearchIndex

QUERY = "a red square moves from left to right"


class ServerThread:
    """The search app under uvicorn in a background thread, on 127.0.0.1 and a free port."""

    def __init__(self, index: VideoSearchIndex):
        import uvicorn

        from transformers_tempme.search.app import build_app

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(build_app(index), host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the search app did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, raw_path: str, headers: dict | None = None) -> tuple[int, bytes]:
        """GET `raw_path` exactly as written (no client-side `..` normalisation)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("GET", raw_path, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("search_app")
    videos = make_video_folder(root / "videos")
    model, processor = tiny_search_model()
    index = VideoSearchIndex.build(videos, root / "videos.index", model, processor, num_workers=0, progress=False)
    (root / "secret.txt").write_text("outside the video folder")
    with ServerThread(index) as server:
        yield server, index, root


def test_the_media_route_serves_indexed_videos(served):
    server, index, root = served
    for path in index.videos:
        status, body = server.get("/media/" + quote(path))
        assert status == 200 and body == (root / "videos" / path).read_bytes()
    status, body = server.get("/media/long.mp4", headers={"Range": "bytes=10-19"})
    assert status == 206 and body == (root / "videos" / "long.mp4").read_bytes()[10:20]


@pytest.mark.parametrize(
    "raw_path",
    [
        "/media/notes.mp4",  # in the folder, but not a video of the index
        "/media/.hidden.mp4",  # a hidden file, never indexed
        "/media/../secret.txt",
        "/media/..%2Fsecret.txt",
        "/media/%2e%2e/%2e%2e/etc/passwd",
        "/media/sub/../red_right.mp4",  # even when it would land on an indexed file
        "/media/%2Fetc%2Fpasswd",
        "/media//etc/passwd",
        "/media/videos.index/index.json",
        "/gradio_api/file=/etc/passwd",  # Gradio's own file route serves none of these either
        "/gradio_api/file=VIDEOS/red_right.mp4",
        "/gradio_api/file=ROOT/secret.txt",
    ],
)
def test_nothing_outside_the_index_is_served(served, raw_path):
    server, _, root = served
    raw_path = raw_path.replace("VIDEOS", str(root / "videos")).replace("ROOT", str(root))
    status, body = server.get(raw_path)
    assert status in (400, 403, 404), (raw_path, status)
    assert b"outside the video folder" not in body and b"root:" not in body


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("No chromium on PATH: install Debian's (`apt-get install -y chromium`, done by `make "
                    "browser`) to run the browser tests.", pytrace=False)
    return path


def shown_hits(page) -> list[dict]:
    """The hit cards on the page, once every video shows its frame at the playhead: path, start, text, playhead,
    duration."""
    page.wait_for_selector(".hit video", timeout=60_000)
    page.wait_for_function(  # HAVE_CURRENT_DATA: metadata loaded, playhead placed, its frame decoded
        "Array.from(document.querySelectorAll('.hit video')).every(v => v.readyState >= 2)", timeout=60_000
    )
    return page.evaluate(
        """Array.from(document.querySelectorAll('.hit')).map(card => ({
            path: card.dataset.path, start: parseFloat(card.dataset.start),
            text: card.querySelector('.meta').innerText,
            currentTime: card.querySelector('video').currentTime,
            duration: card.querySelector('video').duration}))"""
    )


def search_in_browser(url: str, query: str, screenshot: Path | None = None, k: int = 8, like: Path | None = None) -> dict:
    """Open the page, type `query`, press Search; returns the hits shown (see `shown_hits`), the hits of an upload
    of the clip `like` when given, and every request that left 127.0.0.1 (blocked)."""
    from playwright.sync_api import sync_playwright

    outside = []

    def only_this_machine(route):
        if route.request.url.startswith(("http://127.0.0.1", "data:", "blob:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.route("**/*", only_this_machine)
            page.goto(url, wait_until="networkidle")
            slider = page.locator("input[type=number]").first
            slider.fill(str(k))
            slider.press("Enter")
            page.locator("#query textarea, #query input").first.fill(query)
            page.locator("#search-button").click()
            hits = shown_hits(page)
            if screenshot is not None:
                page.wait_for_timeout(1500)  # let the players drop their loading indicators
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
            like_hits = None
            if like is not None:
                before = page.locator(".hits").inner_html()
                page.get_by_text("Search by an example clip").click()
                page.locator("input[type=file]").set_input_files(str(like))
                page.wait_for_function("old => document.querySelector('.hits').innerHTML !== old", arg=before,
                                       timeout=60_000)
                like_hits = shown_hits(page)
        finally:
            browser.close()
    return {"hits": hits, "like_hits": like_hits, "outside": outside}


@pytest.mark.slow
def test_the_page_in_a_real_browser(served, tmp_path):
    server, index, root = served
    clip = root / "videos" / "sub" / "blue_right.mp4"
    shown = search_in_browser(server.url, QUERY, tmp_path / "search_page.png", k=7, like=clip)
    expected = index.search(QUERY, k=7)
    assert [hit["path"] for hit in shown["hits"]] == [hit.path for hit in expected]
    for card, hit in zip(shown["hits"], expected):
        assert card["start"] == pytest.approx(hit.start, abs=1e-3)
        assert f"{hit.score:.3f}" in card["text"] and hit.path in card["text"]
        # The browser decoded the video's header and put the playhead at the start of the segment.
        assert card["currentTime"] == pytest.approx(hit.start, abs=0.3)
        assert card["duration"] > 0
    assert {card["start"] for card in shown["hits"] if card["path"] == "long.mp4"} == {0.0, 10.0, 15.0}
    assert (tmp_path / "search_page.png").stat().st_size > 10_000
    # Uploading a clip searches by example: the clip's own file comes first.
    assert [hit["path"] for hit in shown["like_hits"]] == [hit.path for hit in index.search_like(clip, k=7)]
    assert shown["like_hits"][0]["path"] == "sub/blue_right.mp4"
    assert shown["outside"] == []  # the page asks for nothing beyond this machine


if __name__ == "__main__":
    index_dir, query, screenshot = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    with ServerThread(VideoSearchIndex.open(index_dir)) as running:
        result = search_in_browser(running.url, query, screenshot, k=int(sys.argv[4]) if len(sys.argv) > 4 else 6)
    for card in result["hits"]:
        print(card["text"])
    print(f"Screenshot: {screenshot}")


def test_serve_binds_this_machine_only_by_default():
    from transformers_tempme.cli.serve import parse_args

    assert parse_args(["some.index"]).host == "127.0.0.1"


@pytest.mark.slow
def test_tempme_serve_runs_the_page(served):
    import subprocess
    import urllib.request

    from search_helpers import subprocess_env

    _, index, _ = served
    model_dir = index.index_dir.parent / "serve_model"
    index.model.save_pretrained(model_dir)
    index.processor.save_pretrained(model_dir)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "transformers_tempme.cli", "serve", str(index.index_dir), "--model", str(model_dir),
         "--port", str(port)], env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    assert response.status == 200 and b"gradio" in response.read().lower()
                    break
            except OSError:
                assert time.monotonic() < deadline, "tempme serve did not answer"
                time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/media/red_right.mp4", timeout=5) as response:
            assert response.status == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
