"""/sub: a subscriber of the worker's room; it receives what the publisher sends."""

import wsroom

import krait
from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse


class SubCtrl(WebsocketsCtrlBase):
    def __init__(self):
        super().__init__(use_in_message_queue=False)

    def on_start(self):
        wsroom.join(self)
        super().on_start()

    def on_in_message(self, message):
        pass  # subscribers only listen

    def on_stop(self):
        wsroom.leave(self)
        super().on_stop()


krait.websockets.response = WebsocketsResponse(SubCtrl())
