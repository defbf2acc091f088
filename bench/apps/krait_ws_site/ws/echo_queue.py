"""/echo-queue, queue style: the controller's own thread pops each message and sends it back."""

import krait
from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse


class EchoQueueCtrl(WebsocketsCtrlBase):
    def on_thread_start(self):
        while not self.should_stop():
            message = self.pop_in_message(timeout=None)  # None once the connection ends
            if message is not None:
                self.push_out_message(message)


krait.websockets.response = WebsocketsResponse(EchoQueueCtrl())
