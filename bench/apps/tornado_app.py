"""Tornado app for bench/dynamic.py: ``python tornado_app.py PORT PROCESSES``.

Binds 127.0.0.1:PORT once, then forks PROCESSES processes that share the socket (Tornado's own
multi-process mode, ``tornado.process.fork_processes``); the parent only waits on them.
"""

import sys

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.netutil import bind_sockets
from tornado.process import fork_processes
from tornado.web import Application, RequestHandler


class Hello(RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.write(b"Hello world!")


class EightK(RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.write(b"x" * 8192)


def main() -> None:
    port, processes = int(sys.argv[1]), int(sys.argv[2])
    sockets = bind_sockets(port, address="127.0.0.1")
    fork_processes(processes, max_restarts=0)
    app = Application([(r"/hello", Hello), (r"/8k", EightK)])
    server = HTTPServer(app, xheaders=False)
    server.add_sockets(sockets)
    IOLoop.current().start()


if __name__ == "__main__":
    main()
