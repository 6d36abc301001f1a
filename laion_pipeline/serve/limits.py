"""What one request to the site may cost: the limits every served SQLite connection gets, so
that arbitrary SQL (which stays open to everyone) cannot take the server's memory.

- SQLite's own limits: no string or blob over 16 MB (SQLite's default is 1 GB, so
  ``zeroblob(1e9)`` would take a gigabyte), no statement text over 1 MB, no expression nested
  past 100 levels, no compound SELECT of over 100 parts;
- SQLite's allocations in the whole server held under ``HARD_HEAP_BYTES`` (past
  ``SOFT_HEAP_BYTES`` the page caches give memory back first); a statement that needs more
  fails with "out of memory" and the others go on;
- the rows one statement hands to Python at most ``RESULT_BYTES`` (counted as they are
  fetched: the text and blob bytes, 8 for a number), so no page of a thousand rows of
  megabyte values is ever built.

No statement reads where the server keeps its files (``pragma_database_list``'s ``file``
reads as NULL).

Time is bounded elsewhere: Datasette's ``sql_time_limit_ms`` interrupts SQLite, and our one
SQL function (``laion_match``) refuses inputs over ``fts.MAX_QUERY_CHARS`` characters.
"""

from __future__ import annotations

import sqlite3
import weakref
from typing import Any

CONNECTION_LIMITS = {
    sqlite3.SQLITE_LIMIT_LENGTH: 16_000_000,
    sqlite3.SQLITE_LIMIT_SQL_LENGTH: 1_000_000,
    sqlite3.SQLITE_LIMIT_EXPR_DEPTH: 100,
    sqlite3.SQLITE_LIMIT_COMPOUND_SELECT: 100,
}
SOFT_HEAP_BYTES = 128 * 2**20
HARD_HEAP_BYTES = 256 * 2**20
RESULT_BYTES = 64 * 2**20


class ResultBudget:
    """A row factory that counts the bytes of each statement's rows and stops the statement
    past ``limit`` with an ``OperationalError`` (which Datasette shows as the query's error),
    handing each row on to ``row_factory``."""

    def __init__(self, row_factory: Any = sqlite3.Row, limit: int = RESULT_BYTES) -> None:
        self.row_factory = row_factory
        self.limit = limit
        self._used: weakref.WeakKeyDictionary[sqlite3.Cursor, int] = weakref.WeakKeyDictionary()

    def __call__(self, cursor: sqlite3.Cursor, row: tuple) -> Any:
        size = sum(len(v) if isinstance(v, (str, bytes)) else 8 for v in row)
        used = self._used.get(cursor, 0) + size
        if used > self.limit:
            raise sqlite3.OperationalError(
                f"the result is over {self.limit // 2**20} MB: select fewer rows or columns, "
                "or shorter values (substr)"
            )
        self._used[cursor] = used
        return self.row_factory(cursor, row) if self.row_factory else row


# The columns that would show where the server keeps its files: read as NULL.
HIDDEN_COLUMNS = {("pragma_database_list", "file")}


def hide_file_paths(action: int, table: str | None, column: str | None, *_: Any) -> int:
    """SQLite's authorizer for the site's connections: ``pragma_database_list``'s ``file``
    (the server's absolute path) reads as NULL; everything else as usual."""
    if action == sqlite3.SQLITE_READ and (table, column) in HIDDEN_COLUMNS:
        return sqlite3.SQLITE_IGNORE
    return sqlite3.SQLITE_OK


def limit_connection(conn: sqlite3.Connection) -> None:
    """Give ``conn`` the site's limits (see the module's text)."""
    for limit, value in CONNECTION_LIMITS.items():
        conn.setlimit(limit, value)
    conn.set_authorizer(hide_file_paths)
    conn.execute(f"PRAGMA soft_heap_limit = {SOFT_HEAP_BYTES}")  # both are process-wide
    conn.execute(f"PRAGMA hard_heap_limit = {HARD_HEAP_BYTES}")
    conn.row_factory = ResultBudget(conn.row_factory)
