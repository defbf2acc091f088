"""Load, cache and render a site's templates through Mako.

``.pyml``, ``.html`` and ``.htm`` files go through the ``.pyml`` translator
(:mod:`krait.templates.pyml`); ``.mako`` files are plain Mako. Compiled modules are written to
one ``module_directory`` outside the site root, shared by all workers, and a template edited on
disk is recompiled on its next use. Paths are always relative to the site root (§7.4), whatever
file asks for them.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import posixpath
import threading
from collections.abc import Callable, Mapping
from typing import Any

from mako.exceptions import MakoException, TopLevelLookupException
from mako.lexer import Lexer
from mako.lookup import TemplateLookup
from mako.template import Template

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
    """A template, or a file named by ``@import``, does not exist under the site root."""


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


class KraitLookup(TemplateLookup):
    """A :class:`mako.lookup.TemplateLookup` over one site root.

    :param root: the site root; every path and URI is relative to it.
    :param module_directory: where compiled modules are cached (``None``: keep them in memory).
        It must not be inside the site root.
    :param py_hook: runs ``.py`` files named by ``@import`` (default :func:`default_py_hook`).
    :param mvc: the module providing ``push_ctrl``/``pop_ctrl`` for ``@import-ctrl``
        (default: ``krait.mvc``, imported when first needed).
    :param filesystem_checks: reload a template whose file changed since it was loaded.
    :param template_args: further :class:`mako.template.Template` options.
    """

    def __init__(self, root: str, module_directory: str | None = None, *,
                 py_hook: PyHook | None = None, mvc: Any = None,
                 filesystem_checks: bool = True, **template_args: Any) -> None:
        self.root = os.path.abspath(root)
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
        # uri → (template, (mtime_ns, size, inode) of its file when it was loaded)
        self._templates: dict[str, tuple[Template, tuple[int, int, int]]] = {}

    # -- paths ----------------------------------------------------------------------------------

    def resolve(self, path: Any) -> tuple[str, str]:
        """Map a root-relative path (or URI) to ``(absolute filename, "/uri")``.

        A leading ``/`` means the site root; ``..`` may not leave it.

        :raises ValueError: for a path outside the root or containing NUL.
        """
        text = os.fspath(path)
        if not isinstance(text, str):
            text = os.fsdecode(text)
        if "\x00" in text:
            raise ValueError(f"template path contains NUL: {text!r}")
        rel = posixpath.normpath(text.replace(os.sep, "/").lstrip("/"))
        if rel == ".." or rel.startswith("../"):
            raise ValueError(f"template path leaves the site root: {text!r}")
        if rel == ".":
            raise ValueError("template path names the site root itself")
        return os.path.join(self.root, *rel.split("/")), "/" + rel

    def _relative(self, path: Any) -> Any:
        """An absolute filename inside the root becomes root-relative; anything else is kept."""
        if isinstance(path, str) and os.path.isabs(path):
            for root, absolute in ((self.root, os.path.abspath(path)),
                                   (os.path.realpath(self.root), os.path.realpath(path))):
                if os.path.commonpath([root, absolute]) == root:
                    return os.path.relpath(absolute, root)
        return path

    # -- Mako interface -------------------------------------------------------------------------

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
        filename, key = self.resolve(uri)
        with self._lock:
            entry = self._templates.get(key)
            if entry is not None and not self.filesystem_checks:
                return entry[0]
            try:
                st = os.stat(filename)
            except FileNotFoundError:
                self._templates.pop(key, None)
                raise TemplateNotFoundError(f"cannot find template {key!r} under "
                                            f"{self.root!r}") from None
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
            if entry is not None and entry[1] == signature:
                return entry[0]
            template = self._compile(filename, key, st)
            self._templates[key] = (template, signature)
            return template

    def _compile(self, filename: str, uri: str, st: os.stat_result) -> Template:
        args = dict(self.template_args)
        translation: list[pyml.Translation] = []
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
            self._expire_module(module_filename, st)
        try:
            return Template(uri=uri, filename=filename, lookup=self,
                            module_filename=module_filename, **args)
        except MakoException as exc:
            # Mako rejected the generated source: report it against the .pyml line.
            lineno = getattr(exc, "lineno", None)
            if translation and lineno:
                line = translation[-1].pyml_line(lineno)
                raise pyml.PymlSyntaxError(f"template does not compile: {exc}", filename,
                                           line, 1) from exc
            raise

    @staticmethod
    def _expire_module(module_filename: str, st: os.stat_result) -> None:
        """Make Mako recompile a cached module that is not newer than its source.

        Mako compares whole seconds, so a template saved in the same second as its module was
        written would keep the stale module. Setting the module's mtime to 0 makes Mako write
        a fresh one (atomically, by rename), which is safe with several workers.
        """
        try:
            if os.stat(module_filename).st_mtime_ns <= st.st_mtime_ns:
                os.utime(module_filename, ns=(0, 0))
        except FileNotFoundError:
            pass

    # -- rendering ------------------------------------------------------------------------------

    def render(self, path: str, context: Mapping[str, Any]) -> str:
        """Render the file at ``path`` with the names in ``context``.

        :param path: relative to the site root, or an absolute filename inside it.
        :param context: the names the template sees: ``ctrl``, ``krait``, ``init.py``'s
            globals… Mako's reserved names (``context``, ``UNDEFINED``, ``STOP_RENDERING``)
            are left out.
        :returns: the output text. ``.py`` files go to ``py_hook``; a file that is neither a
            template nor a script is returned as it is.
        :raises PymlSyntaxError: for a template that does not translate.
        :raises Exception: whatever the template raised, with notes naming the ``.pyml`` file
            and line of each template frame (see :func:`pyml.annotate_exception`).
        """
        data = {k: v for k, v in context.items() if k not in pyml.MAKO_RESERVED_NAMES}
        data.setdefault("ctrl", None)
        try:
            return self.include(self._relative(path), data)
        except Exception as exc:
            pyml.annotate_exception(exc)
            raise

    def include(self, path: Any, context: dict[str, Any]) -> str:
        """Render ``path`` by its extension (§7.4): the engine behind ``@import``.

        :param path: relative to the site root, never to the importing file.
        :param context: the top-level names of the importing template.
        """
        filename, uri = self.resolve(path)
        if filename.endswith(PYML_EXTENSIONS) or filename.endswith(MAKO_EXTENSION):
            return self.get_template(uri).render(**context)
        if not os.path.isfile(filename):
            raise TemplateNotFoundError(f"cannot find {uri!r} under {self.root!r}")
        if filename.endswith(".py"):
            return self.py_hook(filename, dict(context)) or ""
        with open(filename, encoding="utf-8", errors="replace", newline="") as f:
            return f.read()

    def include_ctrl(self, ctrl: Any, context: dict[str, Any]) -> str:
        """``@import-ctrl``: make ``ctrl`` current, render its view with it as ``ctrl``, and
        restore the previous controller even if rendering fails (§9.3)."""
        mvc = self._mvc or importlib.import_module("krait.mvc")
        current = mvc.push_ctrl(ctrl)
        try:
            return self.include(current.get_view(), {**context, "ctrl": current})
        finally:
            mvc.pop_ctrl()


def default_module_directory(root: str) -> str | None:
    """A per-user cache directory for one site's compiled templates, outside the site root.

    ``$KRAIT_TEMPLATE_CACHE``, else ``$XDG_CACHE_HOME/krait/templates``, else
    ``~/.cache/krait/templates``, plus a hash of the root's real path. Never a shared ``/tmp``
    name: another user could plant modules there. ``None`` (compile in memory) when no such
    directory can be made or it would fall inside the root.
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
