"""The .pyml → Mako translator and the template lookup (krait-behaviour.md §3.3, §7, §16.4)."""

from __future__ import annotations

import os
import sys
import time
import types
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

try:
    from krait.templates import lookup, pyml
except ImportError:  # pragma: no cover - krait/__init__ imports modules still being written
    # Load the templates package without running krait/__init__.py.
    _here = Path(__file__).resolve().parent.parent / "krait"
    for _name, _path in (("krait", _here), ("krait.templates", _here / "templates")):
        if _name not in sys.modules:
            _module = types.ModuleType(_name)
            _module.__path__ = [str(_path)]
            sys.modules[_name] = _module
    from krait.templates import lookup, pyml

PymlSyntaxError = pyml.PymlSyntaxError

#: The bindings of §7.5.
BINDINGS = {
    "name": "Ann", "x": True, "n": 0, "xs": [1, 2, 3], "d": {"b": 2, "a": 1},
    "html": '<b>"hi" & \'bye\'</b>', "a": 2, "b": 3,
}


def render(source: str, **extra: object) -> str:
    return pyml.render_string(source, {**BINDINGS, **extra})


def syntax_error(source: str) -> PymlSyntaxError:
    with pytest.raises(PymlSyntaxError) as info:
        pyml.translate(source, "t.pyml")
    return info.value


# ---------------------------------------------------------------------------------------------
# §7.5, row by row (with the §16.4 fixes)

EXAMPLES = [
    ("Hello @name@!", "Hello Ann!"),
    ("Hello @name !", "Hello Ann !"),
    ("Hello @name\n", "Hello Ann\n"),
    ("<p>@name@</p>", "<p>Ann</p>"),
    ("a@@b", "a@b"),
    ("user@@example.com", "user@example.com"),
    ("@@@name@", "@Ann"),
    ("@x@@name@", "TrueAnn"),
    ("\\@name@", "\\Ann"),
    ("@html@", "&lt;b&gt;&quot;hi&quot; &amp; &apos;bye&apos;&lt;/b&gt;"),
    ("@!html@", "<b>\"hi\" & 'bye'</b>"),
    ("@!html done", "<b>\"hi\" & 'bye'</b> done"),
    ("@(a + b)@", "5"),
    ("@(a + b) apples", "5 apples"),
    ('@"a b".upper()@', "A B"),
    ("@len(xs) items", "3 items"),
    ("@None@|@!None@", "None|None"),
    ("@{ y = a * 10 }@y@", "20"),
    ("@{\n    y = a * 10\n    z = y + 1\n}@z@", "21"),
    ('@{ s = "}" }@s@', "}"),
    ('@{ d2 = {"k": {"n": 1}} }@d2["k"]["n"]@', "1"),
    ("@if x:\nyes\n@else:\nno\n@/if\n", "\nyes\n\n"),
    ("@if n:\nyes\n@else:\nno\n@/if\n", "\nno\n\n"),
    ("@if n:yes@/if@!", "!"),
    ("@if x :T@/if@", "T"),
    ('@if x == "a:b":A@else:B@/if@', "B"),
    ("@if x:A@/if\tB", "A\tB"),
    ("<ul>@for i in xs:<li>@i@</li>@/for@</ul>", "<ul><li>1</li><li>2</li><li>3</li></ul>"),
    ("@for i in xs:\n<li>@i@</li>\n@/for\n", "\n<li>1</li>\n\n<li>2</li>\n\n<li>3</li>\n\n"),
    ("@for k, v in sorted(d.items()):[@k@=@v@]@/for@", "[a=1][b=2]"),
    ("@for x in [1,2]: @x @/for@", " 1  2 "),
    ('@for i in {"a": 1}:@i@@/for@', "a"),
    ("@for i in xs:@if i % 2:odd@else:even@/if@ @/for@", "odd even odd "),
    # §16.4: brackets, braces and parentheses are protected in collections and conditions.
    ("@for i in xs[1:]:@i@@/for@", "23"),
    ('@if {"a": 1}["a"]:A@/if@', "A"),
    ("@if xs[1:]:A@/if@", "A"),
    ("@if (lambda: x)():A@/if@", "A"),
    ("@for i in map(lambda v: v * 2, xs):@i@,@/for@", "2,4,6,"),
    # §16.4: @elif exists now.
    ("@if n:A@elif x:B@/if@", "B"),
    ("@if n:A@elif n:B@else:C@/if@", "C"),
    ("@if x:A@elif 1/0:B@/if@", "A"),
    ("end @", "end "),
    ("${x} <%text> %\n## \\\n", "${x} <%text> %\n## \\\n"),
]


@pytest.mark.parametrize(("source", "expected"), EXAMPLES)
def test_examples_exact_output(source: str, expected: str) -> None:
    assert render(source) == expected


def test_keyword_prefixes_are_expressions() -> None:
    assert render("@iffy", iffy="I") == "I"
    assert render("@imported@", imported="M") == "M"
    assert render("@format@|@forever@|@elsewhere@|@blocks@",
                  format="f", forever="e", elsewhere="w", blocks="b") == "f|e|w|b"


def test_expression_errors_of_the_table() -> None:
    # The expression really is `name</p>` / `(a+b)</p>`: invalid Python, reported at load time.
    err = syntax_error("<p>@name</p>")
    assert (err.lineno, err.offset) == (1, 4)
    assert "expression" in err.msg
    err = syntax_error("x\n@(a+b)</p>")
    assert (err.lineno, err.offset) == (2, 1)


def test_whitespace_loop_example_of_7_2() -> None:
    source = "<ul>\n@for x in xs:\n<li>@x@</li>\n@/for\n</ul>\n"
    assert render(source, xs=[1, 2]) == "<ul>\n\n<li>1</li>\n\n<li>2</li>\n\n</ul>\n"
    assert render("@for x in xs:<li>@x@</li>@/for@", xs=[1, 2]) == "<li>1</li><li>2</li>"


def test_indentation_and_terminators_are_kept() -> None:
    source = "<div>\n    @if x:\n    <b>@name@</b>\n    @/if\n</div>"
    assert render(source) == "<div>\n    \n    <b>Ann</b>\n    \n</div>"
    assert render("a\r\n@if x:\r\nB\r\n@/if\r\nc") == "a\r\n\r\nB\r\n\r\nc"


def test_empty_expressions_print_nothing() -> None:
    assert render("a @ b") == "a  b"
    assert render("a@!@b") == "ab"
    assert render("@{ }x@{}") == "x"
    assert render("@") == ""


def test_escaping_table_is_exact() -> None:
    value = "&<>\"'/=`é\u2028\x00"
    assert render("@v@", v=value) == "&amp;&lt;&gt;&quot;&apos;/=`é\u2028\x00"
    assert render("@!v@", v=value) == value
    assert pyml.escape(None) == "None"
    assert pyml.escape(12) == "12"


class StrSub(str):
    def __html__(self) -> str:          # MarkupSafe would trust this; escape() must not
        return "<trusted>"


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from(list("&<>\"'#3947;ax é")) | st.characters(
    blacklist_categories=("Cs",)), max_size=20))
def test_both_escape_implementations_agree(text: str) -> None:
    expected = (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                .replace('"', "&quot;").replace("'", "&apos;"))
    assert pyml._escape_py(text) == expected
    assert pyml.escape(text) == expected
    if pyml._c_escape is not None:
        assert pyml._escape_c(text) == expected
        assert pyml._escape_c(StrSub(text)) == expected


def test_escape_of_other_types() -> None:
    for escape in {pyml.escape, pyml._escape_py}:
        assert escape("&#39;&#34;") == "&amp;#39;&amp;#34;"
        assert escape(StrSub("<")) == "&lt;"
        assert escape(True) == "True"
        assert escape(1.5) == "1.5"
        assert escape(["<'>"]) == "[&quot;&lt;&apos;&gt;&quot;]"


def test_multiline_code_in_expressions_and_conditions() -> None:
    assert render("@(a +\n  b)@") == "5"
    assert render("@if (x and\n    n == 0):A@/if@") == "A"
    assert render("@for i in [\n 1,\n 2]:@i@@/for@") == "12"
    assert render("@if x and \\\n n == 0:A@/if@") == "A"


def test_strings_in_code() -> None:
    assert render("@'''it's'''@") == "it&apos;s"
    assert render('@!"%>}<%"@') == "%>}<%"
    assert render('@{ s = "a\tb" }@!s@') == "a\tb"            # Mako would expand the tab
    assert render('@{\n\ts = """x\ty"""\n}@!s@') == "x\ty"
    assert render("@{ s = '@' }@s@") == "@"
    assert render("@{ x2 = 1 # a comment }@x2@") == "1"
    assert render("@{ t = (1 | 2) }@t@|@(1 | 2)@") == "3|3"


def test_mako_syntax_inside_python_strings() -> None:
    assert render('@if "${" in s:A@/if@', s="${x}") == "A"
    assert render('@for c in "<%":[@!c@]@/for@') == "[<][%]"
    assert render('@if "%>" != "":B@/if@') == "B"
    assert render('@{ t = "%> ${ <% ##" }@!t@') == "%> ${ <% ##"
    assert render('@{u = """\n<%\n%>\n% x\n## y\n"""}@!u@') == "\n<%\n%>\n% x\n## y\n"
    assert render('@!"${name}"@') == "${name}"


def test_return_break_continue_in_code_blocks() -> None:
    assert render("@for i in xs:@{ if i == 2: continue }@i@@/for@") == "13"
    assert render("@for i in xs:@if x:@{ if i == 2: break }@/if@@i@@/for@") == "1"
    assert render("a@{ return }b") == "a"


# ---------------------------------------------------------------------------------------------
# Mako syntax in literal text stays literal

MAKO_LITERALS = [
    "${x}", "$${x}", "${", "$", "<%", "<%text>x</%text>", "</%def>", "</%", "<%doc>a</%doc>",
    "<%! import os %>", "<% x = 1 %>", "%>", "<%inherit file='x'/>", "<%include file='y'/>",
    "% if x:\n% endif\n", "%", "%%", "%%%\n", "  % for\n", "\t%x", "##", "## comment\n",
    "  ## c", "#x", "a\\", "a\\\nb", "a\\\r\nb", "\\\\\n", "\\", "%\\\n%",
    "# -*- coding: latin-1 -*-\nx", "<&", "</&x>",
]


@pytest.mark.parametrize("text", MAKO_LITERALS)
def test_mako_syntax_is_literal(text: str) -> None:
    assert render(text) == text
    assert render("A\n" + text) == "A\n" + text
    assert render("@name@" + text) == "Ann" + text


@pytest.mark.parametrize("text", ["%d", "%%", "  %x", "##", "\r%%", "\x0c%%", "\n%%",
                                  "${y}", "\\\n", "<%x"])
def test_mako_syntax_right_after_control_lines(text: str) -> None:
    # Control lines leave the Mako source at a line start: the most sensitive place.
    assert render(f"@if x:{text}@/if@") == text
    assert render(f"@for i in [1]:{text}@/for@") == text
    assert render(f"@if n:@else:{text}@/if@{text}") == text * 2
    assert render(f"@if x:A@/if@{text}") == "A" + text


def test_mako_expression_in_text_is_not_evaluated() -> None:
    assert render("<script>var t = `${name}`;</script>") == "<script>var t = `${name}`;</script>"


ALPHABET = st.one_of(
    st.sampled_from(list("$%#<>/{}\\!&\"'\n\r\t :=()[]|~n")) | st.just("\u2028"),
    st.characters(blacklist_characters="@", blacklist_categories=("Cs",)),
)


@settings(max_examples=400, deadline=None)
@given(st.text(ALPHABET, max_size=60))
def test_text_without_at_is_copied_exactly(text: str) -> None:
    assert "@" not in text
    assert pyml.render_string(text) == text
    assert not pyml.is_dynamic(text)
    assert pyml.static_output(text) == text


@settings(max_examples=200, deadline=None)
@given(st.text(ALPHABET, max_size=30), st.text(ALPHABET, max_size=30))
def test_text_around_constructs_is_copied_exactly(before: str, after: str) -> None:
    source = f"{before}@if x:{after}@else:-@/if@{before}@@{after}@!name@{after}"
    assert pyml.render_string(source, BINDINGS) == f"{before}{after}{before}@{after}Ann{after}"


@settings(max_examples=300, deadline=None)
@given(st.text(ALPHABET, max_size=25), st.text(ALPHABET, max_size=25),
       st.text(ALPHABET, max_size=25))
def test_text_and_values_on_one_line_are_copied_exactly(a: str, b: str, c: str) -> None:
    # Such a line becomes one f-string write; its literal parts must survive any character.
    source = f"{a}@name@{b}@html@{c}@!html@{a}@(d['a'])@{b}@d[\"b\"]@{c}"
    expected = (f"{a}Ann{b}&lt;b&gt;&quot;hi&quot; &amp; &apos;bye&apos;&lt;/b&gt;{c}"
                f"{BINDINGS['html']}{a}1{b}2{c}")
    assert pyml.render_string(source, BINDINGS) == expected


def test_a_line_of_text_and_values_is_one_write() -> None:
    source = pyml.to_mako("<td>@name@</td><td>@!html@</td>\n<p>@(a + b)@</p>")
    assert "${f'<td>{_krait_esc((name))}</td><td>{_krait_str((html))}</td>\\n'|n}\\\n" \
        in source
    assert "${f'<p>{_krait_esc(((a + b)))}</p>'|n}" in source
    # Values whose code an f-string cannot hold (here: a backslash, a quote like its delimiter,
    # several lines) are written one by one, with the same output.
    for code, value in (("'a\\tb'", "a\tb"), ("(name + '!')", "Ann!"), ("(a +\n b)", "5")):
        source = f"<i>@{code}@</i>\n"
        assert "f'" not in pyml.to_mako(source)
        assert render(source) == f"<i>{value}</i>\n"
    # Values keep their own rendering (str(), not format()) in a joined line.
    assert render("<i>@!v@|@v@</i>", v=Formatted()) == "<i>str<|str&lt;</i>"


class Formatted:
    def __str__(self) -> str:
        return "str<"

    def __format__(self, spec: str) -> str:
        return "format"


def test_errors_on_joined_lines_keep_their_line() -> None:
    source = "a\n<td>@name@</td>\n<td>@ok@</td><td>@(1 / n)@</td>\n"
    with pytest.raises(ZeroDivisionError) as info:
        pyml.render_string(source, {**BINDINGS, "ok": 1}, filename="s.pyml")
    assert info.value.pyml_lineno == 3


# ---------------------------------------------------------------------------------------------
# Syntax errors: file, line and column of the construct

ERRORS = [
    ("@if x:A", (1, 1), "never closed"),
    ("ab\n  @{ y = 1", (2, 3), "unterminated"),
    ("@else:", (1, 1), "outside"),
    ("x\n @elif y:A", (2, 2), "outside"),
    ("@/if", (1, 1), "without"),
    ("ok@/for@", (1, 3), "without"),
    ("@for x in xs:", (1, 1), "never closed"),
    ("@if x:@else:@else:@/if@", (1, 13), "after"),
    ("@if x:@else:@elif y:@/if@", (1, 13), "after"),
    ("@for i in xs:@if x:@/for@@/if@", (1, 20), "without"),
    ("@for x xs:@/for@", (1, 1), "in"),
    ("@for x in xs", (1, 1), "incomplete"),
    ("@if x:A@/if</p>", (1, 8), "followed"),
    ("@for i in xs:A@/for-@", (1, 15), "followed"),
    ('hello @"abc', (1, 7), "string"),
    ("@(a + b", (1, 1), "bracket"),
    ("@if :A@/if@", (1, 1), "empty"),
    ("@if x", (1, 1), "incomplete"),
    ("@import @", (1, 1), "empty"),
    ("@import-ctrl  ", (1, 1), "empty"),
    ("@{\n    y = 1\n  z = 2\n}", (1, 1), "line 3"),
    ("a\n@{ x = = 1 }", (2, 1), "invalid Python"),
    ("@{\n  ok = 1\n  bad bad\n}", (1, 1), "line 3"),
    ("@{ yield 1 }", (1, 1), "yield"),
    ("@(await x)@", (1, 1), "invalid Python"),
    ("@{ break }", (1, 1), "loop"),
    ("@if x = 1:A@/if@", (1, 1), "condition"),
    ("@for 1 in xs:@/for@", (1, 1), "for"),
    ("@block 1x:@/block@", (1, 1), "name"),
    ("@block a:@/block@@block a:@/block@", (1, 18), "second"),
    ("@block body:@/block@", (1, 1), "reserved"),
    ("@block next:@/block@", (1, 1), "reserved"),
    ("@block for:@/block@", (1, 1), "name"),
    ("@extends x", (1, 1), "string literal"),
    ("@extends 'a'\n@extends 'b'", (2, 1), "second"),
    ("@extends '../up.html'", (1, 1), "leaves"),
    ("@if x:@extends 'a'@/if@", (1, 7), "inside"),
    ("@{ context = 1 }", (1, 1), "context"),
    ("@{ x = 1\n", (1, 1), "unterminated"),
]


@pytest.mark.parametrize(("source", "where", "words"), ERRORS)
def test_syntax_errors_name_line_and_column(source: str, where: tuple[int, int],
                                            words: str) -> None:
    err = syntax_error(source)
    assert isinstance(err, SyntaxError)
    assert (err.lineno, err.offset) == where
    assert err.column == err.offset
    assert err.filename == "t.pyml"
    assert words in err.msg
    assert str(err).startswith(f"t.pyml:{where[0]}:{where[1]}: ")


def test_syntax_error_carries_the_source_line() -> None:
    err = syntax_error("one\n  two @if x:\nthree")
    assert err.text == "  two @if x:"
    assert (err.lineno, err.offset) == (2, 7)


# ---------------------------------------------------------------------------------------------
# Scope: context names, the template's own names


def test_scope() -> None:
    assert render("@{ y = 1 }a@y@b@{ y = y + 1 }@y@") == "a1b2"
    assert render("@for i in xs:@/for@@i@") == "3"              # the loop variable stays bound
    assert render("@x@ @{ x = 5 }@x@") == "True 5"              # context value until rebound
    assert render("@{ a = a + 1 }@a@") == "3"
    assert render("@{ import json }@!json.dumps(d, sort_keys=True)@") == '{"a": 1, "b": 2}'
    assert render("@{\n  def twice(v):\n      return v * a\n}@twice(b)@") == "6"
    assert render("@[v * a for v in xs]@") == "[2, 4, 6]"
    assert render("@(w := 4)@ @w@") == "4 4"
    assert render("@loop@ @{ loop = 2 }@loop@", loop=1) == "1 2"   # no Mako magic name
    assert render("@len@", len="mine") == "mine"                  # context beats builtins


def test_undefined_name_fails_when_rendered_only() -> None:
    assert render("@if n:@missing@@/if@ok") == "ok"
    with pytest.raises(NameError):
        render("@missing@")


# ---------------------------------------------------------------------------------------------
# Static detection (§3.3)


@pytest.mark.parametrize(("source", "dynamic"), [
    ("<p>plain</p>", False), ("mail: a@@b.c", False), ("", False), ("end @", False),
    ("a @ b", False), ("@{ }", False), ("@{}x", False), ("@!@", False),
    ("@name", True), ("@!html", True), ("@{ y = 1 }", True), ("@if x:A@/if@", True),
    ("@for i in xs:@/for@", True), ("@import 'a.txt'", True), ("@import-ctrl c@", True),
    ("@extends 'l.html'", True), ("@block a:@/block@", True), ("@if x:", True),
])
def test_is_dynamic(source: str, dynamic: bool) -> None:
    assert pyml.is_dynamic(source) is dynamic
    if not dynamic:
        assert pyml.static_output(source) == pyml.render_string(source)
    else:
        assert pyml.static_output(source) is None


# ---------------------------------------------------------------------------------------------
# The line map and runtime errors


def test_line_map_follows_generated_lines() -> None:
    source = "a\n@if x:\nb @name@\n@/if\n@{\n  q = 1\n}\nline8 @name@\n"
    t = pyml.translate(source, "m.pyml")
    mako_lines = t.source.split("\n")
    for k, text in enumerate(mako_lines, start=1):
        if "${(name)" in text:
            assert t.pyml_line(k) in (3, 8)
            assert source.split("\n")[t.pyml_line(k) - 1].endswith("@name@")
    assert t.pyml_line(1) == 1
    assert pyml.pyml_line(t.line_map, len(mako_lines)) == source.count("\n") + 1


def test_runtime_error_in_string_template_names_the_line() -> None:
    with pytest.raises(ZeroDivisionError) as info:
        pyml.render_string("a\nb\n@if x:\n  @(1 / n)@\n@/if\n", BINDINGS, filename="s.pyml")
    assert info.value.pyml_filename == "s.pyml"
    assert info.value.pyml_lineno == 4
    assert '  in template "s.pyml", line 4' in info.value.__notes__


def write(root: Path, rel: str, text: str, mtime: float | None = None) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, newline="")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    return root


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_runtime_errors_map_to_pyml_lines_also_from_cached_modules(site: Path,
                                                                   cache: Path) -> None:
    write(site, "page.pyml", "line1\n@{\n    v = 1\n    w = v / n\n}\nline6\n")
    write(site, ".view/inner.html", "x\ny\n@(n.nope)@\n")
    write(site, "outer.pyml", "o\n@import '.view/inner.html'\n")
    for _ in range(2):      # the second lookup loads the modules from the cache directory
        templates = lookup.KraitLookup(str(site), str(cache))
        with pytest.raises(ZeroDivisionError) as info:
            templates.render("page.pyml", {"n": 0})
        assert info.value.pyml_lineno == 4
        assert info.value.pyml_filename == str(site / "page.pyml")
        with pytest.raises(AttributeError) as info2:
            templates.render("outer.pyml", {"n": 0})
        notes = info2.value.__notes__
        assert notes == [f'  in template "{site / "outer.pyml"}", line 2\n'
                         "    @import '.view/inner.html'",
                         f'  in template "{site / ".view/inner.html"}", line 3\n'
                         "    @(n.nope)@"]
    assert (cache / "page.pyml.py").is_file()


def test_syntax_error_through_the_lookup(site: Path, cache: Path) -> None:
    write(site, "bad.html", "ok\n\n   @for x in xs:\n")
    templates = lookup.KraitLookup(str(site), str(cache))
    with pytest.raises(PymlSyntaxError) as info:
        templates.render("bad.html", {})
    assert (info.value.filename, info.value.lineno, info.value.offset) == (
        str(site / "bad.html"), 3, 4)


# ---------------------------------------------------------------------------------------------
# The lookup: @import, @import-ctrl, layouts, reloads


def test_render_entry_point_and_context(site: Path, cache: Path) -> None:
    write(site, "index.pyml", "@ctrl@ @krait_name@ @g@")
    templates = lookup.KraitLookup(str(site), str(cache))
    out = templates.render("index.pyml", {"ctrl": None, "krait_name": "k", "g": 7,
                                          "context": "reserved names are dropped"})
    assert out == "None k 7"
    assert templates.render(str(site / "index.pyml"), {"krait_name": 1, "g": 2}) == "None 1 2"
    assert templates.render("/index.pyml", {"krait_name": 1, "g": 2}) == "None 1 2"


def test_import_is_relative_to_the_root_at_any_depth(site: Path, cache: Path) -> None:
    write(site, ".view/h.html", "<h>@name@</h>")
    write(site, "a/b/page.pyml", '@import ".view/h.html"\nrest|@import (".view/" + "h.html")@rest')
    write(site, "a/b/.view/h.html", "WRONG: relative to the importing file")
    templates = lookup.KraitLookup(str(site), str(cache))
    assert templates.render("a/b/page.pyml", {"name": "Ann"}) == "<h>Ann</h>\nrest|<h>Ann</h>rest"


def test_import_by_extension(site: Path, cache: Path) -> None:
    write(site, "notes.txt", "mail me @ home ${x} <%x%>\r\n")
    write(site, "style.css", "@media screen { a { b: c } }")
    write(site, "script.py", "log.append((__file__, name))")
    write(site, "view.mako", "${name.upper()}% if True:\n")
    write(site, "page.html", "[@import 'notes.txt'@]"
                             "[@import '/style.css'@]"
                             "[@import 'script.py'@]"
                             "[@import 'view.mako'@]")
    calls = []

    def hook(filename: str, context: dict) -> str:
        calls.append((filename, context["name"]))
        return "PY"

    templates = lookup.KraitLookup(str(site), str(cache), py_hook=hook)
    out = templates.render("page.html", {"name": "ann"})
    assert out == ("[mail me @ home ${x} <%x%>\r\n]"
                   "[@media screen { a { b: c } }]"
                   "[PY]"
                   "[ANN% if True:\n]")
    assert calls == [(str(site / "script.py"), "ann")]
    log: list = []
    default = lookup.KraitLookup(str(site), str(cache))
    assert default.render("script.py", {"log": log, "name": "n"}) == ""
    assert log == [(str(site / "script.py"), "n")]


def test_imported_template_sees_context_not_importer_locals(site: Path, cache: Path) -> None:
    write(site, "inc.pyml", "[@g@]")
    write(site, "inc2.pyml", "[@local_name@]")
    write(site, "main.pyml", "@{ local_name = 1 }@import 'inc.pyml'@@local_name@")
    write(site, "main2.pyml", "@{ local_name = 1 }@import 'inc2.pyml'@")
    templates = lookup.KraitLookup(str(site), str(cache))
    assert templates.render("main.pyml", {"g": "G"}) == "[G]1"
    with pytest.raises(NameError) as info:
        templates.render("main2.pyml", {})
    assert info.value.pyml_filename == str(site / "inc2.pyml")


def test_import_errors(site: Path, cache: Path) -> None:
    write(site, "missing.pyml", "@import 'nope.html'@")
    write(site, "escape.pyml", "@import '../outside.txt'@")
    templates = lookup.KraitLookup(str(site), str(cache))
    with pytest.raises(FileNotFoundError) as info:
        templates.render("missing.pyml", {})
    assert info.value.pyml_lineno == 1
    with pytest.raises(ValueError, match="hidden segment|outside the site root"):
        templates.render("escape.pyml", {})
    with pytest.raises(lookup.TemplateNotFoundError):
        templates.render("absent.pyml", {})


class FakeMvc:
    """push_ctrl/pop_ctrl of §9.3."""

    def __init__(self) -> None:
        self.curr = None
        self.stack: list = []

    def push_ctrl(self, c: object) -> object:
        if self.curr is not None:
            self.stack.append(self.curr)
        self.curr = c
        return c

    def pop_ctrl(self) -> object:
        self.curr = self.stack.pop() if self.stack else None
        return self.curr


class Ctrl:
    def __init__(self, view: str, label: str) -> None:
        self.view, self.label = view, label

    def get_view(self) -> str:
        return self.view


def test_import_ctrl_both_spellings(site: Path, cache: Path) -> None:
    write(site, ".view/sub.html", "<sub>@ctrl.label@</sub>")
    write(site, "page.pyml", "@ctrl.label@ @import-ctrl sub@@ctrl.label@ "
                             "@import-ctrl sub\n@ctrl.label@")
    mvc = FakeMvc()
    templates = lookup.KraitLookup(str(site), str(cache), mvc=mvc)
    outer = Ctrl("page.pyml", "outer")
    mvc.push_ctrl(outer)
    out = templates.render("page.pyml", {"ctrl": outer, "sub": Ctrl(".view/sub.html", "inner")})
    assert out == "outer <sub>inner</sub>outer <sub>inner</sub>\nouter"
    assert mvc.curr is outer and mvc.stack == []


def test_import_ctrl_pops_on_error(site: Path, cache: Path) -> None:
    write(site, ".view/bad.html", "@(1/0)@")
    write(site, "page.pyml", "@import-ctrl sub@")
    mvc = FakeMvc()
    templates = lookup.KraitLookup(str(site), str(cache), mvc=mvc)
    with pytest.raises(ZeroDivisionError):
        templates.render("page.pyml", {"sub": Ctrl(".view/bad.html", "x")})
    assert mvc.curr is None


LAYOUT = (
    "<html><title>@block title:Site@/block@</title>\n"
    "@{ year = 2024 }"
    "<body>\n@block content:\ndefault\n@/block\n</body>"
    "<footer>@block footer:(c) @year@ @name@@/block@</footer></html>"
)


def test_layouts_extends_and_block(site: Path, cache: Path) -> None:
    write(site, ".view/layout.html", LAYOUT)
    write(site, "a/page.pyml",
          '@extends ".view/layout.html"\n'
          "ignored text outside blocks\n"
          "@block title:Home - @name@@/block@\n"
          "@block content:\n"
          "@for i in xs:<i>@i@</i>@/for@\n"
          "@/block\n")
    templates = lookup.KraitLookup(str(site), str(cache))
    ctx = {"name": "Ann", "xs": [1, 2]}
    assert templates.render("a/page.pyml", ctx) == (
        "<html><title>Home - Ann</title>\n"
        "<body>\n\n<i>1</i><i>2</i>\n\n</body>"
        "<footer>(c) 2024 Ann</footer></html>")
    # The layout alone renders its own blocks in place.
    assert templates.render(".view/layout.html", ctx) == (
        "<html><title>Site</title>\n<body>\n\ndefault\n\n</body>"
        "<footer>(c) 2024 Ann</footer></html>")


def test_pyml_page_extends_a_mako_layout(site: Path, cache: Path) -> None:
    write(site, "l.mako", '<%page args="year"/><b>${year}</b>${self.content()}'
                          '<%def name="content()">-</%def>')
    write(site, "p.html", "@extends 'l.mako'\n@block content:[@name@]@/block@")
    templates = lookup.KraitLookup(str(site), str(cache))
    assert templates.render("p.html", {"year": 2026, "name": "<a>"}) == "<b>2026</b>[&lt;a&gt;]"


def test_runtime_error_in_a_child_block(site: Path, cache: Path) -> None:
    write(site, "l.html", "[\n@block content:L@/block@]")
    write(site, "c.html", "@extends 'l.html'\n@block content:\n\n@(1/0)@@/block@")
    templates = lookup.KraitLookup(str(site), str(cache))
    with pytest.raises(ZeroDivisionError) as info:
        templates.render("c.html", {})
    assert (info.value.pyml_filename, info.value.pyml_lineno) == (str(site / "c.html"), 4)
    assert info.value.__notes__[0] == (f'  in template "{site / "l.html"}", line 2\n'
                                       "    @block content:L@/block@]")


def test_block_sees_names_bound_before_it(site: Path, cache: Path) -> None:
    write(site, "p.pyml", "@{ y = 1 }@for i in xs:@block b:@y@@i@,@/block@@/for@")
    templates = lookup.KraitLookup(str(site), str(cache))
    assert templates.render("p.pyml", {"xs": [1, 2]}) == "11,12,"


def test_edited_template_is_served_fresh(site: Path, cache: Path) -> None:
    path = write(site, "page.pyml", "one @v@", mtime=time.time() - 100)
    templates = lookup.KraitLookup(str(site), str(cache))
    assert templates.render("page.pyml", {"v": 1}) == "one 1"
    write(site, "page.pyml", "two @v@!", mtime=time.time() + 10)
    assert templates.render("page.pyml", {"v": 2}) == "two 2!"
    # A second worker sharing the cache directory sees the new version too.
    assert lookup.KraitLookup(str(site), str(cache)).render("page.pyml", {"v": 3}) == "two 3!"
    # An edit within the same second as the cached module (same whole-second mtime) too.
    stamp = os.stat(cache / "page.pyml.py").st_mtime_ns + 1000
    path.write_text("three @v@")
    os.utime(path, ns=(stamp, stamp))
    assert lookup.KraitLookup(str(site), str(cache)).render("page.pyml", {"v": 4}) == "three 4"


def test_cached_modules_are_reused_only_with_a_matching_stamp(site: Path, cache: Path) -> None:
    write(site, "p.html", "v1 @v@")
    assert lookup.KraitLookup(str(site), str(cache)).render("p.html", {"v": 1}) == "v1 1"
    module = cache / "p.html.py"
    first = module.stat()
    # A second worker loads the module as it is: nothing is compiled or written again.
    assert lookup.KraitLookup(str(site), str(cache)).render("p.html", {"v": 2}) == "v1 2"
    assert (module.stat().st_mtime_ns, module.stat().st_ino) == (first.st_mtime_ns,
                                                                 first.st_ino)
    # A module without our stamp (another krait or Mako, a damaged file) is compiled again,
    # whatever its modification time says.
    module.write_text("raise SystemExit('stale module executed')\n")
    os.utime(module, (time.time() + 100, time.time() + 100))
    assert lookup.KraitLookup(str(site), str(cache)).render("p.html", {"v": 3}) == "v1 3"
    # Nothing else is left in the cache directory (temporary files are renamed into place).
    assert sorted(p.name for p in cache.iterdir()) == ["p.html.py"]


def test_a_cache_that_cannot_be_written_is_not_fatal(site: Path, cache: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    write(site, "sub/p.html", "ok @v@")
    cache.mkdir()
    (cache / "sub").write_text("a file where the module's folder should be")
    assert lookup.KraitLookup(str(site), str(cache)).render("sub/p.html", {"v": 1}) == "ok 1"
    assert "cannot cache the compiled" in capsys.readouterr().err


def test_edited_layout_is_served_fresh(site: Path, cache: Path) -> None:
    write(site, "l.html", "[@block b:@/block@]", mtime=time.time() - 100)
    write(site, "c.html", "@extends 'l.html'\n@block b:child@/block@")
    templates = lookup.KraitLookup(str(site), str(cache))
    assert templates.render("c.html", {}) == "[child]"
    write(site, "l.html", "<@block b:@/block@>", mtime=time.time() + 10)
    assert templates.render("c.html", {}) == "<child>"


def test_file_bytes_are_kept(site: Path, cache: Path) -> None:
    raw = "\ufeff# -*- coding: latin-1 -*-\r\né @v@\r\n%x\n".encode()
    (site / "enc.html").write_bytes(raw)
    (site / "enc2.html").write_bytes(raw[3:])
    templates = lookup.KraitLookup(str(site), str(cache))
    assert templates.render("enc.html", {"v": "ü"}).encode() == raw.replace(b"@v@", "ü".encode())
    assert templates.render("enc2.html", {"v": 1}).encode() == raw[3:].replace(b"@v@", b"1")


def test_is_static_follows_the_file(site: Path, cache: Path) -> None:
    write(site, "s.html", "mail: a@@b.c @{ }", mtime=time.time() - 100)
    write(site, "d.html", "@x@")
    write(site, "v.mako", "${x}")
    templates = lookup.KraitLookup(str(site), str(cache))
    assert templates.is_static("s.html") and templates.render("s.html", {}) == "mail: a@b.c "
    assert not templates.is_static("d.html")
    assert not templates.is_static(str(site / "v.mako"))
    write(site, "s.html", "now @dynamic@", mtime=time.time() + 10)
    assert not templates.is_static("/s.html")
    with pytest.raises(lookup.TemplateNotFoundError):
        templates.is_static("missing.html")


def test_module_directory_must_be_outside_the_root(site: Path) -> None:
    with pytest.raises(ValueError, match="inside the site root"):
        lookup.KraitLookup(str(site), str(site / ".cache"))


def test_in_memory_lookup_and_site_templates(site: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    write(site, "p.html", "@v@")
    assert lookup.KraitLookup(str(site)).render("p.html", {"v": "<"}) == "&lt;"
    monkeypatch.setenv("KRAIT_TEMPLATE_CACHE", str(tmp_path / "tc"))
    ran = []
    templates = lookup.SiteTemplates(str(site), run_script=lambda f, ns: ran.append(f))
    assert templates.module_directory.startswith(str(tmp_path / "tc"))
    write(site, "s.py", "")
    write(site, "q.pyml", "@import 's.py'@ok")
    assert templates.render(str(site / "q.pyml"), {}) == "ok"
    assert ran == [str(site / "s.py")]


# ---------------------------------------------------------------------------------------------
# Issue 15: the '@' trap in .html pages, html_templates = False, undefined names


def test_an_at_in_a_html_page_says_why_it_is_a_template(site: Path, cache: Path) -> None:
    write(site, "contact.html", "<h1>Contact</h1>\n<style>@media (max-width:600px){a{b:c}}"
                                "</style>\n<a href='mailto:ann@example.com'>x</a>\n")
    with pytest.raises(PymlSyntaxError) as info:
        lookup.KraitLookup(str(site), str(cache)).render("contact.html", {})
    notes = "\n".join(info.value.__notes__)
    # "@media" is an expression that ends at the space; the e-mail address does not parse.
    assert info.value.lineno == 3 and info.value.offset == 20
    assert f'"{site / "contact.html"}" is a template because its name ends in .html' in notes
    assert "(line 3, column 20: @example.com'>x</a>)" in notes
    assert "write @@ for a literal @" in notes
    assert "krait.config.html_templates = False" in notes
    assert "rename the page" in notes
    # A .pyml file is a template by choice: no such advice.
    write(site, "p.pyml", "<a href='mailto:ann@example.com'>x</a>\n")
    with pytest.raises(PymlSyntaxError) as info:
        lookup.KraitLookup(str(site), str(cache)).render("p.pyml", {})
    assert "html_templates" not in "\n".join(info.value.__notes__)


def test_html_templates_false_sends_html_as_written(site: Path, cache: Path) -> None:
    page = "<p>mail ann@example.com</p>\n<style>@media print {}</style>@@\n"
    write(site, "contact.html", page)
    write(site, "old.htm", "a@b")
    write(site, "t.pyml", "@import 'contact.html'@@v@")
    write(site, "l.pyml", "[@block b:@/block@]")
    write(site, "c.pyml", "@extends 'l.pyml'\n@block b:@v@@/block@")
    templates = lookup.KraitLookup(str(site), str(cache), html_templates=False)
    assert templates.render("contact.html", {}) == page
    assert templates.render("old.htm", {}) == "a@b"
    assert templates.is_static("contact.html")
    assert templates.render("t.pyml", {"v": "<"}) == page + "&lt;"
    assert templates.render("c.pyml", {"v": 1}) == "[1]"
    with pytest.raises(lookup.TemplateNotFoundError):
        templates.is_static("missing.html")
    # The default stays Krait's rule.
    assert lookup.KraitLookup(str(site), str(cache)).render("old.htm", {"b": 2}) == "a2"


def test_an_undefined_name_is_named_with_a_suggestion(site: Path, cache: Path) -> None:
    write(site, "p.pyml", "line one\n<p>@nmae@</p>\n")
    with pytest.raises(NameError) as info:
        lookup.KraitLookup(str(site), str(cache)).render("p.pyml", {"name": "Ann"})
    message = str(info.value)
    assert message.startswith("name 'nmae' is not defined (did you mean 'name'?)")
    assert f'in template "{site / "p.pyml"}", line 2' in message
    assert info.value.name == "nmae"
    assert info.value.pyml_lineno == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize(("source", "kind", "name", "hint"), [
    ("@usr.name@", AttributeError, "usr", "user"),
    ("@{ total = prce * 2 }", TypeError, "price", "price"),
    ("@for i in itmes:@i@@/for@", TypeError, "itmes", "items"),
    ("@lenn(items)@", TypeError, "lenn", "len"),
])
def test_undefined_names_in_other_errors(source: str, kind: type, name: str, hint: str) -> None:
    context = {"user": object(), "price": 3, "items": [1]}
    if name == "price":
        name = "prce"
    with pytest.raises(kind) as info:
        pyml.render_string(source, context, "t.pyml")
    assert str(info.value).startswith(f"name {name!r} is not defined (did you mean {hint!r}?)")


def test_an_undefined_name_in_a_html_page_hints_at_the_trap() -> None:
    with pytest.raises(AttributeError) as info:
        pyml.render_string("write to team@example.org\n", {}, "contact.html")
    assert str(info.value).startswith("name 'example' is not defined")
    assert any("write it @@" in note for note in info.value.__notes__)
