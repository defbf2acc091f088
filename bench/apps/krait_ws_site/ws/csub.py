"""/csub: a subscriber of the core's channel "room" (docs/websockets.md, "Channels"): the core
sends it every message published there, whichever worker accepted it; this controller is never
called for them."""

import wsspread

import krait
from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse


class ChannelSubCtrl(WebsocketsCtrlBase):
    def __init__(self):
        super().__init__(use_in_message_queue=False)

    def on_start(self):
        self.subscribe("room")
        wsspread.joined(1)
        super().on_start()

    def on_in_message(self, message):
        pass  # subscribers only listen

    def on_stop(self):
        wsspread.joined(-1)
        super().on_stop()


krait.websockets.response = WebsocketsResponse(ChannelSubCtrl())
