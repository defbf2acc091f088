"""Load, cache and render a site's templates through Mako.

``.pyml``, ``.html`` and ``.htm`` files go through the ``.pyml`` translator
(:mod:`krait.templates.pyml`); ``.mako`` files are plain Mako. Compiled modules are written to
one ``module_directory`` outside the site root, shared by all workers, and a template edited on
disk is recompiled on its next use. Paths are always relative to the site root, whatever
file asks for them.

The per-request path is short on purpose (it runs for every dynamic page): a path seen before
maps to its file through a dictionary, each template file is checked with one ``stat`` per use,
and a translated template is rendered without Mako's per-call argument introspection.

A compiled module is reused only if it was compiled from the same file version (modification
time, size, inode) by the same translator and Mako: the stamp at its end says so. Mako's own
check compares whole-second modification times and would keep a stale module for an edit made
in the same second, or for a file replaced by an older copy; and the import system's
``__pycache__`` has the same weakness, so modules are compiled from their source here, never
imported.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import stat
import sys
import tempfile
import threading
import types
from collections.abc import Callable, Mapping
from typing import Any

import mako
from mako import codegen, runtime, util
from mako import template as mako_template
from mako.exceptions import MakoException, TopLevelLookupException
from mako.lexer import Lexer
from mako.lookup import TemplateLookup
from mako.template import ModuleInfo, Template

import krait
from krait.paths import PathRefused, site_file
from krait.templates import pyml

__all__ = [
    "KraitLookup",
    "PYML_EXTENSIONS",
    "SiteTemplates",
    "TemplateNotFoundError",
    "default_module_directory",
    "default_py_hook",
]

#: Extensions translated from Krait syntax (§3.3). Compared case-sensitively, as the original.
PYML_EXTENSIONS = (".pyml", ".html", ".htm")
#: Extension of views written in Mako syntax.
MAKO_EXTENSION = ".mako"

#: ``py_hook(filename, context) -> str | None``: runs an imported ``.py`` file.
PyHook = Callable[[str, dict[str, Any]], "str | None"]

# What a resolved path is (the third item of KraitLookup._paths values).
_PYML, _MAKO, _SCRIPT, _VERBATIM = 0, 1, 2, 3
# Bounded memo of resolved paths (cleared when full: it refills on demand).
_MEMO_MAX = 4096


class _PymlLexer(Lexer):
    """Mako's lexer, decoding a ``.pyml`` file as plain UTF-8.

    Mako would honour a ``# coding:`` comment on the first line and drop a byte-order mark;
    in a ``.pyml`` file both are literal text that must reach the output unchanged.
    """

    def decode_raw_stream(self, text: Any, decode_raw: bool, known_encoding: Any,
                          filename: Any) -> tuple[str, Any]:
        if isinstance(text, bytes) and decode_raw:
            text = text.decode("utf-8")
        return "utf-8", text


class TemplateNotFoundError(TopLevelLookupException, FileNotFoundError):
    """A template, or a file named by ``@import``, does not exist under the site root.

    ``filename`` is the absolute path that was looked for.
    """

    def __init__(self, message: str, filename: str | None = None) -> None:
        super().__init__(message)
        self.filename = filename

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


_translator_stamp: str | None = None


def _translator_id() -> str:
    """What else a compiled module depends on: krait's translator and Mako's code generator.

    A hash of this module's and the translator's source, so that a module compiled by another
    version of either is never reused from the shared cache directory.
    """
    global _translator_stamp
    if _translator_stamp is None:
        digest = hashlib.sha256(f"{getattr(krait, '__version__', '')}:{mako.__version__}:"
                                f"{codegen.MAGIC_NUMBER}".encode())
        for source in (pyml.__file__, __file__):
            try:
                with open(source, "rb") as f:
                    digest.update(f.read())
            except OSError:  # pragma: no cover - running from a zip, say
                digest.update(os.fsencode(source))
        _translator_stamp = digest.hexdigest()[:16]
    return _translator_stamp


_mako_compile = getattr(mako_template, "_compile", None)


class _Template(Template):
    """A Mako template whose cached module is validated by a stamp, not by modification times.

    ``_krait_stamp`` (set before Mako's constructor runs) names the source version; a module
    file ending with another stamp is recompiled. Modules are written atomically (a temporary
    file renamed into place), so several workers may share the directory.
    """

    _krait_stamp = ""

    def _compile_from_file(self, path: str | None, filename: str) -> types.ModuleType:
        # mako.template._compile (lexer + code generator) has kept its signature since Mako
        # 1.0; should it go, Mako's own mtime-based module cache takes over.
        if path is None or _mako_compile is None:
            return super()._compile_from_file(path, filename)
        stamp = f"\n# krait-source: {self._krait_stamp}\n".encode()
        source = _read_own_module(path)
        if source is None or not source.endswith(stamp):
            with open(filename, "rb") as f:
                data = f.read()
            generated, lexer = _mako_compile(self, data, filename, generate_magic_comment=True)
            if isinstance(generated, str):
                generated = generated.encode(lexer.encoding or "ascii")
            source = generated + stamp
            try:
                _write_atomically(path, source)
            except OSError as exc:   # a full or read-only cache: serve from memory anyway
                sys.stderr.write(f"krait: cannot cache the compiled {filename}: {exc}\n")
        # The module's name must be unique per template (Mako's module_id is not: "/a.b" and
        # "/a_b" share one); errors are mapped back to the .pyml through it.
        name = "krait_template:" + self.uri
        module = types.ModuleType(name)
        module.__file__ = path
        code = compile(source, path, "exec", dont_inherit=True)
        exec(code, module.__dict__)  # the template's own compiled code
        ModuleInfo(module, path, self, filename, source.decode("utf-8", "replace"), None, None)
        return module


def _read_own_module(path: str) -> bytes | None:
    """The cached module at ``path`` if it is a regular file of ours (opened without following
    a symbolic link, owned by this process's user, writable by nobody else), else ``None``
    (then the template is compiled again, and the file replaced)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # not there yet, unreadable, or a symbolic link (ELOOP)
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        return f.read()


def _write_atomically(path: str, data: bytes) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".py")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def default_py_hook(filename: str, context: dict[str, Any]) -> str | None:
    """Execute an ``@import``-ed ``.py`` file with the template's context as its globals.

    :param filename: absolute path of the script.
    :param context: the names the importing template received (a copy is used).
    :returns: ``None``: a script inserts nothing into the page.
    """
    with open(filename, "rb") as f:
        code = compile(f.read(), filename, "exec")
    namespace = dict(context)
    namespace["__file__"] = filename
    namespace.setdefault("__name__", "__krait_import__")
    exec(code, namespace)  # running the site's own script is the point
    return None


def _render_translated(template: Template, data: dict[str, Any]) -> str:
    """``template.render(**data)`` for a translated ``.pyml`` template, without Mako's
    introspection of the render function on every call (``inspect.getfullargspec``): a
    translated template never declares ``<%page args=…>``, so its render function always
    takes ``**pageargs`` and Mako would pass it all of ``data``, as done here."""
    buf = util.FastEncodingBuffer()
    context = runtime.Context(buf, **data)
    context._outputting_as_unicode = False
    context._set_with_template(template)
    runtime._render_context(template, template.callable_, context, **data)
    return context._pop_buffer().getvalue()


class KraitLookup(TemplateLookup):
    """A :class:`mako.lookup.TemplateLookup` over one site root.

    :param root: the site root; every path and URI is relative to it.
    :param module_directory: where compiled modules are cached (``None``: keep them in memory).
        It must not be inside the site root.
    :param py_hook: runs ``.py`` files named by ``@import`` (default :func:`default_py_hook`).
    :param mvc: the module providing ``push_ctrl``/``pop_ctrl`` for ``@import-ctrl``
        (default: ``krait.mvc``, imported when first needed).
    :param filesystem_checks: reload a template whose file changed since it was loaded.
    :param html_templates: ``False`` sends ``.html`` and ``.htm`` files as written (served,
        ``@import``-ed or used as a view); only ``.pyml`` files are then templates.
        ``@extends`` still reads its layout as a template, whatever its extension.
    :param template_args: further :class:`mako.template.Template` options.
    """

    def __init__(self, root: str, module_directory: str | None = None, *,
                 py_hook: PyHook | None = None, mvc: Any = None,
                 filesystem_checks: bool = True, html_templates: bool = True,
                 **template_args: Any) -> None:
        self.root = os.path.abspath(root)
        self.html_templates = html_templates
        if module_directory is not None:
            module_directory = os.path.abspath(module_directory)
            real_root = os.path.realpath(self.root)
            real_cache = os.path.realpath(module_directory)
            if os.path.commonpath([real_root, real_cache]) == real_root:
                raise ValueError(f"module_directory {module_directory!r} is inside the site "
                                 f"root {self.root!r}: compiled templates would be served")
        options = {**pyml.TEMPLATE_ARGS, **template_args}
        super().__init__(directories=[self.root], module_directory=module_directory,
                         filesystem_checks=filesystem_checks, **options)
        self.py_hook: PyHook = py_hook or default_py_hook
        self._mvc = mvc
        self._lock = threading.RLock()
        self._root_prefix = self.root.rstrip(os.sep) + os.sep
        # uri → (template, (mtime_ns, size, inode) of its file when it was loaded)
        self._templates: dict[str, tuple[Template, tuple[int, int, int]]] = {}
        # path as asked for → (absolute filename, "/uri", kind)
        self._paths: dict[Any, tuple[str, str, int]] = {}

    # -- paths ----------------------------------------------------------------------------------

    def resolve(self, path: Any) -> tuple[str, str]:
        """Map a root-relative path (or URI) to ``(absolute filename, "/uri")``.

        A leading ``/`` means the site root. The path obeys the site's path rule
        (:func:`krait.paths.site_file`): no ``..``, no hidden segment outside
        ``krait.config.view_dirs``, no backup file, no symbolic link out of the root.

        :raises krait.paths.PathRefused: (a ``ValueError``) for a path the rule refuses.
        :raises ValueError: for the site root itself.
        """
        text = os.fspath(path)
        if not isinstance(text, str):
            text = os.fsdecode(text)
        filename = site_file(self.root, text, views=True)
        rel = "/".join(s for s in text.replace(os.sep, "/").split("/") if s and s != ".")
        if not rel:
            raise ValueError("template path names the site root itself")
        return filename, "/" + rel

    def _relative(self, path: Any) -> Any:
        """An absolute filename inside the root becomes root-relative; anything else is kept."""
        if isinstance(path, str) and os.path.isabs(path):
            if path.startswith(self._root_prefix):
                return path[len(self._root_prefix):]
            for root, absolute in ((self.root, os.path.abspath(path)),
                                   (os.path.realpath(self.root), os.path.realpath(path))):
                if os.path.commonpath([root, absolute]) == root:
                    return os.path.relpath(absolute, root)
        return path

    def locate(self, path: Any, absolute_ok: bool = False) -> tuple[str, str, int]:
        """``(filename, uri, kind)`` of a path, remembered: the same path costs one dictionary
        lookup the next time.

        :param path: relative to the site root (a leading ``/`` too); with ``absolute_ok``, an
            absolute filename inside the root is accepted as well.
        """
        try:
            return self._paths[path, absolute_ok]
        except (KeyError, TypeError):
            pass
        filename, uri = self.resolve(self._relative(path) if absolute_ok else path)
        if filename.endswith(PYML_EXTENSIONS):
            kind = _PYML
            if not self.html_templates and filename.endswith(pyml.HTML_EXTENSIONS):
                kind = _VERBATIM
        elif filename.endswith(MAKO_EXTENSION):
            kind = _MAKO
        elif filename.endswith(".py"):
            kind = _SCRIPT
        else:
            kind = _VERBATIM
        if kind != _VERBATIM and _static_only(uri):
            raise PathRefused(f"{uri!r} is in a static_only directory: never run or rendered")
        entry = (filename, uri, kind)
        try:
            if len(self._paths) >= _MEMO_MAX:
                self._paths.clear()
            self._paths[path, absolute_ok] = entry
        except TypeError:  # an unhashable path-like object
            pass
        return entry

    # -- Mako interface -------------------------------------------------------------------------

    def is_static(self, path: Any) -> bool:
        """True when the template at ``path`` holds no Python construct: its
        output is its text with ``@@`` as ``@``, the same for every request, so it may be
        cached like a static file. Decided once per version of the file (with the compiled
        template), so it costs a dictionary look-up once the template has been rendered.

        :param path: as for :meth:`render`.
        :raises TemplateNotFoundError: when the file does not exist.
        """
        filename, uri, kind = self.locate(path, absolute_ok=True)
        if kind == _VERBATIM and filename.endswith(pyml.HTML_EXTENSIONS):
            if not os.path.isfile(filename):
                raise TemplateNotFoundError(f"cannot find {uri!r} under {self.root!r}",
                                            filename)
            return True  # html_templates = False: sent as written
        if kind != _PYML:
            return False
        template = self._template(filename, uri)
        static = getattr(template, "_krait_static", None)
        if static is None:
            with open(filename, "rb") as f:
                text = f.read().decode("utf-8", "replace")
            static = template._krait_static = pyml.static_output(text) is not None
        return static

    def has_template(self, uri: str) -> bool:
        try:
            filename, _ = self.resolve(uri)
        except ValueError:
            return False
        return os.path.isfile(filename)

    def get_template(self, uri: str) -> Template:
        """The compiled template for ``uri``, reloaded if its file changed.

        :raises TemplateNotFoundError: when the file does not exist.
        :raises PymlSyntaxError: when a ``.pyml`` file does not translate.
        """
        filename, key, _ = self.locate(uri)
        return self._template(filename, key)

    def _template(self, filename: str, key: str) -> Template:
        with self._lock:
            entry = self._templates.get(key)
            if entry is not None and not self.filesystem_checks:
                return entry[0]
            try:
                st = os.stat(filename)
            except (FileNotFoundError, NotADirectoryError):
                self._templates.pop(key, None)
                raise TemplateNotFoundError(f"cannot find template {key!r} under "
                                            f"{self.root!r}", filename) from None
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
            if entry is not None and entry[1] == signature:
                return entry[0]
            template = self._compile(filename, key, signature)
            self._templates[key] = (template, signature)
            return template

    def _compile(self, filename: str, uri: str, signature: tuple[int, int, int]) -> Template:
        args = dict(self.template_args)
        translation: list[pyml.Translation] = []
        error: BaseException | None = None
        if filename.endswith(MAKO_EXTENSION):
            args.pop("preprocessor", None)
            args["enable_loop"] = True           # Mako's own default for Mako-syntax views
        else:
            def preprocess(text: str) -> str:
                result = pyml.translate(text, filename)
                translation.append(result)
                return result.source
            args["preprocessor"] = preprocess
            args["lexer_cls"] = _PymlLexer

        module_filename = None
        if self.module_directory is not None:
            module_filename = os.path.join(self.module_directory, uri.lstrip("/") + ".py")
        template = _Template.__new__(_Template)
        mtime_ns, size, inode = signature
        template._krait_stamp = f"{mtime_ns}:{size}:{inode}:{_translator_id()}"
        try:
            template.__init__(uri=uri, filename=filename, lookup=self,  # type: ignore[misc]
                              module_filename=module_filename, **args)
            template._krait_translated = not filename.endswith(MAKO_EXTENSION)
            return template
        except pyml.PymlSyntaxError as exc:
            error = exc
        except MakoException as exc:
            # Mako rejected the generated source: report it against the .pyml line.
            lineno = getattr(exc, "lineno", None)
            if not (translation and lineno):
                raise
            line = translation[-1].pyml_line(lineno)
            error = pyml.PymlSyntaxError(f"template does not compile: {exc}", filename, line, 1)
        # Raised here, outside the handler, so that the traceback ends at the template instead
        # of running through Mako's lexer (where the translator was called).
        assert error is not None
        _note_location(error)
        if filename.endswith(pyml.HTML_EXTENSIONS) and isinstance(error, pyml.PymlSyntaxError):
            error.add_note(pyml.html_trap_note(filename, error.lineno, error.offset, error.text))
        raise error.with_traceback(None)

    # -- rendering ------------------------------------------------------------------------------

    def render(self, path: str, context: Mapping[str, Any]) -> str:
        """Render the file at ``path`` with the names in ``context``.

        :param path: relative to the site root, or an absolute filename inside it.
        :param context: the names the template sees: ``ctrl``, ``krait``, ``init.py``'s
            globals… Mako's reserved names (``context``, ``UNDEFINED``, ``STOP_RENDERING``)
            are left out. The mapping is not modified.
        :returns: the output text. ``.py`` files go to ``py_hook``; a file that is neither a
            template nor a script is returned as it is.
        :raises PymlSyntaxError: for a template that does not translate.
        :raises TemplateNotFoundError: when the file does not exist (``filename`` says which).
        :raises Exception: whatever the template raised, with notes naming the ``.pyml`` file
            and line of each template frame (see :func:`pyml.annotate_exception`).
        """
        data: Any = context
        if "ctrl" not in data or not pyml.MAKO_RESERVED_NAMES.isdisjoint(data):
            data = {k: v for k, v in context.items() if k not in pyml.MAKO_RESERVED_NAMES}
            data.setdefault("ctrl", None)
        try:
            return self._include(self.locate(path, absolute_ok=True), data)
        except Exception as exc:
            pyml.annotate_exception(exc)
            raise

    def include(self, path: Any, context: dict[str, Any]) -> str:
        """Render ``path`` by its extension: the engine behind ``@import``.

        :param path: relative to the site root, never to the importing file.
        :param context: the top-level names of the importing template.
        """
        return self._include(self.locate(path), context)

    def _include(self, located: tuple[str, str, int], context: Any) -> str:
        filename, uri, kind = located
        if kind == _PYML:
            return _render_translated(self._template(filename, uri), context)
        if kind == _MAKO:
            return self._template(filename, uri).render(**context)
        if not os.path.isfile(filename):
            raise TemplateNotFoundError(f"cannot find {uri!r} under {self.root!r}", filename)
        if kind == _SCRIPT:
            return self.py_hook(filename, dict(context)) or ""
        with open(filename, encoding="utf-8", errors="replace", newline="") as f:
            return f.read()

    def include_ctrl(self, ctrl: Any, context: dict[str, Any]) -> str:
        """``@import-ctrl``: make ``ctrl`` current, render its view with it as ``ctrl``, and
        restore the previous controller even if rendering fails."""
        mvc = self._mvc or importlib.import_module("krait.mvc")
        current = mvc.push_ctrl(ctrl)
        try:
            return self.include(current.get_view(), {**context, "ctrl": current})
        finally:
            mvc.pop_ctrl()


def _static_only(uri: str) -> bool:
    """Is ``uri`` ("/a/b.html") inside one of ``krait.config.static_only``?"""
    from krait import config

    prefixes = getattr(config, "static_only", None) or ()
    return any(isinstance(p, str) and p.strip("/") and
               uri.lstrip("/").startswith(p.strip("/") + "/") for p in prefixes)


def _note_location(exc: pyml.PymlSyntaxError) -> None:
    """Say where a syntax error is in the same words as a runtime error's notes (the file, the
    line and the column), so that the log and the ``--debug`` page both show it."""
    note = f'  in template "{exc.filename or "<pyml>"}", line {exc.lineno}, column {exc.offset}'
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)


def _untrusted_dir(path: str, parent: bool) -> str | None:
    """Why ``path`` may not hold our compiled modules, or ``None`` when it may.

    It must be a real directory (not a symbolic link) owned by this process's user and
    writable by nobody else. Its parent may also be root's, or be writable by others when it
    has the sticky bit (as ``/tmp``), since then nobody else can rename our directory.
    """
    try:
        st = os.lstat(path)
    except OSError as exc:
        return str(exc)
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory (a symbolic link?)"
    if st.st_uid != os.geteuid() and not (parent and st.st_uid == 0):
        return f"owned by uid {st.st_uid}, not {os.geteuid()}"
    if st.st_mode & 0o022 and not (parent and st.st_mode & stat.S_ISVTX):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def default_module_directory(root: str) -> str | None:
    """A per-user cache directory for one site's compiled templates, outside the site root.

    ``$KRAIT_TEMPLATE_CACHE``, else ``$XDG_CACHE_HOME/krait/templates``, else
    ``~/.cache/krait/templates``, plus a hash of the root's real path. Never a shared ``/tmp``
    name: another user could plant modules there. ``None`` (compile in memory, with a line in
    the error log) when no such directory can be made, it would fall inside the root, or it
    (or the directory above it) is not this user's own and closed to others: see
    ``_untrusted_dir``.
    """
    base = os.environ.get("KRAIT_TEMPLATE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "krait", "templates")
    real_root = os.path.realpath(root)
    directory = os.path.join(base, hashlib.sha256(real_root.encode()).hexdigest()[:16])
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError:
        return None
    real_dir = os.path.realpath(directory)
    if os.path.commonpath([real_root, real_dir]) == real_root:
        return None
    # Compiled modules are executed: a directory another local user can write to (or planted
    # for us in a shared KRAIT_TEMPLATE_CACHE) would let that user run code as this server.
    for path, parent in ((directory, False), (base, True)):
        problem = _untrusted_dir(path, parent)
        if problem:
            sys.stderr.write(f"krait: not using the template cache {path}: {problem}\n")
            return None
    return directory


class SiteTemplates(KraitLookup):
    """The worker's view of a site's templates: :class:`KraitLookup` with the worker's script
    runner as ``py_hook`` and, unless given, :func:`default_module_directory` as the cache.

    :param site_root: the site root.
    :param run_script: ``run_script(filename, namespace)`` runs an ``@import``-ed ``.py``.
    :param module_directory: the compiled-module cache; omitted → the per-user default.
    """

    def __init__(self, site_root: str, run_script: PyHook | None = None,
                 module_directory: str | None | object = ..., **options: Any) -> None:
        if module_directory is ...:
            module_directory = default_module_directory(site_root)
        super().__init__(site_root, module_directory,  # type: ignore[arg-type]
                         py_hook=run_script, **options)
