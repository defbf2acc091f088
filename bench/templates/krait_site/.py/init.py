"""The benchmark page for krait: a controller route rendering a layout and a 100-row table."""

import os
import sys

from krait import config, mvc

sys.path.insert(0, os.environ.get("KRAIT_BENCH_DATA", os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))))

import data  # noqa: E402


class TableCtrl(mvc.CtrlBase):
    def __init__(self):
        self.title = data.TITLE
        self.rows = data.ROWS

    def get_view(self):
        return ".view/table.html"


config.routes = [config.Route("GET", url="/table", ctrl_class=TableCtrl), config.Route()]
