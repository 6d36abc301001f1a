"""SQLite helpers: connections, transactions, identifier quoting (DuckDB connections come
from dagster-duckdb's resource)."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Generous, as PUDL does: a second writer waits for the first instead of failing.
SQLITE_BUSY_TIMEOUT_MS = 600_000


def sqlite_connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """Open a SQLite database with autocommit off only where we say ``BEGIN``."""
    if read_only:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    return conn


def quote_identifier(name: str) -> str:
    """A SQLite identifier in double quotes, inner double quotes doubled: safe for any name."""
    return '"' + name.replace('"', '""') + '"'


def quote_string(text: str) -> str:
    """A SQL string literal (SQLite's and DuckDB's) in single quotes, inner ones doubled: for
    what cannot be a parameter, such as the file names of DuckDB's read_parquet."""
    return "'" + text.replace("'", "''") + "'"


@contextmanager
def sqlite_transaction(
    conn: sqlite3.Connection, *, immediate: bool = True
) -> Iterator[sqlite3.Connection]:
    """One transaction: committed when the block ends, rolled back if it raises. ``immediate``
    takes the write lock at once (on every attached database too)."""
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield conn
    except BaseException:
        # After some errors (a full disk: SQLITE_FULL) SQLite has already rolled back, and a
        # ROLLBACK would replace the real error by "no transaction is active".
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def is_disk_full(error: BaseException) -> bool:
    """``error`` is SQLite's or the system's "the disk is full"."""
    if isinstance(error, sqlite3.OperationalError):
        return "database or disk is full" in str(error) or getattr(
            error, "sqlite_errorname", ""
        ) in ("SQLITE_FULL", "SQLITE_IOERR_WRITE")
    return isinstance(error, OSError) and error.errno == errno.ENOSPC
