"""krait.websockets: WebSocket controllers.

A ``WEBSOCKET`` route runs a script with ``krait.websockets.request`` set. To accept, the
script sets ``krait.websockets.response = WebsocketsResponse(controller, protocol)``; to refuse,
it leaves it ``None`` and sets ``krait.response`` (for example ``krait.ResponseBadRequest()``).
The core does the framing; the controller lives in the worker that accepted the connection and
runs its own thread, while that worker goes on serving HTTP on its main thread::

    class EchoCtrl(krait.websockets.WebsocketsCtrlBase):
        def on_thread_start(self):
            while not self.should_stop():
                msg = self.pop_in_message(timeout=1)
                if msg is not None:
                    self.push_out_message(msg)

    krait.websockets.response = krait.websockets.WebsocketsResponse(EchoCtrl())
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from krait._state import RequestState, activate, install

__all__ = [
    "WebsocketsCtrlBase", "WebsocketsRequest", "WebsocketsResponse", "broadcast",
    "origin_allowed", "publish", "request", "response",
]

Message = str | bytes


def _message(message: Any) -> Message:
    """A message to send, as ``str`` or ``bytes`` (bytes-like objects are copied)."""
    cls = type(message)
    if cls is str or cls is bytes:
        return message  # type: ignore[no-any-return]
    if isinstance(message, str):
        return message
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message)
    raise TypeError("a WebSocket message is str or bytes")
#: Queued after the last message once the connection has ended: wakes a waiting pop.
_ENDED: Any = object()

# Bytes of received messages waiting in the queues of this worker's controllers (see
# WebsocketsCtrlBase.on_in_message); guarded by _queued_lock with each controller's count.
_queued_lock = threading.Lock()
_worker_queued = 0
#: The close code and reason sent when a controller's queue is full (RFC 6455 §7.4.1: 1008,
#: "a message that violates its policy"; 1009 is for one message that is too big).
QUEUE_FULL_CODE = 1008
QUEUE_FULL_REASON = "too many unread messages"


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def origin_allowed(origin: str | None, host: str | None,
                   allowed: Iterable[str] = ()) -> bool:
    """May a page from ``origin`` open a WebSocket here (cross-site WebSocket hijacking)?

    A browser always sends the ``Origin`` of the page that opens a WebSocket, and sends the
    site's cookies with it whatever that origin is; so, as Tornado does, a handshake is
    accepted only from the site's own origin (its host and port are the ``Host`` the browser
    sent) or from an origin listed in ``allowed``. A handshake without ``Origin`` does not
    come from a browser page and is accepted.

    :param origin: the ``Origin`` header, or ``None``.
    :param host: the host the client asked for (the ``Host`` header, or a trusted proxy's
        ``X-Forwarded-Host``).
    :param allowed: further origins, as ``"https://app.example.com"`` (a port only when it is
        not the scheme's default), or ``"*"`` for every origin.
    """
    if origin is None:
        return True
    origin = origin.strip().lower().rstrip("/")
    for item in allowed:
        item = item.strip().lower().rstrip("/")
        if item == "*" or item == origin:
            return True
    if not host:
        return False
    try:
        parts = urlsplit(origin)
        asked = urlsplit("//" + host.strip().lower())
        default = _DEFAULT_PORTS.get(parts.scheme)
        return (default is not None and parts.hostname is not None
                and parts.hostname == asked.hostname
                and (parts.port or default) == (asked.port or default))
    except ValueError:  # a port that is not a number, a bad IPv6 literal
        return False


class WebsocketsRequest:
    """The WebSocket side of a handshake request.

    :param http_request: the :class:`krait.Request` of the handshake.
    """

    def __init__(self, http_request: Any) -> None:
        #: The handshake's :class:`krait.Request`.
        self.http_request = http_request
        #: The subprotocols the client offered (split on commas, trimmed), or ``None``.
        self.protocols: list[str] | None = self.extract_protocols(http_request)

    @staticmethod
    def extract_protocols(http_request: Any) -> list[str] | None:
        """The subprotocols a handshake request offers: its ``Sec-WebSocket-Protocol`` header
        split on commas, each trimmed; ``None`` when the header is absent or the request is
        not a WebSocket upgrade.

        :param http_request: the :class:`krait.Request` of the handshake.
        """
        header = http_request.headers.get("sec-websocket-protocol")
        upgrade = http_request.headers.get("upgrade", "")
        is_ws = "websocket" in [t.strip().lower() for t in upgrade.split(",")]
        return [p.strip() for p in header.split(",") if p.strip()] if header and is_ws else None


class WebsocketsResponse:
    """Accepts a WebSocket handshake.

    :param controller: a :class:`WebsocketsCtrlBase` that will handle the connection.
    :param protocol: the subprotocol chosen from ``request.protocols``, or ``None``.
    """

    def __init__(self, controller: WebsocketsCtrlBase, protocol: str | None = None) -> None:
        if not isinstance(controller, WebsocketsCtrlBase):
            raise TypeError("the controller must be a krait.websockets.WebsocketsCtrlBase")
        if protocol is not None and (not protocol or any(c in protocol for c in "\r\n,")):
            raise ValueError(f"invalid subprotocol {protocol!r}")
        self.controller = controller
        self.protocol = protocol


class WebsocketsCtrlBase:
    """Base class of WebSocket controllers: subclass it and override the ``on_*`` methods.

    :param use_in_message_queue: keep incoming messages in a queue for :meth:`pop_in_message`
        (the default). With ``False``, override :meth:`on_in_message` to handle each message
        as it arrives (event style).
    """

    def __init__(self, use_in_message_queue: bool = True) -> None:
        self.use_in_message_queue = use_in_message_queue
        self._in: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._queued = 0  # bytes of the messages in _in (counted in _worker_queued too)
        self._over = False  # set once on_stop has begun (base) or returned
        self._stop_lock = threading.Lock()
        self._stopped_called = False
        self._stopping_thread = 0  # the thread running on_stop
        self._stopped = threading.Event()  # on_stop has returned
        self._send: Callable[[Message], None] | None = None
        self._close: Callable[[int, str], None] | None = None
        # Set by the worker with _send: the connection's id and the worker's frame writer
        # (used by broadcast to send one message to many connections in one go).
        self._conn_id: int | None = None
        self._write: Callable[..., None] | None = None
        # The per-request state the controller's code runs with (krait.request is the
        # handshake's): set by the worker when it binds the connection.
        self._state: RequestState | None = None
        self.thread = threading.Thread(target=self._thread_main, daemon=True,
                                       name=f"ws-{type(self).__name__}")

    # -- called by the server ------------------------------------------------------------------

    def on_start(self) -> None:
        """Called once, right after the handshake; starts the controller thread. Override it
        for cheap set-up, then call the base."""
        self.thread.start()

    def on_thread_start(self) -> None:
        """The controller thread's body. Override with a loop such as
        ``while not self.should_stop(): ...``."""

    def on_in_message(self, message: Message) -> None:
        """Called for each complete message (``str`` for text, ``bytes`` for binary). The
        default queues it for :meth:`pop_in_message`.

        The queue is bounded: when the messages not yet popped would exceed
        ``krait.config.websocket_queue_bytes`` for this connection (32 MiB by default), or
        ``krait.config.websocket_worker_queue_bytes`` for all the connections of this worker
        process (128 MiB), the message is dropped and the connection closed with 1008
        ("too many unread messages"); :meth:`on_stop` follows. A controller that cannot keep
        up should pop faster, or handle messages as they come (``use_in_message_queue=False``
        and its own ``on_in_message``).
        """
        if not self.use_in_message_queue:
            return
        from krait import config

        global _worker_queued
        size = len(message)
        with _queued_lock:
            full = (self._queued + size > config.websocket_queue_bytes
                    or _worker_queued + size > config.websocket_worker_queue_bytes)
            if not full:
                self._queued += size
                _worker_queued += size
                self._in.put(message)
        if full:
            self.close(QUEUE_FULL_CODE, QUEUE_FULL_REASON)

    def on_in_message_internal(self, message: Message) -> None:
        """What the server calls for each incoming message: it calls :meth:`on_in_message`.
        Kept for controllers written for the original, which called it directly; override
        :meth:`on_in_message` instead."""
        self.on_in_message(message)

    def pop_out_message(self) -> Message | None:
        """Always ``None``: :meth:`push_out_message` hands each message to the server at once
        (the original queued them here for its pump to take one per turn)."""
        return None

    def on_stop(self) -> None:
        """Called exactly once when the connection ends, however it ends. Override to clean up,
        then call the base (it sets the stop flag)."""
        self._over = True

    # -- for the controller ----------------------------------------------------------------

    def pop_in_message(self, timeout: float | None = 0) -> Message | None:
        """The next incoming message, or ``None``.

        :param timeout: seconds to wait for one; ``0`` (the default, as in the original) does not
            wait, ``None`` waits until a message arrives or the connection ends. Messages that
            arrived before the end are still returned, in order; then ``None`` at once.
        :raises RuntimeError: when the controller was made with ``use_in_message_queue=False``.
        """
        if not self.use_in_message_queue:
            raise RuntimeError("this controller does not queue incoming messages")
        try:
            if timeout == 0:
                item = self._in.get_nowait()
            else:
                item = self._in.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _ENDED:
            self._in.put(_ENDED)  # for the next call, and for any other waiting thread
            return None
        self._unqueue(len(item))
        return item

    def _unqueue(self, size: int) -> None:
        """``size`` bytes left the queue (popped, or the connection ended)."""
        global _worker_queued
        with _queued_lock:
            size = min(size, self._queued)
            self._queued -= size
            _worker_queued -= size

    def subscribe(self, channel: str) -> None:
        """Receive every message published on ``channel`` (by :func:`publish`, from any
        worker, or from another machine with ``config.pubsub``): the server sends each to this
        connection's client directly, without calling this controller. A connection may be
        on up to 64 channels; subscriptions end with the connection.

        :param channel: the channel's name, at most 256 bytes of UTF-8.
        """
        self._channel_frame(channel, True)

    def unsubscribe(self, channel: str) -> None:
        """Stop receiving what is published on ``channel`` (nothing happens if it was not
        subscribed)."""
        self._channel_frame(channel, False)

    def _channel_frame(self, channel: str, subscribe: bool) -> None:
        from krait import protocol

        frame = protocol.encode_subscribe(self._conn_id or 0, channel, subscribe)
        if self._over or self._write is None or self._conn_id is None:
            return
        try:
            self._write(frame)
        except OSError:
            pass  # the core is gone; the worker is about to end

    def push_out_message(self, message: Message) -> None:
        """Send a message: ``str`` as a text frame, ``bytes`` as a binary frame. Safe from any
        thread; does nothing once the connection has ended."""
        message = _message(message)
        if self._over or self._send is None:
            return
        self._send(message)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection with a status code and a reason the client receives in the
        close frame (RFC 6455 §5.5.1); :meth:`on_stop` follows at once. Does nothing once the
        connection has ended.

        :param code: 1000 (normal), 1001 (going away), 1003 (cannot accept this data), 1007,
            1008 (policy), 1009, 1011 (server error), or an application code 3000-4999
            (RFC 6455 §7.4).
        :param reason: at most 123 bytes once encoded as UTF-8.
        :raises ValueError: a code an endpoint may not send, or a reason too long.
        """
        if isinstance(code, bool) or not isinstance(code, int) or not (
                code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1011
                or 3000 <= code <= 4999):
            raise ValueError(f"{code!r} is not a close code a server may send")
        if len(reason.encode("utf-8")) > 123:
            raise ValueError("a close reason is at most 123 bytes of UTF-8")
        if self._close is not None and not self._over:
            self._close(code, reason)

    def should_stop(self) -> bool:
        """True once the connection has ended (after :meth:`on_stop`)."""
        return self._over

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Wait for the controller thread to end; True when it has."""
        if not self.thread.is_alive():
            return True
        self.thread.join(timeout)
        return not self.thread.is_alive()

    # -- internals -----------------------------------------------------------------------------

    def _thread_main(self) -> None:
        if self._state is not None:
            activate(self._state)  # this thread's own context: nothing to restore
        try:
            self.on_thread_start()
        except Exception:  # noqa: BLE001 - a controller's error ends its thread, not the worker
            import traceback

            traceback.print_exc()

    def _deliver(self, message: Message) -> None:
        try:
            self.on_in_message(message)
        except Exception:  # noqa: BLE001
            import traceback

            traceback.print_exc()

    def _ended(self, wait: float = 5.0) -> None:
        """The connection ended: call on_stop exactly once. A second caller (the worker
        stopping while the connection's own end is being handled) waits up to ``wait``
        seconds for that on_stop to return, so a worker never exits in the middle of one."""
        with self._stop_lock:
            first = not self._stopped_called
            if first:
                self._stopped_called = True
                self._stopping_thread = threading.get_ident()
        if not first:
            if self._stopping_thread != threading.get_ident():  # not on_stop closing itself
                self._stopped.wait(wait)
            return
        try:
            self.on_stop()
        finally:
            self._over = True
            # What is still queued no longer counts against the worker: the controller may
            # never pop it.
            self._unqueue(self._queued)
            self._in.put(_ENDED)  # wakes a pop_in_message that waits
            self._stopped.set()


def broadcast(controllers: Iterable[WebsocketsCtrlBase], message: Message) -> int:
    """Send one message to many connections: to each controller's client, as
    :meth:`~WebsocketsCtrlBase.push_out_message` would, but encoded once and handed to the
    server in one write (the way to fan a chat message or an update out to a room).

    Controllers whose connection has ended are skipped. Controllers live in the worker that
    accepted their connection, so a room is the controllers of one worker (keep it in a
    module, as in ``docs/websockets.md``).

    :param controllers: the connections' controllers (any iterable; read once).
    :param message: ``str`` for a text message, ``bytes`` for a binary one.
    :return: how many connections it was sent to.
    :raises TypeError: when the message is neither ``str`` nor bytes-like.
    """
    from krait import protocol

    message = _message(message)
    by_writer: dict[Any, list[int]] = {}
    for ctrl in controllers:
        write, conn_id = ctrl._write, ctrl._conn_id
        if write is None or conn_id is None or ctrl._over:
            continue
        ids = by_writer.get(write)
        if ids is None:
            ids = by_writer[write] = []
        ids.append(conn_id)
    sent = 0
    for write, ids in by_writer.items():
        try:
            write(*protocol.encode_ws_broadcast(ids, message))
        except OSError:
            continue  # the core is gone; the worker is about to end
        sent += len(ids)
    return sent


#: The worker's frame writer, set when it starts (``publish`` needs it).
_publish_write: Any = None
#: With ``config.pubsub``: publishes to Redis for the site's other machines (krait._pubsub).
_relay_publisher: Any = None


def publish(channel: str, message: Message) -> None:
    """Send one message to every WebSocket connection subscribed to ``channel``
    (:meth:`WebsocketsCtrlBase.subscribe`), whichever worker accepted it — and, with
    ``config.pubsub``, on every other machine of the site. Callable from any code a worker
    runs: a page or script (e.g. after a form post), a controller, a controller's thread.

    The server encodes the message once and queues it on each subscriber; no Python runs per
    recipient. A subscriber that does not read is closed (1008) once twice
    ``max_websocket_message`` bytes wait for it. Nothing is kept for later: a connection
    subscribed after the message was published never gets it.

    :param channel: the channel's name, at most 256 bytes of UTF-8.
    :param message: ``str`` for a text message, ``bytes`` for a binary one.
    :raises TypeError: when the message is neither ``str`` nor bytes-like.
    :raises ValueError: for a channel name that is empty, too long or holds NUL.
    :raises RuntimeError: outside a krait worker.
    """
    from krait import protocol

    message = _message(message)
    frame = protocol.encode_publish(channel, message)
    write = _publish_write
    if write is None:
        raise RuntimeError("krait.websockets.publish works in a krait worker only")
    try:
        write(frame)
    except OSError:
        pass  # the core is gone; the worker is about to end
    if _relay_publisher is not None:
        _relay_publisher.publish(channel, message)  # the site's other machines


# Per context (properties; see krait._state): a controller's thread and its on_* methods
# see the handshake of their own connection.
#: The handshake being handled (``None`` for ordinary requests); reset per request.
request: WebsocketsRequest | None
#: Set it to a :class:`WebsocketsResponse` to accept the handshake; reset per request.
response: WebsocketsResponse | None

install(sys.modules[__name__], {
    "request": ("ws_request", "The handshake being handled, or None."),
    "response": ("ws_response", "Set to a WebsocketsResponse to accept the handshake."),
})
