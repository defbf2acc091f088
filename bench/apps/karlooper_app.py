"""karlooper app for bench/dynamic.py: ``python karlooper_app.py PORT PROCESSES``.

karlooper has no multi-process mode and always binds 0.0.0.0. Here each of PROCESSES forked
processes runs karlooper's epoll loop on its own listening socket on 127.0.0.1:PORT with
SO_REUSEPORT (the kernel spreads connections over them): the closest equivalent of
``--workers N``. karlooper closes the connection after every response (no keep-alive).
"""

import os
import socket
import sys

_Socket = socket.socket


class _LocalReusePortSocket(_Socket):
    def bind(self, address):  # karlooper binds ('0.0.0.0', port): keep the benchmark local
        host, port = address
        if host == "0.0.0.0":
            host = "127.0.0.1"
        self.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return super().bind((host, port))


socket.socket = _LocalReusePortSocket

from karlooper.web import IOModel  # noqa: E402
from karlooper.web.application import Application  # noqa: E402
from karlooper.web.request import Request  # noqa: E402


class Hello(Request):
    def get(self):
        return self.http_response("Hello world!")


class EightK(Request):
    def get(self):
        return self.http_response("x" * 8192)


def main() -> None:
    port, processes = int(sys.argv[1]), int(sys.argv[2])
    children = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            app = Application({"/hello": Hello, "/8k": EightK}, port=port)
            app.run(io_model=IOModel.EPOLL)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
