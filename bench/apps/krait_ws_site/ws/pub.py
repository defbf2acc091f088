"""/pub: every message of the publisher goes to every subscriber of the worker's room."""

import wsroom

import krait
from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse


class PubCtrl(WebsocketsCtrlBase):
    def __init__(self):
        super().__init__(use_in_message_queue=False)

    def on_in_message(self, message):
        for sub in wsroom.subscribers:
            sub.push_out_message(message)


krait.websockets.response = WebsocketsResponse(PubCtrl())
