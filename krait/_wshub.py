"""The worker's side of open WebSockets: which controller owns which connection id, and the
frames between the controllers and the core. The worker's reader thread hands WS_MESSAGE and
WS_CLOSE frames to :meth:`Hub.dispatch`; controllers send through the worker's locked writer."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable

from krait import protocol
from krait.websockets import WebsocketsCtrlBase


class Hub:
    """Open WebSocket controllers of one worker.

    :param write: sends one encoded frame to the core (thread-safe).
    """

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._ctrls: dict[int, WebsocketsCtrlBase] = {}

    def __len__(self) -> int:
        return len(self._ctrls)

    def open(self, conn_id: int, ctrl: WebsocketsCtrlBase) -> None:
        """Bind a controller to a connection the core has just upgraded, then start it."""

        def send(message: str | bytes) -> None:
            try:
                self._write(protocol.encode_ws_message(conn_id, message))
            except protocol.FrameTooLarge:
                raise ValueError("WebSocket message larger than a worker frame") from None
            except OSError:
                pass  # the core is gone; the worker is about to end

        def close(code: int, reason: str) -> None:
            try:
                self._write(protocol.encode_ws_close(conn_id, code, reason))
            except OSError:
                pass

        ctrl._send = send
        ctrl._close = close
        with self._lock:
            self._ctrls[conn_id] = ctrl
        try:
            ctrl.on_start()
        except Exception:  # noqa: BLE001 - a broken controller closes its connection only
            traceback.print_exc()
            close(1011, "")
            self.ended(conn_id)

    def dispatch(self, ftype: int, conn_id: int, kind: int, code: int, data: bytes) -> None:
        """A WS_MESSAGE or WS_CLOSE frame from the core."""
        with self._lock:
            ctrl = self._ctrls.get(conn_id)
        if ctrl is None:
            return
        if ftype == protocol.WS_CLOSE:
            self.ended(conn_id)
            return
        if kind == protocol.WS_TEXT:
            ctrl._deliver(data.decode("utf-8"))  # the core validated it (RFC 6455 §8.1)
        else:
            ctrl._deliver(data)

    def ended(self, conn_id: int) -> None:
        """The connection is over: on_stop exactly once, forget the controller."""
        with self._lock:
            ctrl = self._ctrls.pop(conn_id, None)
        if ctrl is None:
            return
        try:
            ctrl._ended()
        except Exception:  # noqa: BLE001
            traceback.print_exc()

    def close_all(self) -> None:
        """The worker is stopping: every controller's on_stop runs."""
        with self._lock:
            ids = list(self._ctrls)
        for conn_id in ids:
            self.ended(conn_id)
