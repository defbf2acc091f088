"""GET /stats: a controller class whose route is declared right here, by a decorator."""

import os
import time

import storage

import krait
from krait import mvc

_started = time.time()


@mvc.route_ctrl_decorator("GET", url="/stats")
class StatsCtrl(mvc.CtrlBase):
    """Created for every request to /stats; its attributes are what the view reads as ctrl."""

    def __init__(self) -> None:
        request = krait.request
        self.entries = storage.count("guestbook")
        self.chat_lines = storage.count("chat")
        self.pid = os.getpid()
        self.worker_age = int(time.time() - _started)
        self.method = request.http_method
        self.url = request.url
        self.remote_addr = request.remote_addr
        self.scheme = request.scheme
        self.user_agent = request.headers.get("user-agent", "(none)")

    def get_view(self) -> str:
        return ".view/stats.html"
