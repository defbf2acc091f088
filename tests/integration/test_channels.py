"""WebSocket channels through a real krait with two workers: a controller subscribes its
connection, any code publishes (an HTTP script here), and the core delivers each message once
to every subscriber — whichever worker accepted it — text and binary, compressed for clients
that negotiated permessage-deflate; unsubscribing and closing end a subscription."""

from __future__ import annotations

import signal
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import websocket

from tests.conftest import KraitProcess, write_site
from tests.integration.test_websockets import OP_BINARY, OP_TEXT, RawWS

INIT = '''\
from krait import config

config.routes = [config.Route("WEBSOCKET", url="/ws"), config.Route("ANY")]
'''

MEMBERS = '''\
from krait.websockets import WebsocketsCtrlBase


class Member(WebsocketsCtrlBase):
    """Subscribes to the channels in ?c=a,b; a message "leave X" unsubscribes from X."""

    def __init__(self, channels):
        super().__init__()
        self.channels = channels

    def on_start(self):
        for name in self.channels:
            self.subscribe(name)
        self.push_out_message("ready")

    def on_in_message(self, message):
        if message.startswith("leave "):
            self.unsubscribe(message[6:])
            self.push_out_message("left")
'''

WS = '''\
import krait
from krait import websockets
from members import Member

names = [n for n in krait.request.query.get("c", "").split(",") if n]
websockets.response = websockets.WebsocketsResponse(Member(names))
'''

PUB = '''\
import krait
from krait import websockets

q = krait.request.query
message = q["m"].encode() if q.get("binary") else q["m"]
websockets.publish(q["c"], message)
krait.response = krait.Response(body="published")
'''

FILES = {".py/init.py": INIT, ".py/members.py": MEMBERS, "ws.py": WS, "pub.py": PUB,
         "pid.py": "import os, krait\nkrait.response = krait.Response(body=str(os.getpid()))\n"}


@pytest.fixture
def server(tmp_path: Path, krait_server) -> KraitProcess:  # noqa: ANN001
    return krait_server(write_site(tmp_path / "site", FILES), "--workers", "2")


def join(server: KraitProcess, channels: str) -> websocket.WebSocket:
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws?c={channels}",
                                     timeout=10)
    assert ws.recv() == "ready"
    return ws


def publish(server: KraitProcess, channel: str, message: str, binary: bool = False) -> None:
    params = {"c": channel, "m": message}
    if binary:
        params["binary"] = "1"
    r = requests.get(f"{server.url}/pub.py", params=params, timeout=10)
    assert r.status_code == 200 and r.text == "published"


def nothing_more(ws: websocket.WebSocket, wait: float = 0.3) -> bool:
    ws.settimeout(wait)
    try:
        ws.recv()
    except websocket.WebSocketTimeoutException:
        return True
    finally:
        ws.settimeout(10)
    return False


def test_publish_reaches_every_subscriber_once_across_workers(server: KraitProcess) -> None:
    room = [join(server, "room") for _ in range(12)]  # spread over both workers
    other = join(server, "elsewhere")
    both = join(server, "room,elsewhere")
    try:
        publish(server, "room", "hello room")
        for ws in [*room, both]:
            assert ws.recv() == "hello room"
        publish(server, "room", "caf\u00e9", binary=True)
        for ws in [*room, both]:
            assert ws.recv() == "caf\u00e9".encode()
        publish(server, "elsewhere", "over there")
        assert other.recv() == "over there" and both.recv() == "over there"
        for ws in [*room, other, both]:
            assert nothing_more(ws)  # exactly once, and only where subscribed
        publish(server, "nobody", "into the void")  # no subscriber: nothing happens
    finally:
        for ws in [*room, other, both]:
            ws.close()


def test_unsubscribe_and_close_end_a_subscription(server: KraitProcess) -> None:
    a, b = join(server, "news"), join(server, "news")
    try:
        a.send("leave news")
        assert a.recv() == "left"
        b.close()
        time.sleep(0.2)
        publish(server, "news", "extra")
        assert nothing_more(a)
        c = join(server, "news")  # a subscriber after the message never gets it
        assert nothing_more(c)
        publish(server, "news", "second")
        assert c.recv() == "second"
        c.close()
    finally:
        a.close()
    # The server is fine after publishing to connections that are gone.
    assert requests.get(f"{server.url}/pid.py", timeout=10).status_code == 200


def test_compressed_once_for_deflate_subscribers(server: KraitProcess) -> None:
    plain = join(server, "big")
    raw = RawWS(server.port, "/ws?c=big",
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n")
    try:
        assert raw.recv_frame()[3] == b"ready"
        text = "compress me " * 500
        publish(server, "big", text)
        assert plain.recv() == text
        fin, rsv, op, payload = raw.recv_frame()
        assert fin and op == OP_TEXT and rsv == 4  # sent compressed
        assert zlib.decompressobj(wbits=-15).decompress(payload + b"\x00\x00\xff\xff") \
            == text.encode()
        publish(server, "big", "tiny", binary=True)  # under 64 bytes: not compressed
        assert plain.recv() == b"tiny"
        assert raw.recv_frame() == (True, 0, OP_BINARY, b"tiny")
    finally:
        plain.close()
        raw.close()


# ---- across machines: two krait processes and a real redis-server ------------------------------


class RedisServer:
    """A redis-server of the test's own on a fixed port, which it can stop and start again."""

    def __init__(self, tmp: Path) -> None:
        import shutil
        import socket

        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.skip("redis-server is not installed (Debian package redis-server)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import socket

        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert self.proc.poll() is None, "redis-server exited"
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    pytest.importorskip("redis")
    r = RedisServer(tmp_path)
    r.start()
    try:
        yield r
    finally:
        r.stop()


def wait_log(server: KraitProcess, text: str, count: int = 1, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while server.log().count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{server.log()}"
        time.sleep(0.05)


def test_channels_across_machines_through_redis(tmp_path: Path, krait_server,  # noqa: ANN001
                                                redis_server: RedisServer) -> None:
    init = INIT + f"config.pubsub = {redis_server.url!r}\n"
    files = {**FILES, ".py/init.py": init}
    a = krait_server(write_site(tmp_path / "a", files), "--workers", "2")
    b = krait_server(write_site(tmp_path / "b", files), "--workers", "1")
    wait_log(a, "pubsub: subscribed")
    wait_log(b, "pubsub: subscribed")
    on_a = [join(a, "room") for _ in range(4)]
    on_b = [join(b, "room") for _ in range(2)]
    try:
        publish(b, "room", "from b")  # b's own locally, a's through Redis
        publish(a, "room", "from a")
        for ws in on_a + on_b:
            got = sorted([ws.recv(), ws.recv()])
            assert got == ["from a", "from b"]
            assert nothing_more(ws)  # exactly once: no echo of our own through Redis

        # Redis goes away: messages for the other machine are lost (said once in the log),
        # local delivery goes on; once it is back, the relay subscribes again.
        redis_server.stop()
        publish(a, "room", "while down")
        for ws in on_a:
            assert ws.recv() == "while down"
        for ws in on_b:
            assert nothing_more(ws)
        wait_log(a, "cannot publish to")
        redis_server.start()
        wait_log(a, "pubsub: resubscribed")
        wait_log(b, "pubsub: resubscribed")
        deadline = time.monotonic() + 10
        while True:  # a worker's publisher reconnects on its next publish
            publish(a, "room", "back")
            for ws in on_a:
                assert ws.recv() == "back"
            try:
                on_b[0].settimeout(0.5)
                assert on_b[0].recv() == "back"
                break
            except websocket.WebSocketTimeoutException:
                assert time.monotonic() < deadline, "messages do not cross again"
            finally:
                on_b[0].settimeout(10)
        assert on_b[1].recv() == "back"
    finally:
        for ws in on_a + on_b:
            ws.close()
