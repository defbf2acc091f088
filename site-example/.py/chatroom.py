"""The chat room behind /chat/socket: one WebSocket controller per visitor, and a broadcast.

A WebSocket controller lives in the worker process that accepted the connection, and a site
has several workers; two visitors may well be in two processes. So a message does not go from
one controller to the others directly: it is written to the database, and in each worker one
thread (the "room") reads new lines and pushes them to that worker's visitors. A line posted in
this worker is delivered at once; one posted in another worker within POLL_SECONDS.

Protocol (text frames, JSON): the browser sends ``{"name": ..., "text": ...}``; the server
sends ``{"type": "message", "id": ..., "name": ..., "text": ..., "time": ...}`` for every line
(the last HISTORY ones right after connecting) and ``{"type": "error", "text": ...}`` to the
sender of a message it refused.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import storage

from krait.websockets import WebsocketsCtrlBase

#: How often each worker looks for lines posted in other workers.
POLL_SECONDS = 0.25
#: Lines sent to a visitor who has just connected.
HISTORY = 20
#: Longest chat line (characters).
MAX_TEXT = 500


def _encode(row: dict[str, Any]) -> str:
    return json.dumps({
        "type": "message", "id": row["id"], "name": row["name"], "text": row["text"],
        "time": time.strftime("%H:%M:%S", time.localtime(row["created"])),
    })


class Room:
    """The visitors connected to this worker, and the thread that feeds them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: set[ChatCtrl] = set()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_id = 0

    def join(self, member: ChatCtrl) -> None:
        # Under the lock: the history sent here ends exactly where the broadcasts start.
        with self._lock:
            if self._thread is None:
                recent = storage.chat_recent(1)
                self._last_id = recent[-1]["id"] if recent else 0
                self._thread = threading.Thread(target=self._run, daemon=True, name="chat-room")
                self._thread.start()
            self._members.add(member)
            for row in storage.chat_recent(HISTORY):
                if row["id"] <= self._last_id:
                    member.push_out_message(_encode(row))

    def leave(self, member: ChatCtrl) -> None:
        with self._lock:
            self._members.discard(member)

    def post(self, name: str, text: str) -> None:
        storage.add_chat(name, text)
        self._wake.set()  # deliver now in this worker; the others see it on their next poll

    def _run(self) -> None:
        while True:
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()
            try:
                with self._lock:
                    rows = storage.chat_after(self._last_id)
                    if rows:
                        self._last_id = rows[-1]["id"]
                    members = list(self._members)
                for row in rows:
                    text = _encode(row)
                    for member in members:
                        member.push_out_message(text)
            except Exception:  # noqa: BLE001 - a database hiccup must not end the room
                import traceback

                traceback.print_exc()
                time.sleep(1)


room = Room()


class ChatCtrl(WebsocketsCtrlBase):
    """One visitor's connection. Event style: krait calls on_in_message for each message (no
    queue, no thread of its own); the room's thread sends the broadcasts."""

    def __init__(self) -> None:
        super().__init__(use_in_message_queue=False)

    def on_start(self) -> None:
        room.join(self)
        super().on_start()  # starts the controller thread; on_thread_start does nothing here

    def on_in_message(self, message: str | bytes) -> None:
        try:
            data = json.loads(message)
            name = storage.clean(data.get("name"), storage.MAX_NAME) or "anonymous"
            text = storage.clean(data.get("text"), MAX_TEXT)
        except (ValueError, AttributeError):
            self.push_out_message(json.dumps({"type": "error", "text": "send JSON: "
                                              '{"name": "...", "text": "..."}'}))
            return
        if text:
            room.post(name, text)

    def on_stop(self) -> None:
        room.leave(self)
        super().on_stop()
