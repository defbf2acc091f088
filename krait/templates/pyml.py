"""Translate Krait ``.pyml`` templates into Mako source, keeping a line map back to the ``.pyml``.

This module owns the ``.pyml`` language and the
small runtime the generated Mako code imports: the escaping filter and the ``@import`` helpers.
Loading files, caching compiled modules and choosing a translator by extension belong to
:mod:`krait.templates.lookup`.

How the translation stays byte-exact (nothing is trimmed):

* Literal text is copied as is, except for the few characters Mako would read as syntax
  (``${``, ``<%``, ``</%``, ``%`` or ``##`` at a line start, a backslash before a newline). Each
  of those characters is written as a Mako expression instead, ``${'%'|n}``, which prints it.
* ``@if``/``@elif``/``@else``/``@for`` become Mako control lines (``% if c:``). A control line
  must start a line and eats its own newline, so when the text before it does not end with a
  newline we emit Mako's escaped newline (``\\`` + newline, which prints nothing) first. For
  ``a@if x:b@/if@c`` the Mako source is ``a\\⏎% if x:⏎b\\⏎% endif⏎c``, which prints ``abc``.
* ``@expr@`` becomes ``${(expr)|n,_krait_esc}``, ``@{ code }`` becomes ``<%code⏎%>``.

Every generated Mako line records the ``.pyml`` offset it came from; the compressed map is stored
in the compiled module itself (``_krait_line_map``) so that errors raised by a module loaded from
the module cache can still be reported against the ``.pyml`` file and line.
"""

from __future__ import annotations

import ast
import bisect
import builtins
import difflib
import io
import keyword
import linecache
import re
import symtable
import tokenize
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PymlSyntaxError",
    "Translation",
    "annotate_exception",
    "escape",
    "html_trap_note",
    "include",
    "include_ctrl",
    "is_dynamic",
    "pyml_line",
    "render_string",
    "static_output",
    "template_frames",
    "to_mako",
    "translate",
]

#: Characters that end an expression (TERM) or follow a keyword (WS), §7.1.
WS = " \t\r\n"
_QUOTES = "'\""
_OPENERS = "([{"
_CLOSERS = ")]}"

#: Mako options a translated template needs (the lookup passes the same ones).
#: ``enable_loop=False`` keeps ``loop`` an ordinary name and ``@for`` a plain Python ``for``.
TEMPLATE_ARGS: dict[str, Any] = {
    "enable_loop": False,
    "default_filters": ["str"],
    "input_encoding": "utf-8",
}

#: Names Mako reserves; a template may not bind them (Mako would refuse to compile it).
MAKO_RESERVED_NAMES = frozenset({"context", "UNDEFINED", "STOP_RENDERING"})
#: Names Mako keeps in the context for its own machinery; never copied into it from locals.
_MAKO_CONTEXT_NAMES = MAKO_RESERVED_NAMES | {
    "loop", "self", "next", "parent", "local", "capture", "caller", "pageargs",
}


# --------------------------------------------------------------------------------------------
# Errors


class PymlSyntaxError(SyntaxError):
    """A ``.pyml`` file that cannot be translated.

    ``filename``, ``lineno`` and ``offset`` (the column, also available as ``column``) are
    1-based and point at the ``@`` of the construct at fault; ``text`` is that source line.
    """

    def __init__(self, message: str, filename: str | None, lineno: int, column: int,
                 text: str | None = None) -> None:
        super().__init__(message, (filename, lineno, column, text))

    @property
    def column(self) -> int:
        """The 1-based column of the construct (the same as ``offset``)."""
        return self.offset

    def __str__(self) -> str:
        return f"{self.filename or '<pyml>'}:{self.lineno}:{self.offset}: {self.msg}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.msg, self.filename, self.lineno, self.offset, self.text))


#: Extensions of files that are templates only because of their name (a page written as plain
#: HTML): an ``@`` in them is the usual trap (an e-mail address, CSS ``@media``).
HTML_EXTENSIONS = (".html", ".htm")


def _offending(text: str | None, column: int | None, width: int = 40) -> str:
    """The source text from ``column`` (1-based) on, cut at ``width`` characters."""
    if not text or not column:
        return ""
    rest = text[column - 1:].rstrip("\r\n")
    return rest if len(rest) <= width else rest[:width] + "…"


def html_trap_note(filename: str | None, lineno: int | None, column: int | None,
                   text: str | None) -> str:
    """Why an ``.html``/``.htm`` file is read as a template, where its ``@`` is, and the three
    ways out. Added as a note to errors in such files (the log and the ``--debug`` page show
    it).

    :param filename: the page.
    :param lineno: the 1-based line of the ``@`` at fault.
    :param column: its 1-based column (``None`` when unknown).
    :param text: the source line.
    """
    name = filename or "<pyml>"
    where = f"line {lineno}" + (f", column {column}" if column else "")
    snippet = _offending(text, column)
    shown = f": {snippet}" if snippet else ""
    return (f'  "{name}" is a template because its name ends in .html or .htm and it contains '
            f"an @ ({where}{shown}).\n"
            "  Every @ in a .html, .htm or .pyml file starts Python code. To fix it:\n"
            "    - write @@ for a literal @ (ann@@example.com, @@media);\n"
            "    - or move the text with @ (a <style> or <script>) to a .css or .js file, or\n"
            "      rename the page to an extension that is not a template: those are sent as "
            "written;\n"
            "    - or set krait.config.html_templates = False in .py/init.py: .html and .htm "
            "files are\n"
            "      then sent as written and only .pyml files are templates.")


# --------------------------------------------------------------------------------------------
# Runtime helpers imported by every generated module

def _escape_py(value: Any, _str: type = str, _int: type = int) -> str:
    """``str(value)`` with exactly ``& < > " '`` replaced by entities, in pure Python
    (used when MarkupSafe's C code is not available).

    :param value: any object; it is converted with :func:`str` first.
    """
    # Plain ints need no escaping; for short strings a scan per character beats one
    # ``str.translate`` with a mapping (about 3x faster). ``&`` goes first so that the entities
    # are not escaped again.
    if type(value) is not _str:
        if type(value) is _int:
            return _str(value)
        value = _str(value)
    if "&" in value:
        value = value.replace("&", "&amp;")
    if "<" in value:
        value = value.replace("<", "&lt;")
    if ">" in value:
        value = value.replace(">", "&gt;")
    if '"' in value:
        value = value.replace('"', "&quot;")
    if "'" in value:
        value = value.replace("'", "&apos;")
    return value


try:
    # MarkupSafe (a dependency of Mako) escapes the same five characters in C, but writes the
    # quotes as &#34; and &#39;. Its output holds "&#" only where it escaped a quote (an "&" of
    # the value became "&amp;"), so two replacements, rarely needed, give our entities.
    from markupsafe._speedups import _escape_inner as _c_escape
except ImportError:  # pragma: no cover - MarkupSafe without its C extension
    _c_escape = None


def _escape_c(value: Any, _str: type = str, _int: type = int,
              _inner: Any = _c_escape) -> str:
    """The same as :func:`_escape_py`, through MarkupSafe's C code (about 25% faster)."""
    if type(value) is not _str:
        if type(value) is _int:
            return _str(value)
        value = _str(value)
    value = _inner(value)
    if "&#" in value:
        value = value.replace("&#39;", "&apos;").replace("&#34;", "&quot;")
    return value


#: ``escape(value) -> str``: ``str(value)`` with exactly ``& < > " '`` replaced by entities
#: (§7.4), ``None`` → ``"None"``. The hot spot of a page (one call per ``@expr@``): the fastest
#: of the two equivalent implementations available.
escape = _escape_c if _c_escape is not None else _escape_py


def include(context: Any, path: Any) -> str:
    """Run ``@import path`` from a template: render ``path`` (relative to the site root).

    :param context: the Mako context of the importing template.
    :param path: the value of the ``@import`` expression.
    """
    return _krait_lookup(context, "@import").include(path, context.kwargs)


def include_ctrl(context: Any, ctrl: Any) -> str:
    """Run ``@import-ctrl ctrl``: push ``ctrl``, render its view, pop it.

    :param context: the Mako context of the importing template.
    :param ctrl: the controller object the expression evaluated to.
    """
    return _krait_lookup(context, "@import-ctrl").include_ctrl(ctrl, context.kwargs)


def _krait_lookup(context: Any, what: str) -> Any:
    lookup = getattr(context, "lookup", None)
    if not hasattr(lookup, "include_ctrl"):
        raise TypeError(f"{what} needs a template loaded through krait.templates.lookup")
    return lookup


# --------------------------------------------------------------------------------------------
# Parsing: .pyml text → a flat list of nodes


@dataclass
class _Node:
    kind: str            # text, expr, rawexpr, exec, if, elif, else, endif, for, endfor,
    #                      import, importctrl, extends, block, endblock
    pos: int             # offset of the construct's '@' (of the text, for text nodes)
    after: int           # offset where the text following the construct starts
    text: str = ""       # literal text (text nodes) or the Python code
    code_pos: int = 0    # offset of ``text`` in the source (code nodes)
    target: str = ""     # @for target
    target_pos: int = 0
    scope: int = 0       # 0 for the template body, else the index of its enclosing @block
    names: set[str] = field(default_factory=set)  # names the construct binds in its scope
    inner: int = 0       # @block: the scope of its body


class _Source:
    """The source text with offset → (line, column) conversion."""

    def __init__(self, text: str, filename: str | None) -> None:
        self.text = text
        self.filename = filename
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line_of(self, pos: int) -> int:
        return bisect.bisect_right(self._starts, pos)

    def line_col(self, pos: int) -> tuple[int, int]:
        line = self.line_of(pos)
        return line, pos - self._starts[line - 1] + 1

    def error(self, pos: int, message: str) -> PymlSyntaxError:
        line, col = self.line_col(pos)
        start = self._starts[line - 1]
        end = self.text.find("\n", start)
        text = self.text[start:] if end < 0 else self.text[start:end]
        return PymlSyntaxError(message, self.filename, line, col, text)


class _Parser:
    """The character-level reader of the syntax (keywords spelled out right after ``@``)."""

    def __init__(self, src: _Source) -> None:
        self.src = src
        self.s = src.text
        self.n = len(src.text)
        self.nodes: list[_Node] = []

    def parse(self) -> list[_Node]:
        s, n, pos = self.s, self.n, 0
        while pos < n:
            at = s.find("@", pos)
            if at < 0:
                self._text(s[pos:], pos)
                break
            if at > pos:
                self._text(s[pos:at], pos)
            pos = self._construct(at)
        return self.nodes

    # -- helpers ------------------------------------------------------------------------------

    def _text(self, text: str, pos: int) -> None:
        self.nodes.append(_Node("text", pos, pos + len(text), text))

    def _skip_string(self, i: int, at: int, what: str) -> int:
        """Return the offset just past the string literal opening at ``i``."""
        s, n = self.s, self.n
        delim = s[i] * 3 if s.startswith(s[i] * 3, i) else s[i]
        j = i + len(delim)
        while j < n:
            c = s[j]
            if c == "\\":
                j += 2
                continue
            if s.startswith(delim, j):
                return j + len(delim)
            j += 1
        raise self.src.error(at, f"unterminated string literal in {what}")

    def _scan(self, i: int, stops: str, at: int, what: str, eof_ok: bool) -> int:
        """Scan Python text from ``i`` to the first character of ``stops`` that is outside string
        literals and outside ``()``, ``[]`` and ``{}`` groups. Return its offset, or ``n`` at the
        end of the file when ``eof_ok``."""
        s, n, depth = self.s, self.n, 0
        while i < n:
            c = s[i]
            if c in _QUOTES:
                i = self._skip_string(i, at, what)
                continue
            if depth == 0 and c in stops:
                return i
            if c in _OPENERS:
                depth += 1
            elif c in _CLOSERS and depth:
                depth -= 1
            i += 1
        if depth:
            raise self.src.error(at, f"unclosed bracket in {what}")
        if not eof_ok:
            raise self.src.error(at, f"incomplete {what}: missing ':'")
        return n

    def _term(self, i: int, at: int, word: str) -> int:
        """Check the TERM after ``@/if`` and friends; return where the following text starts."""
        if i >= self.n or self.s[i] in WS:
            return i
        if self.s[i] == "@":
            return i + 1
        raise self.src.error(at, f"'@{word}' must be followed by '@', whitespace or the end "
                                 f"of the file (write '@{word}@')")

    def _keyword(self, j: int, word: str) -> bool:
        """True when ``word`` followed by one WS character starts at ``j``."""
        k = j + len(word)
        return self.s.startswith(word, j) and k < self.n and self.s[k] in WS

    # -- constructs ---------------------------------------------------------------------------

    def _construct(self, at: int) -> int:
        s, n = self.s, self.n
        j = at + 1
        if j >= n:                       # a lone '@' at the very end is dropped
            return n
        c = s[j]
        if c == "@":
            self.nodes.append(_Node("text", j, j + 1, "@"))
            return j + 1
        if c == "{":
            return self._exec(at)
        if c == "!":
            return self._expr(at, j + 1, "rawexpr")
        if self._keyword(j, "if"):
            return self._cond(at, j + 3, "if")
        if self._keyword(j, "elif"):
            return self._cond(at, j + 5, "elif")
        if s.startswith("else", j):
            k = j + 4
            while k < n and s[k] in WS:
                k += 1
            if k < n and s[k] == ":":
                self.nodes.append(_Node("else", at, k + 1))
                return k + 1
        if self._keyword(j, "for"):
            return self._for(at, j + 4)
        if self._keyword(j, "import-ctrl"):
            return self._expr(at, j + 12, "importctrl")
        if self._keyword(j, "import"):
            return self._expr(at, j + 7, "import")
        if self._keyword(j, "extends"):
            return self._expr(at, j + 8, "extends")
        if self._keyword(j, "block"):
            return self._block(at, j + 6)
        for word, kind in (("/if", "endif"), ("/for", "endfor"), ("/block", "endblock")):
            if s.startswith(word, j):
                after = self._term(j + len(word), at, word)
                self.nodes.append(_Node(kind, at, after))
                return after
        return self._expr(at, j, "expr")

    _WHAT = {
        "expr": "expression", "rawexpr": "expression", "import": "@import",
        "importctrl": "@import-ctrl", "extends": "@extends",
    }

    def _expr(self, at: int, start: int, kind: str) -> int:
        what = self._WHAT[kind]
        end = self._scan(start, "@" + WS, at, what, eof_ok=True)
        after = end + 1 if end < self.n and self.s[end] == "@" else end
        code = self.s[start:end]
        if kind in ("expr", "rawexpr"):
            if code:                      # '@ ' or '@!@' print nothing, like the original
                self.nodes.append(_Node(kind, at, after, code, start))
        elif not code.strip():
            raise self.src.error(at, f"empty {what}")
        else:
            self.nodes.append(_Node(kind, at, after, code, start))
        return after

    def _exec(self, at: int) -> int:
        s, n = self.s, self.n
        start = i = at + 2
        depth = 0
        while i < n:
            c = s[i]
            if c in _QUOTES:
                i = self._skip_string(i, at, "@{ } block")
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                if depth == 0:
                    code = s[start:i]
                    if code.strip():
                        self.nodes.append(_Node("exec", at, i + 1, code, start))
                    return i + 1
                depth -= 1
            i += 1
        raise self.src.error(at, "unterminated '@{': missing '}'")

    def _cond(self, at: int, start: int, kind: str) -> int:
        end = self._scan(start, ":", at, f"'@{kind}' condition", eof_ok=False)
        code = self.s[start:end]
        if not code.strip():
            raise self.src.error(at, f"empty '@{kind}' condition")
        self.nodes.append(_Node(kind, at, end + 1, code, start))
        return end + 1

    def _for(self, at: int, start: int) -> int:
        s, n = self.s, self.n
        i, depth = start, 0
        while True:
            if i >= n:
                raise self.src.error(at, "incomplete '@for': expected '@for target in collection:'")
            c = s[i]
            if c in _QUOTES:
                i = self._skip_string(i, at, "'@for' target")
                continue
            if depth == 0:
                if c in WS and s.startswith("in", i + 1) and i + 3 < n and s[i + 3] in WS:
                    break
                if c == ":":
                    raise self.src.error(at, "'@for' without ' in ': expected "
                                             "'@for target in collection:'")
            if c in _OPENERS:
                depth += 1
            elif c in _CLOSERS and depth:
                depth -= 1
            i += 1
        target = s[start:i]
        cstart = i + 4
        end = self._scan(cstart, ":", at, "'@for' collection", eof_ok=False)
        code = s[cstart:end]
        if not target.strip() or not code.strip():
            raise self.src.error(at, "empty '@for' target or collection")
        self.nodes.append(_Node("for", at, end + 1, code, cstart, target=target,
                                target_pos=start))
        return end + 1

    def _block(self, at: int, start: int) -> int:
        end = self.s.find(":", start)
        if end < 0:
            raise self.src.error(at, "incomplete '@block': expected '@block name:'")
        name = self.s[start:end].strip(WS)
        if not name.isidentifier() or keyword.iskeyword(name):
            raise self.src.error(at, f"'@block' needs a name, not {name!r}")
        if name in _MAKO_CONTEXT_NAMES or name == "body":
            raise self.src.error(at, f"'{name}' is reserved by Mako: choose another block name")
        self.nodes.append(_Node("block", at, end + 1, name, start))
        return end + 1


def _parse(source: str, filename: str | None) -> tuple[_Source, list[_Node]]:
    src = _Source(source, filename)
    return src, _Parser(src).parse()


# --------------------------------------------------------------------------------------------
# Static detection (§3.3)


def is_dynamic(source: str) -> bool:
    """True when ``source`` holds any Python construct, so it must be rendered per request.

    A text with no ``@``, or with only ``@@``, empty ``@{ }``, ``@`` followed by whitespace or
    a lone ``@`` at the end, is static. Any ``@import`` counts as dynamic. Text that does not
    parse is dynamic too, so that its error is reported instead of the raw file being sent.
    """
    if "@" not in source:
        return False
    try:
        _, nodes = _parse(source, None)
    except PymlSyntaxError:
        return True
    return any(node.kind != "text" for node in nodes)


def static_output(source: str) -> str | None:
    """The exact output of a static template (``@@`` → ``@``), or ``None`` if it is dynamic."""
    if "@" not in source:
        return source
    try:
        _, nodes = _parse(source, None)
    except PymlSyntaxError:
        return None
    if any(node.kind != "text" for node in nodes):
        return None
    return "".join(node.text for node in nodes)


# --------------------------------------------------------------------------------------------
# Python snippets: splitting, dedent (§7.3), validation


_NEWLINE_RE = re.compile(r"\r\n|\r|\n")


def _split_lines(code: str, pos: int) -> list[tuple[str, int]]:
    """Split on any newline convention; each line with the source offset where it starts."""
    lines, start = [], 0
    for m in _NEWLINE_RE.finditer(code):
        lines.append((code[start:m.start()], pos + start))
        start = m.end()
    lines.append((code[start:], pos + start))
    return lines


def _strip_lines(lines: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Remove the whitespace before the first and after the last non-blank character."""
    lines = list(lines)
    while len(lines) > 1 and not lines[0][0].strip():
        lines.pop(0)
    while len(lines) > 1 and not lines[-1][0].strip():
        lines.pop()
    text, pos = lines[0]
    stripped = text.lstrip(" \t")
    lines[0] = (stripped, pos + len(text) - len(stripped))
    lines[-1] = (lines[-1][0].rstrip(" \t"), lines[-1][1])
    return lines


def _scope_names(snippet: str) -> set[str]:
    """Names a snippet binds when it runs as the body of a function (assignments, imports,
    definitions, ``for`` targets, walrus…). ``snippet`` is a function body indented by one."""
    try:
        table = symtable.symtable("def _krait_scope():\n" + snippet, "<pyml>", "exec")
    except SyntaxError:
        return set()
    func = table.get_children()[0]
    return {sym.get_name() for sym in func.get_symbols() if sym.is_local()}


def _indent(lines: list[str]) -> str:
    return "".join(" " + line + "\n" for line in lines)


def _comment_rows(code: str) -> set[int]:
    """The (1-based) lines of ``code`` that hold a ``#`` comment."""
    rows = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO("(" + code + "\n)").readline):
            if tok.type == tokenize.COMMENT:
                rows.add(tok.start[0])
    except (tokenize.TokenError, SyntaxError):
        pass     # the comments seen before the error are the ones that matter
    return rows


def _find_yield(tree: ast.AST) -> ast.AST | None:
    """A ``yield``/``await`` that would turn the template's render function into a generator."""
    todo = list(ast.iter_child_nodes(tree))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Yield, ast.YieldFrom, ast.Await)):
            return node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                                 ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))
    return None


def _fix_tabs(code: str) -> str:
    """Rewrite ordinary string literals that Mako's code printer would change or misread.

    Mako expands tabs to spaces in the lines of ``<% %>`` blocks (``str.expandtabs``), which
    would change ``"a<TAB>b"`` into ``"a b"``: tabs are written ``\\t``. And its printer takes
    three quotes inside a string (``'\"\"\"'``) for the start of a triple-quoted string and
    indents the rest of the block wrongly (a ``SyntaxError`` in the generated module): there,
    every quote is written ``\\x22`` or ``\\x27``. The value is the same; only the spelling
    changes, never the number of lines. Raw and f-strings are left alone.
    """
    if "\t" not in code and '"""' not in code and "\'\'\'" not in code:
        return code
    starts = [0] + [m.end() for m in re.finditer("\n", code)]
    spans = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type != tokenize.STRING:
                continue
            text = tok.string
            cut = min(i for i in (text.find("'"), text.find('"')) if i >= 0)
            prefix = text[:cut]
            if set(prefix.lower()) & {"r", "f"}:
                continue
            quote = text[cut:cut + 3] if text[cut:cut + 3] in ('"""', "\'\'\'") else text[cut]
            body = text[cut + len(quote):len(text) - len(quote)]
            if "\t" in body or '"""' in body or "\'\'\'" in body:
                spans.append((starts[tok.start[0] - 1] + tok.start[1],
                              starts[tok.end[0] - 1] + tok.end[1], prefix, quote, body))
    except (tokenize.TokenError, SyntaxError):
        return code
    for a, b, prefix, quote, body in reversed(spans):
        body = body.replace("\t", "\\t")
        if '"""' in body or "\'\'\'" in body:
            body = _QUOTE_IN_STRING.sub(_escape_quote, body)
        code = code[:a] + prefix + quote + body + quote + code[b:]
    return code


_QUOTE_IN_STRING = re.compile(r"""(\\*)(["'])""")


def _escape_quote(m: re.Match[str]) -> str:
    backslashes, quote = m.group(1), m.group(2)
    if len(backslashes) % 2:
        backslashes = backslashes[:-1]   # \" is the quote itself: its escape is replaced
    return backslashes + ("\\x22" if quote == '"' else "\\x27")


# --------------------------------------------------------------------------------------------
# Emitting Mako source


_LINE_SIGNIFICANT = re.compile(r"[ \t]*(%|##)")
_PERCENT_AT_BOL = re.compile(r"\s*%%")
_SIGNIFICANT = re.compile(r"\$(?=\{)|<(?=/?%)|\\(?=\r?\n)")


class _Emitter:
    """Collects Mako source and, for each Mako line, the ``.pyml`` offset it starts at."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.line_src: list[int] = [0]
        self.at_bol = False   # the header ``<%! … %>`` opens line 1, so never at a line start

    def glue(self, text: str) -> None:
        """Generated text without newlines."""
        if text:
            self.parts.append(text)
            self.at_bol = False

    def newline(self, src_pos: int) -> None:
        """A generated newline; the next Mako line maps to ``src_pos``."""
        self.parts.append("\n")
        self.line_src.append(src_pos)
        self.at_bol = True

    def _raw(self, text: str, newlines: list[int]) -> None:
        if not text:
            return
        self.parts.append(text)
        for _ in range(text.count("\n")):
            self.line_src.append(newlines.pop(0) + 1)
        self.at_bol = text.endswith("\n")

    def literal(self, text: str, newlines: list[int]) -> None:
        """Literal template text; ``newlines`` are the source offsets of its ``\\n``s.

        The characters Mako would read as syntax are printed by expressions instead. Only
        ``$``, ``<``, ``%``, ``#`` and ``\\`` are ever replaced, never a newline, so the line
        structure is kept.
        """
        marks = {m.start() for m in _SIGNIFICANT.finditer(text)}
        starts = [m.end() for m in re.finditer("\n", text)]
        if self.at_bol:
            starts.insert(0, 0)
            m = _PERCENT_AT_BOL.match(text)
            if m:                          # Mako reads "\s*%%" at a line start as "%"
                marks.add(m.end() - 2)
        for p in starts:
            m = _LINE_SIGNIFICANT.match(text, p)
            if m:
                marks.add(m.start(1))
        newlines = list(newlines)
        prev = 0
        for i in sorted(marks):
            self._raw(text[prev:i], newlines)
            self.glue("${" + repr(text[i]) + "|n}")
            prev = i + 1
        self._raw(text[prev:], newlines)

    def code_lines(self, lines: list[tuple[str, int]], continuation: str = "") -> None:
        """Python lines; between lines, ``continuation`` then a newline mapped to the next
        line's source offset."""
        for k, (text, _) in enumerate(lines):
            if k:
                prev = lines[k - 1][0]
                self.glue("" if prev.endswith("\\") else continuation)
                self.newline(lines[k][1])
            self.glue(text)

    def control(self, line_pos: int, head: str, lines: list[tuple[str, int]], tail: str,
                after: int) -> None:
        """A Mako control line ``% head<lines>tail``, starting a line of its own."""
        if not self.at_bol:
            self.glue("\\")               # Mako's escaped newline: prints nothing
            self.newline(line_pos)
        self.glue("% " + head)
        self.code_lines(lines, continuation="\\")
        self.glue(tail)
        self.newline(after)

    def source(self) -> str:
        return "".join(self.parts)


# --------------------------------------------------------------------------------------------
# Translation


@dataclass(frozen=True)
class Translation:
    """The result of :func:`translate`.

    ``line_map`` holds ``(mako_line, pyml_line)`` pairs, sorted: from ``mako_line`` on, Mako
    lines map to ``pyml_line`` and the following lines one for one, until the next pair.
    """

    source: str
    line_map: tuple[tuple[int, int], ...]
    filename: str | None = None

    def pyml_line(self, mako_line: int) -> int:
        """The ``.pyml`` line a line of the Mako source came from."""
        return pyml_line(self.line_map, mako_line)


def pyml_line(line_map: tuple[tuple[int, int], ...], mako_line: int) -> int:
    """Map a Mako source line number to the ``.pyml`` line, using a :class:`Translation`'s map.

    :param line_map: ``Translation.line_map`` (also stored as ``_krait_line_map`` in the
        compiled module).
    :param mako_line: a 1-based line of the Mako source.
    """
    k = bisect.bisect_right(line_map, (mako_line, float("inf"))) - 1
    if k < 0:
        return 1
    start, line = line_map[k]
    return line + (mako_line - start)


class _Translator:
    def __init__(self, source: str, filename: str | None) -> None:
        self.src, self.nodes = _parse(source, filename)
        self.filename = filename
        self.out = _Emitter()
        self.scope_names: list[set[str]] = [set()]
        self.extends: _Node | None = None

    def error(self, pos: int, message: str) -> PymlSyntaxError:
        return self.src.error(pos, message)

    # -- structure ----------------------------------------------------------------------------

    def check_structure(self) -> None:
        """Match openers and closers; give each node its scope (the body or a @block)."""
        stack: list[tuple[str, _Node, bool]] = []   # (kind, node, seen_else)
        scopes = [0]
        blocks: dict[str, _Node] = {}
        for node in self.nodes:
            node.scope = scopes[-1]
            kind = node.kind
            if kind in ("if", "for"):
                stack.append((kind, node, False))
            elif kind in ("elif", "else"):
                if not stack or stack[-1][0] != "if":
                    raise self.error(node.pos, f"'@{kind}' outside an '@if'")
                if stack[-1][2]:
                    raise self.error(node.pos, f"'@{kind}' after the '@else:' of this '@if'")
                if kind == "else":
                    stack[-1] = ("if", stack[-1][1], True)
            elif kind in ("endif", "endfor", "endblock"):
                opener = kind[3:]
                if not stack or stack[-1][0] != opener:
                    inner = f" (inside an unclosed '@{stack[-1][0]}')" if stack else ""
                    raise self.error(node.pos, f"'@/{opener}' without a matching "
                                               f"'@{opener}'{inner}")
                stack.pop()
                if kind == "endblock":
                    scopes.pop()
            elif kind == "block":
                if node.text in blocks:
                    raise self.error(node.pos, f"a second '@block {node.text}:'")
                blocks[node.text] = node
                stack.append(("block", node, False))
                self.scope_names.append(set())
                scopes.append(len(self.scope_names) - 1)
                node.inner = scopes[-1]
            elif kind == "extends":
                if self.extends is not None:
                    raise self.error(node.pos, "a second '@extends'")
                if stack:
                    raise self.error(node.pos, "'@extends' inside '@" + stack[-1][0] + "'")
                self.extends = node
        if stack:
            kind, node, _ = stack[-1]
            raise self.error(node.pos, f"'@{kind}' is never closed with '@/{kind}'")

    # -- Python validation --------------------------------------------------------------------

    def python_error(self, node: _Node, exc: SyntaxError, lines: list[tuple[str, int]],
                     first_line: int, what: str) -> PymlSyntaxError:
        """Turn an error in generated check code into a PymlSyntaxError at the construct."""
        where = ""
        if exc.lineno is not None and 0 <= exc.lineno - first_line < len(lines):
            line_pos = lines[exc.lineno - first_line][1]
            where = f" (line {self.src.line_of(line_pos)})"
        return self.error(node.pos, f"invalid Python in {what}: {exc.msg}{where}")

    def check_expression(self, node: _Node, lines: list[tuple[str, int]], what: str) -> None:
        text = "\n".join(line for line, _ in lines)
        check = f"_krait_value = ({text})\n"
        try:
            compile(check, "<pyml>", "exec", dont_inherit=True)
        except SyntaxError as exc:
            raise self.python_error(node, exc, lines, 1, what) from None
        if "#" in lines[-1][0] and _comment_rows(text) & {len(lines)}:
            # ``${(x  # c)|…}`` would comment out the generated closing parenthesis.
            raise self.error(node.pos, f"a comment cannot end the {what}")
        if ":=" in text:
            node.names |= _scope_names(" return (" + text + ")\n")

    def check_header(self, node: _Node, head: str, lines: list[tuple[str, int]],
                     what: str) -> None:
        """Validate a control line ``head<lines>:`` exactly as Mako will write it."""
        text = ""
        for k, (line, _) in enumerate(lines):
            if k:
                text += "\n" if text.endswith("\\") else "\\\n"
            text += line
        try:
            compile(f"{head}{text}:\n pass\n", "<pyml>", "exec", dont_inherit=True)
        except SyntaxError as exc:
            raise self.python_error(node, exc, lines, 1, what) from None
        if head.startswith("for") or ":=" in text:
            node.names |= _scope_names(_indent(f"{head}{text}: pass".split("\n")))

    def check_exec(self, node: _Node, lines: list[str], src_lines: list[tuple[str, int]],
                   in_loop: bool) -> bool:
        """Validate a ``@{ }`` block; False when it holds no statement (only comments)."""
        text = "\n".join(lines) + "\n"
        try:
            tree = ast.parse(text, "<pyml>", "exec")
            body: list[ast.stmt] = tree.body or [ast.Pass()]
            if in_loop:          # break/continue are fine inside @for
                body = [ast.For(ast.Name("_krait_i", ast.Store()), ast.Tuple([], ast.Load()),
                                body, [])]
            func = ast.FunctionDef(
                name="_krait_check",
                args=ast.arguments(posonlyargs=[], args=[], vararg=None, kwonlyargs=[],
                                   kw_defaults=[], kwarg=None, defaults=[]),
                body=body, decorator_list=[], returns=None)
            module = ast.Module([func], [])
            ast.fix_missing_locations(module)
            compile(module, "<pyml>", "exec", dont_inherit=True)
        except SyntaxError as exc:
            raise self.python_error(node, exc, src_lines, 1, "@{ } block") from None
        if not tree.body:
            return False
        bad = _find_yield(tree)
        if bad is not None:
            line_pos = src_lines[min(bad.lineno, len(src_lines)) - 1][1]
            raise self.error(node.pos, f"'yield'/'await' cannot be used in a template "
                                       f"(line {self.src.line_of(line_pos)})")
        node.names |= _scope_names(_indent(lines))
        return True

    # -- code preparation ---------------------------------------------------------------------

    def dedent_exec(self, node: _Node) -> tuple[list[str], list[tuple[str, int]]]:
        """If the code starts with whitespace, remove the first non-blank line's
        indentation from every line; a non-blank line indented less is an error."""
        src_lines = _split_lines(node.text, node.code_pos)
        if node.text[0] not in WS:
            return [line for line, _ in src_lines], src_lines
        first = next(line for line, _ in src_lines if line.strip())
        indent = first[:len(first) - len(first.lstrip(" \t"))]
        out = []
        for line, pos in src_lines:
            if not line.strip():
                out.append("")
            elif line.startswith(indent):
                out.append(line[len(indent):])
            else:
                raise self.src.error(node.pos, f"line {self.src.line_of(pos)} of the '@{{ }}' "
                                               f"block is indented less than its first line")
        return out, src_lines

    # -- emission -----------------------------------------------------------------------------

    def run(self) -> Translation:
        self.check_structure()
        prepared = self.prepare()
        for names in self.scope_names:
            bad = names & MAKO_RESERVED_NAMES
            if bad:
                node = next(n for n in self.nodes if n.names & bad)
                raise self.error(node.pos, f"a template cannot assign {sorted(bad)[0]!r}")
        self.emit(prepared)
        body = self.out.source()
        line_map = self.line_map()
        header = (
            f"<%!from {__name__} import escape as _krait_esc, include as _krait_include, "
            f"include_ctrl as _krait_include_ctrl; _krait_str = str; "
            f"_krait_filename = {self.filename!r}; _krait_line_map = {line_map!r}%>"
        )
        return Translation(header + body, line_map, self.filename)

    def prepare(self) -> dict[int, Any]:
        """Validate every Python snippet; return the lines to emit, per node index."""
        prepared: dict[int, Any] = {}
        loops: list[str] = []
        for k, node in enumerate(self.nodes):
            kind = node.kind
            if kind in ("expr", "rawexpr", "import", "importctrl"):
                lines = _split_lines(node.text, node.code_pos)
                what = _Parser._WHAT[kind]
                self.check_expression(node, lines, what)
                prepared[k] = lines
            elif kind == "extends":
                try:
                    value = ast.literal_eval(node.text)
                except (ValueError, SyntaxError):
                    value = None
                if not isinstance(value, str) or not value.strip():
                    raise self.error(node.pos, "'@extends' needs a string literal: the path of "
                                               "the layout, relative to the site root")
                prepared[k] = _layout_uri(value, self.src, node)
            elif kind in ("if", "elif"):
                lines = _strip_lines(_split_lines(node.text, node.code_pos))
                self.check_header(node, "if ", lines, f"'@{kind}' condition")
                prepared[k] = lines
            elif kind == "for":
                target = _strip_lines(_split_lines(node.target, node.target_pos))
                coll = _strip_lines(_split_lines(node.text, node.code_pos))
                lines = target[:-1] + [(target[-1][0] + " in " + coll[0][0], target[-1][1])]
                lines += coll[1:]
                self.check_header(node, "for ", lines, "'@for'")
                prepared[k] = lines
                loops.append("for")
            elif kind == "block":
                loops.append("block")
            elif kind in ("endfor", "endblock"):
                loops.pop()
            elif kind == "exec":
                lines, src_lines = self.dedent_exec(node)
                if not self.check_exec(node, lines, src_lines,
                                       bool(loops) and loops[-1] == "for"):
                    node.kind = "nothing"    # only comments: Mako would leave an if empty
                    continue
                fixed = _fix_tabs("\n".join(lines)).split("\n")
                prepared[k] = [(line, pos) for line, (_, pos) in zip(fixed, src_lines, strict=True)]
            self.scope_names[node.scope] |= node.names
        return prepared

    def emit(self, prepared: dict[int, Any]) -> None:
        out = self.out
        self.prelude(0)
        inline: list[tuple[Any, ...]] = []   # text and expressions, flushed before any other

        for k, node in enumerate(self.nodes):
            kind = node.kind
            if kind == "text":
                inline.append(("t", node.text, node.pos))
                continue
            if kind in ("expr", "rawexpr"):
                inline.append(("e", node, prepared[k]))
                continue
            if kind == "nothing":
                continue
            self.emit_inline(inline)
            inline.clear()
            if kind in ("import", "importctrl"):
                out.glue("${_krait_include(context, (" if kind == "import"
                         else "${_krait_include_ctrl(context, (")
                out.code_lines(prepared[k])
                out.glue("))|n}")
            elif kind == "exec":
                # "<% " and not "<%": "<%ok = 1" would be read by Mako as a tag <%ok>.
                out.glue("<% ")
                out.code_lines(prepared[k])
                out.newline(node.after - 1)   # before '%>', so a trailing comment ends
                out.glue("%>")
            elif kind in ("if", "elif"):
                out.control(node.pos, kind + " ", prepared[k], ":", node.after)
            elif kind == "else":
                out.control(node.pos, "else", [("", node.pos)], ":", node.after)
            elif kind == "for":
                out.control(node.pos, "for ", prepared[k], ":", node.after)
            elif kind in ("endif", "endfor"):
                out.control(node.pos, kind, [("", node.pos)], "", node.after)
            elif kind == "extends":
                out.glue(f'<%inherit file="{prepared[k]}"/>')
            elif kind == "block":
                shared = sorted(self.scope_names[node.scope] - _MAKO_CONTEXT_NAMES)
                # A named block is a function of its own that reads names from the context:
                # hand it the names the enclosing template has bound so far. This expression
                # (even when there is nothing to hand over) also gives the block's call the
                # line of the '@block' in the module's line map; Mako would give it the line
                # of the node before.
                items = ", ".join(f"{name!r}: {name}" for name in shared)
                out.glue(f"${{(context._data.update({{{items}}}) or '')|n}}" if shared
                         else "${''|n}")
                out.glue(f'<%block name="{node.text}">')
                self.prelude(node.inner)
            elif kind == "endblock":
                out.glue("</%block>")
        self.emit_inline(inline)

    def emit_inline(self, items: list[tuple[Any, ...]]) -> None:
        """Literal text and ``@expr``/``@!expr`` outputs, as few writes as possible.

        Most of a page's time goes to its loops' lines, such as
        ``<tr><td>@p.id@</td><td>@p.name@</td></tr>``: five writes for three texts and two
        values, each a call. On a line holding both, the pieces are joined into one f-string
        (``${f'<tr><td>{_krait_esc((p.id))}</td>…</tr>\\n'|n}``), about 15% faster per row,
        printing exactly the same. Only within one line, so that errors keep their line, and
        only for expressions that fit in an f-string (checked by compiling it); any other line
        is written as before: the text as Mako text, each value as a Mako expression.
        """
        out = self.out
        text_run: list[tuple[str, int]] = []   # consecutive plain text, written as one

        def flush_text() -> None:
            if text_run:
                text = "".join(t for t, _ in text_run)
                newlines = [pos + m.start() for t, pos in text_run
                            for m in re.finditer("\n", t)]
                out.literal(text, newlines)
                text_run.clear()

        for line in _lines(items):
            merged = _fstring(line)
            if merged is not None:
                flush_text()
                out.glue("${" + merged + "|n}")
                last = line[-1]
                if last[0] == "t" and last[1].endswith("\n"):
                    out.glue("\\")               # Mako's escaped newline: prints nothing
                    out.newline(last[2] + len(last[1]))
                continue
            for piece in line:
                if piece[0] == "t":
                    text_run.append((piece[1], piece[2]))
                    continue
                flush_text()
                _, node, lines = piece
                out.glue("${(")
                out.code_lines(lines)
                out.glue(")|n,_krait_esc}" if node.kind == "expr" else ")|n,_krait_str}")
        flush_text()

    def prelude(self, scope: int) -> None:
        """Bind, at the start of a scope, every name the scope assigns, to its context value.

        Mako makes a name the template assigns local to the render function and no longer
        reads it from the context, so ``@x@ … @{ x = 2 }`` or ``@{ n = n + 1 }`` would fail
        with UnboundLocalError. Reading them first keeps the context value visible until the
        template rebinds the name (names not in the context start as Mako's UNDEFINED).
        """
        names = sorted(self.scope_names[scope] - MAKO_RESERVED_NAMES)
        if names:
            code = "; ".join(f"{name} = context.get({name!r}, UNDEFINED)" for name in names)
            self.out.glue(f"<% {code} %>")

    def line_map(self) -> tuple[tuple[int, int], ...]:
        runs: list[tuple[int, int]] = []
        for k, pos in enumerate(self.out.line_src):
            line = self.src.line_of(pos)
            if runs and runs[-1][1] + (k + 1 - runs[-1][0]) == line:
                continue
            runs.append((k + 1, line))
        return tuple(runs)


def _lines(items: list[tuple[Any, ...]]) -> list[list[tuple[Any, ...]]]:
    """Split text pieces at newlines: each list ends with a newline-terminated text piece or at
    the end of the items. Text pieces are ``("t", text, source offset)``."""
    lines: list[list[tuple[Any, ...]]] = [[]]
    for item in items:
        if item[0] != "t":
            lines[-1].append(item)
            continue
        _, text, pos = item
        start = 0
        while True:
            end = text.find("\n", start)
            if end < 0:
                if start < len(text):
                    lines[-1].append(("t", text[start:], pos + start))
                break
            lines[-1].append(("t", text[start:end + 1], pos + start))
            lines.append([])
            start = end + 1
    return [line for line in lines if line]


_FSTRING_ESCAPES = {"\\": "\\\\", "'": "\\'", "{": "{{", "}": "}}", "\n": "\\n", "\r": "\\r"}


def _fstring_text(text: str) -> str:
    """``text`` as the literal part of a ``f'…'`` string (one source line, ASCII controls
    escaped)."""
    out = []
    for c in text:
        e = _FSTRING_ESCAPES.get(c)
        if e is None:
            o = ord(c)
            e = c if 32 <= o != 127 and c not in "\x85\u2028\u2029" else (
                f"\\x{o:02x}" if o < 256 else f"\\u{o:04x}")
        out.append(e)
    return "".join(out)


def _fstring(line: list[tuple[Any, ...]]) -> str | None:
    """One line of text and values as a single f-string expression, or ``None`` when it is
    not worth it (no value, or a lone value) or not possible (multi-line code, or code an
    f-string cannot hold, such as a backslash, a quote like its delimiter or a comment)."""
    if len(line) < 2 or all(piece[0] == "t" for piece in line):
        return None
    parts = ["f'"]
    for piece in line:
        if piece[0] == "t":
            parts.append(_fstring_text(piece[1]))
            continue
        _, node, lines = piece
        if len(lines) != 1:
            return None
        code = lines[0][0]
        if "\\" in code or "'" in code or "#" in code:
            return None
        func = "_krait_esc" if node.kind == "expr" else "_krait_str"
        parts.append(f"{{{func}(({code}))}}")
    parts.append("'")
    source = "".join(parts)
    try:
        compile(source, "<pyml>", "eval", dont_inherit=True)
    except SyntaxError:
        return None
    return source


def _layout_uri(value: str, src: _Source, node: _Node) -> str:
    """The Mako URI of an ``@extends`` path: relative to the site root, never leaving it."""
    parts = []
    for part in value.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise src.error(node.pos, "'@extends' path leaves the site root")
            parts.pop()
        else:
            parts.append(part)
    uri = "/" + "/".join(parts)
    if not parts or any(c in uri for c in '"$<>%\r\n\x00'):
        raise src.error(node.pos, f"'@extends' path {value!r} is not usable")
    return uri


def translate(source: str, filename: str | None = None) -> Translation:
    """Translate ``.pyml`` text into Mako source.

    :param source: the template text.
    :param filename: used in error messages and in runtime error notes.
    :raises PymlSyntaxError: for a malformed construct or invalid Python in one.
    """
    return _Translator(source, filename).run()


def to_mako(source: str, filename: str | None = None) -> str:
    """Only the Mako source of :func:`translate` (usable as a Mako ``preprocessor``)."""
    return translate(source, filename).source


# --------------------------------------------------------------------------------------------
# Runtime errors → .pyml file and line


def _mako_line(module_name: str, py_line: int) -> int | None:
    from mako.template import ModuleInfo

    info = ModuleInfo._modules.get(module_name)
    if info is None:
        return None
    try:
        line_map = ModuleInfo.get_module_source_metadata(info.code)["line_map"]
    except (AttributeError, OSError, ValueError):
        return None
    # Mako records some generated lines as template line 0: skip those.
    keys = sorted(k for k, v in line_map.items() if k <= py_line and v > 0)
    return line_map[keys[-1]] if keys else None


def _template_tbs(tb: Any) -> list[tuple[Any, str | None, int]]:
    """``(traceback entry, pyml filename, pyml line)`` of every translated-template frame,
    outermost first."""
    frames = []
    while tb is not None:
        g = tb.tb_frame.f_globals
        line_map = g.get("_krait_line_map")
        if line_map is not None:
            mako_line = _mako_line(g.get("__name__", ""), tb.tb_lineno)
            if mako_line is not None:
                frames.append((tb, g.get("_krait_filename"), pyml_line(line_map, mako_line)))
        tb = tb.tb_next
    return frames


def template_frames(tb: Any) -> list[tuple[str | None, int]]:
    """The ``(pyml filename, pyml line)`` of every translated-template frame in a traceback,
    outermost first."""
    return [(filename, line) for _, filename, line in _template_tbs(tb)]


_IDENTIFIER = re.compile(r"[^\W\d]\w*")


def _undefined_names(tb: Any, line_text: str) -> tuple[list[str], list[str]]:
    """The names a template frame read but nobody defined (Mako gave them ``UNDEFINED``)
    that appear on its ``.pyml`` line, in the order they appear; and every name the frame
    could see (its defined locals, the context, the builtins), to suggest a spelling."""
    from mako import runtime

    frame_locals = tb.tb_frame.f_locals
    undefined = {k for k, v in frame_locals.items()
                 if v is runtime.UNDEFINED and not k.startswith("_")}
    # Names the line binds (``@{ y = ... }``, ``@for a in ...``) are not yet defined either,
    # but they are not the culprit.
    bound = set(re.findall(r"(\w+)\s*(?:[-+*/%&|^@]|//|\*\*|<<|>>)?=(?!=)", line_text))
    for target in re.findall(r"\bfor\s+(.+?)\s+in\b", line_text):
        bound.update(_IDENTIFIER.findall(target))
    on_line = []
    for word in _IDENTIFIER.findall(line_text):
        if word in undefined and word not in bound and word not in on_line:
            on_line.append(word)
    known = {k for k, v in frame_locals.items()
             if v is not runtime.UNDEFINED and not k.startswith("_")}
    context = frame_locals.get("context")
    try:
        known.update(k for k in context.keys() if not k.startswith("_"))
    except AttributeError:
        pass
    known.update(k for k in dir(builtins) if not k.startswith("_"))
    known -= _MAKO_CONTEXT_NAMES | {"pageargs"}
    return on_line, sorted(known)


def _explain_undefined(exc: BaseException, tb: Any, filename: str | None, line: int,
                       line_text: str) -> None:
    """Turn Mako's ``NameError: Undefined`` (or a ``TypeError``/``AttributeError`` about an
    ``'Undefined'`` object) into a message naming the name, with the closest defined one."""
    if not (isinstance(exc, (NameError, AttributeError, TypeError))
            and "Undefined" in str(exc)):
        return
    names, known = _undefined_names(tb, line_text)
    if not names:
        return
    quoted = " or ".join(repr(n) for n in names)
    text = f"name {quoted} is not defined"
    matches = difflib.get_close_matches(names[0], known, n=1)
    if matches:
        text += f" (did you mean {matches[0]!r}?)"
    text += f' in template "{filename or "<pyml>"}", line {line}'
    if not isinstance(exc, NameError):
        text += f" ({exc})"
    exc.args = (text,)
    if isinstance(exc, NameError):
        exc.name = names[0]
    if filename and filename.endswith(HTML_EXTENSIONS) and not matches:
        exc.add_note("  If that @ is meant as text (an e-mail address, CSS @media), write it "
                     "@@ (see krait.config.html_templates).")


def annotate_exception(exc: BaseException, source: str | None = None) -> BaseException:
    """Add the ``.pyml`` file and line of each template frame to ``exc``.

    The exception keeps its type (an HTTP error raised by a view must stay one); it gains a
    note per template frame (``template "x.pyml", line 3``, then that line of the file, as a
    Python traceback shows it) and the attributes ``pyml_filename``/``pyml_lineno`` of the
    innermost one. A name the template used but nobody defined is named in the message, with
    the closest defined name (``name 'nme' is not defined (did you mean 'name'?)``). Calling
    it twice is harmless.

    :param exc: the exception raised while rendering.
    :param source: the template's text, for a template that is not a file (read otherwise).
    """
    if getattr(exc, "_krait_annotated", False):
        return exc
    frames = _template_tbs(exc.__traceback__)
    try:
        exc._krait_annotated = True  # type: ignore[attr-defined]
        if frames:
            exc.pyml_filename, exc.pyml_lineno = frames[-1][1:]  # type: ignore[attr-defined]
    except AttributeError:
        return exc
    if frames:
        tb, filename, line = frames[-1]
        text = _full_line(filename, line, source)
        try:
            _explain_undefined(exc, tb, filename, line, text)
        except Exception:  # noqa: BLE001 - a better message is a bonus, never a new error
            pass
    for _, filename, line in frames:
        note = f'  in template "{filename or "<pyml>"}", line {line}'
        text = _source_line(filename, line)
        exc.add_note(f"{note}\n    {text}" if text else note)
    return exc


def _full_line(filename: str | None, line: int, source: str | None) -> str:
    """Line ``line`` of a template, from ``source`` when given, else from its file."""
    if source is not None:
        lines = source.splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else ""
    if not filename:
        return ""
    linecache.checkcache(filename)
    return linecache.getline(filename, line)


def _source_line(filename: str | None, line: int) -> str:
    """Line ``line`` of a template file, stripped and shortened; ``""`` when unreadable."""
    if not filename:
        return ""
    linecache.checkcache(filename)
    text = linecache.getline(filename, line).strip()
    return text if len(text) <= 160 else text[:157] + "..."


def render_string(source: str, context: dict[str, Any] | None = None,
                  filename: str | None = None) -> str:
    """Translate and render a template held in memory (no ``@import``/``@extends``).

    :param source: ``.pyml`` text.
    :param context: the names the template sees.
    :param filename: reported in errors.
    """
    from mako.template import Template

    translation = translate(source, filename)
    template = Template(translation.source, **TEMPLATE_ARGS)
    data = {k: v for k, v in (context or {}).items() if k not in MAKO_RESERVED_NAMES}
    try:
        return template.render(**data)
    except Exception as exc:
        annotate_exception(exc, source)
        raise
