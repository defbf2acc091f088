"""WebSockets against a real krait process (issue 5; behaviour §12 and §16.8; architecture.md):
the controller API (websocket-client), the handshake answers, RFC 6455 framing and limits
(raw sockets, so that we control every bit), permessage-deflate (RFC 7692), how a connection
ends (client close, client gone, controller close, SIGTERM, a dying worker) and concurrency.

Every network wait has a timeout; every "eventually" is a bounded poll."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import websocket

from tests.conftest import HttpReader, KraitProcess, write_site

TIMEOUT = 10.0
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# -- the site -----------------------------------------------------------------------------------

INIT = '''\
from krait import config
config.routes = [
    config.Route("WEBSOCKET", regex=r"/ws/(?P<name>[a-z_]+)", target="ws/{name}.py"),
    config.Route(),
]
config.max_websocket_message = 12 * 1024 * 1024
'''

# Controllers record what happened to them in marks/<tag>, one line per event.
WSTOOLS = '''\
import os
import threading

import krait

_lock = threading.Lock()


def marker(tag):
    folder = os.path.join(krait.site_root, "marks")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, tag)

    def mark(text):
        with _lock, open(path, "a") as f:
            f.write(text + "\\n")
    return mark
'''

CHATROOM = '''\
import threading

lock = threading.Lock()
members = set()
'''

PROBE = '''\
import json
import os
import threading
import time

import krait
from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse
from wstools import marker


class Probe(WebsocketsCtrlBase):
    """Queue style: its thread pops messages (blocking) and runs them as commands."""

    def __init__(self, tag):
        super().__init__()
        self.mark = marker(tag)
        self.info = {"pid": os.getpid(), "main": threading.get_ident()}

    def on_start(self):
        self.info["on_start"] = threading.get_ident()
        self.mark("on_start")
        super().on_start()

    def on_thread_start(self):
        self.info["thread"] = threading.get_ident()
        self.mark("thread")
        while not self.should_stop():
            msg = self.pop_in_message(timeout=None)
            if msg is not None:
                self.run(msg)
        self.mark("thread_end")

    def run(self, msg):
        if isinstance(msg, bytes):
            self.push_out_message(msg)
            return
        cmd, _, arg = msg.partition(":")
        if cmd == "echo":
            self.push_out_message(arg)
        elif cmd == "bin":
            self.push_out_message(arg.encode())
        elif cmd == "info":
            self.push_out_message(json.dumps(self.info))
        elif cmd == "nowait":
            t = time.monotonic()
            got = self.pop_in_message()
            self.push_out_message(json.dumps([got, time.monotonic() - t]))
        elif cmd == "timeout":
            t = time.monotonic()
            got = self.pop_in_message(timeout=float(arg))
            self.push_out_message(json.dumps([got, time.monotonic() - t]))
        elif cmd == "burst":
            for i in range(int(arg)):
                self.push_out_message(str(i))
        elif cmd == "close":
            self.close(int(arg), "bye")
        elif cmd == "last":
            self.push_out_message("goodbye")
            self.close(int(arg), "done")
            self.push_out_message("too late")  # ignored: the connection has ended
        elif cmd == "exit":
            os._exit(3)
        else:
            self.push_out_message("unknown " + msg)

    def on_stop(self):
        time.sleep(self.slowstop)
        self.mark("on_stop")
        super().on_stop()


ctrl = Probe(krait.request.query.get("id", "anon"))
ctrl.slowstop = float(krait.request.query.get("slowstop", "0"))
offered = krait.websockets.request.protocols
ctrl.info["protocols"] = offered
chosen = None
if offered:
    chosen = krait.request.query.get("pick", offered[0])
krait.websockets.response = WebsocketsResponse(ctrl, chosen)
'''

EVENTS = '''\
import threading

import krait
from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse
from wstools import marker


class Events(WebsocketsCtrlBase):
    """Event style: no queue, on_in_message answers each message."""

    def __init__(self, tag):
        super().__init__(use_in_message_queue=False)
        self.mark = marker(tag)

    def on_thread_start(self):
        try:
            self.pop_in_message()
        except RuntimeError as exc:
            self.push_out_message("RuntimeError: " + str(exc))
        else:
            self.push_out_message("no error")

    def on_in_message(self, message):
        if message == "raise":
            raise ValueError("on_in_message asked to raise")
        kind = type(message).__name__
        text = message if isinstance(message, str) else message.hex()
        self.push_out_message(f"{kind} {text} {threading.current_thread().name}")

    def on_stop(self):
        self.mark("on_stop")
        super().on_stop()


krait.websockets.response = WebsocketsResponse(Events(krait.request.query.get("id", "anon")))
'''

ECHO = '''\
import krait
from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse


class Echo(WebsocketsCtrlBase):
    def __init__(self):
        super().__init__(use_in_message_queue=False)

    def on_in_message(self, message):
        self.push_out_message(message)


krait.websockets.response = WebsocketsResponse(Echo())
'''

BUSY = '''\
import time

import krait
from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse


class Busy(WebsocketsCtrlBase):
    """A controller that never rests: it spins and sleeps until the connection ends."""

    def on_thread_start(self):
        n = 0
        while not self.should_stop():
            end = time.monotonic() + 0.005
            while time.monotonic() < end:
                n += 1
            time.sleep(0.001)
            msg = self.pop_in_message()
            if msg is not None:
                self.push_out_message(f"{msg} {n}")


krait.websockets.response = WebsocketsResponse(Busy())
'''

CHAT = '''\
import chatroom
import krait
from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse


class Chat(WebsocketsCtrlBase):
    def __init__(self):
        super().__init__(use_in_message_queue=False)

    def on_start(self):
        with chatroom.lock:
            chatroom.members.add(self)
            count = len(chatroom.members)
        # Sent once this member is in the room: a client that saw it receives every
        # message sent from then on.
        self.push_out_message(f"welcome {count}")
        super().on_start()

    def on_in_message(self, message):
        with chatroom.lock:
            members = list(chatroom.members)
        for member in members:
            member.push_out_message(message)

    def on_stop(self):
        with chatroom.lock:
            chatroom.members.discard(self)
        super().on_stop()


krait.websockets.response = WebsocketsResponse(Chat())
'''

# A room that fans out with krait.websockets.broadcast and says how many it reached.
SHOUT = '''\
import threading

import krait
from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse, broadcast

room = krait.shout_room = getattr(krait, "shout_room", set())


class Shout(WebsocketsCtrlBase):
    def __init__(self):
        super().__init__(use_in_message_queue=False)

    def on_start(self):
        room.add(self)
        self.push_out_message(f"in {len(room)}")
        super().on_start()

    def on_in_message(self, message):
        if message == "bad":
            try:
                broadcast(list(room), 42)
            except TypeError as exc:
                self.push_out_message(f"TypeError {exc}")
            return
        if message == "bytes":
            message = b"\\x00\\xff"
        n = broadcast(list(room), message)
        self.push_out_message(f"sent to {n}")

    def on_stop(self):
        room.discard(self)
        super().on_stop()


krait.websockets.response = WebsocketsResponse(Shout())
'''

SLOWSTART = '''\
import time

import krait
from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse


class SlowStart(WebsocketsCtrlBase):
    """Event style with a slow on_start: messages must wait for it, in order."""

    def __init__(self):
        super().__init__(use_in_message_queue=False)
        self.started = False

    def on_start(self):
        time.sleep(0.5)
        self.started = True
        super().on_start()

    def on_in_message(self, message):
        self.push_out_message(f"{message} started={self.started}")


krait.websockets.response = WebsocketsResponse(SlowStart())
'''

BADSTART = '''\
import krait
from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse
from wstools import marker


class BadStart(WebsocketsCtrlBase):
    def __init__(self, tag):
        super().__init__()
        self.mark = marker(tag)

    def on_start(self):
        raise RuntimeError("on_start fails")

    def on_stop(self):
        self.mark("on_stop")
        super().on_stop()


krait.websockets.response = WebsocketsResponse(BadStart(krait.request.query.get("id", "anon")))
'''

FILES: dict[str, str | bytes] = {
    ".py/init.py": INIT,
    ".py/wstools.py": WSTOOLS,
    ".py/chatroom.py": CHATROOM,
    "ws/probe.py": PROBE,
    "ws/events.py": EVENTS,
    "ws/echo.py": ECHO,
    "ws/busy.py": BUSY,
    "ws/chat.py": CHAT,
    "ws/shout.py": SHOUT,
    "ws/slowstart.py": SLOWSTART,
    "ws/badstart.py": BADSTART,
    "ws/refuse.py": "import krait\nkrait.response = krait.ResponseBadRequest()\n",
    "ws/forbid.py": "import krait\nkrait.response = krait.Response(status_code=403, body='no')\n",
    "ws/ignore.py": "import krait\n",
    "ws/broken.py": "raise RuntimeError('broken handshake script')\n",
    "hello.py": "import os\nimport krait\n"
                "krait.response = krait.Response(body=f'hello {os.getpid()} '\n"
                "                                f'{krait.websockets.request!r}')\n",
    "plain.html": "<p>plain</p>\n",
}


# -- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KraitProcess]:
    """One krait with one worker for the tests that leave it healthy."""
    root = tmp_path_factory.mktemp("ws")
    site = write_site(root / "site", FILES)
    p = KraitProcess(site, ["--workers", "1"], root)
    yield p
    p.stop()


def ws_url(server: KraitProcess, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def connect(server: KraitProcess, path: str, **kw: object) -> websocket.WebSocket:
    return websocket.create_connection(ws_url(server, path), timeout=TIMEOUT, **kw)


def tag(request: pytest.FixtureRequest) -> str:
    """A marks file name unique to the test."""
    return hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:16]


def marks(server: KraitProcess, name: str) -> list[str]:
    path = server.site / "marks" / name
    return path.read_text().split() if path.exists() else []


def wait_marks(server: KraitProcess, name: str, want: str, count: int = 1,
               timeout: float = TIMEOUT) -> list[str]:
    """Wait until `want` appears `count` times; then a little longer, to catch extra ones."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = marks(server, name)
        if got.count(want) >= count:
            time.sleep(0.3)
            return marks(server, name)
        time.sleep(0.02)
    raise AssertionError(f"{want!r} not seen {count}x in marks/{name}: {marks(server, name)}")


def close_frame(ws: websocket.WebSocket) -> tuple[int | None, bytes]:
    """Read frames until the server's close frame: (code or None, reason). Does not answer."""
    while True:
        frame = ws.recv_frame()
        if frame.opcode == OP_CLOSE:
            data = frame.data
            if len(data) >= 2:
                return struct.unpack("!H", data[:2])[0], data[2:]
            return None, b""


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


class RawWS:
    """A WebSocket client on a bare socket: every header and frame bit is ours to choose."""

    def __init__(self, port: int, path: str = "/ws/echo", headers: str = "",
                 timeout: float = TIMEOUT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\n{headers}\r\n").encode())
        reader = HttpReader(self.sock, timeout)
        self.status, self.headers, _ = reader.read()
        assert self.status == 101, (self.status, self.headers)
        assert self.headers["sec-websocket-accept"] == accept_for(key)
        self.buf = reader.buf

    def close(self) -> None:
        self.sock.close()

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True, rsv: int = 0,
                   mask: bool = True) -> None:
        self.sock.sendall(self.frame(opcode, payload, fin, rsv, mask))

    @staticmethod
    def frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0,
              mask: bool = True) -> bytes:
        """The bytes of one client frame (to send several in one write, or a frame in
        pieces)."""
        head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
        n = len(payload)
        mbit = 0x80 if mask else 0
        if n < 126:
            head += bytes([mbit | n])
        elif n < 65536:
            head += bytes([mbit | 126]) + struct.pack("!H", n)
        else:
            head += bytes([mbit | 127]) + struct.pack("!Q", n)
        if mask:
            key = os.urandom(4)
            payload = bytes(b ^ key[i & 3] for i, b in enumerate(payload)) \
                if n < 4096 else _mask_fast(payload, key)
            head += key
        return head + payload

    def _need(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError(f"connection closed with {self.buf[:50]!r} buffered")
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self) -> tuple[bool, int, int, bytes]:
        """(fin, rsv, opcode, payload) of the next server frame, which must be unmasked."""
        b0, b1 = self._need(2)
        assert not b1 & 0x80, "a server frame must not be masked (RFC 6455 §5.1)"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._need(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._need(8))[0]
        return bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, self._need(n)

    def recv_close(self) -> int | None:
        """Skip to the server's close frame; returns its code."""
        while True:
            _, _, op, payload = self.recv_frame()
            if op == OP_CLOSE:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None

    def at_eof(self, timeout: float = TIMEOUT) -> bool:
        """True once the server has closed TCP (nothing more than already buffered)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def _mask_fast(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    k = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")


def raw_http(port: int, request: str, timeout: float = TIMEOUT, check_close: bool = True) \
        -> tuple[int, dict[str, str], bytes, bool]:
    """Send a request; returns (status, headers, body, whether the server then closed: waits
    up to `timeout` for that unless check_close is False)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request.encode())
        reader = HttpReader(s, timeout)
        status, headers, body = reader.read()
        if not check_close:
            return status, headers, body, False
        s.settimeout(timeout)
        try:
            closed = reader.buf == b"" and s.recv(1) == b""
        except (TimeoutError, ConnectionResetError):
            closed = False
        return status, headers, body, closed


def upgrade(path: str, *, method: str = "GET", key: str = "dGhlIHNhbXBsZSBub25jZQ==",
            version: str | None = "13", extra: str = "",
            upgrade_line: str = "Upgrade: websocket", conn_line: str = "Connection: Upgrade") \
        -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", upgrade_line, conn_line]
    if key:
        lines.append(f"Sec-WebSocket-Key: {key}")
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    return "\r\n".join(lines) + "\r\n" + extra + "\r\n"


# -- the controller API -------------------------------------------------------------------------


def test_echo_text_and_binary(server: KraitProcess) -> None:
    ws = connect(server, "/ws/probe")
    try:
        ws.send("echo:héllo wörld")
        assert ws.recv_data() == (OP_TEXT, "héllo wörld".encode())
        ws.send_binary(b"\x00\xffbinary")
        assert ws.recv_data() == (OP_BINARY, b"\x00\xffbinary")
        # push_out_message: str → text frame, bytes → binary frame.
        ws.send("bin:abc")
        assert ws.recv_data() == (OP_BINARY, b"abc")
        ws.send("echo:")
        assert ws.recv_data() == (OP_TEXT, b"")
    finally:
        ws.close()


def test_on_start_and_on_thread_start_threads(server: KraitProcess,
                                              request: pytest.FixtureRequest) -> None:
    name = tag(request)
    ws = connect(server, f"/ws/probe?id={name}")
    try:
        ws.send("info")
        info = json.loads(ws.recv())
        # on_start runs where the handshake script ran (the worker's main thread); the
        # controller's own loop runs in a thread of its own.
        assert info["on_start"] == info["main"]
        assert info["thread"] != info["main"]
        assert marks(server, name)[:2] == ["on_start", "thread"]
    finally:
        ws.close()
    got = wait_marks(server, name, "thread_end")
    assert got == ["on_start", "thread", "on_stop", "thread_end"]


def test_pop_in_message_timeouts(server: KraitProcess) -> None:
    ws = connect(server, "/ws/probe")
    try:
        # Default: does not wait.
        ws.send("nowait")
        got, elapsed = json.loads(ws.recv())
        assert got is None and elapsed < 0.1
        # timeout=…: waits that long, then None.
        ws.send("timeout:0.3")
        got, elapsed = json.loads(ws.recv())
        assert got is None and 0.29 <= elapsed < 2
        # timeout=…: returns as soon as a message arrives.
        ws.send("timeout:8")
        time.sleep(0.2)
        ws.send("hello")
        got, elapsed = json.loads(ws.recv())
        assert got == "hello" and 0.15 <= elapsed < 4
        # timeout=None (the probe's own loop) blocks until the next message.
        time.sleep(0.5)
        ws.send("echo:after a pause")
        assert ws.recv() == "after a pause"
    finally:
        ws.close()


def test_event_style_controller(server: KraitProcess, request: pytest.FixtureRequest) -> None:
    name = tag(request)
    ws = connect(server, f"/ws/events?id={name}")
    try:
        first = ws.recv()
        assert first.startswith("RuntimeError: "), first
        ws.send("hi")
        kind, text, thread = ws.recv().split(" ")
        assert (kind, text) == ("str", "hi")
        assert not thread.startswith("ws-")  # on_in_message is called by the server
        ws.send_binary(b"\x01\x02")
        assert ws.recv().split(" ")[:2] == ["bytes", "0102"]
    finally:
        ws.close()
    assert wait_marks(server, name, "on_stop") == ["on_stop"]


def test_a_burst_of_messages_is_answered_in_order(server: KraitProcess,
                                                  request: pytest.FixtureRequest) -> None:
    # Messages that reach the worker together are answered together (one send for a run of
    # them, in the worker and in the core): nothing may be lost, merged or reordered.
    sockets = [connect(server, f"/ws/events?id={tag(request)}-{k}") for k in range(4)]
    try:
        for ws in sockets:
            assert ws.recv().startswith("RuntimeError: ")
        for i in range(500):
            for k, ws in enumerate(sockets):
                ws.send(f"{k}.{i}")
        for k, ws in enumerate(sockets):
            got = [ws.recv().split(" ")[:2] for _ in range(500)]
            assert got == [["str", f"{k}.{i}"] for i in range(500)]
    finally:
        for ws in sockets:
            ws.close()


def test_on_in_message_raising_costs_that_message_only(server: KraitProcess,
                                                       request: pytest.FixtureRequest) -> None:
    # The error is printed and the run goes on: the messages around it (sent together, so
    # handed over in one run) are answered, in order, and the connection stays open.
    name = tag(request)
    ws = connect(server, f"/ws/events?id={name}")
    try:
        assert ws.recv().startswith("RuntimeError: ")
        for text in ("a", "raise", "b", "raise", "c"):
            ws.send(text)
        assert [ws.recv().split(" ")[:2] for _ in range(3)] == [
            ["str", "a"], ["str", "b"], ["str", "c"]]
        ws.send("d")
        assert ws.recv().split(" ")[:2] == ["str", "d"]
    finally:
        ws.close()
    assert wait_marks(server, name, "on_stop") == ["on_stop"]
    assert "on_in_message asked to raise" in server.log()


def test_messages_wait_for_on_start(server: KraitProcess) -> None:
    """The client may send as soon as it has the 101; nothing is lost or delivered before
    on_start has returned, and the order is kept."""
    for _ in range(3):
        ws = connect(server, "/ws/slowstart")
        try:
            for i in range(5):
                ws.send(f"m{i}")
            assert [ws.recv() for _ in range(5)] == [f"m{i} started=True" for i in range(5)]
        finally:
            ws.close()


def test_on_start_raising_closes_with_1011(server: KraitProcess,
                                           request: pytest.FixtureRequest) -> None:
    name = tag(request)
    ws = connect(server, f"/ws/badstart?id={name}")
    assert close_frame(ws)[0] == 1011
    ws.shutdown()
    assert wait_marks(server, name, "on_stop") == ["on_stop"]


def test_controller_api_without_a_connection() -> None:
    """close() checks its code and reason; the end of a connection wakes a waiting pop."""
    from krait.websockets import WebsocketsCtrlBase

    ctrl = WebsocketsCtrlBase()
    for code in (999, 1004, 1005, 1006, 1015, 2000, 5000, True):
        with pytest.raises(ValueError):
            ctrl.close(code)
    with pytest.raises(ValueError):
        ctrl.close(1000, "x" * 124)
    ctrl.close(4000, "é" * 61)  # 122 bytes: fine (and nothing to close yet)
    with pytest.raises(TypeError):
        ctrl.push_out_message(42)  # type: ignore[arg-type]
    ctrl.on_in_message("queued before the end")
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.extend(
        [ctrl.pop_in_message(timeout=None), ctrl.pop_in_message(timeout=None)]))
    waiter.start()
    time.sleep(0.2)
    ctrl._ended()
    ctrl._ended()  # once only
    waiter.join(TIMEOUT)
    assert not waiter.is_alive()
    assert got == ["queued before the end", None]
    assert ctrl.should_stop()
    assert ctrl.pop_in_message() is None and ctrl.pop_in_message(timeout=5) is None


def test_server_sends_without_a_cap(server: KraitProcess) -> None:
    """Behaviour §12.3 capped sends at one message per loop turn; ours are not capped."""
    ws = connect(server, "/ws/probe")
    try:
        t = time.monotonic()
        ws.send("burst:2000")
        got = [ws.recv() for _ in range(2000)]
        assert got == [str(i) for i in range(2000)]
        assert time.monotonic() - t < 8
    finally:
        ws.close()


def test_client_ping_gets_pong(server: KraitProcess) -> None:
    ws = connect(server, "/ws/probe")
    try:
        ws.ping(b"are you there")
        frame = ws.recv_frame()
        assert (frame.opcode, frame.data) == (OP_PONG, b"are you there")
    finally:
        ws.close()


def test_subprotocols_split_trimmed_and_echoed(server: KraitProcess) -> None:
    ws = RawWS(server.port, "/ws/probe",
               "Sec-WebSocket-Protocol: chat ,superchat,  v2.krait  ,, x\r\n")
    try:
        assert ws.headers["sec-websocket-protocol"] == "chat"
        ws.send_frame(OP_TEXT, b"info")
        _, _, op, payload = ws.recv_frame()
        assert json.loads(payload)["protocols"] == ["chat", "superchat", "v2.krait", "x"]
    finally:
        ws.close()
    # websocket-client checks the answer is one it offered.
    ws2 = connect(server, "/ws/probe?pick=b", subprotocols=["a", "b"])
    try:
        assert ws2.getsubprotocol() == "b"
    finally:
        ws2.close()
    # Nothing offered: nothing chosen, no header.
    ws3 = RawWS(server.port, "/ws/probe")
    try:
        assert "sec-websocket-protocol" not in ws3.headers
        ws3.send_frame(OP_TEXT, b"info")
        assert json.loads(ws3.recv_frame()[3])["protocols"] is None
    finally:
        ws3.close()


def test_plain_requests_see_no_websocket_request(server: KraitProcess) -> None:
    r = requests.get(f"{server.url}/hello.py", timeout=TIMEOUT)
    assert r.status_code == 200 and r.text.endswith(" None")


# -- the handshake ------------------------------------------------------------------------------


def test_refused_with_a_response(server: KraitProcess) -> None:
    status, _, _, closed = raw_http(server.port, upgrade("/ws/refuse"))
    assert status == 400 and closed
    status, _, body, closed = raw_http(server.port, upgrade("/ws/forbid"))
    assert (status, body, closed) == (403, b"no", True)


def test_no_websockets_response_is_400(server: KraitProcess) -> None:
    status, _, _, closed = raw_http(server.port, upgrade("/ws/ignore"))
    assert status == 400 and closed


def test_broken_handshake_script_is_500(server: KraitProcess) -> None:
    status, _, _, closed = raw_http(server.port, upgrade("/ws/broken"))
    assert status == 500 and closed


def test_wrong_version_is_426(server: KraitProcess) -> None:
    for version in ("8", "14", None):
        status, headers, _, closed = raw_http(server.port, upgrade("/ws/echo", version=version))
        assert status == 426 and closed, version
        assert headers["sec-websocket-version"] == "13"


@pytest.mark.parametrize("key", ["", "abc", "dGhlIHNhbXBsZSBub25jZQ=", "dGhlIHNhbXBsZSBub25jZQ==x",
                                 "dGhlIHNhbXBsZSBub25j*Q==", "dGhlIHNhbXBsZSBub25jZSE="])
def test_bad_or_missing_key_is_400(server: KraitProcess, key: str) -> None:
    status, _, _, closed = raw_http(server.port, upgrade("/ws/echo", key=key))
    assert status == 400 and closed


def test_post_upgrade_is_400(server: KraitProcess) -> None:
    status, _, _, closed = raw_http(server.port, upgrade("/ws/echo", method="POST"))
    assert status == 400 and closed
    status, _, _, closed = raw_http(
        server.port, upgrade("/ws/echo", method="POST", extra="Content-Length: 2\r\n") + "hi")
    assert status == 400 and closed


@pytest.mark.parametrize("path", ["/plain.html", "/hello.py", "/nothing/here"])
def test_upgrade_without_a_websocket_route(server: KraitProcess, path: str) -> None:
    # A plain HTTP answer: the stream state is known (no body), so keep-alive may go on.
    status, headers, _, _ = raw_http(server.port, upgrade(path), check_close=False)
    assert status in (404, 405)
    if status == 405:
        assert "GET" in headers["allow"]


def test_upgrade_and_connection_are_case_insensitive(server: KraitProcess) -> None:
    request = upgrade("/ws/echo", upgrade_line="upgrade: WebSocket",
                      conn_line="connection: keep-alive, UPGRADE")
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as s:
        s.sendall(request.encode())
        status, headers, _ = HttpReader(s, TIMEOUT).read()
    assert status == 101
    assert headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3
    assert headers["upgrade"].lower() == "websocket"
    assert "upgrade" in headers["connection"].lower()


# -- how a connection ends ----------------------------------------------------------------------


def test_client_close_frame(server: KraitProcess, request: pytest.FixtureRequest) -> None:
    name = tag(request)
    ws = connect(server, f"/ws/probe?id={name}")
    ws.send_close(4001, b"done")
    assert close_frame(ws) == (4001, b"")  # the server echoes the code (RFC 6455 §5.5.1)
    ws.shutdown()
    got = wait_marks(server, name, "thread_end")
    assert got.count("on_stop") == 1 and got[-1] == "thread_end"


def test_client_close_without_code(server: KraitProcess, request: pytest.FixtureRequest) -> None:
    name = tag(request)
    ws = RawWS(server.port, f"/ws/probe?id={name}")
    ws.send_frame(OP_CLOSE, b"")
    assert ws.recv_close() is None
    assert ws.at_eof()
    ws.close()
    assert wait_marks(server, name, "on_stop").count("on_stop") == 1


def test_client_vanishes(server: KraitProcess, request: pytest.FixtureRequest) -> None:
    name = tag(request)
    ws = connect(server, f"/ws/probe?id={name}")
    ws.send("echo:x")
    assert ws.recv() == "x"
    ws.sock.close()  # no close frame, no goodbye
    got = wait_marks(server, name, "thread_end")
    assert got.count("on_stop") == 1


def test_client_vanishes_with_reset(server: KraitProcess, request: pytest.FixtureRequest) -> None:
    name = tag(request)
    ws = connect(server, f"/ws/probe?id={name}")
    ws.send("echo:x")
    assert ws.recv() == "x"
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.sock.close()  # RST
    assert wait_marks(server, name, "on_stop").count("on_stop") == 1


def test_controller_closes(server: KraitProcess, request: pytest.FixtureRequest) -> None:
    name = tag(request)
    ws = connect(server, f"/ws/probe?id={name}")
    ws.send("close:4002")
    assert close_frame(ws) == (4002, b"bye")
    ws.shutdown()
    got = wait_marks(server, name, "thread_end")
    assert got.count("on_stop") == 1


def test_controller_sends_then_closes(server: KraitProcess) -> None:
    ws = connect(server, "/ws/probe")
    ws.send("last:1000")
    assert ws.recv_data() == (OP_TEXT, b"goodbye")
    assert close_frame(ws) == (1000, b"done")
    ws.shutdown()


def test_clean_close_waits_for_the_client(server: KraitProcess) -> None:
    """A close krait starts: close frame and FIN, then it still reads, so the client's close
    frame is taken, not answered with a reset (RFC 6455 §7.1.1: the server closes first)."""
    ws = RawWS(server.port, "/ws/probe")
    ws.send_frame(OP_TEXT, b"close:4004")
    assert ws.recv_close() == 4004
    # A socket already closed would answer this with a reset, and the next send would fail.
    ws.send_frame(OP_PING, b"late")
    time.sleep(0.3)
    ws.send_frame(OP_CLOSE, struct.pack("!H", 4004))
    ws.sock.settimeout(TIMEOUT)
    assert ws.sock.recv(1) == b""  # EOF, not ConnectionResetError
    ws.close()


def test_sigterm_closes_with_1001(tmp_path: Path, krait_server: Callable[..., KraitProcess],
                                  request: pytest.FixtureRequest) -> None:
    site = write_site(tmp_path / "site", FILES)
    p = krait_server(site, "--workers", "1")
    name = tag(request)
    ws = connect(p, f"/ws/probe?id={name}")
    ws.send("echo:x")
    assert ws.recv() == "x"
    p.proc.send_signal(signal.SIGTERM)
    assert close_frame(ws)[0] == 1001
    ws.shutdown()
    p.proc.wait(timeout=20)
    assert p.proc.returncode == 0
    got = marks(p, name)
    assert got.count("on_stop") == 1, got


def test_sigterm_waits_for_an_on_stop_already_running(
        tmp_path: Path, krait_server: Callable[..., KraitProcess],
        request: pytest.FixtureRequest) -> None:
    # The client leaves; its on_stop takes a while; krait is stopped meanwhile. The worker must
    # not exit in the middle of that on_stop (nor run it twice).
    site = write_site(tmp_path / "site", FILES)
    p = krait_server(site, "--workers", "1")
    name = tag(request)
    ws = connect(p, f"/ws/probe?id={name}&slowstop=0.8")
    ws.send("echo:x")
    assert ws.recv() == "x"
    ws.close()
    time.sleep(0.2)                          # on_stop has started and sleeps
    p.proc.send_signal(signal.SIGTERM)
    p.proc.wait(timeout=20)
    assert p.proc.returncode == 0
    assert marks(p, name).count("on_stop") == 1


def test_reload_closes_with_1001_and_new_connections_work(
        tmp_path: Path, krait_server: Callable[..., KraitProcess]) -> None:
    site = write_site(tmp_path / "site", FILES)
    p = krait_server(site, "--workers", "1")
    ws = connect(p, "/ws/probe")
    ws.send("echo:before")
    assert ws.recv() == "before"
    p.proc.send_signal(signal.SIGHUP)
    # The retired worker's connections are told the server is going away: reconnect.
    assert close_frame(ws)[0] == 1001
    ws.shutdown()
    again = connect(p, "/ws/probe")
    again.send("echo:after")
    assert again.recv() == "after"
    again.close()


def test_dying_worker_closes_with_1011(tmp_path: Path,
                                       krait_server: Callable[..., KraitProcess]) -> None:
    site = write_site(tmp_path / "site", FILES)
    p = krait_server(site, "--workers", "1")
    other = connect(p, "/ws/probe")
    ws = connect(p, "/ws/probe")
    ws.send("exit")
    assert close_frame(ws)[0] == 1011
    assert close_frame(other)[0] == 1011  # every connection that worker hosted
    ws.shutdown()
    other.shutdown()
    # A replacement worker takes new connections.
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            again = connect(p, "/ws/probe")
            break
        except (websocket.WebSocketException, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    again.send("echo:back")
    assert again.recv() == "back"
    again.close()


def wss_server(tmp_path: Path, krait_server: Callable[..., KraitProcess]
               ) -> tuple[int, ssl.SSLContext]:
    """The test site over HTTPS too (one worker, a throwaway self-signed certificate): its
    HTTPS port, and a client context that trusts the certificate."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", "key.pem", "-out",
                    "cert.pem", "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1"], cwd=tmp_path, check=True,
                   capture_output=True, timeout=60)
    files = dict(FILES)
    files[".py/init.py"] = INIT + (
        f"config.ssl_certificate_path = {str(tmp_path / 'cert.pem')!r}\n"
        f"config.ssl_private_key_path = {str(tmp_path / 'key.pem')!r}\n")
    p = krait_server(write_site(tmp_path / "site", files), "--workers", "1",
                     "--https-port", "0")
    port = int(re.search(r"https://127\.0\.0\.1:(\d+)/", p.log()).group(1))
    return port, ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))


def test_wss(tmp_path: Path, krait_server: Callable[..., KraitProcess]) -> None:
    port, ctx = wss_server(tmp_path, krait_server)
    ws = websocket.create_connection(f"wss://127.0.0.1:{port}/ws/probe", timeout=TIMEOUT,
                                     sslopt={"context": ctx})
    try:
        ws.send("echo:secure")
        assert ws.recv() == "secure"
        big = os.urandom(3 * 1024 * 1024)
        ws.send_binary(big)
        assert ws.recv() == big
        ws.send("close:4003")
        assert close_frame(ws) == (4003, b"bye")
    finally:
        ws.shutdown()


def test_wss_message_completed_from_tls_read_ahead_goes_out_at_once(
        tmp_path: Path, krait_server: Callable[..., KraitProcess]) -> None:
    # A message larger than one turn's reads is completed from what OpenSSL read ahead, after
    # the event batch; it used to reach the worker only at the next turn of the loop. A loop
    # sleeps until its next timer, here the WebSocket ping 30 s away, so such a message would
    # wait that long: the receive timeout (TIMEOUT, 10 s) catches it. Not a performance
    # figure: an echo takes 0.02-0.2 s, up to a second on a loaded machine.
    port, ctx = wss_server(tmp_path, krait_server)
    ws = websocket.create_connection(f"wss://127.0.0.1:{port}/ws/events?id=readahead",
                                     timeout=TIMEOUT, sslopt={"context": ctx})
    try:
        assert ws.recv().startswith("RuntimeError: ")
        for i, size in enumerate((100_000, 300_000, 1_000_000) * 5):
            message = f"{i:02d}" + "y" * size
            ws.send(message)
            assert ws.recv().split(" ")[:2] == ["str", message]
    finally:
        ws.shutdown()


# -- framing and limits (raw) ---------------------------------------------------------------------


def test_ten_mib_message(server: KraitProcess) -> None:
    data = os.urandom(10 * 1024 * 1024)
    ws = connect(server, "/ws/echo")
    try:
        ws.send_binary(data)
        op, got = ws.recv_data()
        assert op == OP_BINARY and got == data
        text = "é" * (5 * 1024 * 1024)  # 10 MiB of UTF-8
        ws.send(text)
        assert ws.recv() == text
    finally:
        ws.close()


@pytest.mark.parametrize("size", [125, 126, 65535, 65536, 70000])
def test_length_encodings(server: KraitProcess, size: int) -> None:
    """7-, 16- and 64-bit lengths both ways, at their boundaries (RFC 6455 §5.2)."""
    ws = RawWS(server.port)
    try:
        payload = os.urandom(size)
        ws.send_frame(OP_BINARY, payload)
        fin, rsv, op, got = ws.recv_frame()
        assert (fin, rsv, op, got) == (True, 0, OP_BINARY, payload)
    finally:
        ws.close()


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KraitProcess]:
    """A krait whose WebSocket messages are limited to 1000 bytes."""
    root = tmp_path_factory.mktemp("wssmall")
    files = dict(FILES)
    files[".py/init.py"] = INIT.replace("12 * 1024 * 1024", "1000")
    p = KraitProcess(write_site(root / "site", files), ["--workers", "1"], root)
    yield p
    p.stop()


def test_message_over_the_limit_is_1009(small_server: KraitProcess) -> None:
    ws = RawWS(small_server.port)
    ws.send_frame(OP_BINARY, b"x" * 1000)
    assert ws.recv_frame()[3] == b"x" * 1000  # at the limit: fine
    ws.send_frame(OP_BINARY, b"x" * 1001)
    assert ws.recv_close() == 1009
    assert ws.at_eof()
    ws.close()
    # The same through fragments that are each small.
    ws = RawWS(small_server.port)
    ws.send_frame(OP_TEXT, b"a" * 600, fin=False)
    ws.send_frame(OP_CONT, b"a" * 600)
    assert ws.recv_close() == 1009
    ws.close()
    # websocket-client sees the code too.
    wc = connect(small_server, "/ws/echo")
    wc.send("y" * 5000)
    assert close_frame(wc)[0] == 1009
    wc.shutdown()


def test_invalid_utf8_is_1007(server: KraitProcess) -> None:
    for frames in ([(OP_TEXT, b"caf\xc3", True)],
                   [(OP_TEXT, b"\xed\xa0\x80", True)],  # a surrogate
                   [(OP_TEXT, b"ok \xce", False), (OP_CONT, b"\xba\xe1\xbd\xb9\xff", True)]):
        ws = RawWS(server.port)
        for op, payload, fin in frames:
            ws.send_frame(op, payload, fin=fin)
        assert ws.recv_close() == 1007
        assert ws.at_eof()
        ws.close()
    # A character split across fragments is fine.
    ws = RawWS(server.port)
    ws.send_frame(OP_TEXT, b"\xce", fin=False)
    ws.send_frame(OP_CONT, b"\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5")
    assert ws.recv_frame()[2:] == (OP_TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5")
    ws.close()


def test_unmasked_frame_is_1002(server: KraitProcess) -> None:
    ws = RawWS(server.port)
    ws.send_frame(OP_TEXT, b"hello", mask=False)
    assert ws.recv_close() == 1002
    assert ws.at_eof()
    ws.close()


@pytest.mark.parametrize("frames", [
    [(OP_TEXT, b"x", True, 0x4)],           # RSV1 without an extension
    [(0x3, b"", True, 0)],                   # reserved opcode
    [(OP_PING, b"p", False, 0)],             # fragmented control frame
    [(OP_PING, b"p" * 126, True, 0)],        # control frame over 125 bytes
    [(OP_CONT, b"x", True, 0)],              # nothing to continue
    [(OP_TEXT, b"a", False, 0), (OP_TEXT, b"b", True, 0)],  # new message inside one
    [(OP_CLOSE, b"\x03", True, 0)],          # a 1-byte close payload
    [(OP_CLOSE, b"\x03\xed", True, 0)],      # close code 1005 must not be sent
], ids=["rsv1", "opcode3", "fragmented-ping", "long-ping", "bare-cont", "nested", "close-1b",
        "close-1005"])
def test_protocol_errors_are_1002(server: KraitProcess,
                                  frames: list[tuple[int, bytes, bool, int]]) -> None:
    ws = RawWS(server.port)
    for op, payload, fin, rsv in frames:
        ws.send_frame(op, payload, fin=fin, rsv=rsv)
    assert ws.recv_close() == 1002
    assert ws.at_eof()
    ws.close()


def test_invalid_utf8_fails_before_the_frame_is_complete(server: KraitProcess) -> None:
    """RFC 6455 §8.1: invalid text fails the connection as soon as it arrives, even inside a
    frame whose payload has not all come yet (Autobahn 6.4.3, 6.4.4)."""
    for first, frame_op, piece in (
            (None, OP_TEXT, b"caf\xc3\xa9 \xce\xba\xff"),            # one frame, cut short
            (None, OP_TEXT, b"\xed\xa0"),                               # a surrogate begins
            ((OP_TEXT, b"ok \xce"), OP_CONT, b"\xba\xe1\xbd\xb9\xc0")):  # in a continuation
        ws = RawWS(server.port)
        if first:
            ws.send_frame(first[0], first[1], fin=False)
        whole = RawWS.frame(frame_op, piece + b"x" * 200)
        sent = len(whole) - 200  # the head and the piece; the other 200 bytes never come
        ws.sock.sendall(whole[:sent])
        started = time.monotonic()
        assert ws.recv_close() == 1007
        assert time.monotonic() - started < 2.0
        assert ws.at_eof()
        ws.close()
    # A valid beginning waits for the rest, then is echoed.
    ws = RawWS(server.port)
    try:
        whole = RawWS.frame(OP_TEXT, "κόσμε".encode() * 3)
        ws.sock.sendall(whole[:9])
        time.sleep(0.2)
        ws.sock.sendall(whole[9:])
        assert ws.recv_frame() == (True, 0, OP_TEXT, "κόσμε".encode() * 3)
    finally:
        ws.close()


@pytest.mark.parametrize("bad", [
    RawWS.frame(OP_TEXT, b"Hello", rsv=2),             # Autobahn 3.2
    RawWS.frame(0x3, b"reserved"),                     # 4.1.x
    RawWS.frame(0xB, b""),                             # 4.2.x
    RawWS.frame(OP_CONT, b"nothing to continue"),      # 5.15
    RawWS.frame(OP_TEXT, b"bad \xff utf-8"),           # 1007
    RawWS.frame(OP_TEXT, b"x", mask=False),            # unmasked
], ids=["rsv", "opcode3", "opcode11", "bare-cont", "utf8", "unmasked"])
def test_echoes_before_a_bad_frame_come_before_the_close(server: KraitProcess,
                                                         bad: bytes) -> None:
    """Messages that came before a frame that fails the connection are still answered, and
    those answers reach the client before the close frame; nothing after the bad frame (the
    ping) is answered. All of it arrives in one write, as in Autobahn 3.2-3.4, 4.x, 5.15."""
    ws = RawWS(server.port)
    try:
        ws.sock.sendall(RawWS.frame(OP_TEXT, b"first") + RawWS.frame(OP_BINARY, b"\x00second")
                        + bad + RawWS.frame(OP_PING, b"after") + RawWS.frame(OP_TEXT, b"after"))
        assert ws.recv_frame() == (True, 0, OP_TEXT, b"first")
        assert ws.recv_frame() == (True, 0, OP_BINARY, b"\x00second")
        fin, _, op, payload = ws.recv_frame()
        assert op == OP_CLOSE and struct.unpack("!H", payload)[0] in (1002, 1007)
        assert ws.at_eof()
    finally:
        ws.close()


def test_echoes_before_a_close_frame_come_before_the_answer(server: KraitProcess) -> None:
    ws = RawWS(server.port)
    try:
        ws.sock.sendall(RawWS.frame(OP_TEXT, b"a" * 70000) + RawWS.frame(OP_TEXT, b"last")
                        + RawWS.frame(OP_CLOSE, struct.pack("!H", 1000))
                        + RawWS.frame(OP_PING, b"after the close"))
        assert ws.recv_frame() == (True, 0, OP_TEXT, b"a" * 70000)
        assert ws.recv_frame() == (True, 0, OP_TEXT, b"last")
        assert ws.recv_close() == 1000
        assert ws.at_eof()
    finally:
        ws.close()


SLOWSTOP = '''\
import time

import krait
from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse


class SlowStop(WebsocketsCtrlBase):
    def __init__(self, delay):
        super().__init__(use_in_message_queue=False)
        self.delay = delay

    def on_in_message(self, message):
        self.push_out_message(message)

    def on_stop(self):
        self.push_out_message("bye")
        time.sleep(self.delay)
        super().on_stop()


krait.websockets.response = WebsocketsResponse(
    SlowStop(float(krait.request.query.get("delay", "0"))))
'''


def test_close_waits_for_the_worker_at_most_a_second(tmp_path: Path,
                                                     krait_server: Callable[..., KraitProcess]
                                                     ) -> None:
    """The core's close frame waits for the worker's answer (its WS_CLOSE once on_stop has
    returned), so what on_stop sends goes first; but at most 1 s: a controller whose on_stop
    takes longer does not hold the client, and what it sends after that is dropped."""
    files = dict(FILES)
    files["ws/slowstop.py"] = SLOWSTOP
    server = krait_server(write_site(tmp_path / "site", files), "--workers", "1")
    for delay, want in ((0, [b"hi", b"bye"]), (2.5, [b"hi"])):
        ws = RawWS(server.port, f"/ws/slowstop?delay={delay}")
        try:
            ws.sock.sendall(RawWS.frame(OP_TEXT, b"hi") + RawWS.frame(OP_TEXT, b"\xc0"))
            started = time.monotonic()
            for text in want:
                assert ws.recv_frame() == (True, 0, OP_TEXT, text)
            assert ws.recv_close() == 1007
            took = time.monotonic() - started
            assert (0.8 < took < 2.0) if delay else took < 0.8
            assert ws.at_eof()
        finally:
            ws.close()


def test_fragments_with_a_ping_between(server: KraitProcess) -> None:
    ws = RawWS(server.port)
    try:
        ws.send_frame(OP_TEXT, b"Hel", fin=False)
        ws.send_frame(OP_PING, b"between")
        ws.send_frame(OP_CONT, b"lo, ", fin=False)
        ws.send_frame(OP_PONG, b"unsolicited")  # ignored (RFC 6455 §5.5.3)
        ws.send_frame(OP_CONT, b"world")
        assert ws.recv_frame() == (True, 0, OP_PONG, b"between")
        assert ws.recv_frame() == (True, 0, OP_TEXT, b"Hello, world")
        # Binary, fragmented, empty fragments included.
        ws.send_frame(OP_BINARY, b"", fin=False)
        ws.send_frame(OP_CONT, b"\x00\x01", fin=False)
        ws.send_frame(OP_CONT, b"")
        assert ws.recv_frame() == (True, 0, OP_BINARY, b"\x00\x01")
    finally:
        ws.close()


def test_frames_split_into_single_bytes(server: KraitProcess) -> None:
    ws = RawWS(server.port)
    try:
        key = b"\x01\x02\x03\x04"
        payload = bytes(b ^ key[i & 3] for i, b in enumerate(b"slowly"))
        for byte in bytes([0x81, 0x80 | 6]) + key + payload:
            ws.sock.sendall(bytes([byte]))
            time.sleep(0.002)
        assert ws.recv_frame() == (True, 0, OP_TEXT, b"slowly")
    finally:
        ws.close()


PING_INIT = INIT + "config.websocket_ping_interval = 0.4\n"


def test_server_pings_idle_connections(tmp_path: Path,
                                       krait_server: Callable[..., KraitProcess]) -> None:
    files = dict(FILES)
    files[".py/init.py"] = PING_INIT
    p = krait_server(write_site(tmp_path / "site", files), "--workers", "1")
    ws = RawWS(p.port)
    try:
        # Idle: the core pings; answering keeps the connection open.
        for _ in range(3):
            t = time.monotonic()
            fin, _, op, payload = ws.recv_frame()
            assert op == OP_PING and fin
            assert time.monotonic() - t < 3
            ws.send_frame(OP_PONG, payload)
        ws.send_frame(OP_TEXT, b"still here")
        frame = ws.recv_frame()
        while frame[2] == OP_PING:
            ws.send_frame(OP_PONG, frame[3])
            frame = ws.recv_frame()
        assert frame == (True, 0, OP_TEXT, b"still here")
        # Unanswered: the connection is dropped one interval later.
        assert ws.recv_frame()[2] == OP_PING
        assert ws.at_eof(timeout=5)
    finally:
        ws.close()


def test_permessage_deflate(server: KraitProcess) -> None:
    ws = RawWS(server.port, "/ws/echo",
               "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n")
    try:
        ext = ws.headers["sec-websocket-extensions"]
        assert ext.split(";")[0].strip() == "permessage-deflate"
        params = {p.strip().split("=")[0] for p in ext.split(";")[1:]}
        assert params <= {"server_no_context_takeover", "client_no_context_takeover",
                          "server_max_window_bits", "client_max_window_bits"}
        for text in ("hello krait! " * 300, "é€ short", "x" * 70000):
            comp = zlib.compressobj(wbits=-15)
            data = comp.compress(text.encode()) + comp.flush(zlib.Z_SYNC_FLUSH)
            assert data.endswith(b"\x00\x00\xff\xff")
            ws.send_frame(OP_TEXT, data[:-4], rsv=0x4)
            fin, rsv, op, payload = ws.recv_frame()
            assert fin and op == OP_TEXT and rsv in (0, 4)
            if rsv:
                payload = zlib.decompressobj(wbits=-15).decompress(payload + b"\x00\x00\xff\xff")
            assert payload.decode() == text
        # An uncompressed message on the same connection (RSV1 clear) is fine too.
        ws.send_frame(OP_BINARY, b"\x00plain")
        fin, rsv, op, payload = ws.recv_frame()
        if rsv:
            payload = zlib.decompressobj(wbits=-15).decompress(payload + b"\x00\x00\xff\xff")
        assert (op, payload) == (OP_BINARY, b"\x00plain")
        # A compressed message in two fragments: RSV1 on the first only (RFC 7692 §6.1).
        comp = zlib.compressobj(wbits=-15)
        data = (comp.compress(b"fragmented " * 50) + comp.flush(zlib.Z_SYNC_FLUSH))[:-4]
        ws.send_frame(OP_TEXT, data[:10], fin=False, rsv=0x4)
        ws.send_frame(OP_CONT, data[10:])
        fin, rsv, op, payload = ws.recv_frame()
        if rsv:
            payload = zlib.decompressobj(wbits=-15).decompress(payload + b"\x00\x00\xff\xff")
        assert payload == b"fragmented " * 50
    finally:
        ws.close()


def test_deflate_not_negotiated_unless_offered(server: KraitProcess) -> None:
    ws = RawWS(server.port)
    try:
        assert "sec-websocket-extensions" not in ws.headers
        ws.send_frame(OP_TEXT, b"x", rsv=0x4)
        assert ws.recv_close() == 1002
    finally:
        ws.close()


def test_deflate_bomb_is_1009(small_server: KraitProcess) -> None:
    ws = RawWS(small_server.port, "/ws/echo",
               "Sec-WebSocket-Extensions: permessage-deflate\r\n")
    comp = zlib.compressobj(wbits=-15)
    data = (comp.compress(b"\x00" * 100000) + comp.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert len(data) < 1000
    ws.send_frame(OP_BINARY, data, rsv=0x4)
    assert ws.recv_close() == 1009
    ws.close()


# -- concurrency ----------------------------------------------------------------------------------


def test_hundred_concurrent_connections(server: KraitProcess) -> None:
    n = 100
    clients = [connect(server, f"/ws/{'probe' if i % 2 else 'echo'}") for i in range(n)]
    try:
        barrier = threading.Barrier(n, timeout=TIMEOUT)

        def talk(i: int) -> list[str]:
            ws = clients[i]
            barrier.wait()
            got = []
            for k in range(5):
                msg = f"{i}-{k}"
                ws.send(f"echo:{msg}" if i % 2 else msg)
                got.append(ws.recv())
            return got

        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(talk, range(n)))
        assert results == [[f"{i}-{k}" for k in range(5)] for i in range(n)]
    finally:
        for ws in clients:
            ws.close()


def test_many_controller_threads_sending_at_once(server: KraitProcess) -> None:
    # Controller threads of one worker that send at the same time share the socket to the
    # core (one thread writes what the others queued meanwhile): nothing may be lost,
    # duplicated or reordered within a connection, and the main thread still answers HTTP.
    n, count = 20, 1000
    clients = [connect(server, "/ws/probe") for _ in range(n)]
    try:
        barrier = threading.Barrier(n + 1, timeout=TIMEOUT)

        def burst(i: int) -> list[str]:
            ws = clients[i]
            barrier.wait()
            ws.send(f"burst:{count}")
            return [ws.recv() for _ in range(count)]

        with ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(burst, i) for i in range(n)]
            barrier.wait()
            pages = [requests.get(f"{server.url}/hello.py", timeout=TIMEOUT).status_code
                     for _ in range(20)]
            results = [f.result(timeout=60) for f in futures]
        assert results == [[str(k) for k in range(count)]] * n
        assert set(pages) == {200}
    finally:
        for ws in clients:
            ws.close()


def test_http_served_while_controllers_run(server: KraitProcess) -> None:
    """One worker: its controller threads spin, and its main thread still answers HTTP."""
    busy = [connect(server, "/ws/busy") for _ in range(3)]
    probe = connect(server, "/ws/probe")
    try:
        probe.send("info")
        pid = json.loads(probe.recv())["pid"]
        with requests.Session() as s:
            for i in range(20):
                t = time.monotonic()
                r = s.get(f"{server.url}/hello.py", timeout=TIMEOUT)
                assert r.status_code == 200 and r.text.split()[1] == str(pid)
                assert time.monotonic() - t < 2
                busy[i % 3].send(f"m{i}")
                assert busy[i % 3].recv().startswith(f"m{i} ")
    finally:
        for ws in [*busy, probe]:
            ws.close()


def test_broadcast_reaches_every_open_connection(server: KraitProcess) -> None:
    clients = []
    for k in range(5):
        ws = connect(server, "/ws/shout")
        assert ws.recv() == f"in {k + 1}"
        clients.append(ws)
    try:
        clients[0].send("hello all")
        assert [ws.recv() for ws in clients] == ["hello all"] * 5
        assert clients[0].recv() == "sent to 5"
        clients[2].send("bytes")
        for ws in clients:
            opcode, data = ws.recv_data()
            assert (opcode, data) == (OP_BINARY, b"\x00\xff")
        assert clients[2].recv() == "sent to 5"
        clients[1].send("bad")
        assert clients[1].recv() == "TypeError a WebSocket message is str or bytes"
        clients.pop().close()
        # The closed one leaves the room (on_stop); until then broadcast skips it.
        deadline = time.monotonic() + TIMEOUT
        while True:
            clients[0].send("again")
            assert [ws.recv() for ws in clients] == ["again"] * 4
            reply = clients[0].recv()
            if reply == "sent to 4" or time.monotonic() > deadline:
                break
        assert reply == "sent to 4"
    finally:
        for ws in clients:
            ws.close()


def test_broadcast_chat(server: KraitProcess) -> None:
    n = 20
    clients = []
    try:
        for _ in range(n):
            ws = connect(server, "/ws/chat")
            assert ws.recv().startswith("welcome ")
            clients.append(ws)
        for i, ws in enumerate(clients):
            ws.send(f"from {i}")
        for ws in clients:
            got = sorted(ws.recv() for _ in range(n))
            assert got == sorted(f"from {i}" for i in range(n))
    finally:
        for ws in clients:
            ws.close()
