"""The search page works in a real browser (Debian's chromium, headless, driven by playwright): type a query, see
the right files, playing from their segment; upload a clip to search by example. What the server refuses is tested
against a real `tempme serve` process in `test_search_server.py`.

Run as a script to take the README's screenshot of any index:

    python tests/test_search_app.py INDEX_DIR "a red circle moves from left to right" docs/images/search_page.png
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path

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


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("search_app")
    videos = make_video_folder(root / "videos")
    model, processor = tiny_search_model()
    index = VideoSearchIndex.build(videos, root / "videos.index", model, processor, num_workers=0, progress=False)
    with ServerThread(index) as server:
        yield server, index, root


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

