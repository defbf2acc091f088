"""The site's data: a guestbook, a chat log and counters in one SQLite database,
.private/site.db.

Every worker is a separate process, so nothing is shared through Python variables: each call
opens its own connection (cheap with SQLite) and the database does the locking. On several
machines, put the same functions on top of a shared database server instead (see
docs/deployment.md).
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import closing
from typing import Any

#: Longest name and message accepted (characters).
MAX_NAME = 40
MAX_MESSAGE = 1000
#: Chat lines kept in the database (older ones are deleted).
CHAT_KEEP = 200

_path: str | None = None

_SCHEMA = """
CREATE TABLE IF NOT EXISTS guestbook (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    name    TEXT NOT NULL,
    message TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chat (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    name    TEXT NOT NULL,
    text    TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counter (
    name    TEXT PRIMARY KEY,
    value   INTEGER NOT NULL
);
"""


def open_database(site_root: str) -> None:
    """Create .private/site.db and its tables when they do not exist (called by init.py)."""
    global _path
    folder = os.path.join(os.path.abspath(site_root), ".private")
    os.makedirs(folder, exist_ok=True)
    _path = os.path.join(folder, "site.db")
    with closing(connect()) as db:
        # Write-ahead logging: readers never wait for a writer.
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)


def connect() -> sqlite3.Connection:
    """A new connection; close it when done (``with closing(storage.connect()) as db:``)."""
    if _path is None:
        raise RuntimeError("storage.open_database() was not called (it is, in init.py)")
    db = sqlite3.connect(_path, timeout=10)
    db.row_factory = sqlite3.Row
    return db


def clean(text: Any, limit: int) -> str:
    """A form value as stored: a str, trimmed, at most ``limit`` characters."""
    return str(text or "").strip()[:limit]


# -- guestbook ----------------------------------------------------------------------------------

def add_entry(name: str, message: str) -> int:
    """Store a guestbook entry; returns its id."""
    with closing(connect()) as db, db:
        cur = db.execute("INSERT INTO guestbook (name, message, created) VALUES (?, ?, ?)",
                         (name, message, time.time()))
        return int(cur.lastrowid or 0)


def entries(limit: int = 50) -> list[dict[str, Any]]:
    """The newest guestbook entries first."""
    with closing(connect()) as db:
        rows = db.execute("SELECT id, name, message, created FROM guestbook "
                          "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    return [dict(row) for row in rows]


def count(table: str) -> int:
    """How many rows ``guestbook`` or ``chat`` holds."""
    if table not in ("guestbook", "chat"):
        raise ValueError(table)
    with closing(connect()) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


# -- chat ---------------------------------------------------------------------------------------

def add_chat(name: str, text: str) -> dict[str, Any]:
    """Store a chat line (and forget old ones); returns it as chat_recent() would."""
    created = time.time()
    with closing(connect()) as db, db:
        cur = db.execute("INSERT INTO chat (name, text, created) VALUES (?, ?, ?)",
                         (name, text, created))
        new_id = int(cur.lastrowid or 0)
        db.execute("DELETE FROM chat WHERE id <= ?", (new_id - CHAT_KEEP,))
    return {"id": new_id, "name": name, "text": text, "created": created}


def chat_recent(limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` chat lines, oldest first."""
    with closing(connect()) as db:
        rows = db.execute("SELECT id, name, text, created FROM chat ORDER BY id DESC LIMIT ?",
                          (limit,)).fetchall()
    return [dict(row) for row in reversed(rows)]


# -- counters -----------------------------------------------------------------------------------

def increment(name: str) -> int:
    """Add one to the counter ``name`` (from 0) and return its new value; the database makes
    concurrent increments from several workers add up."""
    with closing(connect()) as db, db:
        return int(db.execute("INSERT INTO counter (name, value) VALUES (?, 1) "
                              "ON CONFLICT (name) DO UPDATE SET value = value + 1 "
                              "RETURNING value", (name,)).fetchone()[0])


def counter(name: str) -> int:
    """The value of the counter ``name`` (0 before the first increment)."""
    with closing(connect()) as db:
        row = db.execute("SELECT value FROM counter WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else 0
