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
