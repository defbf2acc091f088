"""Cache rules (config.cache_*) never run a site's regex in the core's loop: plain rules
(a literal, before.*after) are evaluated in C with no worker at all; a site with any other
regex has a worker decide each static file's flags once (a question like a regex route's),
the core caching the answer. Through a real krait with one loop and with three."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.conftest import HttpReader, KraitProcess, write_site

NO_STORE = "no-cache, no-store, must-revalidate"
DEFAULT = "max-age=300, must-revalidate"
PRIVATE = "private, max-age=300, must-revalidate"
PUBLIC = "public, max-age=300, must-revalidate"
LONG = "max-age=864000, must-revalidate"
PUBLIC_LONG = "public, max-age=864000, must-revalidate"

#: The same rules twice: as the core evaluates them, and as regexes only Python can run (a
#: class of one letter is the same text, but no longer a plain rule). The slow rule takes
#: minutes on EVIL's name: ``(a+)+b`` against thirty a's and no b.
PLAIN = '''\
from krait import config
config.cache_no_store = [r"secret\\.txt", r"priv/x\\.txt"]
config.cache_private = [r"priv/.*"]
config.cache_public = [r".*\\.css", r"pub/.*"]
config.cache_long_term = [r"img/.*\\.png", r"pub/long\\.css"]
'''
REGEX = '''\
from krait import config
config.cache_no_store = [r"secre[t]\\.txt", r"pri[v]/x\\.txt", r"(a+)+b"]
config.cache_private = [r"pri[v]/.*"]
config.cache_public = [r".*\\.(css)", r"pu[b]/.*"]
config.cache_long_term = [r"im[g]/.*\\.png", r"pu[b]/long\\.css"]
'''
EVIL = "a" * 30 + ".txt"
FILES = {
    "plain.txt": "plain\n", "secret.txt": "s\n", "priv/a.txt": "p\n", "priv/x.txt": "x\n",
    "priv/b.css": "b{}\n", "style.css": "a{}\n", "pub/long.css": "l{}\n", "pub/r.txt": "r\n",
    "img/x.png": "png\n", "img/x.gif": "gif\n", EVIL: "evil\n",
    "sleep.py": "import time\nimport krait\ntime.sleep(6)\nkrait.response = "
                "krait.Response(body='slept')\n",
}
EXPECTED = {
    "/plain.txt": DEFAULT, "/secret.txt": NO_STORE, "/priv/a.txt": PRIVATE,
    "/priv/x.txt": PRIVATE,  # no-store, overridden by a later list (private)
    "/priv/b.css": PUBLIC,   # private, overridden by public
    "/style.css": PUBLIC, "/pub/long.css": PUBLIC_LONG, "/pub/r.txt": PUBLIC,
    "/img/x.png": LONG, "/img/x.gif": DEFAULT,
}


def get(server: KraitProcess, target: str, extra: str = "",
        timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    s = server.connect(timeout=timeout)
    try:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: h\r\n{extra}\r\n".encode())
        return HttpReader(s, timeout=timeout).read()
    finally:
        s.close()


def site(tmp_path: Path, init: str) -> Path:
    return write_site(tmp_path / "site", {".py/init.py": init, **FILES})


@pytest.mark.parametrize("loops", ["1", "3"])
@pytest.mark.parametrize("init", [PLAIN, REGEX], ids=["plain", "regex"])
def test_static_files_get_their_cache_headers(tmp_path: Path, krait_server, init: str,
                                              loops: str) -> None:  # noqa: ANN001
    server = krait_server(site(tmp_path, init), "--loops", loops, "--workers", "2")
    # Each file three times on new connections (other loops, the answer cached or not), and
    # pipelined on one connection.
    for _ in range(3):
        for path, cache_control in EXPECTED.items():
            status, headers, _ = get(server, path)
            assert (status, headers.get("cache-control")) == (200, cache_control), path
    s = server.connect(timeout=10)
    try:
        s.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: h\r\n\r\n".encode() for p in EXPECTED))
        reader = HttpReader(s, timeout=10)
        for path, cache_control in EXPECTED.items():
            status, headers, body = reader.read()
            assert (status, headers.get("cache-control")) == (200, cache_control), path
            assert body == Path(server.site, path[1:]).read_bytes()
    finally:
        s.close()
    # A revalidation keeps the file's flags (304 carries them); a no-store file is never 304.
    status, headers, _ = get(server, "/style.css")
    status, headers, _ = get(server, "/style.css", f"If-None-Match: {headers['etag']}\r\n")
    assert (status, headers.get("cache-control")) == (304, PUBLIC)
    status, headers, _ = get(server, "/secret.txt", "If-None-Match: *\r\n")
    assert (status, headers.get("cache-control")) == (200, NO_STORE)
    assert get(server, "/plain.txt", "If-None-Match: *\r\n")[0] == 304


@pytest.mark.parametrize("loops", ["1", "3"])
def test_plain_rules_need_no_worker(tmp_path: Path, krait_server, loops: str) -> None:  # noqa: ANN001
    """The only worker runs a 6 s script: static files under plain rules are answered all
    the same, so their flags were decided without asking it."""
    server = krait_server(site(tmp_path, PLAIN), "--loops", loops, "--workers", "1",
                          "--worker-pipeline", "1")
    slow: list[int] = []
    t = threading.Thread(target=lambda: slow.append(get(server, "/sleep.py", timeout=30)[0]))
    t.start()
    time.sleep(0.5)  # the worker runs it now
    try:
        for path, cache_control in EXPECTED.items():
            status, headers, _ = get(server, path, timeout=4)  # a hang bound, not a timing
            assert (status, headers.get("cache-control")) == (200, cache_control), path
        assert not slow, "the script finished first: the test proved nothing"
    finally:
        t.join(30)
    assert slow == [200]


@pytest.mark.parametrize("loops", ["1", "3"])
def test_slow_cache_regex_does_not_stall_static_files(tmp_path: Path, krait_server,
                                                      loops: str) -> None:  # noqa: ANN001
    """A cache-rule regex that backtracks for minutes on one file's name costs the worker
    that runs it (504 at worker_timeout, the worker replaced): static files on other
    connections are answered while it runs."""
    server = krait_server(site(tmp_path, REGEX), "--loops", loops, "--workers", "2",
                          "--worker-timeout", "3")
    assert "repeats a group that itself repeats" in server.log()
    assert get(server, "/plain.txt")[1]["cache-control"] == DEFAULT  # its answer is cached
    evil: list[int] = []

    def fetch_evil() -> None:
        s = server.connect(timeout=30)
        try:
            s.sendall(f"GET /{EVIL} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
            evil.append(HttpReader(s, timeout=30).read()[0])
        finally:
            s.close()

    t = threading.Thread(target=fetch_evil)
    t.start()
    time.sleep(0.5)  # the question is with a worker now
    try:
        for path in ("/plain.txt", "/style.css", "/plain.txt", "/priv/a.txt"):
            status, headers, _ = get(server, path, timeout=5)  # a hang bound
            assert (status, headers.get("cache-control")) == (200, EXPECTED[path]), path
        assert not evil, "the slow question ended first: the test proved nothing"
    finally:
        t.join(30)
    assert evil == [504]  # its worker overran worker_timeout and was replaced
    assert get(server, "/img/x.png")[1]["cache-control"] == LONG
