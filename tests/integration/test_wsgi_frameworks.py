"""Flask and Django applications through a real krait (skipped when not installed)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests

from tests.conftest import write_site

FLASK_APP = '''
from flask import Flask, redirect, request, session, url_for, send_file
import os

app = Flask(__name__)
app.secret_key = "test"
POSTS = []


@app.route("/")
def index():
    return "posts: " + "|".join(POSTS) + " user: " + session.get("user", "-")


@app.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "POST":
        session["user"] = request.form["name"]
        return redirect(url_for("index"))
    return '<form method="post"><input name="name"></form>'


@app.post("/post")
def post():
    POSTS.append(request.form["text"])
    return redirect(url_for("index"))


@app.post("/upload")
def upload():
    f = request.files["file"]
    return {"name": f.filename, "size": len(f.read())}


@app.route("/file")
def file():
    return send_file(os.path.join(os.path.dirname(__file__), "data.bin"))
'''


def test_flask_form_post_and_redirect(tmp_path, krait_server):
    pytest.importorskip("flask")
    site = write_site(tmp_path / "site", {
        ".py/init.py": "import os, sys\nsys.path.insert(0, os.path.dirname(__file__))\n"
                       "from krait import config\n"
                       "config.routes = [config.Route(prefix='/blog', wsgi='flaskapp:app'),\n"
                       "                 config.Route()]\n",
        ".py/flaskapp.py": FLASK_APP,
        ".py/data.bin": b"x" * 100000,
        "index.html": "krait home",
    })
    server = krait_server(site, "--workers", "1")
    s = requests.Session()
    r = s.post(server.url + "/blog/login", data={"name": "ann"}, allow_redirects=False)
    assert r.status_code == 302
    assert r.headers["Location"] == "/blog/"  # SCRIPT_NAME is honoured by url_for
    assert "session=" in r.headers["Set-Cookie"]
    r = s.post(server.url + "/blog/post", data={"text": "héllo"})
    assert r.status_code == 200 and r.history[0].status_code == 302
    assert r.text == "posts: héllo user: ann"
    assert r.headers["Content-Length"] == str(len(r.content))  # one frame, not chunked
    r = s.post(server.url + "/blog/upload", files={"file": ("a.bin", b"y" * 2_000_000)})
    assert r.json() == {"name": "a.bin", "size": 2_000_000}
    r = s.get(server.url + "/blog/file")
    assert r.content == b"x" * 100000
    assert requests.get(server.url + "/").text == "krait home"
    assert requests.get(server.url + "/blog/nothing").status_code == 404


def test_django_project(tmp_path, krait_server):
    pytest.importorskip("django")
    project = tmp_path / "proj"
    project.mkdir()
    subprocess.run([sys.executable, "-m", "django", "startproject", "mysite", str(project)],
                   check=True, timeout=120)
    (project / "mysite" / "views.py").write_text(
        "from django.http import HttpResponse, HttpResponseRedirect\n"
        "from django.views.decorators.csrf import csrf_exempt\n"
        "@csrf_exempt\n"
        "def hello(request):\n"
        "    if request.method == 'POST':\n"
        "        return HttpResponseRedirect(request.build_absolute_uri('/dj/hello/')\n"
        "                                    + '?name=' + request.POST['name'])\n"
        "    return HttpResponse('hello ' + request.GET.get('name', 'world')\n"
        "                        + ' at ' + request.path)\n")
    urls = project / "mysite" / "urls.py"
    urls.write_text("from django.urls import path\nfrom mysite import views\n"
                    "urlpatterns = [path('hello/', views.hello)]\n")
    settings = project / "mysite" / "settings.py"
    settings.write_text(settings.read_text().replace("ALLOWED_HOSTS = []",
                                                     "ALLOWED_HOSTS = ['127.0.0.1']"))
    site = write_site(tmp_path / "site", {
        ".py/init.py": "import os, sys\n"
                       f"sys.path.insert(0, {str(project)!r})\n"
                       "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n"
                       "from krait import config\n"
                       "config.routes = [\n"
                       "    config.Route(prefix='/dj', wsgi='mysite.wsgi:application')]\n",
    })
    server = krait_server(site, "--workers", "1")
    r = requests.get(server.url + "/dj/hello/")
    assert r.status_code == 200 and r.text == "hello world at /dj/hello/"
    r = requests.post(server.url + "/dj/hello/", data={"name": "bob"})
    assert r.history and r.history[0].status_code == 302
    assert r.text == "hello bob at /dj/hello/"
    assert requests.get(server.url + "/dj/nope").status_code == 404


def test_flask_alone_with_krait_wsgi(tmp_path):
    pytest.importorskip("flask")
    from tests.integration.test_wsgi import _start_alone, _stop

    write_site(tmp_path, {"flaskapp.py": FLASK_APP, "data.bin": b"z" * 10})
    proc, port, _ = _start_alone(tmp_path, "--wsgi", "flaskapp:app")
    try:
        url = f"http://127.0.0.1:{port}"
        r = requests.post(url + "/login", data={"name": "cy"}, allow_redirects=False)
        assert r.status_code == 302 and r.headers["Location"] == "/"
        assert requests.get(url + "/file").content == b"z" * 10
    finally:
        _stop(proc)


