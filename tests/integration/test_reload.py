"""A reload that fails (issue 14): a syntax error, a bad regex or a missing target in a save
keeps the old workers serving and is logged once, naming the file and line, however many
workers tried to load it (it used to be logged once per worker)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import KraitProcess, write_site
from tests.integration.test_workers import children

GOOD = '''\
from krait import config
config.routes = [config.Route()]
'''

BROKEN = {
    "syntax": ("from krait import config\nconfig.routes = [\n    config.Route(url='/x'\n",
               "init.py:3: SyntaxError"),
    "regex": ("from krait import config\nconfig.routes = [\n    config.Route(regex='(oops'),\n"
              "    config.Route(),\n]\n", "init.py:3: invalid route regex '(oops'"),
    "target": ("from krait import config\nconfig.routes = [\n    config.Route(),\n"
               "    config.Route(url='/gone', target='missing.py'),\n]\n",
               "init.py:4: route target 'missing.py' does not exist"),
}


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def save(path: Path, text: str) -> None:
    """Rewrite a file so that its mtime surely changes (the --reload watcher polls it)."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 2 * 10**9, before + 2 * 10**9))


def pid_of(server: KraitProcess) -> str:
    r = requests.get(f"{server.url}/pid", timeout=10)
    assert r.status_code == 200
    return r.text


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return write_site(tmp_path / "site", {
        ".py/init.py": GOOD,
        "pid.py": "import os\nimport krait\n"
                  "krait.response = krait.Response(body=str(os.getpid()))\n",
    })


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_failed_reload_is_logged_once_and_changes_nothing(site: Path, krait_server,
                                                            kind: str) -> None:
    server = krait_server(site, "--workers", "3")
    pids = {pid_of(server) for _ in range(6)}
    text, where = BROKEN[kind]
    save(site / ".py/init.py", text)
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in server.log(), what="the failed reload")
    time.sleep(1.0)  # every worker of the new generation has reported by now
    log = server.log()
    assert log.count("reload failed") == 1, log
    assert log.count(where) == 1, log
    line = next(ln for ln in log.splitlines() if "reload failed" in ln)
    assert str(site / ".py" / "init.py") in line
    assert "runpy" not in log and "krait/_site.py" not in log, log
    # Nothing changed: the old workers answer, and no new worker was installed.
    assert "krait: reloaded:" not in log
    assert {pid_of(server) for _ in range(6)} <= pids
    # A good save afterwards reloads.
    save(site / ".py/init.py", GOOD)
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "krait: reloaded:" in server.log(), what="the good reload")
    assert not {pid_of(server) for _ in range(6)} & pids


def test_a_broken_save_under_reload_is_one_message(site: Path, krait_server) -> None:
    server = krait_server(site, "--workers", "3", "--reload")
    pids = {pid_of(server) for _ in range(6)}
    save(site / ".py/init.py", BROKEN["syntax"][0])
    wait_for(lambda: "reload failed" in server.log(), what="the failed reload")
    time.sleep(1.5)
    log = server.log()
    assert log.count("reload failed") == 1, log
    assert log.count("Traceback") == 0 and log.count("config.Route(url='/x'") == 1, log
    assert {pid_of(server) for _ in range(6)} <= pids  # the old workers still serve
    save(site / ".py/init.py", GOOD)
    wait_for(lambda: "krait: reloaded:" in server.log(), what="the good reload")


# --- the core's route table and a reload -----------------------------------------------------
# The core names a request's route by its index in the routes it read at start-up; a worker
# that loaded other routes would run another route's code (an edit that inserts a route at the
# front made /prod/12 render the user controller). Such a worker must never serve.

ROUTED = '''\
from krait import config, mvc

class ProdCtrl(mvc.CtrlBase):
    def get_view(self):
        return ".view/prod.pyml"

class UserCtrl(mvc.CtrlBase):
    def get_view(self):
        return ".view/user.pyml"

config.routes = [
    config.Route("GET", regex=r"^/prod/(?P<id>\\d+)$", ctrl_class=ProdCtrl),
    config.Route("GET", regex=r"^/user/(?P<name>\\w+)$", ctrl_class=UserCtrl),
    config.Route(),
]
'''
NEW_ROUTE = ROUTED.replace(
    "config.routes = [\n",
    "config.routes = [\n    config.Route('GET', url='/newroute', target='page.pyml'),\n")


@pytest.fixture
def routed(tmp_path: Path) -> Path:
    return write_site(tmp_path / "site", {
        ".py/init.py": ROUTED,
        ".view/prod.pyml": "product page",
        ".view/user.pyml": "user page",
        "page.pyml": "new page",
        "pid.py": "import os\nimport krait\n"
                  "krait.response = krait.Response(body=str(os.getpid()))\n",
    })


def answers(server: KraitProcess) -> tuple[str, str, int]:
    prod = requests.get(f"{server.url}/prod/12", timeout=10)
    user = requests.get(f"{server.url}/user/ann", timeout=10)
    new = requests.get(f"{server.url}/newroute", timeout=10)
    assert prod.status_code == 200 and user.status_code == 200
    return prod.text.strip(), user.text.strip(), new.status_code


def test_a_reload_that_changes_the_routes_is_refused(routed: Path, krait_server) -> None:
    server = krait_server(routed, "--workers", "2")
    assert answers(server) == ("product page", "user page", 404)
    pids = {pid_of(server) for _ in range(6)}
    save(routed / ".py/init.py", NEW_ROUTE)
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in server.log(), what="the refused reload")
    time.sleep(0.5)
    log = server.log()
    assert log.count("the routes differ from the ones krait started with") == 1, log
    assert "krait: reloaded:" not in log
    # Every URL is still answered by the code its route names, by the old workers.
    for _ in range(10):
        assert answers(server) == ("product page", "user page", 404)
    assert {pid_of(server) for _ in range(6)} <= pids


def test_a_crash_replacement_with_changed_routes_never_serves(routed: Path, krait_server,
                                                               ) -> None:
    """init.py edited (no reload), then a worker dies: its replacement loads the new routes,
    so it is refused; the other worker serves every URL correctly, and the server lives.
    Once init.py is back as it was, a later attempt is installed."""
    server = krait_server(routed, "--workers", "2")
    pids = wait_for(lambda: len(children(server.proc.pid)) == 2 and children(server.proc.pid),
                    what="two workers")
    save(routed / ".py/init.py", NEW_ROUTE)
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: "replacement worker could not load the site" in server.log(),
             what="the refused replacement")
    for _ in range(20):
        assert answers(server) == ("product page", "user page", 404)
        assert int(pid_of(server)) == max(pids)  # the survivor alone serves
    time.sleep(2.0)  # several retries, each refused
    log = server.log()
    assert log.count("the routes differ") == 1, log  # logged once, not per attempt
    assert server.proc.poll() is None
    save(routed / ".py/init.py", ROUTED)
    wait_for(lambda: "loaded the site and serves" in server.log(), timeout=40,
             what="a replacement once init.py is back")
    assert len(children(server.proc.pid)) == 2
    for _ in range(10):
        assert answers(server) == ("product page", "user page", 404)


def test_a_reload_that_changes_other_settings_says_they_wait(site: Path, krait_server) -> None:
    server = krait_server(site, "--workers", "2")
    pids = {pid_of(server) for _ in range(6)}
    save(site / ".py/init.py", GOOD + "config.cache_no_store = [r'.*\\.txt']\n"
                                      "config.max_queue = 77\n")
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "krait: reloaded:" in server.log(), what="the reload")
    assert not {pid_of(server) for _ in range(6)} & pids
    log = server.log()
    line = next(ln for ln in log.splitlines() if "take effect when krait restarts" in ln)
    assert "cache rules" in line and "limits" in line and "routes" not in line, line
