"""`tempme serve` as an attacker meets it: a real server process on 127.0.0.1, sent the requests that would read a
file outside the index, reach the server under a foreign name, or stall it. Every response, headers included, is
checked for the unique marker written into the secret file (`MARKER`): not one byte of it may come back.

The library holds, besides ordinary clips: a video whose name holds a newline, a link inside the video folder to a
real video outside it (the indexer follows links to files, so it is indexed), and an indexed video replaced by a
link to the secret after indexing. The index's rows are then edited to hold `../secret.txt`, the secret's absolute
path, `../outside/real.mp4`, `.hidden.mp4` and `notes.mp4` (a text file inside the video folder). A second index,
made by hand, says its video folder is `/` and has rows `etc/passwd` and the secret's path from `/`. The server runs
in the library's folder, so the secret lies in its working directory, and its upload folder is watched for copies
of the secret. The JSON API (`/api/...`) is sent the same attacks as the page.

A second server, on an ordinary library, serves many clients at once: its answers are those of the Python API one
query at a time, its batches form (for the API and for the page), and it follows the index to a new generation.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import av
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from search_helpers import (
    FPS,
    free_port,
    make_video_folder,
    moving_square,
    save_tiny_search_model,
    subprocess_env,
    tiny_search_model,
    write_clip,
)

from transformers_tempme import VideoSearchIndex

MARKER = f"TEMPME-SECRET-{uuid.uuid4().hex}"
QUERY = "a red square moves from left to right"
NEWLINE_NAME = "new\nline.mp4"
EDITED_ROWS = {"edit0.mp4": "../secret.txt", "edit1.mp4": "SECRET", "edit2.mp4": "../outside/real.mp4",
               "edit3.mp4": ".hidden.mp4", "edit4.mp4": "notes.mp4"}
SERVED = ["green_clip", "long.mp4", NEWLINE_NAME, "red_left.mp4", "red_right.mp4", "sub/blue_right.mp4"]
ALLOWED_NAME = "videos.home.example"
ROOTED_ROWS = {"edit0.mp4": "/etc/passwd", "edit1.mp4": "/etc/hostname", "edit3.mp4": "/proc/self/environ"}
OWN_ADDRESS = "127.0.0.1:<port>"


@dataclass
class Response:
    status: int
    headers: str
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def json(self):
        assert "content-type: application/json" in self.headers.lower(), self.headers
        return json.loads(self.body)


def rewrite_paths(index_dir: Path, renames: dict[str, str], video_dir: str | None = None) -> None:
    """Edit the `path` column of an index's shards in place (and its video folder, when given), as a hand-edited or
    downloaded index would be: the shards and their checksums in the manifest are rewritten together, so the index
    is consistent but lies."""
    from transformers_tempme.search.storage import read_manifest, read_shard_record, write_manifest, write_shard

    manifest = read_manifest(index_dir)
    manifest.video_dir = video_dir or manifest.video_dir
    for name in manifest.shards:
        shard = index_dir / name
        table = pq.read_table(shard)
        paths = [renames.get(path, path) for path in table.column("path").to_pylist()]
        table = table.set_column(table.schema.get_field_index("path"), "path", pa.array(paths, pa.string()))
        manifest.files[name] = write_shard(shard, table, read_shard_record(shard))
    write_manifest(index_dir, manifest)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("served_library")
    secret = root / "secret.txt"
    secret.write_text(f"{MARKER}\n")
    (root / "x.mp4").symlink_to(secret)
    outside = write_clip(root / "outside" / "real.mp4", moving_square("blue", 12))
    with open(outside, "ab") as video:  # still a valid video, now holding the marker too
        video.write(MARKER.encode())
    videos = make_video_folder(root / "videos")
    write_clip(videos / NEWLINE_NAME, moving_square("yellow", 12))
    for i, name in enumerate(EDITED_ROWS):
        write_clip(videos / name, moving_square("green", 12, reverse=bool(i % 2)))
    (videos / "link_out.mp4").symlink_to(outside)
    write_clip(videos / "swapped.mp4", moving_square("red", 12))
    model, processor = tiny_search_model()
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    index = VideoSearchIndex.build(videos, root / "videos.index", model, processor,
                                   model_info={"name_or_path": str(root / "model")}, num_workers=0, progress=False)
    assert {"link_out.mp4", "swapped.mp4", NEWLINE_NAME, *EDITED_ROWS} <= set(index.videos)
    (videos / "swapped.mp4").unlink()
    (videos / "swapped.mp4").symlink_to(secret)
    shutil.copytree(index.index_dir, root / "rooted.index")
    rewrite_paths(index.index_dir, {name: path.replace("SECRET", str(secret)) for name, path in EDITED_ROWS.items()})
    # Made by hand: "the video folder is /", rows naming system files and the secret from there, and one real video.
    rewrite_paths(root / "rooted.index", {**{name: path.lstrip("/") for name, path in ROOTED_ROWS.items()},
                                          "edit2.mp4": str(secret).lstrip("/"),
                                          "red_right.mp4": str(videos / "red_right.mp4").lstrip("/")}, video_dir="/")
    return root


class Server:
    """`tempme serve` in a subprocess on 127.0.0.1 and a free port, run from the library's folder."""

    def __init__(self, root: Path, *args: str, index: str = "videos.index", env: dict[str, str | None] | None = None):
        """`index`: the index folder under `root` to serve; `env`: changes to the environment (None: unset), e.g. no
        GRADIO_TEMP_DIR, so that the server makes its own private upload folder (in TMPDIR)."""
        self.root, self.port, self.uploads = root, free_port(), root / "uploads"
        self.log = root / f"serve-{self.port}.log"
        env = {**subprocess_env(), "GRADIO_TEMP_DIR": str(self.uploads), **(env or {})}
        env = {name: value for name, value in env.items() if value is not None}
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "transformers_tempme.cli", "serve", str(root / index),
                 "--port", str(self.port), *args], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        self.responses: list[Response] = []
        deadline = time.monotonic() + 180
        while True:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if self.request("GET", "/").status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "tempme serve did not answer:\n" + self.log.read_text()
            time.sleep(0.5)

    def close(self) -> int:
        """Stop the server with SIGTERM (as a service manager does); returns its exit code."""
        self.process.terminate()
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # uvicorn waits for open connections to finish
            self.process.kill()
            return self.process.wait(timeout=30)

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None,
                host: str | None = OWN_ADDRESS, chunked: bool = False) -> Response:
        """Send `path` exactly as written (no client-side normalisation) with this `Host` header (None: none)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            if host is not None:
                connection.putheader("Host", f"127.0.0.1:{self.port}" if host is OWN_ADDRESS else host)
            for name, value in (headers or {}).items():
                connection.putheader(name, value)
            if chunked:
                connection.putheader("Transfer-Encoding", "chunked")
                connection.endheaders()
                for start in range(0, len(body), 1 << 20):
                    piece = body[start : start + (1 << 20)]
                    connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                connection.send(b"0\r\n\r\n")
            else:
                if (body or method == "POST") and "Content-Length" not in (headers or {}):
                    connection.putheader("Content-Length", str(len(body)))
                connection.endheaders(body or None)
            response = connection.getresponse()
            result = Response(response.status, str(response.headers), response.read())
        except (ConnectionError, http.client.HTTPException) as error:  # a server may close on a refused body
            result = Response(0, "", str(error).encode())
        finally:
            connection.close()
        self.responses.append(result)
        assert MARKER not in result.headers and MARKER.encode() not in result.body, (method, path)
        return result

    def call(self, api_name: str, data: list, **kwargs) -> tuple[str, dict | str | None]:
        """Run a Gradio endpoint through its REST route; returns the final event's name and data."""
        started = self.request("POST", f"/gradio_api/call/{api_name}", json.dumps({"data": data}).encode(),
                               {"Content-Type": "application/json"}, **kwargs)
        assert started.status == 200, (started.status, started.text)
        event_id = json.loads(started.body)["event_id"]
        stream = self.request("GET", f"/gradio_api/call/{api_name}/{event_id}").text
        event, data_line = re.findall(r"^event: (\w+)\ndata: (.*)$", stream, re.MULTILINE)[-1]
        return event, json.loads(data_line)

    def upload(self, path: Path) -> str:
        """Upload a file as the page does; returns its path in the server's upload folder."""
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path.name}\"\r\n"
                f"Content-Type: video/mp4\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        response = self.request("POST", "/gradio_api/upload", body,
                                {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert response.status == 200, response.text
        return json.loads(response.body)[0]


@pytest.fixture(scope="module")
def server(library):
    running = Server(library, "--allowed-host", ALLOWED_NAME)
    yield running
    running.close()
    # Nothing the attacks sent made the server read the secret: no copy of it in the upload folder, none in its log.
    copies = [p for p in running.uploads.rglob("*") if p.is_file() and MARKER.encode() in p.read_bytes()]
    assert copies == []
    assert MARKER not in running.log.read_text()


def file_data(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": Path(path).name}


# ------------------------------------------------------------------ search by clip: only the browser's uploads


@pytest.mark.slow
@pytest.mark.parametrize(
    "named",
    [
        "ROOT/secret.txt",  # a plain file
        "secret.txt",  # relative to the server's working directory
        "ROOT/x.mp4",  # a link named like a video, leading to the secret
        "ROOT/outside/real.mp4",  # a real video outside the index
        "ROOT/videos/red_right.mp4",  # a video of the index, named by its server path
        "ROOT/uploads/../secret.txt",  # through the upload folder
        "/etc/passwd",
    ],
)
def test_search_by_clip_takes_only_uploads(server, library, named):
    event, data = server.call("search_like", [file_data(named.replace("ROOT", str(library))), 5, False])
    assert event == "error"
    assert data == {"error": None}  # nothing about the file, its path or the server's folders
    for response in server.responses[-2:]:
        assert str(library).encode() not in response.body and b"/tmp" not in response.body


@pytest.mark.slow
def test_an_uploaded_clip_is_searched(server, library):
    uploaded = server.upload(library / "videos" / "sub" / "blue_right.mp4")
    assert Path(uploaded).resolve().is_relative_to(server.uploads.resolve())
    event, data = server.call("search_like", [file_data(uploaded), 3, False])
    assert event == "complete" and "data-path='sub/blue_right.mp4'" in data[0]
    # An upload that is no video fails with a message naming neither the file nor where it was put.
    event, data = server.call("search_like", [file_data(server.upload(library / "videos" / "notes.mp4")), 3, False])
    assert event == "error" and data["error"] == "This file could not be read as a video."


# ------------------------------------------------------------------ routes: indexed videos and the page, nothing else


@pytest.mark.slow
def test_the_media_route_serves_indexed_videos(server, library):
    for path in SERVED:
        response = server.request("GET", "/media/" + quote(path))
        assert response.status == 200 and response.body == (library / "videos" / path).read_bytes(), path
        assert "x-content-type-options: nosniff" in response.headers.lower()
    response = server.request("GET", "/media/long.mp4", headers={"Range": "bytes=10-19"})
    assert response.status == 206 and response.body == (library / "videos" / "long.mp4").read_bytes()[10:20]
    # The type is the container's, whatever the name says (`green_clip` is Matroska).
    assert "content-type: video/mp4" in server.request("GET", "/media/red_right.mp4").headers.lower()
    assert "content-type: application/octet-stream" in server.request("GET", "/media/green_clip").headers.lower()


@pytest.mark.slow
def test_posters_and_browser_copies_of_indexed_videos(server, library, tmp_path):
    from PIL import Image

    from transformers_tempme.search.media import cache_key, file_identity

    for path in SERVED:
        response = server.request("GET", f"/poster/1.000/{quote(path)}")
        assert response.status == 200 and "content-type: image/jpeg" in response.headers.lower(), path
        (tmp_path / "poster.jpg").write_bytes(response.body)
        with Image.open(tmp_path / "poster.jpg") as image:
            assert image.format == "JPEG" and image.size == (32, 32)
    response = server.request("GET", "/clip/0.000-3.000/green_clip")  # Matroska: played from a copy
    assert response.status == 200 and "content-type: video/mp4" in response.headers.lower()
    (tmp_path / "copy.mp4").write_bytes(response.body)
    with av.open(str(tmp_path / "copy.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and len(list(container.decode(stream))) == 3 * FPS
    assert server.request("GET", "/clip/0.000-3.000/green_clip", headers={"Range": "bytes=0-9"}).body == response.body[:10]
    # A window of the long video, as long as a segment. Both copies are kept under the index folder.
    assert server.request("GET", "/clip/15.000-25.000/long.mp4").status == 200
    cache = library / "videos.index" / "cache" / "media"
    for name, start, end in [("green_clip", 0.0, 3.0), ("long.mp4", 15.0, 25.0)]:
        identity = file_identity((library / "videos" / name).resolve())
        assert (cache / f"{cache_key('clip', identity, start, end)}.mp4").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    "raw_path",
    [
        "/media/notes.mp4",  # in the folder and named by an edited row, but not a video
        "/media/.hidden.mp4",  # a hidden file (and an edited row names it)
        "/media/link_out.mp4",  # indexed, but a link leading out of the folder
        "/media/swapped.mp4",  # indexed, then replaced by a link to the secret
        "/media/../secret.txt",  # an edited row holds `../secret.txt`
        "/media/..%2Fsecret.txt",
        "/media/%2e%2e/secret.txt",
        "/media/../outside/real.mp4",  # an edited row: a real video outside the folder
        "/media/ROOT/secret.txt",  # an edited row holds the secret's absolute path
        "/media/QROOT%2Fsecret.txt",
        "/media//etc/passwd",
        "/media/%2e%2e/%2e%2e/etc/passwd",
        "/media/sub/../red_right.mp4",  # even when it would land on an indexed file
        "/media/red_right.mp4%0A",  # a newline after an indexed name
        "/media/videos.index/index.json",
        "/gradio_api/file=ROOT/secret.txt",  # Gradio's file route is not served at all
        "/gradio_api/file=ROOT/x.mp4",
        "/gradio_api/file=ROOT/videos/red_right.mp4",
        "/gradio_api/file=/etc/passwd",
        "/gradio_api/file=http://127.0.0.1:1/",
        "/gradio_api/proxy=http://127.0.0.1:1/",
        "/docs",
        "/redoc",
        "/openapi.json",
        "/gradio_api/openapi.json",
        "/gradio_api/runs",
        "/monitoring",
        "/gradio_api/dev/reload",
        "/static/../../../../../../etc/passwd",
        "/assets/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    ],
)
def test_nothing_outside_the_index_is_served(server, library, raw_path):
    raw_path = raw_path.replace("QROOT", quote(str(library), safe="")).replace("ROOT", str(library))
    response = server.request("GET", raw_path)
    assert response.status in (403, 404), (raw_path, response.status)  # 403: Gradio's own asset route refusing
    assert b"root:" not in response.body


@pytest.mark.slow
@pytest.mark.parametrize(
    "raw_path",
    [
        "/poster/0/notes.mp4",  # an edited row names it: not a video
        "/clip/0-3/notes.mp4",
        "/poster/0/thumbnail.png",  # in the folder, not indexed, not a video
        "/poster/0/.hidden.mp4",
        "/poster/0/link_out.mp4",  # indexed, but a link leading out of the folder
        "/clip/0-3/link_out.mp4",
        "/poster/0/swapped.mp4",  # indexed, then replaced by a link to the secret
        "/clip/0-3/swapped.mp4",
        "/poster/0/../secret.txt",
        "/poster/0/..%2Fsecret.txt",
        "/clip/0-3/%2e%2e/secret.txt",
        "/clip/0-3/../outside/real.mp4",
        "/poster/0/ROOT/secret.txt",
        "/poster/0/QROOT%2Fsecret.txt",
        "/clip/0-3//etc/passwd",
        "/poster/0/%2e%2e/%2e%2e/etc/passwd",
        "/poster/0/sub/../red_right.mp4",
        "/poster/0/red_right.mp4%0A",
        "/poster/0/videos.index/index.json",
        "/poster/0/videos.index/cache/media",
        "/poster/nan/red_right.mp4",  # times: numbers of seconds only, in the route table
        "/poster/inf/red_right.mp4",
        "/poster/-1/red_right.mp4",
        "/poster/1e309/red_right.mp4",
        "/poster/0x10/red_right.mp4",
        "/poster/red_right.mp4",
        "/clip/0-nan/red_right.mp4",
        "/clip/3-0/red_right.mp4",  # an empty window
        "/clip/1-1/red_right.mp4",
        "/clip/0-10.5/long.mp4",  # longer than a segment
        "/clip/0-1000000/long.mp4",
        "/clip/0/red_right.mp4",
        "/clip/0-3-4/red_right.mp4",
    ],
)
def test_posters_and_copies_only_of_indexed_videos(server, library, raw_path):
    raw_path = raw_path.replace("QROOT", quote(str(library), safe="")).replace("ROOT", str(library))
    response = server.request("GET", raw_path)
    assert response.status == 404, (raw_path, response.status)
    assert b"root:" not in response.body and len(response.body) < 100


@pytest.mark.slow
def test_an_index_rooted_at_slash_serves_no_system_file(library):
    """A hand-made index: `video_dir` is `/`, its rows name `etc/passwd`, the secret and a real video."""
    rooted = Server(library, index="rooted.index")
    try:
        secret = str(library / "secret.txt").lstrip("/")
        for row in [*(path.lstrip("/") for path in ROOTED_ROWS.values()), secret]:
            for route in ("/media/", "/poster/0/", "/clip/0-1/"):
                response = rooted.request("GET", route + quote(row))
                assert response.status == 404 and b"root:" not in response.body, (route, row)
        video = str(library / "videos" / "red_right.mp4").lstrip("/")
        assert rooted.request("GET", "/media/" + quote(video)).status == 200  # a video is still a video
        event, data = rooted.call("search", [QUERY, 50, False])
        assert event == "complete"
        cards = dict(re.findall(r"<div class='hit' data-path='([^']*)'[^>]*data-source='(\w+)'>", data[0]))
        assert cards[video] == "file" and cards["etc/passwd"] == cards[secret] == "none"
    finally:
        rooted.close()
    assert MARKER not in rooted.log.read_text()


@pytest.mark.slow
def test_gradio_file_route_serves_not_even_uploads(server, library):
    uploaded = server.upload(library / "videos" / "red_right.mp4")
    assert server.request("GET", f"/gradio_api/file={uploaded}").status == 404


@pytest.mark.slow
def test_the_page_marks_hits_it_does_not_play(server, library):
    event, data = server.call("search", [QUERY, 50, False])
    assert event == "complete"
    cards = re.findall(r"<div class='hit' data-path='([^']*)'[^>]*data-source='(\w+)'>(<video|<p class='unplayable')",
                       data[0])
    assert {path: source for path, source, _ in cards if source != "none"} == {
        **{path: "file" for path in SERVED}, "green_clip": "copy"}  # Matroska: played from a copy of the window
    assert {path for path, source, _ in cards if source == "none"} == {
        *(path.replace("SECRET", str(library / "secret.txt")) for path in EDITED_ROWS.values()),
        "link_out.mp4", "swapped.mp4"}
    # Served on 127.0.0.1, the page shows this machine's user where each file is.
    assert f"<code class='local-path'>{library / 'videos' / 'red_right.mp4'}</code>" in data[0]


@pytest.mark.slow
def test_the_page_names_the_words_the_model_does_not_know(server):
    event, data = server.call("search", ["a man rides a red bike", 3, False])
    assert event == "complete"
    assert "read as unknown: <b>man</b>, <b>rides</b>, <b>bike</b>." in data[0] and data[0].count("class='hit'") == 3
    event, data = server.call("search", [QUERY, 3, False])
    assert "unknown-words" not in data[0]
    page = server.request("GET", "/").text  # the vocabulary and an example from it, in the page's config
    assert "This model knows only these 19 words" in page and "a red circle moves from left to right" in page


# ------------------------------------------------------------------ to whom: the Host header


@pytest.mark.slow
@pytest.mark.parametrize(
    "host, status",
    [
        ("localhost:PORT", 200),
        ("127.0.0.1:PORT", 200),
        ("127.0.0.1", 200),
        ("[::1]:PORT", 200),
        (f"{ALLOWED_NAME}:PORT", 200),  # --allowed-host
        (ALLOWED_NAME.upper(), 200),
        ("evil.example", 400),  # a page that rebinds its own name to 127.0.0.1
        ("evil.example:PORT", 400),
        ("127.0.0.1.evil.example", 400),
        ("localhost.evil.example:PORT", 400),
        ("10.1.2.3", 400),  # another address: this server listens on 127.0.0.1 only
        ("user@127.0.0.1", 400),
        ("", 400),
        (None, 400),  # no Host header at all
    ],
)
def test_only_requests_for_this_server_are_answered(server, host, status):
    host = host.replace("PORT", str(server.port)) if host else host
    for path in ("/", "/media/red_right.mp4", "/config", "/api/status", f"/api/search?q={quote(QUERY)}"):
        response = server.request("GET", path, host=host)
        assert response.status == status, (host, path, response.status)
        if status == 400:
            assert len(response.body) < 100
            if path.startswith("/api/") and host is not None:  # without one, uvicorn refuses it itself
                assert response.json == {"error": "Invalid host header."}


# ------------------------------------------------------------------ queries: bounded


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True])
def test_a_10_mb_query_is_refused_at_once(server, chunked):
    body = json.dumps({"data": ["red " * 2_500_000, 5, False]}).encode()
    started = time.monotonic()
    response = server.request("POST", "/gradio_api/call/search", body, {"Content-Type": "application/json"},
                              chunked=chunked)
    assert response.status == 413, (response.status, response.body)
    assert time.monotonic() - started < 60
    event, data = server.call("search", [QUERY, 3, False])  # the server still answers
    assert event == "complete" and data[0].count("class='hit'") == 3


@pytest.mark.slow
def test_an_upload_over_the_limit_is_refused_at_once(server):
    from transformers_tempme.search.app import MAX_UPLOAD_BYTES

    headers = {"Content-Type": "multipart/form-data; boundary=x", "Content-Length": str(MAX_UPLOAD_BYTES + (1 << 20))}
    assert server.request("POST", "/gradio_api/upload", b"--x\r\n", headers).status == 413


@pytest.mark.slow
@pytest.mark.parametrize("k", [10**9, 0, -1, "NaN"])
def test_the_number_of_hits_is_bounded(server, k):
    event, data = server.call("search", [QUERY, k, False])  # the page's slider goes from 1 to 50
    assert event == "error" and (data["error"] is None or data["error"].startswith(f"Value {k} is "))


@pytest.mark.slow
def test_a_long_query_within_the_body_limit_is_answered(server):
    event, data = server.call("search", ["a red square moves " * 3000, 3, False])  # 57 KB
    assert event == "complete" and data[0].count("class='hit'") == 3


@pytest.fixture(scope="module")
def opened(library):
    return VideoSearchIndex.open(library / "videos.index")


def test_long_queries_are_cut_before_the_tokenizer(opened, monkeypatch):
    from transformers_tempme.search.index import QUERY_CHARS_PER_TOKEN

    processor = opened.processor
    seen = []
    encode_text = processor.encode_text
    monkeypatch.setattr(processor, "encode_text", lambda texts: seen.extend(map(len, texts)) or encode_text(texts))
    query = "a red square moves from left to right " * 300_000  # 11 MB
    cut = query[: QUERY_CHARS_PER_TOKEN * processor.max_words]
    assert opened.search(query, k=3) == opened.search(cut, k=3)
    assert max(seen) == len(cut) < 2000
    assert [hit.path for hit in opened.search(QUERY + "  ", k=3)] == [hit.path for hit in opened.search(QUERY, k=3)]


# ------------------------------------------------------------------ the JSON API: the same rules


def multipart(name: str, content: bytes, filename: str | None = "clip.mp4") -> tuple[bytes, dict]:
    """A multipart/form-data body with one part (a file part when `filename` is given), and its headers."""
    boundary = uuid.uuid4().hex
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    body = (f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: video/mp4\r\n\r\n").encode()
    body += content + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def assert_answers_as(response: Response, expected: list) -> None:
    """The API's hits are the Python API's: same ranks, paths and times, scores within 1e-5, nothing more."""
    assert response.status == 200, response.text
    hits = response.json["hits"]
    assert [(h["rank"], h["path"], h["start"], h["end"]) for h in hits] == [
        (h.rank, h.path, h.start, h.end) for h in expected]
    assert all(abs(h["score"] - e.score) <= 1e-5 for h, e in zip(hits, expected))
    assert all(set(hit) == {"rank", "path", "start", "end", "score"} for hit in hits)


@pytest.mark.slow
@pytest.mark.parametrize("k, one_per_video", [(3, False), (7, True), (100, False)])
def test_the_api_answers_as_the_python_api(server, opened, k, one_per_video):
    parameters = {"q": QUERY, "k": k, "one_per_video": int(one_per_video)}
    response = server.request("GET", "/api/search?" + urlencode(parameters))
    assert_answers_as(response, opened.search(QUERY, k=k, max_per_video=1 if one_per_video else None))
    assert response.json["query"] == QUERY and response.json["generation"] == opened.manifest.generation
    assert response.json["unknown_words"] == []


@pytest.mark.slow
def test_the_api_names_the_words_the_model_cannot_read(server, opened):
    response = server.request("GET", "/api/search?" + urlencode({"q": "a man rides a red square", "k": 2}))
    assert response.status == 200 and response.json["unknown_words"] == ["man", "rides"]
    assert response.json["unknown_words"] == opened.unknown_words("a man rides a red square")


@pytest.mark.slow
def test_the_api_status_names_no_server_path(server, library, opened):
    status = server.request("GET", "/api/status")
    assert status.status == 200 and str(library).encode() not in status.body and b"/tmp" not in status.body
    assert {key: status.json[key] for key in ("videos", "segments", "generation", "model", "vector_index")} == {
        "videos": opened.manifest.counts["videos"], "segments": len(opened), "generation": 1, "model": "model",
        "vector_index": "flat"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, path, status, said",
    [
        ("GET", "/api/search", 400, "q=TEXT"),
        ("GET", "/api/search?q=%20%0A", 400, "q=TEXT"),
        ("GET", "/api/search?q=red&k=0", 400, "k must be a whole number from 1 to 100"),
        ("GET", "/api/search?q=red&k=101", 400, "k must be"),
        ("GET", "/api/search?q=red&k=-1", 400, "k must be"),
        ("GET", "/api/search?q=red&k=NaN", 400, "k must be"),
        ("GET", "/api/search?q=red&k=1e3", 400, "k must be"),
        ("GET", "/api/search?q=red&k=99999999999999999999", 400, "k must be"),
        ("GET", "/api/search?q=red&one_per_video=maybe", 400, "one_per_video must be"),
        ("GET", "/api/search?q=red&q=blue", 400, "more than once"),
        ("GET", "/api/search?q=red&top_k=3", 400, "Unknown parameter 'top_k'"),
        ("GET", "/api/search?q=red&path=/etc/passwd", 400, "Unknown parameter 'path'"),
        ("GET", "/api/status?verbose=1", 400, "Unknown parameter 'verbose'"),
        ("POST", "/api/search_like?k=0", 400, "k must be"),
        ("POST", "/api/search_like?path=/etc/passwd", 400, "Unknown parameter 'path'"),
        ("GET", "/api/nothing", 404, "Not found."),
        ("GET", "/api/search/", 404, "Not found."),
        ("GET", "/api", 404, "Not found."),  # not under /api/: plain text
        ("POST", "/api/search?q=red", 404, "Not found."),
        ("HEAD", "/api/status", 404, ""),
        ("DELETE", "/api/status", 404, "Not found."),
        ("GET", "/api/search_like", 404, "Not found."),
        ("GET", "/api/docs", 404, "Not found."),
        ("GET", "/api/openapi.json", 404, "Not found."),
    ],
)
def test_api_errors_are_json_with_4xx_codes(server, method, path, status, said):
    response = server.request(method, path)
    assert response.status == status, (path, response.status, response.text)
    if method == "HEAD":
        assert response.body == b""
    elif path.startswith("/api/"):
        assert response.json == {"error": response.json["error"]} and said in response.json["error"]
    else:
        assert response.text == said


@pytest.mark.slow
def test_a_clip_uploaded_to_the_api_is_searched_then_deleted(server, library, opened):
    clip = library / "videos" / "sub" / "blue_right.mp4"
    response = server.request("POST", "/api/search_like?k=3", *multipart("clip", clip.read_bytes()))
    assert_answers_as(response, opened.search_like(clip, k=3))
    assert response.json["hits"][0]["path"] == "sub/blue_right.mp4"
    assert [path.name for path in (server.uploads / "api-clips").iterdir()] == []  # written there, then deleted


@pytest.mark.slow
@pytest.mark.parametrize(
    "body_kind",
    ["clip named by a server path", "clip as a text field", "a JSON body naming a path", "no clip field",
     "not a video"],
)
def test_the_api_searches_only_the_bytes_sent(server, library, body_kind):
    secret = str(library / "secret.txt")
    body, headers = {
        "clip named by a server path": multipart("clip", b"not a video", filename=secret),
        "clip as a text field": multipart("clip", secret.encode(), filename=None),
        "a JSON body naming a path": (json.dumps({"path": secret, "meta": {"_type": "gradio.FileData"}}).encode(),
                                      {"Content-Type": "application/json"}),
        "no clip field": multipart("file", (library / "videos" / "red_right.mp4").read_bytes()),
        "not a video": multipart("clip", (library / "videos" / "notes.mp4").read_bytes()),
    }[body_kind]
    response = server.request("POST", "/api/search_like?k=3", body, headers)
    expected = {"a JSON body naming a path": (415, "Send the clip as multipart/form-data, in a field named 'clip'."),
                "no clip field": (400, "The request holds no field named 'clip'.")}
    assert (response.status, response.json["error"]) == expected.get(
        body_kind, (415, "This file could not be read as a video."))
    assert str(library).encode() not in response.body and b"/tmp" not in response.body
    assert [path.name for path in (server.uploads / "api-clips").iterdir()] == []


@pytest.mark.slow
def test_api_bodies_over_the_limit_are_refused_at_once(server):
    from transformers_tempme.search.app import MAX_UPLOAD_BYTES

    started = time.monotonic()
    headers = {"Content-Type": "multipart/form-data; boundary=x", "Content-Length": str(MAX_UPLOAD_BYTES + (1 << 20))}
    response = server.request("POST", "/api/search_like", b"--x\r\n", headers)
    assert (response.status, response.json) == (413, {"error": "Content too large."})
    response = server.request("GET", "/api/search?q=red", b"0123456789")  # a query takes no body
    assert (response.status, response.json) == (413, {"error": "Content too large."})
    assert time.monotonic() - started < 60


@pytest.mark.slow
def test_a_10_mb_query_in_the_url_is_refused_and_a_long_one_cut(server, opened):
    started = time.monotonic()
    response = server.request("GET", "/api/search?q=" + "red+" * 2_500_000)
    # uvicorn refuses a request line that long before any route: an error, or the connection closed mid-send
    assert 400 <= response.status < 500 or (response.status == 0 and b"reset" in response.body), response
    assert time.monotonic() - started < 60
    long = server.request("GET", "/api/search?" + urlencode({"q": "a red square moves " * 400, "k": 3}))  # 7.6 KB
    assert_answers_as(long, opened.search("a red square moves " * 400, k=3))
    assert len(long.json["query"]) <= 32 * opened.processor.max_words


# ------------------------------------------------------------------ many users at once, and a new generation

SEARCHES = ["red", "blue", "green", "yellow", "a red square moves from left to right", "a blue square grows",
            "a green circle moves from right to left on black background", "a yellow square shrinks", "square",
            "a red circle", "blue square moves from top to bottom", "green grows"]


@pytest.fixture(scope="module")
def busy_library(tmp_path_factory):
    root = tmp_path_factory.mktemp("busy_library")
    model_dir = save_tiny_search_model(root / "model")
    model, processor = tiny_search_model()
    VideoSearchIndex.build(make_video_folder(root / "videos"), root / "videos.index", model, processor,
                           model_info={"name_or_path": str(model_dir)}, num_workers=0, progress=False)
    (root / "tmp").mkdir()
    return root


@pytest.fixture(scope="module")
def busy_server(busy_library):
    """A server whose batches wait 300 ms for more queries, with its own private upload folder (no GRADIO_TEMP_DIR)
    in a TMPDIR of its own."""
    running = Server(busy_library, "--batch-size", "8", "--batch-wait-ms", "300",
                     env={"GRADIO_TEMP_DIR": None, "TMPDIR": str(busy_library / "tmp")})
    assert len(list((busy_library / "tmp").glob("tempme-serve-uploads-*"))) == 1
    yield running
    # SIGTERM stops it cleanly: exit code 0 and its private upload folder removed.
    assert running.close() == 0
    assert list((busy_library / "tmp").iterdir()) == []


def status_of(server: Server) -> dict:
    return server.request("GET", "/api/status").json


@pytest.mark.slow
def test_concurrent_api_queries_are_batched_and_answered_one_at_a_time(busy_server, busy_library):
    index = VideoSearchIndex.open(busy_library / "videos.index")
    with ThreadPoolExecutor(len(SEARCHES)) as clients:
        responses = list(clients.map(
            lambda query: busy_server.request("GET", "/api/search?" + urlencode({"q": query, "k": 5})), SEARCHES))
    for query, response in zip(SEARCHES, responses):
        assert_answers_as(response, index.search(query, k=5))
    counts = status_of(busy_server)["queries"]
    assert counts["largest_batch"] > 1 and counts["batches"] < len(SEARCHES)
    again = busy_server.request("GET", "/api/search?" + urlencode({"q": SEARCHES[0], "k": 5}))
    assert again.body == responses[0].body
    assert status_of(busy_server)["queries"]["cache_hits"] == counts["cache_hits"] + 1


@pytest.mark.slow
def test_the_page_is_not_served_one_query_at_a_time(busy_server):
    """Gradio runs an event one at a time unless told otherwise: the page's queries reach the engine together."""
    before = status_of(busy_server)["queries"]
    queries = [f"{colour} square {action}" for colour in ("red", "blue") for action in ("grows", "shrinks", "moves")]
    with ThreadPoolExecutor(len(queries)) as clients:
        events = list(clients.map(lambda query: busy_server.call("search", [query, 3, False]), queries))
    assert all(event == "complete" and data[0].count("class='hit'") == 3 for event, data in events)
    after = status_of(busy_server)["queries"]
    assert after["encoded"] - before["encoded"] == len(queries)
    assert after["batches"] - before["batches"] < len(queries)


@pytest.mark.slow
def test_a_new_generation_is_served_at_once(busy_server, busy_library):
    """Another process commits a new generation: the running server plays and finds its new video, no restart."""
    write_clip(busy_library / "videos" / "new" / "yellow.mp4", moving_square("yellow", 12))
    assert busy_server.request("GET", "/media/new/yellow.mp4").status == 404
    VideoSearchIndex.open(busy_library / "videos.index").update(num_workers=0, progress=False)
    media = busy_server.request("GET", "/media/new/yellow.mp4")
    assert media.status == 200 and media.body == (busy_library / "videos" / "new" / "yellow.mp4").read_bytes()
    status = status_of(busy_server)
    assert (status["generation"], status["videos"]) == (2, 6)
    hits = busy_server.request("GET", "/api/search?q=a+yellow+square&k=100").json["hits"]
    assert "new/yellow.mp4" in {hit["path"] for hit in hits}


# ------------------------------------------------------------------ the command line


@pytest.mark.parametrize(
    "bind, allowed, header, answered",
    [
        ("127.0.0.1", [], "127.0.0.1:7860", True),
        ("127.0.0.1", [], "LOCALHOST.:7860", True),
        ("127.0.0.1", [], "[::1]", True),
        ("127.0.0.1", [], "192.168.1.5", False),
        ("127.0.0.1", [], "[::1", False),
        ("127.0.0.1", [], "a.example/x", False),
        ("127.0.0.1", ["Videos.LAN:8080"], "videos.lan", True),
        ("192.168.1.5", [], "192.168.1.5:7860", True),
        ("192.168.1.5", [], "192.168.1.6:7860", False),
        ("0.0.0.0", [], "192.168.1.5:7860", True),  # every address, none of them rebindable
        ("0.0.0.0", [], "[fe80::1]:7860", True),
        ("0.0.0.0", [], "nas.lan:7860", False),  # names only when given
        ("0.0.0.0", ["nas.lan"], "nas.lan:7860", True),
        ("::", [], "evil.example", False),
    ],
)
def test_host_policy(bind, allowed, header, answered):
    from transformers_tempme.search.request_gate import HostPolicy

    assert HostPolicy.for_bind(bind, allowed).allows(header) is answered


def test_a_bad_allowed_host_is_a_usage_error(capsys):
    from transformers_tempme.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "some.index", "--allowed-host", "bad name!"])
    assert exit_info.value.code == 2 and "is not a host name" in capsys.readouterr().err


@pytest.mark.parametrize(
    "host, exposed",
    [("127.0.0.1", False), ("localhost", False), ("127.0.0.2", False), ("::1", False),
     ("0.0.0.0", True), ("::", True), ("192.168.1.5", True), ("myhost.lan", True)],
)
def test_a_host_beyond_this_machine_is_warned_about(opened, host, exposed):
    from transformers_tempme.search.app import exposure_warning

    warning = exposure_warning(host, 7860, opened, [ALLOWED_NAME])
    assert (warning is not None) == exposed
    if exposed:
        assert warning.startswith(f"warning: --host {host} serves the page on ")
        for said in ("anyone who can reach it", "play its", str(opened.video_dir), "upload clips", "no login",
                     ALLOWED_NAME, "--allowed-host", "127.0.0.1"):
            assert said in warning, said


def test_tempme_serve_prints_the_warning(library, monkeypatch, capsys):
    from transformers_tempme.cli import main
    from transformers_tempme.search import app

    served = {}
    monkeypatch.setattr(app, "serve", lambda index, **kwargs: served.update(kwargs))
    assert main(["serve", str(library / "videos.index"), "--host", "0.0.0.0", "--allowed-host", "a.lan",
                 "--allowed-host", "b.lan"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "on every address of this machine" in warnings[0] and "a.lan, b.lan" in warnings[0]
    assert served["host"] == "0.0.0.0" and served["allowed_hosts"] == ["a.lan", "b.lan"]
    assert main(["serve", str(library / "videos.index")]) == 0
    assert "warning:" not in capsys.readouterr().err and served["host"] == "127.0.0.1"


def test_tempme_search_names_the_words_the_model_does_not_know(library, capsys):
    from transformers_tempme.cli import main

    assert main(["search", str(library / "videos.index"), "a man rides a bike", "-k", "2", "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 2  # the hits, as ever
    assert [line for line in captured.err.splitlines() if line.startswith("note:")] == [
        "note: not in the model's vocabulary, so read as unknown: 'man', 'rides', 'bike'; the hits match the rest of "
        "the query.",
        "note: this model knows only these 19 words: a background black blue bottom circle from green grows left "
        "moves on red right shrinks square to top yellow",
    ]
    assert main(["search", str(library / "videos.index"), QUERY, "-k", "2"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_tempme_search_prints_one_line_per_hit(library, capsys):
    from transformers_tempme.cli import main

    assert main(["search", str(library / "videos.index"), "a yellow square", "-k", "30"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(VideoSearchIndex.open(library / "videos.index"))  # header + every segment
    assert any(line.endswith("  'new\\nline.mp4'") for line in lines)


def test_uploads_go_to_a_private_folder_removed_on_exit(monkeypatch):
    import os
    import stat

    from transformers_tempme.search.app import _private_upload_folder

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    with _private_upload_folder() as folder:
        assert os.environ["GRADIO_TEMP_DIR"] == folder
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert not Path(folder).exists() and "GRADIO_TEMP_DIR" not in os.environ
