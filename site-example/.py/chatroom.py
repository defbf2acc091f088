"""The chat room behind /chat/socket: one WebSocket controller per visitor, and a channel.

A site has several worker processes, and two visitors may well be in two of them. Every
visitor's connection is subscribed to the channel ``chat``; a line someone sends is stored
(for the history a newcomer gets) and published on that channel with
``krait.websockets.publish``. The server's core then sends it to every subscribed connection,
whichever worker accepted it (and, with ``--pubsub``, on every machine of the site). No thread
polls, and no Python runs per recipient.

Protocol (text frames, JSON): the browser sends ``{"name": ..., "text": ...}``; the server
sends ``{"type": "message", "id": ..., "name": ..., "text": ..., "time": ...}`` for every line
(the last HISTORY ones right after connecting) and ``{"type": "error", "text": ...}`` to the
sender of a message it refused.
"""

from __future__ import annotations

import json
import time
from typing import Any

import storage

from krait import websockets
from krait.websockets import WebsocketsCtrlBase

#: The channel every chat connection is subscribed to.
CHANNEL = "chat"
#: Lines sent to a visitor who has just connected.
HISTORY = 20
#: Longest chat line (characters).
MAX_TEXT = 500


def _encode(row: dict[str, Any]) -> str:
    return json.dumps({
        "type": "message", "id": row["id"], "name": row["name"], "text": row["text"],
        "time": time.strftime("%H:%M:%S", time.localtime(row["created"])),
    })


def post(name: str, text: str) -> None:
    """Store a chat line and send it to every visitor in the room."""
    row = storage.add_chat(name, text)
    websockets.publish(CHANNEL, _encode(row))


class ChatCtrl(WebsocketsCtrlBase):
    """One visitor's connection. Event style: krait calls on_in_message for each message (no
    queue, no thread); the lines of the room reach the browser straight from the core."""

    def __init__(self) -> None:
        super().__init__(use_in_message_queue=False)

    def on_start(self) -> None:
        # Subscribe first, then send the history: a line posted in between arrives both ways,
        # and the page shows each id once (js/chat.js), so none is missed.
        self.subscribe(CHANNEL)
        for row in storage.chat_recent(HISTORY):
            self.push_out_message(_encode(row))
        super().on_start()

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
            post(name, text)
