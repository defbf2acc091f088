"""docs/deployment.md's several-machines set-up, run for real: its HAProxy configuration (taken
from the document; only addresses, ports and the certificate are replaced) in front of two
krait instances that share a redis-server through ``--pubsub``. A WebSocket connected through
HAProxy to one instance receives what a form post, also sent through HAProxy, published on
the other one."""

from __future__ import annotations

import re
import ssl
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import websocket

from tests.conftest import KraitProcess, write_site
from tests.integration.haproxy import HAProxy, free_port, haproxy_binary
from tests.integration.test_channels import FILES, RedisServer, redis_server, wait_log

# Fixtures of this module's tests, imported from test_channels and haproxy.
__all__ = ["haproxy_binary", "redis_server"]

DOC = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
FIRST_LINE = "# /etc/haproxy/haproxy.cfg: krait on two machines, WebSockets included"

SITE = {
    **FILES,
    "index.html": "<!doctype html><title>up</title><p>up</p>\n",  # the health check's page
    # The form post that publishes (the site's own page would redirect; this one says so).
    "post.py": "import krait\nfrom krait import websockets\n\n"
               "form = krait.request.get_post_form()\n"
               "websockets.publish(form['channel'], form['text'])\n"
               "krait.response = krait.Response(body='published')\n",
}


def documented_config() -> str:
    """The HAProxy configuration block of docs/deployment.md."""
    text = DOC.read_text(encoding="utf-8")
    m = re.search(r"```\n(" + re.escape(FIRST_LINE) + r"\n.*?)```", text, re.S)
    assert m, f"no HAProxy block starting {FIRST_LINE!r} in {DOC}"
    return m.group(1)


def local_config(http: int, https: int, pem: Path, web1: int, web2: int) -> str:
    """The documented configuration with local addresses; each replacement must apply once, so
    a change of the document that the test does not follow fails here."""
    config = documented_config()
    for old, new in (("bind :80\n", f"bind 127.0.0.1:{http}\n"),
                     ("bind :443 ssl crt /etc/haproxy/certs/example.com.pem",
                      f"bind 127.0.0.1:{https} ssl crt {pem}"),
                     ("10.0.0.11:8080", f"127.0.0.1:{web1}"),
                     ("10.0.0.12:8080", f"127.0.0.1:{web2}")):
        assert config.count(old) == 1, f"{old!r} is not once in the documented configuration"
        config = config.replace(old, new)
    # The document keeps Debian's global section; this one runs in the foreground, unprivileged.
    return "global\n    maxconn 1000\n\n" + config


def self_signed(folder: Path) -> Path:
    """A certificate and key for 127.0.0.1 in one PEM file, as HAProxy's ``crt`` takes it."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    pem = folder / "site.pem"
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    return pem


@pytest.fixture
def deployment(tmp_path: Path, krait_server, redis_server: RedisServer,  # noqa: ANN001
               haproxy_binary: str) -> Iterator[tuple[dict[str, int], KraitProcess, KraitProcess]]:
    machines = []
    for name in ("web1", "web2"):
        k = krait_server(write_site(tmp_path / name, SITE), "--workers", "2",
                         "--trusted-proxy", "127.0.0.1", "--pubsub", redis_server.url)
        wait_log(k, "pubsub: subscribed")
        machines.append(k)
    http, https = free_port(), free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(local_config(http, https, self_signed(tmp_path), machines[0].port,
                                   machines[1].port))
    proxy = HAProxy(haproxy_binary, config, https)
    try:
        yield {"http": http, "https": https}, machines[0], machines[1]
    finally:
        proxy.stop()


def test_haproxy_two_kraits_and_redis_as_documented(deployment) -> None:  # noqa: ANN001
    ports, web1, web2 = deployment
    base = f"https://127.0.0.1:{ports['https']}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the self-signed certificate
        # Plain HTTP is sent to HTTPS, as configured.
        r = requests.get(f"http://127.0.0.1:{ports['http']}/pid.py", allow_redirects=False,
                         timeout=10)
        assert r.status_code == 301 and r.headers["location"].startswith("https://")

        # WebSockets through HAProxy: leastconn puts them on both machines.
        subscribers: dict[str, list[websocket.WebSocket]] = {"web1": [], "web2": []}
        opened = []
        try:
            for _ in range(4):
                ws = websocket.create_connection(
                    f"wss://127.0.0.1:{ports['https']}/ws?c=news", timeout=10,
                    sslopt={"cert_reqs": ssl.CERT_NONE}, header=["Origin: " + base])
                opened.append(ws)
                assert ws.recv() == "ready"
                subscribers[ws.getheaders()["x-served-by"]].append(ws)
            assert subscribers["web1"] and subscribers["web2"], {
                k: len(v) for k, v in subscribers.items()}

            # Form posts through HAProxy until one has landed on each machine; each reaches
            # every subscriber of both, once.
            landed: set[str] = set()
            for i in range(20):
                r = requests.post(f"{base}/post.py", data={"channel": "news", "text": f"n{i}"},
                                  timeout=10, verify=False)
                assert r.status_code == 200 and r.text == "published"
                landed.add(r.headers["x-served-by"])
                for ws in opened:
                    assert ws.recv() == f"n{i}"
                if landed == {"web1", "web2"}:
                    break
            assert landed == {"web1", "web2"}, landed
            for ws in opened:
                ws.settimeout(0.3)
                with pytest.raises(websocket.WebSocketTimeoutException):
                    ws.recv()  # nothing twice
        finally:
            for ws in opened:
                ws.close()
    # Each machine's own access log has posts: the balancing really spread them.
    assert "POST /post.py" in web1.access_log() and "POST /post.py" in web2.access_log()
