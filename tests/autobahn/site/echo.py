"""Echo every message back as it came (text as text, binary as binary), event style: the
worker's reader thread calls on_in_message, which hands the message straight back to the
core, so no controller thread sits between a message and its echo."""

import krait
from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse


class EchoCtrl(WebsocketsCtrlBase):
    def __init__(self) -> None:
        super().__init__(use_in_message_queue=False)

    def on_in_message(self, message: str | bytes) -> None:
        self.push_out_message(message)


krait.websockets.response = WebsocketsResponse(EchoCtrl())
