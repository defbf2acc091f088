"""The data every server renders: 100 people, each name and city needing HTML escaping.

Built once at import; each request hands the same list to its template, as a controller
reading a cache would. Every name contains characters that must be escaped (``&``, ``<``,
``>``, ``'`` or ``"``), so the escaping cost is part of the measurement.
"""

from __future__ import annotations

from collections import namedtuple

Person = namedtuple("Person", "id name email city score")

_FIRST = ["Ann", "Bob", "Cleo", "Dev", "Eve", "Finn", "Gus", "Hana", "Ivo", "Jo"]
_LAST = ["O'Neil", "Smith & Sons", "<Lee>", 'Ng "Jr"', "Dupont & Co"]
_CITY = ["Paris", "Köln & Bonn", "<Rome>", "São Paulo", "Oslo 'N'"]

ROWS = [
    Person(i, f"{_FIRST[i % 10]} {_LAST[i % 5]}", f"u{i}@ex.org",
           _CITY[(i // 3) % 5], (i * 37) % 100)
    for i in range(1, 101)
]
TITLE = "People & Places"
