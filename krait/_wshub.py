"""The worker's side of open WebSockets: which controller owns which connection id, and the
frames between the controllers and the core. The worker's reader thread hands WS_MESSAGE and
WS_CLOSE frames to :meth:`Hub.dispatch`; controllers send through the worker's locked writer.

A WS_CLOSE from the core (the client closed, or failed the connection) is answered with a
WS_CLOSE once ``on_stop`` has returned: the core holds its close frame until then (at most
1 s), so the answers to the client's last messages reach it before the close.

A connection is bound (:meth:`Hub.bind`) before its 101 leaves, so that no message the client
sends right after the handshake can arrive for an id the hub does not know yet; frames that
arrive before :meth:`Hub.start` has run ``on_start`` wait, in order, and are handed over right
after it.

Every call into a controller (``on_start``, ``on_in_message``, ``on_stop``) runs with the
controller's own per-request state current (:mod:`krait._state`), whichever thread makes it:
``krait.request`` there is the connection's handshake, never the HTTP request the worker's main
thread is running."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from krait import _state, protocol
from krait.websockets import WebsocketsCtrlBase

#: In a connection's pending list: the client closed (WS_CLOSE) before on_start had run.
_CLOSED: Any = object()


class _Conn:
    """One open connection: its controller and what arrived before on_start ran."""

    __slots__ = ("ctrl", "lock", "started", "pending")

    def __init__(self, ctrl: WebsocketsCtrlBase) -> None:
        self.ctrl = ctrl
        # Serialises delivery to this controller (reader thread) with its start (main
        # thread); reentrant, so a controller may close itself from on_start/on_in_message.
        self.lock = threading.RLock()
        self.started = False
        self.pending: list[Any] = []  # messages (str / bytes), then maybe _CLOSED


class Hub:
    """Open WebSocket controllers of one worker.

    :param write: sends one encoded frame to the core (thread-safe).
    """

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._conns: dict[int, _Conn] = {}

    def __len__(self) -> int:
        return len(self._conns)

    def bind(self, conn_id: int, ctrl: WebsocketsCtrlBase,
             state: _state.RequestState | None = None) -> None:
        """Attach a controller to a connection id before the 101 is sent.

        :param state: the per-request state the controller's code runs with (by default, one
            made from the current state: the handshake request's).
        """
        write = self._write
        encode = protocol.ws_message_encoder(conn_id)

        def send(message: str | bytes) -> None:
            try:
                frame = encode(message)
            except protocol.FrameTooLarge:
                raise ValueError("WebSocket message larger than a worker frame") from None
            try:
                write(frame)
            except OSError:
                pass  # the core is gone; the worker is about to end

        def close(code: int, reason: str) -> None:
            try:
                self._write(protocol.encode_ws_close(conn_id, code, reason))
            except OSError:
                pass
            # The core will not report a close the worker asked for: the connection is over
            # for the controller now.
            self.ended(conn_id)

        ctrl._send = send
        ctrl._close = close
        ctrl._conn_id = conn_id
        ctrl._write = write
        if ctrl._state is None:
            ctrl._state = state if state is not None else _state.current().for_websocket()
        with self._lock:
            self._conns[conn_id] = _Conn(ctrl)

    def start(self, conn_id: int) -> None:
        """The 101 is on its way: run on_start, then hand over what arrived meanwhile."""
        with self._lock:
            conn = self._conns.get(conn_id)
        if conn is None:
            return
        token = _state.activate(conn.ctrl._state)  # type: ignore[arg-type]
        try:
            self._start(conn_id, conn)
        finally:
            _state.reset(token)

    def _start(self, conn_id: int, conn: _Conn) -> None:
        with conn.lock:
            try:
                conn.ctrl.on_start()
            except Exception:  # noqa: BLE001 - a broken controller closes its connection only
                traceback.print_exc()
                conn.ctrl._close(1011, "")  # type: ignore[misc]
                return
            while conn.pending:
                pending, conn.pending = conn.pending, []
                for item in pending:
                    self._handle(conn_id, conn, item)
            conn.started = True

    def open(self, conn_id: int, ctrl: WebsocketsCtrlBase) -> None:
        """Bind and start at once (for a connection whose 101 has already been sent)."""
        self.bind(conn_id, ctrl)
        self.start(conn_id)

    def dispatch(self, ftype: int, conn_id: int, kind: int, code: int, data: bytes) -> None:
        """A WS_MESSAGE or WS_CLOSE frame from the core (always from the one reading thread)."""
        if ftype == protocol.WS_CLOSE:
            self._put(conn_id, _CLOSED)
        else:  # the core validated text as UTF-8 (RFC 6455 §8.1)
            self._put(conn_id, data.decode("utf-8") if kind == protocol.WS_TEXT else data)

    def deliver(self, run: list[tuple[int, str | bytes]]) -> None:
        """Decoded messages from the core, ``(id, message)`` in order (from the reading
        thread, see :meth:`krait.protocol.FrameReader.ws_messages`): the per-message path."""
        conns = self._conns
        activate = _state.activate
        token = None
        try:
            for conn_id, message in run:
                conn = conns.get(conn_id)  # one dict read: atomic, no lock needed
                if conn is None:
                    continue
                t = activate(conn.ctrl._state)  # type: ignore[arg-type]
                if token is None:
                    token = t
                if not conn.started or conn.ctrl._stopped_called:
                    self._put(conn_id, message)
                    continue
                try:
                    conn.ctrl.on_in_message(message)
                except Exception:  # noqa: BLE001 - a controller's error is its own
                    traceback.print_exc()
        finally:
            if token is not None:
                _state.reset(token)

    def _put(self, conn_id: int, item: Any) -> None:
        conn = self._conns.get(conn_id)
        if conn is None or conn.ctrl._stopped_called:
            return  # unknown, or ending: nothing more reaches the controller
        token = _state.activate(conn.ctrl._state)  # type: ignore[arg-type]
        try:
            self._put_started(conn_id, conn, item)
        finally:
            _state.reset(token)

    def _put_started(self, conn_id: int, conn: _Conn, item: Any) -> None:
        if conn.started:
            # on_start and what arrived before it are done (started is set last, under the
            # lock), and only this thread delivers: no lock on the per-message path.
            self._handle(conn_id, conn, item)
            return
        with conn.lock:
            if not conn.started:
                conn.pending.append(item)
                return
            self._handle(conn_id, conn, item)

    def _handle(self, conn_id: int, conn: _Conn, item: Any) -> None:
        if item is _CLOSED:
            self.ended(conn_id)
            # The answer the core waits for before its close frame: everything this
            # controller sent until on_stop returned is ahead of it on the socket.
            try:
                self._write(protocol.encode_ws_close(conn_id, 1000))
            except OSError:
                pass
        else:
            conn.ctrl._deliver(item)

    def ended(self, conn_id: int) -> None:
        """The connection is over: on_stop exactly once, then forget the controller (kept
        until on_stop has returned, so that close_all finds it and waits for it)."""
        with self._lock:
            conn = self._conns.get(conn_id)
        if conn is None:
            return
        token = _state.activate(conn.ctrl._state)  # type: ignore[arg-type]
        try:
            conn.ctrl._ended()
        except Exception:  # noqa: BLE001
            traceback.print_exc()
        finally:
            _state.reset(token)
            with self._lock:
                if self._conns.get(conn_id) is conn:
                    del self._conns[conn_id]

    def close_all(self) -> None:
        """The worker is stopping: every controller's on_stop runs."""
        with self._lock:
            ids = list(self._conns)
        for conn_id in ids:
            self.ended(conn_id)
