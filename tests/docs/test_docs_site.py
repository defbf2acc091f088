"""The documentation is one Sphinx site: the guides (docs/*.md, through MyST-Parser) and the API
reference (docs/api/*.rst), built with warnings as errors, with a search box, the tutorial first
in the navigation, every page of docs/ in it, and links that lead somewhere."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tests.docs.sphinx_site import DOCS, Build


class Links(HTMLParser):
    """The href/src values of a page, and the ids it defines."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.targets.append(value)
            elif name == "id" and value:
                self.ids.add(value)


def parse(page: Path) -> Links:
    links = Links()
    links.feed(page.read_text(encoding="utf-8"))
    return links


def sidebar_pages(html: Path, page: str) -> list[str]:
    """The pages of the sidebar's table of contents on a page, in order (relative to the
    site's root)."""
    text = (html / page).read_text(encoding="utf-8")
    nav = text.split('<div class="sphinxsidebar"', 1)[1]
    nav = nav.split('<div class="relations"', 1)[0]
    hrefs = re.findall(r'<li class="toctree-l1[^"]*"><a class="[^"]*" href="([^"]*)"', nav)
    base = (html / page).parent
    return [page if h == "#" else str((base / h.split("#")[0]).resolve().relative_to(html))
            for h in hrefs]


def test_builds_without_warnings(docs_site: Build) -> None:
    html = docs_site.check()
    for md in DOCS.glob("*.md"):
        assert (html / f"{md.stem}.html").is_file(), md.name
    for rst in (DOCS / "api").glob("*.rst"):
        assert (html / "api" / f"{rst.stem}.html").is_file(), rst.name
    assert "WebsocketsCtrlBase" in (html / "api" / "websockets.html").read_text()


def test_navigation_tutorial_first_and_every_page(docs_site: Build) -> None:
    html = docs_site.check()
    pages = sidebar_pages(html, "index.html")
    assert pages[0] == "tutorial.html", pages
    # docs/*.md are picked up by a glob: a new page needs no edit of the toctree.
    expected = {f"{md.stem}.html" for md in DOCS.glob("*.md")} - {"index.html"}
    assert expected | {"api/index.html"} == set(pages), pages
    assert len(pages) == len(set(pages))
    # Every page has the same sidebar, with previous/next links.
    for page in ("tutorial.html", "api/request.html"):
        assert sidebar_pages(html, page) == pages, page
    assert 'title="next chapter"' in (html / "tutorial.html").read_text(encoding="utf-8")


def test_search_box_and_index(docs_site: Build) -> None:
    html = docs_site.check()
    for page in ("index.html", "tutorial.html", "api/request.html"):
        text = (html / page).read_text(encoding="utf-8")
        assert re.search(r'<form[^>]+action="(\.\./)?search\.html"', text), page
        assert 'name="q"' in text, page
    assert (html / "search.html").is_file()
    index = (html / "searchindex.js").read_text(encoding="utf-8")
    for word in ("tutorial", "websocket", "get_post_form"):
        assert word in index.lower(), word


def test_links_lead_somewhere(docs_site: Build) -> None:
    """Every relative link of every page names a file of the site and, with a #fragment, an id
    of that page: links between the Markdown files became links between pages."""
    html = docs_site.check()
    pages = sorted(p for p in html.rglob("*.html") if "_modules" not in p.parts)
    ids = {page: parse(page).ids for page in pages}
    broken = []
    for page in pages:
        for target in parse(page).targets:
            parts = urlsplit(target)
            if parts.scheme or parts.netloc or target.startswith("mailto:"):
                continue
            dest = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(html)}: {target}")
            elif parts.fragment and dest.suffix == ".html" and dest in ids and \
                    unquote(parts.fragment) not in ids[dest]:
                broken.append(f"{page.relative_to(html)}: {target} (no such id)")
            elif dest.suffix == ".md":
                broken.append(f"{page.relative_to(html)}: {target} (raw Markdown)")
    assert broken == []


def test_readme_is_a_page(docs_site: Build) -> None:
    """The README (one command to install and run, the test command, the command line) is the
    page "install"; the guides' links to ../README.md lead there."""
    html = docs_site.check()
    install = (html / "install.html").read_text(encoding="utf-8")
    text = re.sub(r"<[^>]+>", "", install)
    assert "Run the example site" in text and "--max-body-size" in text
    assert 'href="tutorial.html"' in install
    assert 'href="install.html"' in (html / "tutorial.html").read_text(encoding="utf-8")


def test_readme_lists_every_option() -> None:
    """README.md's command-line table names every option of ``krait --help``."""
    from krait.__main__ import build_parser

    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    options = [o for action in build_parser()._actions for o in action.option_strings]
    assert len(options) > 20
    missing = [o for o in options if f"`{o}" not in readme]
    assert missing == []
