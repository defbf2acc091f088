"""The metrics listener (``--metrics ADDR:PORT``, ``config.metrics``): ``GET /metrics`` in the
Prometheus text exposition format (0.0.4) and ``GET /healthz`` for load balancers, on a
socket of its own, never the site's.

It is a small HTTP/1.1 server in one thread of the master (docs/design.md, "Metrics"): one
request per connection (``Connection: close``), a request head of at most 8 KiB, a few
seconds to send it, at most :data:`MAX_CLIENTS` connections at once (a newcomer beyond them
replaces the oldest, so idle connections cannot keep a health check out). A scrape reads
every counter of the core in one call (:meth:`Server.stats`: relaxed atomic loads summed over
the loops, no lock, the GIL released) and the worker restarts the supervisor counts, then
renders a page of text: well under a millisecond.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from krait._core import Server, lib

#: The longest request head taken (request line and headers).
MAX_HEAD = 8192
#: Seconds a client has to send its whole request head, and to take the answer.
CLIENT_TIMEOUT = 5.0
#: Connections held at once; a newcomer beyond them replaces the oldest.
MAX_CLIENTS = 256
#: The causes of a worker restart, as the ``cause`` label of ``krait_worker_restarts_total``.
RESTART_CAUSES = ("crash", "timeout", "recycle", "memory", "reload")
#: Route kinds, in the order of the core's KRAIT_KIND_* constants.
KINDS = ("static", "python", "websocket")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def parse_address(spec: object) -> tuple[str, int]:
    """``"127.0.0.1:9100"``, ``"[::1]:9100"``, ``":9100"`` (every interface) or
    ``"localhost:9100"`` as (host, port).

    :raises ValueError: for anything else (no port, a port out of 0-65535, a bare IPv6
        address without brackets).
    """
    if not isinstance(spec, str):
        raise ValueError(f"{spec!r} is not ADDR:PORT")
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{spec!r} is not ADDR:PORT (e.g. 127.0.0.1:9100)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host or ":" not in host:
            raise ValueError(f"{spec!r}: brackets are for an IPv6 address")
    elif ":" in host:
        raise ValueError(f"{spec!r}: write an IPv6 address in brackets, [::1]:9100")
    if any(c.isspace() for c in host):
        raise ValueError(f"{spec!r} is not ADDR:PORT")
    return host, int(port)


class Restarts:
    """Worker restarts by cause, counted by the supervisor (in the loop thread) and read by
    scrapes (in the listener's threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(RESTART_CAUSES, 0)

    def add(self, cause: str, n: int = 1) -> None:
        """Count ``n`` restarts for ``cause`` (one of :data:`RESTART_CAUSES`)."""
        with self._lock:
            self._counts[cause] += n

    def snapshot(self) -> dict[str, int]:
        """The counts so far, by cause."""
        with self._lock:
            return dict(self._counts)


def _metric(out: list[str], name: str, kind: str, text: str) -> None:
    out.append(f"# HELP {name} {text}\n# TYPE {name} {kind}\n")


def render(stats: list[int], restarts: dict[str, int], accepted: int) -> str:
    """The page of ``GET /metrics`` from the core's counters (``stats``, indexed by
    ``KRAIT_STAT_*``), the restarts by cause and the connections accepted so far."""
    out: list[str] = []
    _metric(out, "krait_requests_total", "counter",
            "Responses sent in full, by route kind (static: answered by the core; python: by "
            "a worker; websocket: handshakes) and status class.")
    base = lib.KRAIT_STAT_RESPONSES
    for k, kind in enumerate(KINDS):
        for c in range(5):
            out.append(f'krait_requests_total{{kind="{kind}",status_class="{c + 1}xx"}} '
                       f"{stats[base + 5 * k + c]}\n")
    _metric(out, "krait_request_duration_seconds", "histogram",
            "Time from a complete request head to the last byte of its response sent.")
    total = 0
    for i in range(lib.KRAIT_LATENCY_BUCKETS):
        total += stats[lib.KRAIT_STAT_LATENCY + i]
        bound = lib.krait_latency_bound_us(i)
        le = "+Inf" if bound < 0 else f"{bound / 1e6:g}"
        out.append(f'krait_request_duration_seconds_bucket{{le="{le}"}} {total}\n')
    out.append(f"krait_request_duration_seconds_sum "
               f"{stats[lib.KRAIT_STAT_LATENCY_SUM_US] / 1e6!r}\n")
    out.append(f"krait_request_duration_seconds_count {total}\n")
    for name, kind, text, value in (
        ("krait_connections_open", "gauge", "Client connections open now.",
         stats[lib.KRAIT_STAT_CONNS]),
        ("krait_connections_accepted_total", "counter", "Client connections accepted.",
         accepted),
        ("krait_tls_handshakes_total", "counter", "TLS handshakes completed.",
         stats[lib.KRAIT_STAT_TLS_HANDSHAKES]),
        ("krait_tls_handshake_failures_total", "counter",
         "TLS handshakes that failed with a TLS error (not a client that went away).",
         stats[lib.KRAIT_STAT_TLS_FAILURES]),
        ("krait_workers_busy", "gauge", "Workers with a request in hand.",
         stats[lib.KRAIT_STAT_WORKERS_BUSY]),
        ("krait_workers_idle", "gauge", "Workers waiting for a request.",
         stats[lib.KRAIT_STAT_WORKERS_IDLE]),
        ("krait_queue_depth", "gauge", "Requests waiting for a worker.",
         stats[lib.KRAIT_STAT_QUEUE]),
        ("krait_websocket_connections_open", "gauge", "WebSocket connections open now.",
         stats[lib.KRAIT_STAT_WS_OPEN]),
    ):
        _metric(out, name, kind, text)
        out.append(f"{name} {value}\n")
    _metric(out, "krait_websocket_messages_total", "counter",
            "WebSocket messages, received from clients (in) and sent to them (out; a channel "
            "message counts once per subscriber).")
    out.append(f'krait_websocket_messages_total{{direction="in"}} {stats[lib.KRAIT_STAT_WS_IN]}\n')
    out.append(f'krait_websocket_messages_total{{direction="out"}} '
               f"{stats[lib.KRAIT_STAT_WS_OUT]}\n")
    for name, text, value in (
        ("krait_received_bytes_total", "Bytes received from clients (after TLS decryption).",
         stats[lib.KRAIT_STAT_BYTES_IN]),
        ("krait_sent_bytes_total", "Bytes sent to clients (before TLS encryption).",
         stats[lib.KRAIT_STAT_BYTES_OUT]),
        ("krait_channel_messages_published_total", "Channel messages published.",
         stats[lib.KRAIT_STAT_PUBLISHED]),
    ):
        _metric(out, name, "counter", text)
        out.append(f"{name} {value}\n")
    _metric(out, "krait_worker_restarts_total", "counter",
            "Workers replaced, by cause: crash (it died), timeout (killed past worker_timeout), "
            "recycle (max_requests), memory (max_worker_memory), reload (SIGHUP, --reload).")
    for cause in RESTART_CAUSES:
        out.append(f'krait_worker_restarts_total{{cause="{cause}"}} {restarts.get(cause, 0)}\n')
    _metric(out, "krait_draining", "gauge", "1 while the server stops (SIGTERM): /healthz "
            "answers 503.")
    out.append(f"krait_draining {1 if stats[lib.KRAIT_STAT_DRAINING] else 0}\n")
    return "".join(out)


@dataclass
class _Client:
    """A metrics connection: when it must have sent its request head, and what it has sent."""

    deadline: float
    buf: bytes = field(default=b"")


class MetricsListener:
    """The listening socket and its thread. Bound by the constructor (so a bad address stops
    start-up), served from :meth:`start` until :meth:`stop`, which must come before the
    core's server is freed."""

    def __init__(self, host: str, port: int, server: Server, restarts: Restarts,
                 loops: Callable[[], int]) -> None:
        infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                   0, socket.AI_PASSIVE)
        if not host:
            infos = [i for i in infos if i[0] == socket.AF_INET6] or infos  # dual-stack
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and not host:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(addr)
            sock.listen(16)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._sock = sock
        self._server = server
        self._restarts = restarts
        self._loops = loops
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stopping = threading.Event()
        # Held while the core's counters are read; stop() takes it, so no scrape reads a
        # server that is being freed.
        self._lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.address = sock.getsockname()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:9100/metrics``, for the start-up banner."""
        host, port = self.address[0], self.address[1]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    def start(self) -> None:
        """Serve in a daemon thread (after the loop signals are blocked: it inherits the
        mask)."""
        self._thread = threading.Thread(target=self._serve, daemon=True, name="krait-metrics")
        self._thread.start()

    def stop(self) -> None:
        """Stop answering: a scrape in progress finishes first; the socket closes."""
        with self._lock:
            self._closed = True
        self._stopping.set()
        os.write(self._wake_w, b"x")  # wakes the thread's select at once
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _serve(self) -> None:
        """One thread, every connection non-blocking in one selector: a client that sends
        nothing holds a few bytes of memory, never a thread. Each has :data:`CLIENT_TIMEOUT`
        in all; at :data:`MAX_CLIENTS` the oldest is dropped for the newcomer, so idle
        connections cannot keep a load balancer's health check out."""
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        clients: dict[socket.socket, _Client] = {}  # in arrival order (dicts keep it)
        try:
            while not self._closed:
                now = time.monotonic()
                for conn in [c for c, st in clients.items() if st.deadline <= now]:
                    self._drop(sel, clients, conn)
                timeout = (min(st.deadline for st in clients.values()) - now) if clients \
                    else None
                for key, _ in sel.select(timeout):
                    if key.fileobj is self._sock:
                        self._accept(sel, clients)
                    elif isinstance(key.fileobj, socket.socket):
                        self._readable(sel, clients, key.fileobj)
        finally:
            for conn in list(clients):
                self._drop(sel, clients, conn)
            sel.close()

    def _accept(self, sel: selectors.BaseSelector, clients: dict[socket.socket, _Client]) -> None:
        for _ in range(64):  # a burst, then back to the clients
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: the connection stays in the backlog and the socket
                    # stays readable; wait a little instead of spinning.
                    self._stopping.wait(0.1)
                return  # a reset in the backlog, or the socket closed by stop()
            if len(clients) >= MAX_CLIENTS:
                self._drop(sel, clients, next(iter(clients)))
            conn.setblocking(False)
            clients[conn] = _Client(time.monotonic() + CLIENT_TIMEOUT)
            sel.register(conn, selectors.EVENT_READ, None)

    def _readable(self, sel: selectors.BaseSelector, clients: dict[socket.socket, _Client],
                  conn: socket.socket) -> None:
        st = clients[conn]
        try:
            data = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sel, clients, conn)
            return
        st.buf += data
        if len(st.buf) <= MAX_HEAD and b"\r\n\r\n" not in st.buf and b"\n\n" not in st.buf:
            return
        answer = self._answer(st.buf[:MAX_HEAD + 1])
        # The answer is a few KiB: the socket's buffer takes it whole; a client that does not
        # read it loses what did not fit (one short try, never a wait).
        try:
            conn.send(answer)
        except OSError:
            pass
        self._drop(sel, clients, conn)

    @staticmethod
    def _drop(sel: selectors.BaseSelector, clients: dict[socket.socket, _Client],
              conn: socket.socket) -> None:
        sel.unregister(conn)
        del clients[conn]
        conn.close()

    def _answer(self, head: bytes) -> bytes:
        if len(head) > MAX_HEAD:
            return _response(431, "request head too large\n")
        line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return _response(400, "bad request\n")
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return _response(405, "GET only\n", head_only=False, extra="Allow: GET, HEAD\r\n")
        path = target.split("?", 1)[0]
        head_only = method == "HEAD"
        if path not in ("/metrics", "/healthz"):
            return _response(404, "not found: /metrics and /healthz are served here\n",
                             head_only=head_only)
        with self._lock:
            if self._closed:
                return _response(503, "stopping\n", head_only=head_only)
            stats = self._server.stats()
            accepted = sum(max(0, self._server.loop_stat(i, lib.KRAIT_STAT_CONNS))
                           for i in range(self._loops()))
        if path == "/healthz":
            if stats[lib.KRAIT_STAT_DRAINING]:
                return _response(503, "draining\n", head_only=head_only)
            return _response(200, "ok\n", head_only=head_only)
        return _response(200, render(stats, self._restarts.snapshot(), accepted),
                         content_type=CONTENT_TYPE, head_only=head_only)


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def _response(status: int, body: str, content_type: str = "text/plain; charset=utf-8",
              head_only: bool = False, extra: str = "") -> bytes:
    data = body.encode("utf-8")
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(data)}\r\nCache-Control: no-store\r\n{extra}"
            "Connection: close\r\n\r\n")
    return head.encode("latin-1") + (b"" if head_only else data)
