"""SQLite FTS5: the one place that quotes a phrase, and the builders of ``images_fts``.

``images_fts`` indexes ``images.text`` as an external-content FTS5 table (default unicode61
tokenizer, full detail so phrase queries work). It is built either in place from the images
table, or, while the images load, in a side file from the rows already committed, then
copied in: the second way uses the second core and is what a full build does.
"""

import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any

from laion_pipeline.db import sqlite_connect, sqlite_transaction
from laion_pipeline.progress import Progress

FTS_DDL = 'CREATE VIRTUAL TABLE main.images_fts USING fts5(text, content="images")'
FTS_SHADOW_TABLES = ("images_fts_data", "images_fts_idx", "images_fts_docsize", "images_fts_config")
FTS_CHUNK_ROWS = 500_000
# Merging segments once at the end is faster than merging while loading; 4 is the default.
NO_AUTOMERGE = "INSERT INTO images_fts (images_fts, rank) VALUES ('automerge', 0)"
DEFAULT_AUTOMERGE = "INSERT INTO images_fts (images_fts, rank) VALUES ('automerge', 4)"
OPTIMIZE = "INSERT INTO images_fts (images_fts) VALUES ('optimize')"
INDEX_ROWS = (
    "INSERT INTO images_fts (rowid, text) SELECT rowid, text FROM {source} "
    "WHERE rowid BETWEEN ? AND ?"
)


def fts_phrase(name: str) -> str:
    """``name`` as one FTS5 phrase: wrapped in double quotes, inner double quotes doubled.

    Inside a phrase every character is literal text for the tokenizer, so names with ``'``,
    ``*``, ``-``, ``:`` or FTS keywords (AND, OR, NOT, NEAR) match as words, never as syntax.
    """
    return '"' + name.replace('"', '""') + '"'


def build_images_fts(conn: sqlite3.Connection, log: Any = None) -> int:
    """Replace ``images_fts`` in place from the ``images`` table. Returns the rows indexed."""
    (total,) = conn.execute("SELECT count(*) FROM images").fetchone()
    (last,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM images").fetchone()
    with sqlite_transaction(conn):
        conn.execute("DROP TABLE IF EXISTS images_fts")
        conn.execute(FTS_DDL)
        conn.execute(NO_AUTOMERGE)
        progress = Progress(log, "captions indexed", last)
        for low in range(1, last + 1, FTS_CHUNK_ROWS):
            high = low + FTS_CHUNK_ROWS - 1
            conn.execute(INDEX_ROWS.format(source="images"), (low, high))
            progress.update(min(high, last))
        conn.execute(OPTIMIZE)
        conn.execute(DEFAULT_AUTOMERGE)
    return total


class SideIndex:
    """Builds ``images_fts`` in ``side`` on a thread of its own, from rowid ranges of the
    ``images`` table in ``build`` (in WAL mode, so reading never blocks the loader) that the
    loader has committed."""

    def __init__(self, side: Path, build: Path, log: Any = None) -> None:
        side.unlink(missing_ok=True)
        self.side, self.log = side, log
        self.conn = sqlite3.connect(side, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = OFF")  # a scratch file, rebuilt on failure
        self.conn.execute("PRAGMA synchronous = OFF")
        self.conn.execute("ATTACH DATABASE ? AS build", (str(build),))
        self.conn.execute(FTS_DDL)
        self.conn.execute(NO_AUTOMERGE)
        self.ranges: queue.Queue[tuple[int, int] | None] = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="images_fts", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while (rows := self.ranges.get()) is not None:
                # One transaction per range: each sees the rows committed before it started.
                # Deferred, so it never takes the write lock of the attached build database.
                with sqlite_transaction(self.conn, immediate=False):
                    self.conn.execute(INDEX_ROWS.format(source="build.images"), rows)
            self.conn.execute("DETACH DATABASE build")
            self.conn.execute(OPTIMIZE)
            self.conn.execute(DEFAULT_AUTOMERGE)
        except BaseException as error:
            self.error = error

    def index(self, low: int, high: int) -> None:
        """Index rowids ``low``..``high``, once they are committed in the build database."""
        if self.error:
            raise self.error
        self.ranges.put((low, high))

    def finish(self) -> None:
        """Wait for the index to be complete and merged into one segment."""
        self.ranges.put(None)
        self.thread.join()
        self.conn.close()
        if self.error:
            raise self.error

    def abandon(self) -> None:
        self.ranges.put(None)
        self.thread.join()
        self.conn.close()
        self.side.unlink(missing_ok=True)


def install_side_index(build: Path, side: Path) -> None:
    """Replace ``images_fts`` in ``build`` by the index built in ``side``, then delete ``side``.

    The FTS5 index lives entirely in its shadow tables, so copying their rows into a freshly
    created table with the same definition gives the same index."""
    conn = sqlite_connect(build)
    try:
        conn.execute("PRAGMA synchronous = OFF")  # the published copy is checked afterwards
        conn.execute("ATTACH DATABASE ? AS side", (str(side),))
        with sqlite_transaction(conn):
            conn.execute("DROP TABLE IF EXISTS main.images_fts")
            conn.execute(FTS_DDL)
            for table in FTS_SHADOW_TABLES:
                conn.execute(f"DELETE FROM main.{table}")
                conn.execute(f"INSERT INTO main.{table} SELECT * FROM side.{table}")
        conn.execute("DETACH DATABASE side")
    finally:
        conn.close()  # FTS5 caches the index structure per connection: never reuse this one
    side.unlink(missing_ok=True)
