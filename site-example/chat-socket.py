"""The WebSocket behind /chat (routed in init.py): accept the handshake with a ChatCtrl."""

from chatroom import ChatCtrl

import krait
from krait.websockets import WebsocketsResponse

if krait.websockets.request is None:
    # Someone opened /chat-socket.py as a page: this script only answers WebSocket handshakes.
    krait.response = krait.ResponseBadRequest()
else:
    krait.websockets.response = WebsocketsResponse(ChatCtrl())
