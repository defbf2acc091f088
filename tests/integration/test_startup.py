"""Start-up failures (invariant 6): a mistake in .py/init.py or on the command line stops
krait before it serves anything, with a message naming the file and line, and a non-zero exit
status. Nothing waits for the first request to fail."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_site


def run_krait(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "krait", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def start_site(tmp_path: Path, init: str, files: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    site = write_site(tmp_path / "site", {".py/init.py": init, "page.py": "x = 1\n",
                                          **(files or {})})
    return run_krait(str(site), "--host", "127.0.0.1", "--port", "0", "--workers", "1")


def assert_failed(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    text = result.stdout + result.stderr
    assert result.returncode != 0, text
    assert "serving" not in text, text
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text}"
    return text


def test_exception_in_init(tmp_path):
    text = assert_failed(start_site(tmp_path, "x = 1\n\nraise RuntimeError('boom')\n"),
                         "init.py:3: RuntimeError: boom")
    assert "Traceback (most recent call last)" in text
    assert "runpy" not in text          # only the site's own frames
    assert "krait/supervisor.py" not in text


def test_exception_in_a_module_imported_by_init(tmp_path):
    result = start_site(tmp_path, "import helper\n",
                        {".py/helper.py": "def f():\n    return 1 / 0\n\nf()\n"})
    assert_failed(result, "helper.py:2: ZeroDivisionError: division by zero")


def test_syntax_error_in_init(tmp_path):
    assert_failed(start_site(tmp_path, "a = 1\nb = (\n"),
                  "init.py:2: SyntaxError: '(' was never closed")


def test_syntax_error_in_a_module_imported_by_init(tmp_path):
    result = start_site(tmp_path, "import helper\n",
                        {".py/helper.py": "x = 1\ndef f(:\n    pass\n"})
    assert_failed(result, "helper.py:2: SyntaxError")


ROUTE_ERRORS = [
    ("config.routes = [\n    config.Route(regex='(unclosed'),\n]\n",
     "init.py:3: invalid route regex '(unclosed'"),
    ("config.routes = [config.Route()]\n"
     "config.routes.append(\n    config.Route(target='nope.py'))\n",
     "init.py:4: route target 'nope.py' does not exist"),
    ("config.routes = [\n    config.Route(url='/c', ctrl_class=42),\n]\n",
     "init.py:3: ctrl_class 42 is not callable"),
    ("config.routes = [config.Route('FETCH', url='/x')]\n",
     "init.py:2: unknown route verb 'FETCH'"),
    ("config.routes = [config.Route(url='/x', target='page.py', ctrl_class=dict)]\n",
     "init.py:2: a route takes a target or a ctrl_class, not both"),
    ("config.routes = [config.Route(regex='/(?P<a>x)', target='{b}.py')]\n",
     "init.py:2: target '{b}.py' uses {b}, which the regex does not capture"),
    ("config.routes = [config.Route(url='/x', target='.py/init.py')]\n",
     "init.py:2: route target '.py/init.py' is a hidden path"),
    ("config.routes = 'everything'\n",
     "init.py:2: krait.config.routes must be a list"),
    ("config.routes = [config.Route(), 'x']\n",
     "init.py:2: krait.config.routes holds 'x', not a krait.config.Route"),
]


@pytest.mark.parametrize("init, message", ROUTE_ERRORS)
def test_route_errors(tmp_path, init, message):
    assert_failed(start_site(tmp_path, "from krait import config\n" + init), message)


@pytest.mark.parametrize("init, message", [
    ("config.cache_private = [\n    'ok', '(bad']\n",
     "init.py:2: krait.config.cache_private: invalid regex '(bad'"),
    ("x = 1\nconfig.cache_long_term.append('[z-a]')\n",
     "init.py:3: krait.config.cache_long_term: invalid regex '[z-a]'"),
    ("config.cache_no_store = '.*'\n",
     "init.py:2: krait.config.cache_no_store must be a list of regexes"),
    ("config.max_queue = 0\n", "init.py:2: krait.config.max_queue must be a positive number"),
    ("config.worker_timeout = 'soon'\n",
     "init.py:2: krait.config.worker_timeout must be a positive number"),
    ("config.worker_pipeline = 9\n",
     "init.py:2: krait.config.worker_pipeline must be a whole number from 1 to 8, not 9"),
    ("config.worker_pipeline = 1.5\n",
     "init.py:2: krait.config.worker_pipeline must be a whole number from 1 to 8, not 1.5"),
    ("config.cache_max_age_default = -5\n",
     "init.py:2: krait.config.cache_max_age_default must be a number of seconds"),
    ("config.max_requests = -1\n",
     "init.py:2: krait.config.max_requests must be a whole number, 0 or more, not -1"),
    ("config.max_requests_jitter = 2.5\n",
     "init.py:2: krait.config.max_requests_jitter must be a whole number, 0 or more"),
])
def test_config_errors(tmp_path, init, message):
    assert_failed(start_site(tmp_path, "from krait import config\n" + init), message)


def test_ctrl_import_error_propagates(tmp_path):
    result = start_site(tmp_path, "from krait import mvc\nmvc.import_ctrls_from('nosuchpkg')\n")
    assert_failed(result, "init.py:2: ModuleNotFoundError: No module named 'nosuchpkg'")


def test_failure_only_in_the_workers(tmp_path):
    # init.py runs in the master and again in each worker; a worker that cannot load the
    # site stops start-up too, with its reason.
    init = "import sys\nif '--fd' in sys.argv:\n    raise RuntimeError('worker-only')\n"
    assert_failed(start_site(tmp_path, init), "a worker could not load the site",
                  "init.py:3: RuntimeError: worker-only")


@pytest.mark.parametrize("args, needle", [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["SITE", "--port", "abc"], "invalid port 'abc'"),
    (["SITE", "--port", "70000"], "invalid port '70000'"),
    (["SITE", "--workers", "-1"], "--workers must be at least 1, not -1"),
    (["SITE", "--workers", "0"], "--workers must be at least 1, not 0"),
    (["SITE", "--worker-timeout", "0"], "--worker-timeout must be a positive number, not 0"),
    (["SITE", "--header-timeout", "-1"], "--header-timeout must be a positive number, not -1"),
    (["SITE", "--keepalive-timeout", "nan"], "--keepalive-timeout must be a positive number"),
    (["SITE", "--worker-timeout", "inf"], "--worker-timeout must be a positive number"),
    (["SITE", "--max-body-size", "-5"], "--max-body-size must be a positive number, not -5"),
    (["SITE", "--host", ""], "--host needs an address"),
    (["SITE", "--max-queue", "many"], "invalid int value: 'many'"),
    (["SITE", "--worker-pipeline", "0"], "--worker-pipeline must be a positive number"),
    (["SITE", "--worker-pipeline", "9"], "worker_pipeline must be a whole number from 1 to 8"),
    (["SITE", "--max-requests", "-1"], "--max-requests must be 0 or more, not -1"),
    (["SITE", "--max-requests-jitter", "-3"], "--max-requests-jitter must be 0 or more, not -3"),
    (["SITE", "--max-worker-memory", "-1"], "--max-worker-memory must be 0 or more, not -1"),
    ([], "the site root is required"),
])
def test_bad_arguments_one_line(tmp_path, args, needle):
    site = write_site(tmp_path / "site", {"index.html": "x"})
    result = run_krait(*[str(site) if a == "SITE" else a for a in args])
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0] and lines[0].startswith("krait: ")


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_bad_site_root(tmp_path, kind):
    path = tmp_path / "nowhere"
    if kind == "file":
        path.write_text("not a folder")
    result = run_krait(str(path), "--port", "0")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0]
    assert ("does not exist" if kind == "missing" else "is not a directory") in lines[0]


def test_help(tmp_path):
    result = run_krait("--help")
    assert result.returncode == 0
    for flag in ("--port", "--workers", "--debug", "--reload", "--worker-timeout",
                 "--max-queue", "--version"):
        assert flag in result.stdout
    # Every option shows its default: the help's entries start with "  -".
    options = result.stdout.split("options:")[1]
    entries = [" ".join(e.split()) for e in re.split(r"\n(?=  -)", options) if e.strip()]
    assert len(entries) >= 20
    for entry in entries:
        if not entry.startswith(("-h", "--version")):
            assert "(default:" in entry, entry
    text = " ".join(result.stdout.split())
    assert "(default: 127.0.0.1)" in text and "(default: 8080)" in text
    assert "krait.config.worker_timeout, 30" in text


def test_version():
    import krait

    result = run_krait("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"krait {krait.__version__}"
