"""Request ids (issue 14): every answer from a worker carries ``X-Request-ID``, the same id the
page reads as ``krait.request.request_id``; a client's own ``X-Request-ID`` is believed only
from a trusted proxy, and only when it looks like an id."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import websocket

from tests.conftest import write_site
from tests.integration.test_access_log_json import wait_lines

TIMEOUT = 10.0

#: A WebSocket page that answers every message with its request's id.
WS_ID = """\
import krait
from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse


class Say(WebsocketsCtrlBase):
    def __init__(self, rid):
        super().__init__(use_in_message_queue=False)
        self.rid = rid

    def on_in_message(self, message):
        self.push_out_message(self.rid)


krait.websockets.response = WebsocketsResponse(Say(krait.request.request_id))
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return write_site(tmp_path / "site", {
        "id.py": "import krait\nkrait.response = krait.Response(body=krait.request.request_id)\n",
        "boom.py": "raise RuntimeError('boom')\n",
        "stream.py": "import krait\n"
                     "krait.response = krait.Response(body=(p for p in ('a', 'b')))\n",
        "file.py": "import krait\n"
                   "krait.response = krait.FileResponse(krait.get_full_path('data.txt'))\n",
        "data.txt": "data\n",
        "ws/id.py": WS_ID,
        ".py/init.py": "from krait import config\nconfig.routes = [\n"
                       "    config.Route('WEBSOCKET', url='/ws_id', target='ws/id.py'),\n"
                       "    config.Route(),\n]\n",
    })


def test_each_request_gets_an_id_it_can_read_and_the_client_sees(site: Path,
                                                                  krait_server) -> None:
    server = krait_server(site, "--workers", "2")
    seen = set()
    for _ in range(20):
        r = requests.get(f"{server.url}/id", timeout=TIMEOUT)
        assert r.status_code == 200
        assert r.headers["X-Request-ID"] == r.text and r.text
        seen.add(r.text)
    assert len(seen) == 20
    r = requests.get(f"{server.url}/boom", timeout=TIMEOUT)
    assert r.status_code == 500 and r.headers.get("X-Request-ID") not in (None, *seen)
    for path, body in (("/stream", "ab"), ("/file", "data\n")):
        r = requests.get(f"{server.url}{path}", timeout=TIMEOUT)
        assert r.status_code == 200 and r.text == body
        assert r.headers.get("X-Request-ID") not in (None, *seen)
        seen.add(r.headers["X-Request-ID"])


def test_a_client_cannot_choose_its_id(site: Path, krait_server) -> None:
    server = krait_server(site, "--workers", "1")
    r = requests.get(f"{server.url}/id", headers={"X-Request-ID": "chosen-by-client"},
                     timeout=TIMEOUT)
    assert r.status_code == 200 and r.text != "chosen-by-client"
    assert r.headers["X-Request-ID"] == r.text


@pytest.mark.parametrize("sent, taken", [
    ("3f2b9c1e-7a4d-4c1b-9e1f-0a1b2c3d4e5f", True),
    ("abc.DEF_123:+/=", True),
    ("has space", False),
    ("x" * 129, False),
    ("<script>", False),
])
def test_a_trusted_proxy_sets_the_id(site: Path, krait_server, sent: str, taken: bool) -> None:
    server = krait_server(site, "--workers", "1", "--trusted-proxy", "127.0.0.1")
    r = requests.get(f"{server.url}/id", headers={"X-Request-ID": sent}, timeout=TIMEOUT)
    assert r.status_code == 200
    assert (r.text == sent) is taken
    assert r.headers["X-Request-ID"] == r.text


@pytest.mark.parametrize("sent, taken", [
    (None, False),
    ("3f2b9c1e-7a4d-4c1b-9e1f-0a1b2c3d4e5f", True),
    ("has space", False),
])
def test_the_websocket_101_carries_the_id(site: Path, krait_server, sent: str | None,
                                          taken: bool) -> None:
    """The core builds the 101 from the worker's answer: the id the page reads is on it, and
    it is the id of the handshake's access log line."""
    server = krait_server(site, "--workers", "1", "--trusted-proxy", "127.0.0.1",
                          "--access-log-format", "json")
    header = [f"X-Request-ID: {sent}"] if sent else []
    ws = websocket.create_connection(server.url.replace("http", "ws", 1) + "/ws_id",
                                     timeout=TIMEOUT, header=header)
    try:
        rid = ws.headers.get("x-request-id")
        ws.send("id?")
        assert ws.recv() == rid and rid
        assert (rid == sent) is taken
    finally:
        ws.close()
    (rec,) = [r for r in wait_lines(server, 1) if r["path"] == "/ws_id"]
    assert rec["status"] == 101 and rec["id"] == rid, rec
