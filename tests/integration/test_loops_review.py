"""Review of ``--loops`` (commits 289325d, 12b519c): findings shown through a real krait.

Finding 1: a regex route's answer is cached only in the route cache of the loop that asked a
worker, and only the hub (loop 0) asks one. On loops 1..N-1 every request that reaches a regex
route in the route list (with the usual ``[Route(regex=...), Route()]``: every static file not
matched before it) is KRAIT__ROUTE_ASK again, so its connection moves to the hub, is served
there, and goes home again: two hand-overs per static request and every static file served by
loop 0.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import HttpReader, write_site


def _loop_line(log: str) -> list[tuple[int, int]]:
    m = re.search(r"loops served (.*)", log)
    assert m, log
    return [(int(r), int(c)) for r, c in
            re.findall(r"(\d+) requests? on (\d+) connections?", m.group(1))]


def test_static_files_behind_a_regex_route_are_served_on_their_home_loop(
        tmp_path: Path, krait_server) -> None:  # noqa: ANN001
    site = write_site(tmp_path / "site", {
        "a.txt": "static a\n",
        "item.py": "import krait\nkrait.response = krait.Response(body='item')\n",
        ".py/init.py": "import krait\nfrom krait import config\n"
                       "config.routes = [config.Route('GET', regex=r'/item/(?P<id>\\d+)', "
                       "target='item.py'), config.Route()]\n",
    })
    server = krait_server(site, "--loops", "3", "--workers", "1")
    conns, statics = 30, 20
    for _ in range(conns):  # sequential: the loops take turns accepting
        with server.connect() as s:
            r = HttpReader(s)
            for _ in range(statics):
                s.sendall(b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n")
                assert r.read()[2] == b"static a\n"
    assert server.stop() == 0
    loops = _loop_line(server.log())
    assert all(c > 0 for _, c in loops), f"a loop accepted no connection: {loops}"
    # Without a regex route these are all served where they were accepted (as
    # test_loops.py::test_connections_go_home_after_python shows); with one, at most the first
    # request of each (verb, path) needs the hub.
    for r, c in loops[1:]:
        assert r >= (statics - 1) * c, f"static requests went through loop 0: {loops}"
