"""Tornado WebSocket app for bench/websocket.py:
``python ws_tornado_app.py PORT PROCESSES [shared|reuseport]``.

/echo sends every message back; /sub joins the process's subscribers; every message sent to
/pub is written to all of them; GET /ready answers 200. ``shared`` (the default, Tornado's own
multi-process mode): binds 127.0.0.1:PORT once, then ``tornado.process.fork_processes`` (the
processes share the socket, and whichever is awake accepts: a burst of connections may all go
to one). ``reuseport``: binds PROCESSES sockets with SO_REUSEPORT first (the kernel spreads the
connections over them), then forks, each process taking one. With PROCESSES 1 it does not fork.
``WebSocketHandler`` defaults (no permessage-deflate: ``get_compression_options`` returns
None; no pings), except that every connection sets TCP_NODELAY (``set_nodelay(True)``, as
krait and asyncio do by default; Tornado's own default leaves Nagle's algorithm on).
"""

import sys

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.netutil import bind_sockets
from tornado.process import fork_processes
from tornado.web import Application, RequestHandler
from tornado.websocket import WebSocketClosedError, WebSocketHandler

SUBSCRIBERS: set = set()


class Handler(WebSocketHandler):
    def open(self) -> None:
        self.set_nodelay(True)


class Echo(Handler):
    def on_message(self, message) -> None:
        self.write_message(message, binary=isinstance(message, bytes))


class Sub(Handler):
    def open(self) -> None:
        super().open()
        SUBSCRIBERS.add(self)

    def on_message(self, message) -> None:
        pass

    def on_close(self) -> None:
        SUBSCRIBERS.discard(self)


class Pub(Handler):
    def on_message(self, message) -> None:
        binary = isinstance(message, bytes)
        for sub in list(SUBSCRIBERS):
            try:
                sub.write_message(message, binary=binary)
            except WebSocketClosedError:
                SUBSCRIBERS.discard(sub)


class Ready(RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.write(b"ok\n")


def main() -> None:
    port, processes = int(sys.argv[1]), int(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "shared"
    if mode == "reuseport" and processes > 1:
        per_process = [bind_sockets(port, address="127.0.0.1", reuse_port=True)
                       for _ in range(processes)]
        task = fork_processes(processes, max_restarts=0)
        for i, socks in enumerate(per_process):
            if i != task:
                for s in socks:
                    s.close()
        sockets = per_process[task]
    else:
        sockets = bind_sockets(port, address="127.0.0.1")
        if processes > 1:
            fork_processes(processes, max_restarts=0)
    app = Application([(r"/echo", Echo), (r"/sub", Sub), (r"/pub", Pub), (r"/ready", Ready)])
    server = HTTPServer(app, xheaders=False)
    server.add_sockets(sockets)
    IOLoop.current().start()


if __name__ == "__main__":
    main()
