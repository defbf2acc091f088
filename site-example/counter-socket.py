"""The WebSocket behind /counter (routed in init.py): a connection subscribed to the channel
``counter``, which is first sent the value it starts from."""

import json

import storage

import krait
from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse


class CounterCtrl(WebsocketsCtrlBase):
    """Subscribes its connection to ``counter``: what counter-post.py publishes there goes
    straight from the server's core to this visitor, without calling this controller."""

    def __init__(self) -> None:
        super().__init__(use_in_message_queue=False)

    def on_start(self) -> None:
        # Subscribe first, then send the current value: an increment in between arrives too,
        # and the page keeps the highest value it has seen (js/counter.js).
        self.subscribe("counter")
        self.push_out_message(json.dumps({"count": storage.counter("clicks")}))
        super().on_start()


if krait.websockets.request is None:
    # Someone opened /counter-socket.py as a page: this script only answers WebSocket handshakes.
    krait.response = krait.ResponseBadRequest()
else:
    krait.websockets.response = WebsocketsResponse(CounterCtrl())
