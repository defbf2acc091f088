"""Route regexes run in workers, never in the core's loop: a regex that backtracks
exponentially costs the worker that runs it (504 after worker_timeout, the worker replaced),
while static files and other pages go on being served; start-up warns about the shape."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from tests.conftest import HttpReader, KraitProcess, write_site

INIT = '''\
from krait import config

config.routes = [
    config.Route(regex=r"/slug/(?P<s>([a-z0-9]+-?)+)/x", target="page.py"),
    config.Route(regex=r"/item/(?P<id>[0-9]+)", target="item.py"),
    config.Route(),
]
'''

FILES = {
    ".py/init.py": INIT,
    "a.txt": "static\n",
    "page.py": "import krait\nkrait.response = krait.Response(body='slug')\n",
    "item.py": ("import krait\n"
                "krait.response = krait.Response(body='item ' + krait.url_params['id'])\n"),
}


def get(server: KraitProcess, target: str, timeout: float = 10) -> tuple[int, bytes]:
    s = server.connect(timeout=timeout)
    try:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        status, _, body = HttpReader(s, timeout=timeout).read()
        return status, body
    finally:
        s.close()


def test_catastrophic_regex_does_not_freeze_the_server(tmp_path: Path, krait_server) -> None:  # noqa: ANN001
    site = write_site(tmp_path / "site", FILES)
    server = krait_server(site, "--workers", "2", "--worker-timeout", "2")
    assert "repeats a group that itself repeats" in server.log()
    assert get(server, "/item/42") == (200, b"item 42")
    # 30 characters that almost match: Python's re takes minutes on this.
    evil: list[tuple[int, bytes]] = []
    t = threading.Thread(target=lambda: evil.append(get(server, "/slug/" + "a" * 30 + "!",
                                                         timeout=30)))
    t.start()
    time.sleep(0.3)  # the question is with a worker now
    started = time.monotonic()
    assert get(server, "/a.txt", timeout=5) == (200, b"static\n")
    assert get(server, "/item/7", timeout=5) == (200, b"item 7")  # the other worker
    assert time.monotonic() - started < 2, "the loop was held up by the regex"
    t.join(30)
    assert evil and evil[0][0] == 504  # its worker overran worker_timeout and was replaced
    assert get(server, "/item/9") == (200, b"item 9")
    assert get(server, "/slug/ab-cd/x") == (200, b"slug")


def test_route_answers_are_cached(tmp_path: Path, krait_server) -> None:  # noqa: ANN001
    site = write_site(tmp_path / "site", FILES)
    server = krait_server(site, "--workers", "1")
    for _ in range(3):
        assert get(server, "/item/5") == (200, b"item 5")
    # A pipeline of route questions for new paths, answered in order.
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        s.sendall(b"".join(f"GET /item/{i} HTTP/1.1\r\nHost: h\r\n\r\n".encode()
                           for i in range(100, 140)))
        reader = HttpReader(s, timeout=10)
        for i in range(100, 140):
            status, _, body = reader.read()
            assert (status, body) == (200, f"item {i}".encode())
    finally:
        s.close()
