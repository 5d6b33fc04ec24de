"""The search page works in a real browser (Debian's chromium, headless, driven by playwright): type a query, see
the right files, each with its poster, playing from their segment whatever their format (AVI, MPEG-1, GIF, Motion
JPEG: through a copy of the window); upload a clip to search by example. What the server refuses is tested against a
real `tempme serve` process in `test_search_server.py`.

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
from data_helpers import clip_tokenizer  # noqa: F401 (a fixture)
from search_helpers import (
    MIXED_FORMATS,
    VOCABULARY,
    free_port,
    make_mixed_formats_folder,
    make_video_folder,
    tiny_search_model,
)

from transformers_tempme import SearchHit, VideoSearchIndex
from transformers_tempme.search.app import format_score

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


def serve_folder(root: Path, make_folder):
    """Index `make_folder(root / "videos")` with the tiny model and serve it; yields (server, index, root)."""
    model, processor = tiny_search_model()
    videos = make_folder(root / "videos")
    index = VideoSearchIndex.build(videos, root / "videos.index", model, processor, num_workers=0, progress=False)
    with ServerThread(index) as server:
        yield server, index, root


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    yield from serve_folder(tmp_path_factory.mktemp("search_app"), make_video_folder)


@pytest.fixture(scope="module")
def mixed_served(tmp_path_factory):
    """A library of AVI, MPEG-1, GIF, Motion JPEG MOV and H.264 MP4 files, served."""
    yield from serve_folder(tmp_path_factory.mktemp("search_app_mixed"), make_mixed_formats_folder)


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("No chromium on PATH: install Debian's (`apt-get install -y chromium`, done by `make "
                    "browser`) to run the browser tests.", pytrace=False)
    return path


# Each card: what it plays, its poster once loaded (its width; 0 when it failed), the player's state.
_CARDS = """async () => Promise.all(Array.from(document.querySelectorAll('.hit')).map(async card => {
    const video = card.querySelector('video');
    const posterWidth = video && video.poster ? await new Promise(done => {
        const image = new Image(); image.onload = () => done(image.naturalWidth); image.onerror = () => done(0);
        image.src = video.poster; }) : null;
    return {path: card.dataset.path, start: parseFloat(card.dataset.start), end: parseFloat(card.dataset.end),
            source: card.dataset.source, text: card.querySelector('.meta').innerText,
            src: video && video.getAttribute('src'), posterWidth,
            localPath: card.querySelector('.local-path') && card.querySelector('.local-path').innerText,
            currentTime: video && video.currentTime, duration: video && video.duration};
}))"""

# Play a card's video (muted) until it shows a frame; what the player then says.
_PLAY = """async video => {
    video.muted = true;
    let refused = null;
    try { await video.play(); } catch (error) { refused = String(error); }
    const deadline = Date.now() + 60000;
    while (video.readyState < 2 && !video.error && Date.now() < deadline) await new Promise(r => setTimeout(r, 50));
    video.pause();
    return {readyState: video.readyState, error: video.error && video.error.code, refused, duration: video.duration,
            width: video.videoWidth};
}"""


def shown_hits(page) -> list[dict]:
    """The hit cards on the page (see `_CARDS`), once every video that plays its file itself shows its frame at the
    playhead (a copy is made only when played)."""
    page.wait_for_selector(".hit", timeout=60_000)
    page.wait_for_function(  # HAVE_CURRENT_DATA: metadata loaded, playhead placed, its frame decoded
        "Array.from(document.querySelectorAll(\".hit[data-source='file'] video\")).every(v => v.readyState >= 2)",
        timeout=60_000,
    )
    return page.evaluate(_CARDS)


def search_in_browser(url: str, query: str, screenshot: Path | None = None, k: int = 8, like: Path | None = None,
                      play: bool = False) -> dict:
    """Open the page, type `query`, press Search; returns the hits shown (see `shown_hits`), the search box's
    placeholder, what the first hit's "Copy path" button put on the clipboard, what each copy did when played
    (`play`), the hits of an upload of the clip `like` when given, and every request that left 127.0.0.1
    (blocked)."""
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
            context = browser.new_context(viewport={"width": 1200, "height": 900},
                                          permissions=["clipboard-read", "clipboard-write"])
            page = context.new_page()
            page.route("**/*", only_this_machine)
            page.goto(url, wait_until="networkidle")
            slider = page.locator("input[type=number]").first
            slider.fill(str(k))
            slider.press("Enter")
            box = page.locator("#query textarea, #query input").first
            placeholder = box.get_attribute("placeholder")
            box.fill(query)
            page.locator("#search-button").click()
            hits = shown_hits(page)
            if screenshot is not None:
                page.wait_for_timeout(1500)  # let the players drop their loading indicators
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
            copied = None
            if page.locator(".copy-path").count():
                page.locator(".copy-path").first.click()
                copied = page.evaluate("navigator.clipboard.readText()")
            played = {}
            if play:
                for video in page.locator(".hit[data-source='copy'] video").all():
                    path = video.evaluate("v => v.closest('.hit').dataset.path")
                    played[path] = video.evaluate(_PLAY)
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
    return {"hits": hits, "placeholder": placeholder, "copied": copied, "played": played, "like_hits": like_hits,
            "outside": outside}


@pytest.mark.slow
def test_the_page_in_a_real_browser(served, tmp_path):
    server, index, root = served
    clip = root / "videos" / "sub" / "blue_right.mp4"
    shown = search_in_browser(server.url, QUERY, tmp_path / "search_page.png", k=7, like=clip)
    expected = index.search(QUERY, k=7)
    assert [hit["path"] for hit in shown["hits"]] == [hit.path for hit in expected]
    for card, hit in zip(shown["hits"], expected):
        assert card["start"] == pytest.approx(hit.start, abs=1e-3)
        assert format_score(hit.score) in card["text"] and hit.path in card["text"]
        assert card["localPath"] == hit.video_path  # served to this machine: where the file is, to copy
        assert card["posterWidth"] == 32  # the poster loaded (the frame at the segment's start)
        if card["source"] == "file":  # the browser decoded the file's header and put the playhead at the segment
            assert card["currentTime"] == pytest.approx(hit.start, abs=0.3)
            assert card["duration"] > 0
        else:  # Matroska: a copy of the window
            assert hit.path == "green_clip" and card["src"] == f"/clip/{hit.start:.3f}-{hit.end:.3f}/green_clip"
    assert shown["copied"] == expected[0].video_path
    assert {card["start"] for card in shown["hits"] if card["path"] == "long.mp4"} == {0.0, 10.0, 15.0}
    assert (tmp_path / "search_page.png").stat().st_size > 10_000
    # The example comes from the model's own (small) vocabulary.
    assert shown["placeholder"] == "a red circle moves from left to right"
    # Uploading a clip searches by example: the clip's own file comes first.
    assert [hit["path"] for hit in shown["like_hits"]] == [hit.path for hit in index.search_like(clip, k=7)]
    assert shown["like_hits"][0]["path"] == "sub/blue_right.mp4"
    assert shown["outside"] == []  # the page asks for nothing beyond this machine


@pytest.mark.slow
def test_every_format_plays_in_a_real_browser(mixed_served, tmp_path):
    server, index, root = mixed_served
    shown = search_in_browser(server.url, QUERY, tmp_path / "mixed.png", k=len(index), play=True)
    cards = {card["path"]: card for card in shown["hits"]}
    assert set(cards) == set(MIXED_FORMATS) == set(index.videos)
    assert {path: card["source"] for path, card in cards.items()} == {
        path: "file" if path.endswith(".mp4") else "copy" for path in MIXED_FORMATS}
    assert all(card["posterWidth"] == 64 for card in cards.values())  # every hit has its poster
    # Each AVI, MPEG-1, GIF and Motion JPEG hit plays: a frame shown, no MediaError, its window's length.
    assert set(shown["played"]) == set(MIXED_FORMATS) - {"clip.mp4"}
    for path, played in shown["played"].items():
        assert played["error"] is None and played["refused"] is None and played["readyState"] >= 2, (path, played)
        assert played["duration"] == pytest.approx(cards[path]["end"] - cards[path]["start"], abs=0.05), path
        assert played["width"] == 64
    assert shown["outside"] == []


# ------------------------------------------------------------------ the cards and the vocabulary, without a browser


def hit(score: float, path: str = "a.avi") -> SearchHit:
    return SearchHit(rank=1, path=path, start=10.0, end=20.0, score=score, video_path=f"/home/me/videos/{path}")


def test_a_card_shows_the_score_as_a_similarity():
    from transformers_tempme.search.app import SCORE_LEGEND, hits_html

    page = hits_html([hit(0.312), hit(-0.041)])
    assert page.startswith(f"<p class='legend'>{SCORE_LEGEND}</p>") and "cosine similarity, from \u22121 to 1" in page
    assert "<span class='score' title='similarity of the query and this moment (cosine)'>0.312</span>" in page
    assert "<span class='score negative' title='similarity of the query and this moment (cosine)'>\u22120.041</span>" in page


def test_a_card_plays_the_file_or_a_copy_and_says_which():
    from transformers_tempme.search.app import hits_html
    from transformers_tempme.search.media import HitMedia

    as_file = HitMedia("/media/a.mp4#t=10.000,20.000", "/poster/10.000/a.mp4", copy=False, format="h264 in mov",
                       fallback="/clip/10.000-20.000/a.mp4")
    page = hits_html([hit(0.3, "a.mp4")], lambda _: as_file)
    assert ("<video controls preload='metadata' poster='/poster/10.000/a.mp4' src='/media/a.mp4#t=10.000,20.000' "
            "data-fallback='/clip/10.000-20.000/a.mp4' onerror=") in page and "copy-note" not in page
    as_copy = HitMedia("/clip/10.000-20.000/a.avi", "/poster/10.000/a.avi", copy=True, format="mpeg4 in avi")
    page = hits_html([hit(0.3)], lambda _: as_copy)
    assert "<video controls preload='none' poster='/poster/10.000/a.avi' src='/clip/10.000-20.000/a.avi'></video>" in page
    assert "played from a copy of this window (mpeg4 in avi does not play in browsers)" in page
    assert "data-source='none'>" in hits_html([hit(0.3)]) and "class='unplayable'" in hits_html([hit(0.3)])


@pytest.mark.parametrize("local_paths", [True, False])
def test_the_local_path_is_shown_only_to_this_machine(local_paths):
    from transformers_tempme.search.app import hits_html

    page = hits_html([hit(0.3, "it's <b>.avi")], local_paths=local_paths)
    assert ("/home/me/videos/" in page) is local_paths
    assert "<b>" not in page and "it&#x27;s &lt;b&gt;.avi" in page  # names are escaped


@pytest.mark.parametrize(
    "known, placeholder",
    [
        (None, "a dog catches a frisbee"),  # CLIP's BPE reads any text
        (sorted(VOCABULARY[0].split()), "a red circle moves from left to right"),
        (["a", "blue", "from", "left", "moves", "right", "square", "to"], "a blue square moves from left to right"),
        (["<", "ball", "kicks", "player", "the"], "ball kicks player the"),  # no example fits: its own words
    ],
)
def test_the_placeholder_comes_from_the_vocabulary(known, placeholder):
    from transformers_tempme.search.app import placeholder_query

    assert placeholder_query(known) == placeholder


def index_reading_with(processor) -> VideoSearchIndex:
    """A stand-in index whose model reads text with `processor` (what `unknown_words` and `known_words` ask)."""
    index = VideoSearchIndex.__new__(VideoSearchIndex)
    index._processor = processor
    return index


@pytest.mark.parametrize(
    "query, unknown",
    [
        ("a red square moves from left to right", []),
        ("A RED Square", []),  # lower-cased as the tokenizer does
        ("a man rides a bike", ["man", "rides", "bike"]),
        ("a bike, a bike!", ["bike", ",", "!"]),  # each once; punctuation is a word of its own
        ("a red square " * 200 + "unicorn", []),  # past what the model reads: not its concern
        ("a red square moves from left to right on a black unicorn", []),  # 12 words: the model reads 10
    ],
)
@pytest.mark.parametrize("offsets", [True, False])
def test_unknown_words_of_a_word_level_vocabulary(query, unknown, offsets):
    _, processor = tiny_search_model()
    if not offsets:  # a tokenizer without character offsets: whole words are named
        processor.tokenizer.__class__ = type("NoOffsets", (type(processor.tokenizer),), {"is_fast": False})
        unknown = ["bike,", "bike!"] if "," in query else unknown
    assert index_reading_with(processor).unknown_words(query) == unknown


def test_clip_bpe_reads_any_text(clip_tokenizer):
    _, processor = tiny_search_model()
    processor.tokenizer = clip_tokenizer
    index = index_reading_with(processor)
    assert index.unknown_words("a man rides a bike 🚲 über 中文") == []
    assert index.known_words() is None


def test_known_words_lists_a_small_word_level_vocabulary():
    _, processor = tiny_search_model()
    index = index_reading_with(processor)
    assert index.known_words() == sorted(VOCABULARY[0].split())
    assert index.known_words(max_words=5) is None


if __name__ == "__main__":
    index_dir, query, screenshot = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    with ServerThread(VideoSearchIndex.open(index_dir)) as running:
        result = search_in_browser(running.url, query, screenshot, k=int(sys.argv[4]) if len(sys.argv) > 4 else 6)
    for card in result["hits"]:
        print(card["text"])
    print(f"Screenshot: {screenshot}")

