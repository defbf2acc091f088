"""Per-request state is per context (architecture invariant 8, issue 14 bug 2), against a real
krait with one worker: alice's WebSocket controller (its own thread, and on_in_message on the
worker's reading thread) reads ``krait.request``, the cookies, ``krait.url_params`` and
``krait.websockets.request`` while mallory's HTTP requests run on the same worker's main
thread. Each must see its own request, and what a controller sets (a cookie) must never reach
mallory's response."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import requests
import websocket

from tests.conftest import KraitProcess, write_site

TIMEOUT = 10.0

INIT = '''\
from krait import config
config.routes = [
    config.Route("WEBSOCKET", regex=r"/ws/(?P<style>[a-z]+)", target="ws.py"),
    config.Route(),
]
'''

WS = '''\
import json
import threading

import krait
from krait import cookie, mvc, websockets
from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse


def seen(where):
    req = krait.request
    ws = websockets.request
    return json.dumps({
        "where": where,
        "url": req.url if req is not None else None,
        "name": req.query.get("name") if req is not None else None,
        "cookie": cookie.get_cookie("user"),
        "params": dict(krait.url_params),
        "ws_is_request": ws is not None and ws.http_request is req,
        "main": threading.current_thread() is threading.main_thread(),
        "extra": len(krait.extra_headers),
        "ctrl": mvc.curr_ctrl is not None,
    })


class Threaded(WebsocketsCtrlBase):
    def on_thread_start(self):
        while not self.should_stop():
            msg = self.pop_in_message(timeout=0.2)
            if msg == "who":
                self.push_out_message(seen("thread"))
            elif msg == "leak":
                cookie.set_cookie(cookie.Cookie("leak", "alice"))
                krait.extra_headers.append(("X-Leak", "alice"))
                krait.response = krait.Response(body="from a controller")
                self.push_out_message("leaked")


class Evented(WebsocketsCtrlBase):
    def __init__(self):
        super().__init__(use_in_message_queue=False)

    def on_in_message(self, message):
        self.push_out_message(seen("reader"))


style = krait.url_params["style"]
websockets.response = WebsocketsResponse(Threaded() if style == "thread" else Evented())
'''

PAGE = '''\
import json
import time

import krait
from krait import cookie

before = (krait.request.query.get("name"), cookie.get_cookie("user"))
time.sleep(float(krait.request.query.get("sleep", "0")))
after = (krait.request.query.get("name"), cookie.get_cookie("user"))
krait.response = krait.JsonResponse({"before": before, "after": after,
                                     "extra": krait.extra_headers})
'''


@pytest.fixture
def server(tmp_path: Path, krait_server) -> KraitProcess:
    site = write_site(tmp_path / "site", {".py/init.py": INIT, "ws.py": WS, "page.py": PAGE})
    return krait_server(site, "--workers", "1")


def _mallory(server: KraitProcess, results: list, stop: threading.Event) -> None:
    with requests.Session() as s:
        while not stop.is_set():
            r = s.get(f"{server.url}/page?name=mallory&sleep=0.05",
                      headers={"Cookie": "user=mallory"}, timeout=TIMEOUT)
            results.append((r.status_code, r.json(), r.headers.get("Set-Cookie"),
                            r.headers.get("X-Leak")))


@pytest.mark.parametrize("style", ["thread", "event"])
def test_controller_sees_its_own_handshake(server: KraitProcess, style: str) -> None:
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws/{style}?name=alice",
                                     cookie="user=alice", timeout=TIMEOUT)
    results: list = []
    stop = threading.Event()
    t = threading.Thread(target=_mallory, args=(server, results, stop))
    t.start()
    try:
        deadline = time.monotonic() + 20
        while len(results) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)  # mallory's requests are flowing through the worker
        answers = []
        for _ in range(40):
            ws.send("who")
            answers.append(json.loads(ws.recv()))
            time.sleep(0.01)
    finally:
        stop.set()
        t.join(TIMEOUT)
        ws.close()
    where = "thread" if style == "thread" else "reader"
    for got in answers:
        assert got == {"where": where, "url": f"/ws/{style}", "name": "alice",
                       "cookie": "alice", "params": {"style": style}, "ws_is_request": True,
                       "main": False, "extra": 0, "ctrl": False}, got
    assert len(results) >= 3
    for status, body, set_cookie, _ in results:
        assert status == 200
        assert body["before"] == body["after"] == ["mallory", "mallory"]
        assert set_cookie is None


def test_controller_cookies_and_response_stay_its_own(server: KraitProcess) -> None:
    """A controller thread that sets a cookie, a header and krait.response while mallory's
    requests run changes nothing in them (they used to land in whatever request ran)."""
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws/thread?name=alice",
                                     cookie="user=alice", timeout=TIMEOUT)
    results: list = []
    stop = threading.Event()
    t = threading.Thread(target=_mallory, args=(server, results, stop))
    t.start()
    try:
        deadline = time.monotonic() + 20
        while len(results) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        for _ in range(30):
            ws.send("leak")
            assert ws.recv() == "leaked"
            time.sleep(0.01)
        n = len(results)
        while len(results) < n + 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        t.join(TIMEOUT)
        ws.close()
    assert len(results) >= 5
    for status, body, set_cookie, leak in results:
        assert status == 200 and body["extra"] == [], body
        assert set_cookie is None and leak is None


def test_http_after_websocket_has_no_handshake_state(server: KraitProcess) -> None:
    """The main thread's next request starts clean: no websockets.request, no cookies of the
    handshake."""
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws/thread?name=alice",
                                     cookie="user=alice", timeout=TIMEOUT)
    try:
        r = requests.get(f"{server.url}/page?name=bob", timeout=TIMEOUT)
        assert r.status_code == 200
        assert r.json()["before"] == ["bob", None]
    finally:
        ws.close()
