"""Every shell command of README.md and docs/tutorial.md, run as a reader would (issue 7), so
the docs cannot rot.

The documents are read as Markdown: each fenced ``sh`` block is run with bash (``-euo
pipefail``) in a temporary folder, in document order; a block whose info string carries
``file=PATH`` (```` ```python file=mysite/sign.py ````) is written to that path first, as the
reader is told to. A command that starts krait (``krait SITE ...``, ``python -m krait SITE``) is
started in the background, checked to answer on its port, and stopped by its process id with
SIGINT (Ctrl-C) before the next one starts or at the end. When the line after a block starts
with "prints" and holds a `TEXT` in backquotes, the block's output must contain the first one.

Two things differ from a reader's terminal, on purpose: port 8080 is replaced by a free port
(tests may run beside a real server), and the folder holding this Python is put first on PATH
(so ``krait`` and ``python3`` are the ones under test).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC_PORT = "8080"

#: Commands not run here (a block that contains one is skipped whole), with the reason. Keep
#: this short.
SKIP = {
    re.compile(r"(^|[\s;&|/])scripts/test\b"):
        "runs the whole test suite, this test included; CI runs exactly it (.ci/run), so it "
        "is executed on every submission anyway",
}

#: A command that starts a server: ``krait SITE`` (any path to krait) or ``python -m krait``.
_SERVER = re.compile(r"(?:^|[\s;&|(])(?:\S*/)?(?:krait|python3? -m krait)\s+(?!-)\S+", re.M)
_FENCE = re.compile(r"^(`{3,})\s*([^`\s]*)(.*)$")


@dataclass
class Block:
    """One fenced block of a Markdown file."""

    doc: str
    line: int          # 1-based line of the opening fence
    lang: str
    file: str | None   # the path of a ``file=PATH`` block
    text: str
    prints: str | None  # what the following "prints `...`" line promises

    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    """The top-level fenced blocks of a Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, rest = m.groups()
        file_match = re.search(r"\bfile=(\S+)", rest)
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        j = i
        while j < len(lines) and not lines[j].strip():
            j += 1
        promise = re.match(r"prints[^`]*`([^`]+)`", lines[j]) if j < len(lines) else None
        blocks.append(Block(path.name, start + 1, lang.lower(),
                            file_match.group(1) if file_match else None,
                            "\n".join(body) + "\n", promise.group(1) if promise else None))
    return blocks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Reader:
    """Plays a document's blocks in a folder, like a reader with two terminals."""

    def __init__(self, workdir: Path, logs: Path, server_timeout: float) -> None:
        self.workdir = workdir
        self.logs = logs
        self.server_timeout = server_timeout
        self.port = free_port()
        self.server: subprocess.Popen[bytes] | None = None
        self.server_log: Path | None = None
        self.ran: list[str] = []
        self.env = dict(os.environ)
        self.env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + self.env["PATH"]
        self.env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        self.env["KRAIT_TEMPLATE_CACHE"] = str(logs / "template-cache")
        self.env.pop("VIRTUAL_ENV", None)

    def command(self, block: Block) -> str:
        return block.text.replace(DOC_PORT, str(self.port))

    def play(self, block: Block) -> None:
        if block.file is not None:
            target = self.workdir / block.file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text, encoding="utf-8")
            return
        if block.lang not in ("sh", "bash", "shell"):
            return
        if any(pattern.search(block.text) for pattern in SKIP):
            return
        if _SERVER.search(block.text):
            self.start_server(block)
        else:
            self.run(block)
        self.ran.append(block.where())

    def run(self, block: Block) -> None:
        try:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", self.command(block)],
                                  cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=120)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{block.where()}: still running after 120 s") from exc
        out = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
        assert done.returncode == 0, (f"{block.where()}: exit status {done.returncode}\n"
                                      f"{block.text}\n{out}\n{self.server_output()}")
        if block.prints is not None:
            assert block.prints in out, f"{block.where()}: expected {block.prints!r} in\n{out}"

    def start_server(self, block: Block) -> None:
        text = block.text.strip()
        assert "\n" not in text, f"{block.where()}: a block that starts krait holds nothing else"
        self.stop_server()  # the reader pressed Ctrl-C in the server's terminal
        self.server_log = self.logs / f"server-{len(self.ran)}.log"
        with open(self.server_log, "wb") as log:
            # A session of its own: SIGINT to its group is Ctrl-C in its terminal.
            self.server = subprocess.Popen(
                ["bash", "-c", self.command(block)], cwd=self.workdir, env=self.env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        url = f"http://127.0.0.1:{self.port}/"
        deadline = time.monotonic() + self.server_timeout
        while True:
            if self.server.poll() is not None:
                raise AssertionError(f"{block.where()}: the server exited with "
                                     f"{self.server.returncode}\n{self.server_output()}")
            if re.search(rf"https?://\S+:{self.port}/", self.server_output()):
                try:
                    with urllib.request.urlopen(url, timeout=5) as answer:
                        assert answer.status == 200
                    break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
            assert time.monotonic() < deadline, (f"{block.where()}: no answer at {url} within "
                                                 f"{self.server_timeout} s\n"
                                                 f"{self.server_output()}")
            time.sleep(0.1)

    def server_output(self) -> str:
        if self.server_log is None or not self.server_log.exists():
            return ""
        return self.server_log.read_text(errors="replace")

    def stop_server(self) -> None:
        if self.server is None:
            return
        server, self.server = self.server, None
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
                raise AssertionError(f"Ctrl-C did not stop the server\n{self.server_output()}"
                                     ) from None
        output = self.server_output()
        assert server.returncode == 0, f"exit status {server.returncode}\n{output}"
        assert "Traceback" not in output, output


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[Reader]:
    workdir = tmp_path / "work"
    workdir.mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()
    r = Reader(workdir, logs, server_timeout=30)
    try:
        yield r
    finally:
        if r.server is not None and r.server.poll() is None:
            os.killpg(r.server.pid, signal.SIGKILL)
            r.server.wait()


def test_markdown_blocks_are_found() -> None:
    blocks = fenced_blocks(REPO / "docs" / "tutorial.md")
    shell = [b for b in blocks if b.lang == "sh"]
    files = [b for b in blocks if b.file]
    assert len(shell) >= 8 and len(files) >= 8
    assert sum(bool(_SERVER.search(b.text)) for b in shell) >= 3
    assert sum(bool(b.prints) for b in shell) >= 5
    assert not _SERVER.search("curl -fsS http://127.0.0.1:8080/\nkrait --help\n")
    assert _SERVER.search(".venv/bin/pip install . && .venv/bin/krait site-example --port 8080")
    assert all(p.search("FUZZ_SECONDS=5 scripts/test") for p in SKIP)


def test_tutorial_commands(reader: Reader) -> None:
    blocks = fenced_blocks(REPO / "docs" / "tutorial.md")
    for block in blocks:
        reader.play(block)
    reader.stop_server()
    assert len(reader.ran) == sum(b.lang == "sh" and b.file is None for b in blocks)
    site = reader.workdir / "mysite"
    assert (site / ".private" / "guestbook.jsonl").read_text().count("Ada") == 1


def test_readme_commands(reader: Reader) -> None:
    """The README's first command installs krait from a copy of this repository into a fresh
    virtual environment, builds the documentation into site-example/docs/ and starts the
    example site, whose /docs/ then serves that HTML."""
    skip = shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.so", ".hypothesis",
        ".pytest_cache", ".ruff_cache", ".benchmarks", "_build", "*.db", "*.db-*")

    def ignore(folder: str, names: list[str]) -> set[str]:
        # Not a documentation build left in site-example/ by a manual run: the command makes it.
        extra = {"docs"} if Path(folder) == REPO / "site-example" else set()
        return set(skip(folder, names)) | extra

    shutil.copytree(REPO, reader.workdir, dirs_exist_ok=True, ignore=ignore)
    reader.server_timeout = 480   # pip builds krait's C core first
    blocks = [b for b in fenced_blocks(REPO / "README.md") if b.lang == "sh"]
    assert blocks, "the README has no sh block"
    for block in blocks:
        reader.play(block)
    assert reader.server is not None, "no README command started the example site"
    page = urllib.request.urlopen(f"http://127.0.0.1:{reader.port}/guestbook", timeout=10)
    assert b"Guestbook" in page.read()
    # The example site's Docs link: the documentation as HTML, built by the same command.
    with urllib.request.urlopen(f"http://127.0.0.1:{reader.port}/docs/", timeout=10) as page:
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
        assert b"krait documentation" in page.read()
    with urllib.request.urlopen(f"http://127.0.0.1:{reader.port}/docs/tutorial.html",
                                timeout=10) as page:
        assert b"sphinxsidebar" in page.read()
    reader.stop_server()
    assert reader.ran, "no README command ran"


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown text."""
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            text = re.sub(r"[`*_]", "", m.group(1)).strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("doc", ["README.md", "docs/index.md", "docs/tutorial.md",
                                 "docs/deployment.md", "docs/migrating.md"])
def test_relative_links_resolve(doc: str) -> None:
    path = REPO / doc
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)   # not inside code blocks
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        assert linked.exists(), f"{doc}: broken link {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked.read_text(encoding="utf-8")), \
                f"{doc}: no heading for {target}"
