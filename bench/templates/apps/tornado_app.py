"""Tornado's web framework and templates for bench/templates/run.py:
``python tornado_app.py PORT PROCESSES``.

``GET /table`` renders the layout (``{% extends %}``) and the 100-row table of ``data.py``
with Tornado's autoescaping. Binds 127.0.0.1:PORT once, then forks PROCESSES processes that
share the socket (``tornado.process.fork_processes``). Whitespace is kept (``"all"``), as the
other engines do.
"""

import os
import sys

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.netutil import bind_sockets
from tornado.process import fork_processes
from tornado.web import Application, RequestHandler

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import data  # noqa: E402


class Table(RequestHandler):
    def get(self) -> None:
        self.render("table.html", title=data.TITLE, rows=data.ROWS)


def main() -> None:
    port, processes = int(sys.argv[1]), int(sys.argv[2])
    sockets = bind_sockets(port, address="127.0.0.1")
    fork_processes(processes, max_restarts=0)
    app = Application([(r"/table", Table)],
                      template_path=os.path.join(HERE, "tornado_templates"),
                      template_whitespace="all", compiled_template_cache=True)
    server = HTTPServer(app, xheaders=False)
    server.add_sockets(sockets)
    IOLoop.current().start()


if __name__ == "__main__":
    main()
