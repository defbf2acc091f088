"""Sessions, CSRF tokens and flash messages: ``krait.session``, ``krait.csrf_token()``,
``krait.check_csrf()``, ``krait.flash()``.

A session is a dict that follows one visitor from request to request. Set a secret in
``.py/init.py`` and use it from any script, template or controller::

    # .py/init.py
    from krait import config
    config.session_secret = "…"   # python3 -c 'import secrets; print(secrets.token_hex(32))'

    # count.py
    krait.session["visits"] = krait.session.get("visits", 0) + 1

By default the whole session travels in a cookie, signed (with ``itsdangerous``) so that a
visitor can read it but not change it. With ``config.session_store = "file"`` (or a
``"redis://host:port/db"`` URL) only a signed random id travels; the data stays on the server.

Values must be JSON types (``str``, ``int``, ``float``, ``bool``, ``None``, lists and dicts with
``str`` keys). A change inside a value (``krait.session["cart"].append(x)``) is not seen: assign
the value again, or set ``krait.session.modified = True``.

The session of the request being answered is reached through :func:`current`, the one place
that knows where per-request state lives (today a global of the ``krait`` module that the
worker resets before each request).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import itsdangerous

from krait.errors import ConfigError, Forbidden, KraitError

__all__ = [
    "CSRF_FIELD", "CSRF_HEADER", "FileStore", "RedisStore", "Session", "SessionError",
    "SessionStore", "check_csrf", "csrf_input", "csrf_token", "current", "find_use", "flash",
    "get_flashed_messages",
]

#: The form field :func:`check_csrf` reads the token from.
CSRF_FIELD = "csrf_token"
#: The request header :func:`check_csrf` also accepts the token in (for ``fetch()`` calls).
CSRF_HEADER = "X-CSRF-Token"

_CSRF_KEY = "_csrf"
_FLASH_KEY = "_flashes"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# A cookie is re-sent (and a server-side record's lifetime renewed) at most once a minute when
# nothing changed: the session lives session_max_age seconds after the last visit, give or
# take a minute, without a Set-Cookie on every request of a burst.
_REFRESH_AFTER = 60
# Browsers keep cookies of at most 4096 bytes, name and attributes included (RFC 6265 §6.1).
_MAX_COOKIE = 4000
_MIN_SECRET = 32
_FILE_CLEANUP_INTERVAL = 600.0


class SessionError(KraitError, RuntimeError):
    """The session cannot be used or saved: no secret configured, used outside a request, a
    value that is not JSON, or a cookie session too large for a browser."""


# -- the session object -------------------------------------------------------------------------

class Session(dict):
    """The session of one request: a ``dict`` that remembers whether it was changed.

    Use :data:`krait.session` rather than this class: it always means the current request's
    session.
    """

    def __init__(self, data: dict[str, Any] | None = None, *, new: bool = True,
                 sid: str | None = None, issued: float | None = None) -> None:
        super().__init__(data or {})
        #: ``True`` when the request brought no valid session (a first visit, or an expired or
        #: forged cookie).
        self.new: bool = new
        #: Set to ``True`` after changing a value in place (``session["cart"].append(x)``),
        #: so that the session is saved.
        self.modified: bool = False
        self._sid = sid          # the server-side record's id (server-side stores only)
        self._old_sid: str | None = None  # a record to delete (after regenerate())
        self._issued = issued    # when the cookie the request brought was signed
        self._csrf: str | None = None     # this request's signed CSRF token
        self._flashes: list[tuple[str, str]] | None = None  # flashes read by this request

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"session keys must be str, not {type(key).__name__}")
        super().__setitem__(key, value)
        self.modified = True

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.modified = True

    def clear(self) -> None:
        """Empty the session (log out): its cookie, and its server-side record, are deleted."""
        if self:
            self.modified = True
        super().clear()

    def pop(self, key: str, *default: Any) -> Any:
        """Remove ``key`` and return its value (or ``default``, else ``KeyError``)."""
        if key in self:
            self.modified = True
        return super().pop(key, *default)

    def popitem(self) -> tuple[str, Any]:
        """Remove and return the last ``(key, value)`` pair."""
        item = super().popitem()
        self.modified = True
        return item

    def setdefault(self, key: str, default: Any = None) -> Any:
        """``session[key]``, first setting it to ``default`` when absent."""
        if key not in self:
            self[key] = default
        return super().__getitem__(key)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Set several keys, as ``dict.update`` does."""
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def regenerate(self) -> None:
        """Give the session a new id and a new CSRF token, keeping its data. Call it when a
        visitor logs in (or their rights change), so that an id someone else planted or
        saw before the login is worthless afterwards (session fixation)."""
        if self._sid is not None:
            self._old_sid = self._old_sid or self._sid
            self._sid = None
        super().pop(_CSRF_KEY, None)
        self._csrf = None
        self.modified = True


class _SessionProxy:
    """``krait.session``: the session of the request being answered, as a dict.

    It reads and writes :func:`current`'s :class:`Session`, so it may be imported once
    (``from krait import session``) and used in every request. Besides the ``dict`` methods it
    has ``modified``, ``new`` and ``regenerate()`` (see :class:`Session`).
    """

    __slots__ = ()

    def __getitem__(self, key: str) -> Any:
        return current()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        current()[key] = value

    def __delitem__(self, key: str) -> None:
        del current()[key]

    def __contains__(self, key: object) -> bool:
        return key in current()

    def __iter__(self) -> Iterator[str]:
        return iter(current())

    def __len__(self) -> int:
        return len(current())

    def __bool__(self) -> bool:
        return bool(current())

    def __eq__(self, other: object) -> bool:
        return current() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        try:
            return f"<krait.session {dict(current())!r}>"
        except SessionError:
            return "<krait.session (no request)>"

    def get(self, key: str, default: Any = None) -> Any:
        """``session[key]``, or ``default`` when absent."""
        return current().get(key, default)

    def pop(self, key: str, *default: Any) -> Any:
        """Remove ``key`` and return its value (or ``default``, else ``KeyError``)."""
        return current().pop(key, *default)

    def setdefault(self, key: str, default: Any = None) -> Any:
        """``session[key]``, first setting it to ``default`` when absent."""
        return current().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Set several keys, as ``dict.update`` does."""
        current().update(*args, **kwargs)

    def clear(self) -> None:
        """Empty the session (log out): its cookie and server-side record are deleted."""
        current().clear()

    def keys(self) -> Any:
        """The keys, as ``dict.keys``."""
        return current().keys()

    def values(self) -> Any:
        """The values, as ``dict.values``."""
        return current().values()

    def items(self) -> Any:
        """The ``(key, value)`` pairs, as ``dict.items``."""
        return current().items()

    def regenerate(self) -> None:
        """A new session id and CSRF token, the same data (see :meth:`Session.regenerate`)."""
        current().regenerate()

    @property
    def new(self) -> bool:
        """``True`` when the request brought no valid session."""
        return current().new

    @property
    def modified(self) -> bool:
        """Whether the session will be saved; set it after changing a value in place."""
        return current().modified

    @modified.setter
    def modified(self, value: bool) -> None:
        current().modified = bool(value)


#: ``krait.session``: the current request's session (see :class:`_SessionProxy`).
session = _SessionProxy()


# -- server-side stores -------------------------------------------------------------------------

class SessionStore:
    """Where server-side sessions live. Subclass it for another database and assign an
    instance to ``krait.config.session_store``. ``sid`` is a random id that only the signed
    cookie carries; ``data`` is a dict of JSON types. Each worker process calls these methods
    from its request thread."""

    def load(self, sid: str) -> dict[str, Any] | None:
        """The data saved for ``sid``, or ``None`` when there is none or it expired."""
        raise NotImplementedError

    def save(self, sid: str, data: dict[str, Any], max_age: int) -> None:
        """Save ``data`` for ``sid``, to expire ``max_age`` seconds from now."""
        raise NotImplementedError

    def delete(self, sid: str) -> None:
        """Forget ``sid`` (nothing happens when it is unknown)."""
        raise NotImplementedError

    def check(self) -> None:
        """Called at start-up: raise (any exception, its text is shown) when the store cannot
        work, so that the server does not start."""


def _record_name(sid: str) -> str:
    # The store never holds the id itself: a leaked directory listing or Redis dump gives no
    # cookie (which also needs the signature), and the name is safe as a file name.
    return hashlib.sha256(sid.encode("ascii")).hexdigest()


class FileStore(SessionStore):
    """Sessions as files of one directory, one JSON file per session (mode 0600, directory
    0700). Expired files are removed by the workers, at most every ten minutes.

    :param directory: the directory; created when missing. It must not be served: put it
        outside the site root or under a hidden directory (the default is
        ``<site root>/.private/sessions``).
    """

    def __init__(self, directory: str) -> None:
        #: The directory holding the session files.
        self.directory: str = os.path.abspath(directory)
        self._next_cleanup = 0.0

    def check(self) -> None:
        """Create the directory (0700) and check that it is writable."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        st = os.stat(self.directory)
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(self.directory, 0o700)
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise PermissionError(f"the session directory {self.directory} is not writable")

    def _path(self, sid: str) -> str:
        return os.path.join(self.directory, _record_name(sid))

    def load(self, sid: str) -> dict[str, Any] | None:
        """The session's data, or ``None`` (no file, expired, or unreadable)."""
        try:
            with open(self._path(sid), encoding="utf-8") as f:
                record = json.load(f)
            if record["expires"] < time.time():
                self.delete(sid)
                return None
            data = record["data"]
            return data if isinstance(data, dict) else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, sid: str, data: dict[str, Any], max_age: int) -> None:
        """Write the session atomically (a temporary file renamed over the old one)."""
        text = json.dumps({"expires": time.time() + max_age, "data": data},
                          separators=(",", ":"))
        # mkstemp creates the file with mode 0600.
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, self._path(sid))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        now = time.monotonic()
        if now >= self._next_cleanup:
            self._next_cleanup = now + _FILE_CLEANUP_INTERVAL
            self.cleanup(max_age)

    def delete(self, sid: str) -> None:
        """Remove the session's file."""
        try:
            os.unlink(self._path(sid))
        except FileNotFoundError:
            pass

    def cleanup(self, max_age: int) -> int:
        """Remove the files of sessions not saved for ``max_age`` seconds (and temporary files
        left by a worker that died while writing).

        :return: how many files were removed.
        """
        removed = 0
        limit = time.time() - max_age
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return 0
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < limit:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                pass
        return removed


class RedisStore(SessionStore):
    """Sessions in Redis (the ``redis`` package: ``pip install redis``), one key per session
    with Redis's own expiry, so several machines share them.

    :param url: e.g. ``"redis://127.0.0.1:6379/0"`` (``rediss://`` for TLS; a password as
        ``redis://:password@host:6379/0``).
    :param prefix: the start of every key.
    """

    def __init__(self, url: str, prefix: str = "krait:session:") -> None:
        try:
            import redis
        except ImportError:
            raise ConfigError("a redis:// session store needs the redis package "
                              "(pip install redis)") from None
        #: The Redis URL.
        self.url: str = url
        self.prefix: str = prefix
        self._client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    def check(self) -> None:
        """Ping the server."""
        self._client.ping()

    def load(self, sid: str) -> dict[str, Any] | None:
        """The session's data, or ``None``."""
        raw = self._client.get(self.prefix + _record_name(sid))
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def save(self, sid: str, data: dict[str, Any], max_age: int) -> None:
        """``SET key json EX max_age``."""
        self._client.set(self.prefix + _record_name(sid),
                         json.dumps(data, separators=(",", ":")), ex=max_age)

    def delete(self, sid: str) -> None:
        """``DEL key``."""
        self._client.delete(self.prefix + _record_name(sid))


# -- configuration ------------------------------------------------------------------------------

class _Engine:
    """The site's session settings, checked once (at start-up in each process)."""

    def __init__(self, site_root: str) -> None:
        from krait import config
        from krait.cookie import _TOKEN_CHARS

        def fail(name: str, message: str) -> ConfigError:
            where = config.where(name)
            filename, _, line = (where or "").rpartition(":")
            if where and line.isdigit():
                return ConfigError(message, filename, int(line))
            return ConfigError(message, where)

        secret = config.session_secret
        keys = list(secret) if isinstance(secret, (list, tuple)) else \
            [] if secret is None else [secret]
        for key in keys:
            if not isinstance(key, (str, bytes)):
                raise fail("session_secret", "krait.config.session_secret must be a str (or a "
                           "list of them, newest first), not " + type(key).__name__)
            if len(key) < _MIN_SECRET:
                raise fail("session_secret", f"krait.config.session_secret: a secret must have "
                           f"at least {_MIN_SECRET} characters; make one with python3 -c "
                           "'import secrets; print(secrets.token_hex(32))'")
        if isinstance(secret, (list, tuple)) and not keys:
            raise fail("session_secret", "krait.config.session_secret is an empty list")
        #: The secrets, newest first (the first signs, all verify).
        self.keys: list[str | bytes] = keys
        used = [name for name in ("session_store", "session_dir", "session_max_age",
                                  "session_cookie_name", "session_cookie_secure",
                                  "session_same_site") if config.where(name)]
        if not keys and used:
            raise fail(used[0], f"krait.config.{used[0]} is set but sessions need "
                       "krait.config.session_secret too (a random text of 32 characters or more: "
                       "python3 -c 'import secrets; print(secrets.token_hex(32))')")
        max_age = config.session_max_age
        if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age <= 0:
            raise fail("session_max_age", "krait.config.session_max_age must be a positive "
                       f"number of seconds, not {max_age!r}")
        self.max_age: int = max_age
        name = config.session_cookie_name
        if not isinstance(name, str) or not name or not _TOKEN_CHARS.issuperset(name):
            raise fail("session_cookie_name", "krait.config.session_cookie_name must be a "
                       f"cookie name (letters, digits, -_), not {name!r}")
        self.cookie_name: str = name
        same_site = config.session_same_site
        if same_site not in ("Strict", "Lax", "None"):
            raise fail("session_same_site", "krait.config.session_same_site must be 'Strict', "
                       f"'Lax' or 'None', not {same_site!r}")
        self.same_site: str = same_site
        secure = config.session_cookie_secure
        if secure is not None and not isinstance(secure, bool):
            raise fail("session_cookie_secure", "krait.config.session_cookie_secure must be "
                       f"None (Secure under HTTPS), True or False, not {secure!r}")
        self.secure: bool | None = secure
        self.store = self._make_store(config.session_store, config.session_dir, site_root, fail)
        if self.store is not None:
            try:
                self.store.check()
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure stops start-up
                raise fail("session_store", f"krait.config.session_store: the store cannot be "
                           f"used: {type(exc).__name__}: {exc}") from None
        self._serializers: dict[str, itsdangerous.URLSafeTimedSerializer] = {}

    @staticmethod
    def _make_store(value: Any, directory: Any, site_root: str, fail: Any
                    ) -> SessionStore | None:
        if value is None:
            return None
        if isinstance(value, SessionStore):
            return value
        if value == "file":
            if directory is None:
                directory = os.path.join(site_root, ".private", "sessions")
            if not isinstance(directory, str) or not directory:
                raise fail("session_dir", "krait.config.session_dir must be a directory path, "
                           f"not {directory!r}")
            directory = os.path.join(site_root, directory)  # relative to the root
            root = os.path.realpath(site_root)
            real = os.path.realpath(directory)
            if real == root or real.startswith(root + os.sep):
                rel = os.path.relpath(real, root)
                if rel == "." or not any(part.startswith(".") for part in rel.split(os.sep)):
                    raise fail("session_dir", f"krait.config.session_dir: {directory} is served "
                               "by the site; put sessions outside the site root or in a hidden "
                               "directory (the default is .private/sessions)")
            return FileStore(directory)
        if isinstance(value, str) and value.startswith(("redis://", "rediss://", "unix://")):
            return RedisStore(value)
        raise fail("session_store", "krait.config.session_store must be None (the session in "
                   "a signed cookie), \"file\", a \"redis://host:port/db\" URL or a "
                   f"krait.sessions.SessionStore, not {value!r}")

    def serializer(self, purpose: str) -> itsdangerous.URLSafeTimedSerializer:
        """A signer for one purpose (the salt keeps a CSRF token from passing as a session)."""
        found = self._serializers.get(purpose)
        if found is None:
            if not self.keys:
                raise SessionError(
                    "sessions need a secret: set krait.config.session_secret in .py/init.py "
                    "to a random text of 32 characters or more, kept out of version control "
                    "(python3 -c 'import secrets; print(secrets.token_hex(32))')")
            # itsdangerous signs with the last key and verifies with all of them.
            found = itsdangerous.URLSafeTimedSerializer(
                list(reversed(self.keys)), salt=f"krait.{purpose}",
                signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256})
            self._serializers[purpose] = found
        return found


_engine: _Engine | None = None

# What shows that a site's code uses sessions (see find_use).
_USE = None
_SCANNED = (".py", ".html", ".htm", ".pyml", ".mako")
_SCAN_MAX_FILES = 5000
_SCAN_MAX_BYTES = 1024 * 1024


def find_use(site_root: str, view_dirs: list[str] | tuple[str, ...] = (".view",),
             skip: tuple[str, ...] = ()) -> tuple[str, int] | None:
    """The first place in the site's scripts and templates that uses sessions
    (``krait.session``, ``csrf_token``, ``csrf_input``, ``check_csrf``, ``flash``,
    ``get_flashed_messages``), so that a site without a secret fails at start-up rather than
    at its first request. Looks at ``.py``, ``.html``, ``.htm``, ``.pyml`` and ``.mako`` files
    of the site root, ``.py/`` and the view directories (at most 5000 files of 1 MiB).

    :param site_root: the site's folder.
    :param view_dirs: hidden directories that hold templates.
    :param skip: directories (relative to the root, ending in ``/``) never looked at, e.g.
        ``static_only`` ones.
    :return: ``(filename, line)``, or ``None``.
    """
    import re

    global _USE
    if _USE is None:
        _USE = re.compile(
            rb"\bkrait\.(?:session\b|csrf_token\b|csrf_input\b|check_csrf\b|flash\b|"
            rb"get_flashed_messages\b)|\bfrom\s+krait\s+import\s+[^\n]*\b(?:session|"
            rb"csrf_token|csrf_input|check_csrf|flash|get_flashed_messages)\b")
    allowed_hidden = {".py", *(d.strip("/") for d in view_dirs)}
    seen = 0
    for top, dirs, files in os.walk(site_root):
        rel_top = os.path.relpath(top, site_root)
        rel_top = "" if rel_top == "." else rel_top.replace(os.sep, "/") + "/"
        dirs[:] = sorted(d for d in dirs
                         if (not d.startswith(".") or (rel_top + d) in allowed_hidden)
                         and not any((rel_top + d + "/").startswith(p) for p in skip))
        for name in sorted(files):
            if not name.endswith(_SCANNED):
                continue
            seen += 1
            if seen > _SCAN_MAX_FILES:
                return None
            path = os.path.join(top, name)
            try:
                if os.path.getsize(path) > _SCAN_MAX_BYTES:
                    continue
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            found = _USE.search(data)
            if found:
                return path, data.count(b"\n", 0, found.start()) + 1
    return None


def configure(site_root: str) -> None:
    """Check the session settings of ``krait.config`` and set up the store. The server calls
    it at start-up, after ``init.py`` has run.

    :raises krait.errors.ConfigError: for a bad setting, or a store that cannot be used.
    """
    global _engine
    _engine = _Engine(site_root)


def _get_engine() -> _Engine:
    if _engine is None:
        import krait

        configure(krait.site_root or os.curdir)
    assert _engine is not None
    return _engine


# -- the current request's session --------------------------------------------------------------
# The only two functions that know where per-request state lives.

def _get_state() -> Session | None:
    from krait import _state

    return _state.current().extras.get("krait.session")


def _set_state(value: Session | None) -> None:
    from krait import _state

    _state.current().extras["krait.session"] = value


def current() -> Session:
    """The session of the request being answered, loaded from its cookie on first use.

    :raises SessionError: outside a request, or when no secret is configured.
    """
    found = _get_state()
    if found is None:
        found = _load()
        _set_state(found)
    return found


def _load() -> Session:
    import krait

    request = krait.request
    if request is None:
        raise SessionError("krait.session is only available while a request is answered")
    engine = _get_engine()
    raw = request.cookies.get(engine.cookie_name)
    if engine.store is None:
        signer = engine.serializer("session")
        if raw:
            try:
                data, issued = signer.loads(raw, max_age=engine.max_age, return_timestamp=True)
            except itsdangerous.BadData:
                pass
            else:
                if isinstance(data, dict):
                    return Session(data, new=False, issued=issued.timestamp())
        return Session()
    signer = engine.serializer("session-id")
    if raw:
        try:
            sid, issued = signer.loads(raw, max_age=engine.max_age, return_timestamp=True)
        except itsdangerous.BadData:
            pass
        else:
            if isinstance(sid, str):
                data = engine.store.load(sid)
                if data is not None:
                    return Session(data, new=False, sid=sid, issued=issued.timestamp())
    return Session()


def _cookie(engine: _Engine, value: str, max_age: int) -> None:
    import krait
    from krait.cookie import Cookie, set_cookie

    cookie = Cookie(engine.cookie_name, value)
    cookie.set_path("/")
    cookie.set_max_age(max_age)
    secure = engine.secure
    if secure is None:
        secure = krait.request is not None and krait.request.scheme == "https"
    if secure:
        cookie.set_secure(True)
    cookie.set_http_only(True)
    cookie.set_same_site(engine.same_site)
    set_cookie(cookie)


def _finish() -> None:
    """Save the current session if the request used it: called by the worker once the page
    has run, before the response is sent (it adds a ``Set-Cookie`` to ``krait.extra_headers``).

    :raises SessionError: for a value that is not JSON, or a cookie session over 4 KB.
    """
    import krait

    found = _get_state()
    if found is None:
        return
    engine = _get_engine()
    # The page depends on the visitor's cookie: no shared cache may answer it to someone else.
    krait.extra_headers.append(("Vary", "Cookie"))
    store = engine.store
    if found._old_sid is not None and store is not None:
        store.delete(found._old_sid)
    if not found:
        if not found.new or found._old_sid is not None:
            if store is not None and found._sid is not None:
                store.delete(found._sid)
            _cookie(engine, "", 0)  # delete it
        return
    stale = found._issued is None or time.time() - found._issued >= _REFRESH_AFTER
    if not (found.modified or stale):
        return
    data = dict(found)
    try:
        json.dumps(data)
    except (TypeError, ValueError) as exc:
        raise SessionError(f"krait.session holds a value that is not JSON ({exc}); store "
                           "str, int, float, bool, None, lists and dicts") from None
    if store is None:
        value = engine.serializer("session").dumps(data)
        if len(value) + len(engine.cookie_name) > _MAX_COOKIE:
            raise SessionError(
                f"krait.session is {len(value)} bytes once signed, more than a browser keeps "
                "in a cookie; keep it small or set krait.config.session_store = \"file\" "
                "(data on the server, only an id in the cookie)")
    else:
        if found._sid is None:
            found._sid = secrets.token_urlsafe(32)
        store.save(found._sid, data, engine.max_age)
        value = engine.serializer("session-id").dumps(found._sid)
    _cookie(engine, value, engine.max_age)


# -- CSRF ---------------------------------------------------------------------------------------

def csrf_token() -> str:
    """A token for a form of this site, tied to the visitor's session: put it in a hidden field
    named ``csrf_token`` (see :func:`csrf_input`) and call :func:`check_csrf` in the script
    that receives the form. In a ``.pyml``/``.html`` template::

        <input type="hidden" name="csrf_token" value="@krait.csrf_token()@">

    The token stays valid as long as the session (``config.session_max_age``), until
    ``krait.session.clear()`` or ``regenerate()``. Creating the first token stores a value
    in the session, so the visitor gets a session cookie.

    :return: the token (the same for every call during one request).
    """
    found = current()
    if found._csrf is None:
        raw = found.get(_CSRF_KEY)
        if not isinstance(raw, str) or not raw:
            raw = secrets.token_urlsafe(32)
            found[_CSRF_KEY] = raw
        found._csrf = _get_engine().serializer("csrf").dumps(raw)
    return found._csrf


def csrf_input() -> str:
    """The hidden form field holding :func:`csrf_token`, as HTML. Print it unescaped in a
    template: ``@!krait.csrf_input()@``.

    :return: ``<input type="hidden" name="csrf_token" value="…">``.
    """
    return f'<input type="hidden" name="{CSRF_FIELD}" value="{csrf_token()}">'


def check_csrf(token: str | None = None) -> None:
    """Refuse (403) a form that was not made by this site for this visitor: call it first
    in every script that changes something in answer to a ``POST``, ``PUT``, ``PATCH`` or
    ``DELETE``. Requests with a safe method (``GET``, ``HEAD``, ``OPTIONS``, ``TRACE``) pass
    without a check: never change anything in answer to them.

    The token is read from the ``csrf_token`` field of the form (url-encoded or multipart) or,
    for JavaScript's ``fetch()``, from the ``X-CSRF-Token`` header.

    :param token: the token, when it came some other way (a JSON body, say).
    :raises krait.errors.Forbidden: (403) when the token is missing, forged, expired or made
        for another session.
    """
    import krait

    request = krait.request
    if request is None:
        raise SessionError("check_csrf() is only available while a request is answered")
    if request.http_method.upper() in _SAFE_METHODS:
        return
    if token is None:
        token = request.headers.get(CSRF_HEADER)
    if token is None:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            values = request.form_list(CSRF_FIELD)
            token = values[0] if values else None
        elif content_type in ("application/x-www-form-urlencoded", ""):
            token = request.get_post_form().get(CSRF_FIELD)
    expected = current().get(_CSRF_KEY)
    message = ("the form has expired or did not come from this site: go back, reload the page "
               "and send it again")
    if not token or not isinstance(expected, str):
        raise Forbidden(message)
    try:
        raw = _get_engine().serializer("csrf").loads(token, max_age=_get_engine().max_age)
    except itsdangerous.BadData:
        raise Forbidden(message) from None
    if not isinstance(raw, str) or not hmac.compare_digest(raw, expected):
        raise Forbidden(message)


# -- flash messages -----------------------------------------------------------------------------

def flash(message: str, category: str = "message") -> None:
    """Keep a message for the visitor's next page (the one a redirect leads to), where
    :func:`get_flashed_messages` shows it once::

        krait.flash("Thank you for signing!", "success")
        krait.response = krait.ResponseRedirect("/guestbook", status_code=303)

    :param message: the text (escaped when a template prints it with ``@…@``).
    :param category: any word, e.g. ``"error"``, ``"success"``; a CSS class, typically.
    """
    found = current()
    found[_FLASH_KEY] = [*found.get(_FLASH_KEY, []), [str(category), str(message)]]


def get_flashed_messages(with_categories: bool = False,
                         category_filter: tuple[str, ...] | list[str] = ()) -> list[Any]:
    """The messages :func:`flash` kept, oldest first, removed from the session: each shows
    once. Every call during the same request returns the same messages. In a template::

        @for category, message in krait.get_flashed_messages(with_categories=True):
        <p class="@category@">@message@</p>
        @/for@

    :param with_categories: return ``(category, message)`` pairs instead of messages.
    :param category_filter: only these categories (all the others are removed too).
    :return: a list of ``str``, or of ``(category, message)`` with ``with_categories``.
    """
    found = current()
    if found._flashes is None:
        stored = found.pop(_FLASH_KEY) if _FLASH_KEY in found else []
        found._flashes = [(str(item[0]), str(item[1])) for item in
                          (stored if isinstance(stored, list) else [])
                          if isinstance(item, list) and len(item) == 2]
    flashes = found._flashes
    if category_filter:
        flashes = [f for f in flashes if f[0] in category_filter]
    if with_categories:
        return list(flashes)
    return [m for _, m in flashes]
