"""Flask app for bench/dynamic.py (served by uWSGI and by gunicorn)."""

from flask import Flask, Response

app = Flask(__name__)


@app.route("/hello")
def hello() -> Response:
    return Response(b"Hello world!", content_type="text/plain")


@app.route("/8k")
def eight_k() -> Response:
    return Response(b"x" * 8192, content_type="text/plain")
