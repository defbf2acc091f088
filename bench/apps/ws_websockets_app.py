"""websockets (asyncio server) app for bench/websocket.py:
``python ws_websockets_app.py PORT PROCESSES``.

/echo sends every message back; /sub joins the process's subscribers; every message sent to
/pub goes to all of them through ``websockets.asyncio.server.broadcast``; GET /ready answers
200. The parent binds PROCESSES listening sockets on 127.0.0.1:PORT with SO_REUSEPORT (the
kernel spreads connections over them), forks one process per socket, each running its own
asyncio loop and ``serve``, and waits, passing SIGTERM and SIGINT on to them.
permessage-deflate is off (``compression=None``; the library's default is on); every other
setting is the library's default.
"""

import asyncio
import os
import signal
import socket
import sys
from http import HTTPStatus

from websockets.asyncio.server import broadcast, serve

SUBSCRIBERS: set = set()


async def handler(ws) -> None:
    path = ws.request.path
    if path == "/echo":
        async for message in ws:
            await ws.send(message)
    elif path == "/sub":
        SUBSCRIBERS.add(ws)
        try:
            await ws.wait_closed()
        finally:
            SUBSCRIBERS.discard(ws)
    elif path == "/pub":
        async for message in ws:
            broadcast(SUBSCRIBERS, message)
    else:
        await ws.close(1008, "unknown path")


def process_request(connection, request):
    if request.path == "/ready":
        return connection.respond(HTTPStatus.OK, "ok\n")
    return None


async def run(sock: socket.socket) -> None:
    async with serve(handler, sock=sock, compression=None,
                     process_request=process_request) as server:
        await server.serve_forever()


def main() -> None:
    port, processes = int(sys.argv[1]), int(sys.argv[2])
    socks = []
    for _ in range(processes):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", port))
        s.listen(1024)
        socks.append(s)
    children = []
    for i in range(processes):
        pid = os.fork()
        if pid == 0:
            for j, other in enumerate(socks):
                if j != i:
                    other.close()
            asyncio.run(run(socks[i]))
            os._exit(0)
        children.append(pid)
    for s in socks:
        s.close()

    def stop(signum, _frame):
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for pid in children:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


if __name__ == "__main__":
    main()
