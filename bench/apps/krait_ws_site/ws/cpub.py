"""/cpub: every message of the publisher is published on the core's channel "room": one frame
to the core, which encodes it once and queues it on every subscriber of every worker."""

import krait
from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse, publish


class ChannelPubCtrl(WebsocketsCtrlBase):
    def __init__(self):
        super().__init__(use_in_message_queue=False)

    def on_in_message(self, message):
        publish("room", message)


krait.websockets.response = WebsocketsResponse(ChannelPubCtrl())
