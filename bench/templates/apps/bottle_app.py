"""Bottle + SimpleTemplate for bench/templates/run.py (served by gunicorn).

``GET /table`` renders the layout (``rebase``) and the 100-row table of ``data.py``; Bottle's
``{{ }}`` escapes HTML. Compiled templates are cached (Bottle's DEBUG is off).
"""

import os
import sys

import bottle

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import data  # noqa: E402

bottle.TEMPLATE_PATH[:] = [os.path.join(HERE, "bottle_views")]
app = bottle.Bottle()


@app.get("/table")
def table() -> str:
    return bottle.template("table", title=data.TITLE, rows=data.ROWS)
