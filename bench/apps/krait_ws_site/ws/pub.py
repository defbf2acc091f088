"""/pub: every message of the publisher goes to every subscriber of the worker's room, with
krait.websockets.broadcast (encoded once, one write for the whole room)."""

import wsroom

import krait
from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse, broadcast


class PubCtrl(WebsocketsCtrlBase):
    def __init__(self):
        super().__init__(use_in_message_queue=False)

    def on_in_message(self, message):
        broadcast(wsroom.subscribers, message)


krait.websockets.response = WebsocketsResponse(PubCtrl())
