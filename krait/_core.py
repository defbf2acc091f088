"""The only importer of krait._native: the version handshake, error conversion, and the
server handle with an explicit close()."""

from __future__ import annotations

import os
from typing import Any

from krait import _native  # type: ignore[attr-defined]

ffi = _native.ffi
lib = _native.lib

NATIVE_VERSION = 2
if lib.krait_native_version() != NATIVE_VERSION:  # pragma: no cover - a broken install
    raise ImportError(
        f"krait._native is version {lib.krait_native_version()}, expected {NATIVE_VERSION}: "
        "reinstall krait (pip install .)"
    )


class NativeError(OSError):
    """A call into the C core failed."""


def check(rc: int, err: Any = None) -> int:
    """Return rc when it is a success (>= 0); raise NativeError with the core's text otherwise."""
    if rc >= 0:
        return rc
    text = ffi.string(lib.krait_strerror(rc)).decode()
    if err is not None:
        detail = ffi.string(err).decode(errors="replace")
        if detail:
            text = detail
    raise NativeError(text)


class Server:
    """A krait_server handle. Close it with close() or use it as a context manager."""

    def __init__(self, site_root: str) -> None:
        err = ffi.new("char[512]")
        ptr = lib.krait_server_new(site_root.encode(), err, 512)
        if ptr == ffi.NULL:
            raise NativeError(ffi.string(err).decode(errors="replace"))
        self._ptr = ptr
        self._handle: Any = None  # keeps the callback userdata alive

    @property
    def ptr(self) -> Any:
        if self._ptr is None:
            raise ValueError("server is closed")
        return self._ptr

    def set_limit(self, which: int, value: int) -> None:
        check(lib.krait_server_set_limit(self.ptr, which, int(value)))

    def add_mime(self, ext: str, mime_type: str) -> None:
        check(lib.krait_server_add_mime(self.ptr, ext.encode(), mime_type.encode()))

    def set_cache_ages(self, default: int, long_term: int) -> None:
        check(lib.krait_server_set_cache_ages(self.ptr, int(default), int(long_term)))

    def add_route(self, verbs: int, url: str | None, has_regex: bool, target: str | None,
                  is_ctrl: bool) -> None:
        check(lib.krait_server_add_route(
            self.ptr, verbs, url.encode() if url is not None else ffi.NULL, int(has_regex),
            target.encode() if target is not None else ffi.NULL, int(is_ctrl)))

    def add_prefix_route(self, verbs: int, prefix: str) -> None:
        """A route for every path at or below ``prefix``, answered by a worker (a mounted
        application)."""
        check(lib.krait_server_add_prefix_route(self.ptr, verbs, prefix.encode()))

    def add_static_dir(self, verbs: int, prefix: str, folder: str) -> None:
        """A route for every path at or below ``prefix``: a file of ``folder`` (opened now),
        served by the core, never a worker."""
        err = ffi.new("char[512]")
        check(lib.krait_server_add_static_dir(self.ptr, verbs, prefix.encode(),
                                              os.fsencode(folder), err, 512), err)

    def publish(self, channel: bytes, data: bytes, binary: bool) -> None:
        """Deliver a message to the local subscribers of a WebSocket channel (thread-safe,
        never blocking: queued for the loop)."""
        check(lib.krait_server_publish(self.ptr, channel, len(channel), data, len(data),
                                       int(binary)))

    def set_callbacks(self, owner: Any) -> None:
        self._handle = ffi.new_handle(owner)
        check(lib.krait_server_set_callbacks(self.ptr, lib.krait_py_event, self._handle))

    def add_cache_rule(self, flag: int, before: str, after: str | None) -> None:
        """A cache rule the core evaluates: ``before`` exactly, or ``before.*after``."""
        check(lib.krait_server_add_cache_rule(
            self.ptr, flag, before.encode(), ffi.NULL if after is None else after.encode()))

    def set_cache_questions(self, on: bool) -> None:
        """A cache rule is a regex the core does not evaluate: workers decide each file."""
        check(lib.krait_server_set_cache_questions(self.ptr, int(on)))

    def set_access_log(self, fd: int) -> None:
        check(lib.krait_server_set_access_log(self.ptr, fd))

    def set_access_log_format(self, json: bool) -> None:
        """Write the access log as JSON lines (else the Combined Log Format); before run."""
        check(lib.krait_server_set_access_log_format(
            self.ptr, lib.KRAIT_LOG_JSON if json else lib.KRAIT_LOG_COMBINED))

    def swap_access_log(self, fd: int) -> int:
        """Every loop writes to ``fd`` from now on; returns the old descriptor (the caller's
        to close: no loop writes to it after this returns)."""
        return check(lib.krait_server_swap_access_log(self.ptr, fd))

    def set_version(self, version: str) -> None:
        check(lib.krait_server_set_version(self.ptr, version.encode()))

    def set_server_header(self, value: str) -> None:
        """The whole ``Server`` header value (``""``: no header)."""
        check(lib.krait_server_set_server_header(self.ptr, value.encode()))

    def set_never_serve(self, patterns: list[str]) -> None:
        """Shell patterns of names the core never serves (any segment, any case)."""
        check(lib.krait_server_set_never_serve(self.ptr, "\n".join(patterns).encode()))

    def add_static_only(self, prefix: str) -> None:
        """A folder whose files are data: never run, sent with ``nosniff``."""
        check(lib.krait_server_add_static_only(self.ptr, prefix.encode()))

    def add_allowed_host(self, host: str) -> None:
        """A host name requests may carry (``.example.com``: it and its subdomains)."""
        check(lib.krait_server_add_allowed_host(self.ptr, host.encode()))

    def add_trusted_proxy(self, spec: str) -> None:
        """A trusted proxy for the PROXY protocol: ``unix``, an address or a network."""
        check(lib.krait_server_add_trusted_proxy(self.ptr, spec.encode()))

    def set_proxy_protocol(self, on: bool) -> None:
        """A trusted proxy's connections start with a PROXY protocol header (v1 or v2)."""
        check(lib.krait_server_set_proxy_protocol(self.ptr, int(on)))

    def set_html_templates(self, on: bool) -> None:
        check(lib.krait_server_set_html_templates(self.ptr, int(on)))

    def set_error_page(self, status: int, html: bytes, html_type: str, json: bytes) -> None:
        """The page the core sends for its own error with this status (HTML, or JSON to a
        client that prefers it)."""
        check(lib.krait_server_set_error_page(self.ptr, status, html, len(html),
                                              html_type.encode(), json, len(json)))

    def listen(self, host: str, port: int, tls: bool = False) -> int:
        err = ffi.new("char[512]")
        return check(lib.krait_server_listen(self.ptr, host.encode(), port, int(tls), err, 512),
                     err)

    def listen_unix(self, path: str, mode: int) -> None:
        err = ffi.new("char[512]")
        check(lib.krait_server_listen_unix(self.ptr, os.fsencode(path), mode, err, 512), err)

    def listen_fd(self, fd: int, tls: bool = False) -> int:
        """Serve on an inherited listening socket (socket activation); the core owns ``fd``
        from now on. Returns its port (0 for a Unix socket)."""
        err = ffi.new("char[512]")
        return check(lib.krait_server_listen_fd(self.ptr, fd, int(tls), err, 512), err)

    def set_tls(self, cert: str, key: str, passphrase: str | None) -> None:
        """Load the certificate chain and key; raises NativeError naming the bad file."""
        err = ffi.new("char[1024]")
        check(lib.krait_server_set_tls(
            self.ptr, os.fsencode(cert), os.fsencode(key),
            passphrase.encode() if passphrase is not None else ffi.NULL, err, 1024), err)

    def set_https(self, redirect_port: int, hsts: str) -> None:
        check(lib.krait_server_set_https(self.ptr, redirect_port, hsts.encode()))

    def add_worker(self, fd: int, pid: int, pidfd: int = -1) -> int:
        """Hand over a worker's socket (and its pidfd, which the core then signals it by);
        the core owns both descriptors from now on."""
        return check(lib.krait_server_add_worker(self.ptr, fd, pid, pidfd))

    def retire_worker(self, slot: int) -> None:
        check(lib.krait_server_retire_worker(self.ptr, slot))

    def run(self) -> None:
        """Run the loop until SIGTERM/SIGINT; the GIL is released meanwhile."""
        check(lib.krait_server_run(self.ptr))

    def stop(self) -> None:
        lib.krait_server_stop(self.ptr)

    def stat(self, which: int) -> int:
        return int(lib.krait_server_stat(self.ptr, which))

    def set_loops(self, n: int) -> None:
        """Event loops (threads) the core runs; before :meth:`run`."""
        check(lib.krait_server_set_loops(self.ptr, n))

    def loop_stat(self, loop: int, which: int) -> int:
        """A counter of one loop (``KRAIT_STAT_CONNS``: connections it accepted); -1 if none."""
        return int(lib.krait_server_loop_stat(self.ptr, loop, which))

    def stats(self) -> list[int]:
        """Every counter (``KRAIT_STAT_*``) at once, summed over the loops. Thread-safe: the
        core reads them with relaxed atomic loads, without a lock (and without the GIL)."""
        out = ffi.new("int64_t[]", lib.KRAIT_STAT_COUNT)
        n = check(lib.krait_server_stats(self.ptr, out, lib.KRAIT_STAT_COUNT))
        return list(out[0:n])

    def worker_end(self, slot: int) -> int:
        """How the worker the core let go from ``slot`` ended (``KRAIT_WORKER_END_*``); in the
        loop thread, before the slot is given another worker."""
        return check(lib.krait_server_worker_end(self.ptr, slot))

    def close(self) -> None:
        if self._ptr is not None:
            lib.krait_server_free(self._ptr)
            self._ptr = None

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
