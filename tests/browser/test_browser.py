"""site-example/ in a real browser (issue 7): headless Chromium, driven by Selenium, visits every
page, signs the guestbook, uploads a file and chats over the WebSocket with a second tab and a
websocket-client peer. Screenshots of every step go to the test's temporary folder
(``<tmp_path>/screenshots``; the path is printed, see it with ``pytest -s``).

Only the system's browser and driver are used (Debian's ``chromium`` and ``chromium-driver``):
no browser is downloaded, and Selenium Manager is never asked for one (the driver's path is
given and SE_OFFLINE is set). The test skips when they are not installed; CI installs them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import websocket
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import KraitProcess

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian packages chromium and "
           "chromium-driver; scripts/test installs them)")

#: Every page of the site: (path, text of its <h1>).
PAGES = [
    ("/", "A small site on krait"),
    ("/guestbook", "Guestbook"),
    ("/upload", "Upload a file"),
    ("/chat", "Chat"),
    ("/counter", "Live counter"),
    ("/hello/world", "Hello, world!"),
    ("/stats", "Stats"),
    ("/about", "About this site"),
    ("/contact", "Contact"),
]
WAIT = 15  # seconds for any single thing to appear in the page

#: What each page shows, as the browser renders it (the text of <main>): fragments that must be
#: there. A template bug (an expression that ended too early, an undefined name) shows as text
#: a visitor would see; these catch it.
RENDERED = {
    "/": ["Every page below shows one feature of krait.", "Guestbook\nA form, SQLite in .private/"],
    "/guestbook": ["You have opened this page 1 time (a cookie counts them).", "0 messages"],
    "/upload": ["Choose a file (up to 8 MiB): the server reads it,"],
    "/chat": ["Open this page in two windows: a message sent in one appears"],
    "/counter": ["0 clicks so far.", "Open this page in two windows and click in one"],
    "/hello/world": ["Hello, world!", "the regex /hello/(?P<name>[^/]{1,40})",
                     "like every @expression@ in a template"],
    "/hello/%3Cem%3Ehi": ["Hello, <em>hi!"],
    "/stats": ["Guestbook entries\n0", "http_method\nGET", "url\n/stats",
               '@mvc.route_ctrl_decorator("GET", url="/stats")'],
    "/about": ["a template with a layout (@extends, @block)",
               "an e-mail address in a template: @@ for a literal @"],
    "/contact": ["Write to team@example.org.", "written team@@example.org: a doubled @@ prints "
                 "one @."],
}
#: Text that only a template bug puts on a page.
RESIDUE = ["Undefined", "Traceback", "krait.config", "// (", "${", "@{", "@/", "<%"]


@pytest.fixture
def site_server(tmp_path: Path, krait_server, docs_site,  # type: ignore[no-untyped-def]
                monkeypatch: pytest.MonkeyPatch) -> KraitProcess:
    """site-example/ with the documentation built into its docs/, as the README's command
    leaves it."""
    monkeypatch.setenv("KRAIT_TEMPLATE_CACHE", str(tmp_path / "template-cache"))
    site = tmp_path / "site-example"
    shutil.copytree(REPO / "site-example", site,
                    ignore=shutil.ignore_patterns("__pycache__", "*.db", "*.db-*", "docs"))
    shutil.copytree(docs_site.check(), site / "docs")
    return krait_server(site, "--workers", "2")


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1100,900",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


class Shots:
    """Numbered screenshots in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def take(self, driver: WebDriver, name: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        assert driver.save_screenshot(str(path)), path
        return path


def wait_for(driver: WebDriver, what: str, condition) -> None:  # type: ignore[no-untyped-def]
    try:
        WebDriverWait(driver, WAIT, poll_frequency=0.05,
                      ignored_exceptions=[StaleElementReferenceException]).until(condition)
    except TimeoutException:
        raise AssertionError(f"timed out waiting for {what} on {driver.current_url}:\n"
                             f"{driver.find_element(By.TAG_NAME, 'body').text}") from None


def h1(driver: WebDriver) -> str:
    return driver.find_element(By.TAG_NAME, "h1").text


def console_errors(driver: WebDriver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_every_page_in_chromium(site_server: KraitProcess, browser: WebDriver,
                                tmp_path: Path) -> None:
    shots = Shots(tmp_path / "screenshots")
    print(f"\nscreenshots: {shots.folder}")
    url = site_server.url
    for path, heading in PAGES:
        browser.get(url + path)
        assert h1(browser) == heading, path
        assert browser.title.endswith("· krait example"), path
        # The stylesheet was applied (the header is dark, not the browser's default).
        header = browser.find_element(By.TAG_NAME, "header")
        assert header.value_of_css_property("background-color") == "rgba(29, 35, 48, 1)", path
        shots.take(browser, path.strip("/").replace("/", "-") or "home")
    assert console_errors(browser) == []
    # Every link of the navigation leads to a page of the site (no 404 among them).
    browser.get(url + "/")
    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "nav a")]
    assert len(links) == 9
    for link in links:
        browser.get(link)
        assert "404" not in browser.title, link
    # The JSON endpoint, as the browser shows it.
    browser.get(url + "/api/entries")
    assert json.loads(browser.find_element(By.TAG_NAME, "body").text) == {
        "count": 0, "entries": []}
    # The docs links of the about page lead to pages of the built documentation.
    browser.get(url + "/about")
    about_links = [a.get_attribute("href")
                   for a in browser.find_elements(By.CSS_SELECTOR, "main a")]
    assert url + "/docs/tutorial.html" in about_links
    for link in [a for a in about_links if "/docs/" in a]:
        browser.get(link)
        assert browser.find_elements(By.CSS_SELECTOR, "div.sphinxsidebar"), link


def test_every_page_renders_what_its_template_says(site_server: KraitProcess,
                                                  browser: WebDriver) -> None:
    url = site_server.url
    version_footer = None
    for path, fragments in RENDERED.items():
        browser.get(url + path)
        main = browser.find_element(By.TAG_NAME, "main").text
        for fragment in fragments:
            assert fragment in main, (path, fragment, main)
        page = browser.find_element(By.TAG_NAME, "body").text
        for residue in RESIDUE:
            assert residue not in page, (path, residue, page)
        footer = browser.find_element(By.TAG_NAME, "footer").text
        assert footer.startswith("krait ") and " · page rendered by worker " in footer, path
        version_footer = footer.split(" · ")[0]
    assert version_footer is not None and version_footer[len("krait "):][0].isdigit()
    # The contact page's link is the address, with one '@'.
    browser.get(url + "/contact")
    link = browser.find_element(By.ID, "contact-mail")
    assert link.get_attribute("href") == "mailto:team@example.org"
    assert console_errors(browser) == []


def test_guestbook_form_and_cookie_counter(site_server: KraitProcess, browser: WebDriver,
                                           tmp_path: Path) -> None:
    shots = Shots(tmp_path / "screenshots")
    browser.get(site_server.url + "/guestbook")
    assert browser.find_element(By.ID, "visits").text == "1"
    browser.find_element(By.ID, "name").send_keys("Ada <script>alert(1)</script>")
    browser.find_element(By.ID, "message").send_keys("Hello from a real browser & friends")
    shots.take(browser, "guestbook-filled")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    # POST → 302 → GET: the browser ends on the page again, with the entry.
    wait_for(browser, "the redirect", lambda d: d.current_url.endswith("/guestbook?thanks=1"))
    entry = browser.find_element(By.CSS_SELECTOR, "#entries .entry")
    assert "Ada <script>alert(1)</script>" in entry.text   # shown as text, not run
    assert "Hello from a real browser & friends" in entry.text
    assert browser.find_element(By.ID, "thanks").is_displayed()
    assert browser.find_element(By.ID, "visits").text == "2"
    shots.take(browser, "guestbook-signed")
    # Reloading the redirected page does not post again; the cookie counts on.
    browser.refresh()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#entries .entry")) == 1
    assert browser.find_element(By.ID, "visits").text == "3"
    cookie = browser.get_cookie("visits")
    assert cookie is not None and cookie["value"] == "3" and cookie["httpOnly"]
    # The API sees the entry.
    browser.get(site_server.url + "/api/entries")
    body = json.loads(browser.find_element(By.TAG_NAME, "body").text)
    assert body["entries"][0]["name"] == "Ada <script>alert(1)</script>"
    assert console_errors(browser) == []


def test_upload(site_server: KraitProcess, browser: WebDriver, tmp_path: Path) -> None:
    shots = Shots(tmp_path / "screenshots")
    data = os.urandom(300_000)
    upload = tmp_path / "holiday photo.bin"
    upload.write_bytes(data)
    browser.get(site_server.url + "/upload")
    browser.find_element(By.ID, "file").send_keys(str(upload))
    browser.find_element(By.ID, "note").send_keys("<b>not bold</b>")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_for(browser, "the upload result", lambda d: d.find_elements(By.ID, "upload-result"))
    assert browser.find_element(By.ID, "up-name").text == "holiday photo.bin"
    assert browser.find_element(By.ID, "up-size").text == "300000 bytes"
    assert browser.find_element(By.ID, "up-sha256").text == hashlib.sha256(data).hexdigest()
    assert browser.find_element(By.ID, "up-note").text == "<b>not bold</b>"
    shots.take(browser, "upload-result")
    assert console_errors(browser) == []


def chat_lines(driver: WebDriver) -> list[str]:
    return [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#chat-log li")]


def last_line_is(text: str):  # type: ignore[no-untyped-def]
    def check(driver: WebDriver) -> bool:
        lines = chat_lines(driver)
        return bool(lines) and lines[-1].endswith(text)
    return check


def say(driver: WebDriver, name: str | None, text: str) -> None:
    if name is not None:
        field = driver.find_element(By.ID, "chat-name")
        field.clear()
        field.send_keys(name)
    driver.find_element(By.ID, "chat-text").send_keys(text)
    driver.find_element(By.CSS_SELECTOR, "#chat-form button").click()


def test_chat_between_two_tabs_and_a_peer(site_server: KraitProcess, browser: WebDriver,
                                          tmp_path: Path) -> None:
    shots = Shots(tmp_path / "screenshots")
    url = site_server.url + "/chat"

    def connected(d: WebDriver) -> bool:
        return d.find_element(By.ID, "chat-status").text == "Connected."

    browser.get(url)
    first = browser.current_window_handle
    wait_for(browser, "the WebSocket", connected)
    browser.switch_to.new_window("tab")
    browser.get(url)
    second = browser.current_window_handle
    wait_for(browser, "the WebSocket (second tab)", connected)
    peer = websocket.create_connection(
        f"ws://127.0.0.1:{site_server.port}/chat/socket", timeout=WAIT)
    try:
        # The second tab speaks; the first tab and the peer hear it.
        say(browser, "Tab <2>", "hello from tab two")
        browser.switch_to.window(first)
        wait_for(browser, "the message of tab two",
                 lambda d: any(line.endswith("Tab <2>: hello from tab two")
                               for line in chat_lines(d)))
        deadline = time.monotonic() + WAIT
        while True:
            message = json.loads(peer.recv())
            if message.get("text") == "hello from tab two":
                assert message["name"] == "Tab <2>"
                break
            assert time.monotonic() < deadline
        # The peer speaks; both tabs hear it, as text (no markup is interpreted).
        peer.send(json.dumps({"name": "peer", "text": "<i>hi</i> from the peer"}))
        for handle in (first, second):
            browser.switch_to.window(handle)
            wait_for(browser, "the peer's message",
                     lambda d: any(line.endswith("peer: <i>hi</i> from the peer")
                                   for line in chat_lines(d)))
            assert browser.find_elements(By.CSS_SELECTOR, "#chat-log i") == []
        # The first tab speaks; the peer hears it.
        browser.switch_to.window(first)
        say(browser, "Tab one", "and hello from tab one")
        deadline = time.monotonic() + WAIT
        while json.loads(peer.recv()).get("text") != "and hello from tab one":
            assert time.monotonic() < deadline
        wait_for(browser, "its own message", last_line_is("Tab one: and hello from tab one"))
        shots.take(browser, "chat-tab-one")
        browser.switch_to.window(second)
        wait_for(browser, "tab one's message in tab two",
                 last_line_is("Tab one: and hello from tab one"))
        assert len(chat_lines(browser)) == 3
        shots.take(browser, "chat-tab-two")
    finally:
        peer.close()
    assert console_errors(browser) == []


def test_counter_between_two_tabs_and_a_post(site_server: KraitProcess, browser: WebDriver,
                                            tmp_path: Path) -> None:
    shots = Shots(tmp_path / "screenshots")
    url = site_server.url + "/counter"

    def live(d: WebDriver) -> bool:
        return d.find_element(By.ID, "counter-status").text == "Live."

    def count_is(n: int):  # type: ignore[no-untyped-def]
        return lambda d: d.find_element(By.ID, "count").text == str(n)

    browser.get(url)
    first = browser.current_window_handle
    wait_for(browser, "the WebSocket", live)
    before = int(browser.find_element(By.ID, "count").text)
    browser.switch_to.new_window("tab")
    browser.get(url)
    wait_for(browser, "the WebSocket (second tab)", live)
    # A click in the second tab (the script posts; the page does not reload) shows in both.
    browser.find_element(By.CSS_SELECTOR, "#counter-form button").click()
    wait_for(browser, "the second tab's own click", count_is(before + 1))
    browser.switch_to.window(first)
    wait_for(browser, "the click of the other tab", count_is(before + 1))
    # A POST from outside the browser reaches both tabs too.
    assert requests.post(url, headers={"Accept": "application/json"},
                         timeout=WAIT).json() == {"count": before + 2}
    wait_for(browser, "the outside POST", count_is(before + 2))
    shots.take(browser, "counter")
    assert console_errors(browser) == []


def test_documentation_site(site_server: KraitProcess, browser: WebDriver,
                            tmp_path: Path) -> None:
    """The nav's Docs link opens the Sphinx site: its sidebar lists the tutorial first, next
    and previous links walk the pages, and the search box finds pages (its JavaScript and
    index, served by krait, run in the browser)."""
    shots = Shots(tmp_path / "screenshots")
    browser.get(site_server.url + "/")
    browser.find_element(By.LINK_TEXT, "Docs").click()
    wait_for(browser, "the documentation", lambda d: d.current_url.endswith("/docs/"))
    assert h1(browser) == "krait documentation"
    toc = browser.find_elements(By.CSS_SELECTOR, "div.sphinxsidebar li.toctree-l1 > a")
    assert toc[0].text == "Tutorial: from an empty folder to a working site"
    assert "Python API reference" in [a.text for a in toc][-1]
    shots.take(browser, "docs-index")
    toc[0].click()
    wait_for(browser, "the tutorial", lambda d: d.current_url.endswith("/docs/tutorial.html"))
    # The README's links became links between pages.
    browser.find_element(By.CSS_SELECTOR, "div.body a[href='install.html']").click()
    wait_for(browser, "the README page", lambda d: d.current_url.endswith("/install.html"))
    assert h1(browser) == "Install, run, test"
    # Search from the sidebar's box.
    box = browser.find_element(By.CSS_SELECTOR, "div.sphinxsidebar input[name=q]")
    box.send_keys("WebsocketsCtrlBase")
    box.submit()
    wait_for(browser, "search results", lambda d: d.find_elements(
        By.CSS_SELECTOR, "#search-results ul.search li"))
    results = [li.text for li in browser.find_elements(
        By.CSS_SELECTOR, "#search-results ul.search li")]
    assert any("WebSockets" in r or "websockets" in r for r in results), results
    shots.take(browser, "docs-search")
    assert console_errors(browser) == []
