"""Multipart uploads through a real krait: a body past the spool threshold reaches the worker
as a file, and get_multipart_form() parses it from that file in chunks, file parts going to
temporary files — the worker's memory stays far below the upload's size, the file arrives
intact, the fields are right, a malformed body answers 400, too much field data 413, and the
part files are gone once the request has been answered."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
from pathlib import Path

import pytest

from tests.conftest import KraitProcess, write_site

MIB = 1024 * 1024
UPLOAD_MIB = 50

INIT = f'''\
from krait import config
config.max_body_size = {UPLOAD_MIB + 4} * 1024 * 1024
config.max_form_memory_size = 4096
config.routes = [config.Route("POST", url="/upload.py"), config.Route()]
'''

PID = '''\
import os
import krait
krait.response = krait.JsonResponse({"pid": os.getpid()})
'''

UPLOAD = '''\
import hashlib
import os
import krait
request = krait.request
parts = request.get_multipart_form()
out = []
for p in parts:
    digest = hashlib.sha256()
    while True:
        block = p.file.read(65536)
        if not block:
            break
        digest.update(block)
    out.append({"name": p.name, "filename": p.filename, "content_type": p.content_type,
                "size": p.size, "sha256": digest.hexdigest(), "in_memory": p._data is not None,
                "text": p.data.decode() if p.filename is None else None})
saved = request.get_multipart_part("upload")
if saved is not None and request.query.get("save"):
    path = saved.save(os.path.join(krait.site_root, "saved.bin"))
    with open(path, "rb") as f:
        out.append({"saved_sha256": hashlib.file_digest(f, "sha256").hexdigest()})
krait.response = krait.JsonResponse({"spooled": request.body_file is not None,
                                     "same_parts": request.get_multipart_form() == parts,
                                     "parts": out})
'''

BOUNDARY = "----kraitUploadBoundary7MA4YWxkTrZu0gW"


def multipart_body(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    """(name, filename or None, content) parts as a multipart/form-data body."""
    out = []
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
        if filename is not None:
            head += "Content-Type: application/octet-stream\r\n"
        out += [head.encode(), b"\r\n", content, b"\r\n"]
    out.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(out)


def post(server: KraitProcess, path: str, body: bytes,
         content_type: str = f"multipart/form-data; boundary={BOUNDARY}",
         timeout: float = 60) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def deleted_files(pid: int) -> list[str]:
    """The worker's descriptors open on removed files (a part's temporary file is one)."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.endswith("(deleted)"):
            out.append(target)
    return out


@pytest.fixture
def upload_site(tmp_path: Path) -> Path:
    return write_site(tmp_path / "site", {".py/init.py": INIT, "pid.py": PID,
                                          "upload.py": UPLOAD})


def worker_pid(server: KraitProcess) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/pid.py")
    pid = json.loads(conn.getresponse().read())["pid"]
    conn.close()
    return pid


def test_50_mib_upload_is_streamed_from_the_spooled_file(upload_site, krait_server):
    server = krait_server(upload_site, "--workers", "1")
    pid = worker_pid(server)
    data = os.urandom(UPLOAD_MIB * MIB)
    body = multipart_body([("title", None, "Grüße".encode()),
                           ("upload", "big;file.bin", data),
                           ("after", None, b"tail")])
    # The worker's peak resident memory is measured from here: reset, then read after.
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = status_kib(pid, "VmRSS")
    status, raw = post(server, "/upload.py?save=1", body)
    peak = status_kib(pid, "VmHWM")
    assert status == 200, raw[:500]
    answer = json.loads(raw)
    assert answer["spooled"] is True
    assert answer["same_parts"] is True
    fields = [(p["name"], p["filename"], p["text"]) for p in answer["parts"][:3]]
    assert fields == [("title", None, "Grüße"), ("upload", "big;file.bin", None),
                      ("after", None, "tail")]
    upload = answer["parts"][1]
    assert upload["size"] == len(data)
    assert upload["sha256"] == hashlib.sha256(data).hexdigest()
    assert upload["content_type"] == "application/octet-stream"
    assert upload["in_memory"] is False
    assert answer["parts"][3] == {"saved_sha256": hashlib.sha256(data).hexdigest()}
    assert (upload_site / "saved.bin").stat().st_size == len(data)
    # Far below the upload's 50 MiB: the body and the part were never whole in memory.
    assert peak - before < 12 * 1024, (before, peak)
    # The part's temporary file went with the answer (the spooled body too).
    assert deleted_files(pid) == []


def test_small_file_parts_stay_in_memory(upload_site, krait_server):
    server = krait_server(upload_site, "--workers", "1")
    small = os.urandom(1000)
    status, raw = post(server, "/upload.py", multipart_body([("upload", "s.bin", small)]))
    assert status == 200, raw[:500]
    answer = json.loads(raw)
    assert answer["spooled"] is False
    (part,) = answer["parts"]
    assert part["in_memory"] is True and part["size"] == 1000
    assert part["sha256"] == hashlib.sha256(small).hexdigest()


@pytest.mark.parametrize("size", [1000, 3 * MIB])  # in memory, and spooled to a file
def test_malformed_multipart_is_400(upload_site, krait_server, size):
    server = krait_server(upload_site, "--workers", "1")
    body = multipart_body([("upload", "x.bin", b"x" * size)])
    truncated = body[:-len(f"--{BOUNDARY}--\r\n") - 10]  # no closing delimiter
    status, raw = post(server, "/upload.py", truncated)
    assert status == 400, raw[:300]
    junk = b"junk" + body  # the boundary after other bytes: refused however it is read
    status, _ = post(server, "/upload.py", junk)
    assert status == 400
    pid = worker_pid(server)
    assert deleted_files(pid) == []
    assert "Traceback" not in server.log()


def test_plain_fields_past_max_form_memory_size_are_413(upload_site, krait_server):
    server = krait_server(upload_site, "--workers", "1")
    status, raw = post(server, "/upload.py", multipart_body([("a", None, b"x" * 4096)]))
    assert status == 200, raw[:300]
    status, _ = post(server, "/upload.py",
                     multipart_body([("a", None, b"x" * 2048), ("b", None, b"y" * 2049)]))
    assert status == 413
    # A file part is not a plain field: 3 MiB of it is fine with a 4 KiB field limit.
    status, raw = post(server, "/upload.py", multipart_body([("upload", "f", b"z" * 3 * MIB)]))
    assert status == 200, raw[:300]
