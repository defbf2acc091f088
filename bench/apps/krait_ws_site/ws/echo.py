"""/echo, event style: on_in_message sends every message back (no queue, no loop)."""

import krait
from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse


class EchoCtrl(WebsocketsCtrlBase):
    def __init__(self):
        super().__init__(use_in_message_queue=False)

    def on_in_message(self, message):
        self.push_out_message(message)


krait.websockets.response = WebsocketsResponse(EchoCtrl())
