"""Property (issue 18 item 12): every .pyml text the translator accepts compiles in Mako.

Inputs are built from fragments that exercise the translator's edges: code blocks holding
comparison operators right after ``@{`` (``<%ok = n >`` was read as a tag), three quotes inside
ordinary strings (Mako's code printer took them for a triple-quoted string), tabs, Mako syntax
that must stay literal, and the control constructs. Kept to a few hundred examples so that it
runs in CI within seconds.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mako.template import Template

from krait.templates import pyml

FRAGMENTS = [
    "@{ ok = n >= 0 }", "@{ok=n<1}", "@{\n    s = '\"\"\"'\n    if s:\n        t = 1\n}",
    "@{\n    s = \"'''\"\n    for i in [1]:\n        t = i\n}", "@{ s = 'a\\tb' }",
    "@{\n    s = '\\'\\'\\'' + \"\\\"\\\"\\\"\"\n}", "@{ x = {'a': '}'} }",
    "@{\n    # only a comment\n}",
    "@{ b = b'\"\"\"' }", "@{\n    r = r'\"\"\"'\n}", "@{\n    f = f'{n}\"\"\"'\n}",
    "@n@", "@!n@", "@(n + 1) ", "@@", "@if n:", "@else:", "@/if@", "@for i in [1, 2]:",
    "@/for@", "${x}", "<%", "</%", "%", "##", "\\\n", "\n", " ", "\t", "text", "'", '"',
    '"""', "'''", "<%ok>", "%>", "@import 'x.txt'@",
]


def mako_compiles(text: str) -> None:
    try:
        result = pyml.translate(text, "t.pyml")
    except pyml.PymlSyntaxError:
        return  # refused with a file:line:column message: fine
    Template(text=result.source, **pyml.TEMPLATE_ARGS)  # raises if Mako cannot compile it


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=8))
def test_accepted_templates_compile(parts: list[str]) -> None:
    mako_compiles("".join(parts))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="@{}()[]:'\"\\\n\t %$<>#=!abn0", max_size=40))
def test_accepted_random_text_compiles(text: str) -> None:
    mako_compiles(text)


def test_the_two_reported_cases() -> None:
    mako_compiles("@{ ok = n >= 0 }@ok@")
    mako_compiles("@{\n    s = '\"\"\"'\n    if s:\n        t = 1\n}@s@")
