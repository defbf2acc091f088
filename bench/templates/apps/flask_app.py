"""Flask + Jinja2 for bench/templates/run.py (served by gunicorn and by uWSGI).

``GET /table`` renders the layout and the 100-row table of ``data.py`` with Jinja2's
autoescaping (on for ``.html`` templates in Flask), as krait's controller route does.
"""

import os
import sys

from flask import Flask, render_template

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import data  # noqa: E402

app = Flask(__name__, template_folder="jinja")


@app.route("/table")
def table() -> str:
    return render_template("table.html", title=data.TITLE, rows=data.ROWS)
