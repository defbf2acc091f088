"""Routes of the WebSocket benchmark site (bench/websocket.py)."""

from krait import config

config.routes = [
    config.Route("WEBSOCKET", url="/echo", target="ws/echo.py"),
    config.Route("WEBSOCKET", url="/echo-queue", target="ws/echo_queue.py"),
    config.Route("WEBSOCKET", url="/sub", target="ws/sub.py"),
    config.Route("WEBSOCKET", url="/pub", target="ws/pub.py"),
    config.Route("WEBSOCKET", url="/csub", target="ws/csub.py"),
    config.Route("WEBSOCKET", url="/cpub", target="ws/cpub.py"),
    config.Route(),  # GET /ready -> ready.py
]
