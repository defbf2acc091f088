"""Which cache-rule regexes the core evaluates itself (krait/_site.py core_cache_rule): the
form it is given must match exactly the paths Python's ``re.fullmatch`` matches, and anything
it cannot express must be left to a worker (None)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from krait._site import core_cache_rule


def core_matches(form: tuple[str, str | None], rel: str) -> bool:
    """What krait_server_add_cache_rule's rule does (tables.c cache_rule_matches), on text."""
    before, after = form
    if after is None:
        return rel == before
    return (len(rel) >= len(before) + len(after) and rel.startswith(before)
            and rel.endswith(after) and "\n" not in rel[len(before):len(rel) - len(after)])


@pytest.mark.parametrize(("pattern", "form"), [
    ("robots\\.txt", ("robots.txt", None)),
    ("styles", ("styles", None)),
    ("css/.*", ("css/", "")),
    (".*\\.css", ("", ".css")),
    ("img/.*\\.png", ("img/", ".png")),
    (".*", ("", "")),
    ("a\\-b\\ c", ("a-b c", None)),
])
def test_plain_rules_go_to_the_core(pattern: str, form: tuple[str, str | None]) -> None:
    assert core_cache_rule(pattern) == form


@pytest.mark.parametrize("pattern", [
    "(a+)+b", ".*\\.(css|js)", "[a-z]+\\.css", "a.b", "a.+", ".*?x", ".*a.*", "^a", "a$",
    "a|b", "(?i)a", "\\d", "\\w+", "caf\u00e9", "a{2}", "a*", "x\\", b"bytes", ".*+",
])
def test_other_regexes_go_to_a_worker(pattern: object) -> None:
    assert core_cache_rule(pattern) is None


_PIECES = ["a", "b", "/", ".", "*", "\\.", "\\-", ".*", "+", "?", "(", ")", "[", "]", "|", "$",
           "^", "{", "}", "\\", " ", "\n", "é", "\\n", "\\d"]
_TEXT = st.text(alphabet=["a", "b", "/", ".", "-", " ", "\n", "é", "*", "\\"], max_size=8)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=6).map("".join), st.lists(_TEXT, max_size=6))
def test_core_form_agrees_with_fullmatch(pattern: str, paths: list[str]) -> None:
    form = core_cache_rule(pattern)
    if form is None:
        return
    compiled = re.compile(pattern)  # every accepted pattern is a valid regex
    before, after = form
    for rel in [*paths, before, before + (after or ""), before + "x\n" + (after or ""),
                before + "ab/" + (after or "")]:
        assert core_matches(form, rel) == bool(compiled.fullmatch(rel)), (pattern, rel)
