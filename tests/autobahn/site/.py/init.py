"""The Autobahn|Testsuite echo site: every WebSocket handshake on any path runs echo.py."""

from krait import config

config.routes = [
    config.Route("WEBSOCKET", regex=r"/.*", target="echo.py"),
    config.Route(),
]
# Autobahn's 9.x cases send messages up to 16 MiB; leave room for them.
config.max_websocket_message = 32 * 1024 * 1024
