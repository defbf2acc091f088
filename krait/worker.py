"""A worker process: reads request frames from its socketpair, sets the module globals of the
original Krait API (``krait.request``, ``krait.response``, ...), runs the ``.py`` script,
template or controller, and writes the response frame(s) back. One request at a time
(invariant 2). Started by the supervisor as ``python -m krait.worker <site> --fd N``."""

from __future__ import annotations

import argparse
import hashlib
import html
import io
import os
import signal
import socket
import sys
import traceback
from typing import Any

import krait
from krait import _mime, config, mvc, protocol
from krait.errors import HTTPError
from krait.request import Request
from krait.response import ErrorResponse, FileResponse, Response

_NO_STORE = "no-cache, no-store, must-revalidate"


class ScriptCache:
    """Compiled ``.py`` targets, reused until the file changes (mtime or size)."""

    def __init__(self) -> None:
        self._code: dict[str, tuple[int, int, Any]] = {}

    def get(self, path: str) -> Any:
        st = os.stat(path)
        hit = self._code.get(path)
        if hit and hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
            return hit[2]
        with open(path, "rb") as f:
            code = compile(f.read(), path, "exec")
        self._code[path] = (st.st_mtime_ns, st.st_size, code)
        return code


def _content_type_for(name: str) -> str | None:
    """Behaviour §6: the base filename's extension; ``x.json.pyml`` uses ``.json``."""
    base = os.path.basename(name)
    if base.endswith(".pyml"):
        base = base[:-5]
        if "." not in base:
            return "text/html; charset=utf-8"
    if base.endswith(".py"):
        return "application/octet-stream"
    ext = os.path.splitext(base)[1]
    mime = _mime.type_for_extension(ext) if ext else None
    if mime is None:
        return "application/octet-stream" if ext else None
    return _mime.with_charset(mime)


class Worker:
    """The per-process state: init.py's globals, caches, the socket."""

    def __init__(self, site_root: str, sock: socket.socket, debug: bool) -> None:
        self.site_root = site_root
        self.sock = sock
        self.debug = debug
        self.scripts = ScriptCache()
        self.site_globals: dict[str, Any] = {}
        self.routes: list[config.Route] = []
        self.rules: Any = None
        self._templates: Any = None

    # -- start-up -----------------------------------------------------------------------------

    def load(self) -> None:
        from krait.supervisor import Rules, _compile_list, load_site

        self.site_globals = load_site(self.site_root)
        for key, value in os.environ.items():
            if key.startswith("KRAIT_CONFIG_"):
                setattr(config, key[len("KRAIT_CONFIG_"):], float(value)
                        if "." in value else int(value))
        self.routes = list(config.routes or []) or [config.Route()]
        self.rules = Rules(routes=self.routes, no_store=_compile_list("cache_no_store"),
                           private=_compile_list("cache_private"),
                           public=_compile_list("cache_public"),
                           long_term=_compile_list("cache_long_term"))

    @property
    def templates(self) -> Any:
        if self._templates is None:
            from krait.templates.lookup import SiteTemplates

            self._templates = SiteTemplates(self.site_root, run_script=self.run_script)
        return self._templates

    # -- running one request ------------------------------------------------------------------

    def namespace(self, path: str) -> dict[str, Any]:
        """Globals for a script or template: init.py's globals, then krait and ctrl."""
        ns = dict(self.site_globals)
        ns.update({"__name__": "__krait_page__", "__file__": path, "krait": krait,
                   "ctrl": mvc.curr_ctrl})
        return ns

    def run_script(self, path: str, ns: dict[str, Any] | None = None) -> None:
        exec(self.scripts.get(path), ns if ns is not None else self.namespace(path))

    def render(self, path: str) -> str:
        """Render a view/template file; a non-template file is inserted verbatim."""
        if path.endswith((".html", ".htm", ".pyml", ".mako")):
            return self.templates.render(path, self.namespace(path))
        if path.endswith(".py"):
            self.run_script(path)
            return ""
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()

    def render_ctrl(self, ctrl: Any) -> str:
        mvc.push_ctrl(ctrl)
        try:
            view = ctrl.get_view()
            full = krait.get_full_path(view)
            if not os.path.isfile(full):
                raise FileNotFoundError(
                    f"view {view!r} of controller {type(ctrl).__name__} not found ({full})")
            return self.render(full)
        finally:
            mvc.pop_ctrl()

    def handle(self, frame: protocol.RequestFrame) -> tuple[Response, str | None]:
        """Run the target; returns the response and the base filename for its content type
        and cache rules."""
        body_file = frame.body_file
        req = Request(frame.method, frame.path, frame.query, frame.version, frame.headers,
                      b"" if body_file else frame.body, remote_addr=frame.remote_addr,
                      scheme="https" if frame.flags & protocol.REQ_TLS else "http",
                      body_file=body_file)
        krait.request = req
        krait.response = None
        krait.extra_headers = []
        krait.url_params = dict(frame.params)
        krait._content_type = None
        mvc._reset()
        route = self.routes[frame.route] if 0 <= frame.route < len(self.routes) else None
        if route is not None and route.ctrl_class is not None:
            base = frame.path.lstrip("/")
            ctrl = route.ctrl_class()
            if krait.response is not None:
                return krait.response, base
            text = self.render_ctrl(ctrl)
        else:
            path = frame.file
            base = os.path.relpath(path, self.site_root)
            if path.endswith(".py"):
                self.run_script(path)
                text = ""
                if krait.response is None and mvc.init_ctrl is not None:
                    text = self.render_ctrl(mvc.init_ctrl)
            else:
                text = self.render(path)
        if krait.response is not None:
            return krait.response, base
        return Response("HTTP/1.1", 200, [], text), base

    def respond(self, frame: protocol.RequestFrame) -> None:
        base: str | None = None
        try:
            response, base = self.handle(frame)
        except HTTPError as exc:
            response = exc.to_response()
        except Exception:  # noqa: BLE001 - a script's error is a 500, never a dead worker
            sys.stderr.write(f"krait: error in {frame.method} {frame.path}\n")
            traceback.print_exc()
            response = self.error_page()
        try:
            self.send(frame, response, base)
        except (ValueError, TypeError):
            traceback.print_exc()
            self.send(frame, self.error_page(), None)
        finally:
            if frame.body_file:
                try:
                    os.unlink(frame.body_file)
                except OSError:
                    pass

    def error_page(self) -> Response:
        if self.debug:
            text = html.escape(traceback.format_exc())
            body = (f"<html><head><title>500 Internal Server Error</title></head><body>"
                    f"<h1>500 Internal Server Error</h1><pre>{text}</pre></body></html>")
            return Response("HTTP/1.1", 500, [("Content-Type", "text/html; charset=utf-8")],
                            body)
        return ErrorResponse(500)

    def send(self, frame: protocol.RequestFrame, response: Response, base: str | None) -> None:
        headers = [(str(k), str(v)) for k, v in response.headers]
        headers += [(str(k), str(v)) for k, v in krait.extra_headers]
        names = {k.lower() for k, _ in headers}
        if "content-type" not in names and response.status_code not in (204, 304):
            ctype = krait._content_type
            if ctype is None and base is not None:
                ctype = _content_type_for(base)
            if ctype is not None:
                headers.append(("Content-Type", ctype))
        flags = self.rules.cache_flags(base, dynamic=True) if base is not None else 1
        from krait._core import lib

        storable = not (flags & lib.KRAIT_CACHE_NO_STORE)
        fid = frame.id
        if isinstance(response, FileResponse) or getattr(response, "file_path", None):
            if "cache-control" not in names:
                headers.append(("Cache-Control", _NO_STORE))
            protocol.write_frames(self.sock, protocol.encode_response(
                fid, response.status_code, headers, response.file_path, protocol.BODY_FILE))
            return
        if response.is_stream:
            if "cache-control" not in names:
                headers.append(("Cache-Control", _NO_STORE))
            for out in protocol.stream_frames(fid, response.status_code, headers,
                                              response.iter_body()):
                protocol.write_frames(self.sock, out)
            return
        body = response.body_bytes()
        status = response.status_code
        if "cache-control" not in names:
            if storable and status == 200:
                # Behaviour §16.5: a dynamic page made storable gets an ETag of its rendered
                # body, never of its source file.
                etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
                age = config.cache_max_age_long_term if flags & lib.KRAIT_CACHE_LONG \
                    else config.cache_max_age_default
                scope = "private, " if flags & lib.KRAIT_CACHE_PRIVATE else \
                    "public, " if flags & lib.KRAIT_CACHE_PUBLIC else ""
                headers.append(("Cache-Control", f"{scope}max-age={age}, must-revalidate"))
                headers.append(("ETag", etag))
                inm = krait.request.headers.get("if-none-match") if krait.request else None
                if inm and _etag_listed(etag, inm):
                    status, body = 304, b""
            else:
                headers.append(("Cache-Control", _NO_STORE))
        frames = protocol.encode_response_stream(fid, status, headers, body)
        protocol.write_frames(self.sock, *frames)

    def serve(self) -> None:
        reader = protocol.FrameReader(self.sock)
        while True:
            try:
                frame = reader.read_request()
            except EOFError:
                return
            self.respond(frame)


def _etag_listed(etag: str, header: str) -> bool:
    """Weak comparison against an If-None-Match list (RFC 9110 §13.1.2)."""
    if header.strip() == "*":
        return True
    for item in header.split(","):
        item = item.strip()
        if item.startswith("W/"):
            item = item[2:]
        if item == etag:
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="krait.worker")
    parser.add_argument("site_root")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    # The master blocks these for its signalfd; a forked+exec'd child inherits the mask.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                                                signal.SIGCHLD})
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # A script's print() goes to the error log, never into a response.
    sys.stdout = io.TextIOWrapper(os.fdopen(os.dup(2), "wb", buffering=0), line_buffering=True)
    sock = socket.socket(fileno=args.fd)
    worker = Worker(args.site_root, sock, args.debug)
    try:
        worker.load()
    except Exception as exc:  # noqa: BLE001
        sys.stderr.write(f"krait worker: start-up failed: {exc}\n")
        return 3
    worker.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
