"""SQLite FTS5: the builders of ``images_fts`` and its check (what a query says is in
``laion_pipeline.common.phrases``).

``images_fts`` indexes ``images.text`` as an external-content FTS5 table (default unicode61
tokenizer, full detail so phrase queries work). It is built either in place from the images
table, or, while the images load, in a side file by a second process, then copied in: the
second way uses the second core and is what a full build does.
"""

import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb

from laion_pipeline.common.db import sqlite_connect, sqlite_transaction
from laion_pipeline.common.phrases import fts_phrase
from laion_pipeline.common.progress import Progress, wait_logging

FTS_DDL = 'CREATE VIRTUAL TABLE main.images_fts USING fts5(text, content="images")'
FTS_SHADOW_TABLES = ("images_fts_data", "images_fts_idx", "images_fts_docsize", "images_fts_config")
FTS_CHUNK_ROWS = 500_000
# Merging segments once at the end is faster than merging while loading; 4 is the default.
NO_AUTOMERGE = "INSERT INTO images_fts (images_fts, rank) VALUES ('automerge', 0)"
DEFAULT_AUTOMERGE = "INSERT INTO images_fts (images_fts, rank) VALUES ('automerge', 4)"
OPTIMIZE = "INSERT INTO images_fts (images_fts) VALUES ('optimize')"
CAPTIONS_SQL = "SELECT id, text FROM staging_images"
# The blocking check of the caption index against the captions: rows sampled for the word
# count, how many of them are also searched as a phrase (the costly part: about 1 ms each at
# 1M rows), and how much of a caption the phrase takes.
CAPTION_SAMPLES = 2_000
PHRASE_SAMPLES = 500
PHRASE_CHARS = 300
INDEX_ROWS = (
    "INSERT INTO images_fts (rowid, text) SELECT rowid, text FROM images "
    "WHERE rowid BETWEEN ? AND ?"
)


def caption_index_mismatches(
    conn: sqlite3.Connection, samples: int = CAPTION_SAMPLES
) -> tuple[int, list[int]]:
    """Rows of a random sample (the same for the same table) whose caption is not what the
    caption index holds for that row, as when the index was built from other captions than
    ``images`` holds. For each sampled row, the caption is tokenized by FTS5 itself (in a
    temporary table) and its token count compared with the index's; for a quarter of them its
    first words, as a phrase, must also match at that rowid (this catches another caption of
    the same length). Returns (rows checked, rowids that fail).

    What it catches: if a share ``f`` of the rows disagree, ``n`` samples miss all of them
    with probability ``(1 - f) ** n``: under 1 in 10^8 for f = 1% and n = 2,000 when the
    lengths differ, under 1% with the 500 phrase searches when they do not; a single wrong
    row among millions usually passes. FTS5's own ``integrity-check`` reads every row (the
    tests run it); this takes about half a second at 1M rows."""
    (last,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM images").fetchone()
    picked = sorted(random.Random(last).sample(range(1, last + 1), min(samples, last)))
    phrased = set(picked[:: max(1, len(picked) // PHRASE_SAMPLES)])
    conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.caption_probe USING fts5(text)")
    wrong = []
    try:
        for rowid, text in conn.execute(
            f"SELECT rowid, text FROM images WHERE rowid IN ({','.join(map(str, picked))})"
        ).fetchall():
            head = _caption_head(text)
            conn.execute("DELETE FROM temp.caption_probe")
            conn.executemany(
                "INSERT INTO temp.caption_probe (rowid, text) VALUES (?, ?)",
                [(1, text), (2, head)],
            )
            tokens = dict(conn.execute("SELECT id, sz FROM temp.caption_probe_docsize"))
            indexed = conn.execute(
                "SELECT sz FROM images_fts_docsize WHERE id = ?", (rowid,)
            ).fetchone()
            if indexed is None or indexed[0] != tokens[1]:
                wrong.append(rowid)
            elif rowid in phrased and any(tokens[2]):  # its first words, as a phrase, here
                found = conn.execute(
                    "SELECT 1 FROM images_fts WHERE images_fts MATCH ? AND rowid = ?",
                    (fts_phrase(head), rowid),
                ).fetchone()
                if found is None:
                    wrong.append(rowid)
    finally:
        conn.execute("DROP TABLE temp.caption_probe")
    return len(picked), wrong


def _caption_head(text: str | None) -> str:
    """The first words of a caption, cut where no token can span the cut (a space, a NUL,
    which also ends an FTS5 query): a phrase that occurs in the caption."""
    head = (text or "").split("\x00", 1)[0]
    if len(head) > PHRASE_CHARS:
        head = head[:PHRASE_CHARS].rsplit(" ", 1)[0] if " " in head[:PHRASE_CHARS] else ""
    return head


def build_images_fts(conn: sqlite3.Connection, log: Any = None) -> int:
    """Replace ``images_fts`` in place from the ``images`` table. Returns the rows indexed."""
    (total,) = conn.execute("SELECT count(*) FROM images").fetchone()
    first, last = conn.execute(
        "SELECT coalesce(min(rowid), 1), coalesce(max(rowid), 0) FROM images"
    ).fetchone()  # a shard's rowids start where it starts in the release
    with sqlite_transaction(conn):
        conn.execute("DROP TABLE IF EXISTS images_fts")
        conn.execute(FTS_DDL)
        conn.execute(NO_AUTOMERGE)
        progress = Progress(log, "captions indexed", last - first + 1)
        for low in range(first, last + 1, FTS_CHUNK_ROWS):
            high = low + FTS_CHUNK_ROWS - 1
            conn.execute(INDEX_ROWS, (low, high))
            progress.update(min(high, last) - first + 1)
        conn.execute(OPTIMIZE)
        conn.execute(DEFAULT_AUTOMERGE)
    return total


def build_side_index(side: Path, staging_sql: str) -> None:
    """Index ``(id, text)`` of every row of the staging view ``staging_sql`` (run in a DuckDB
    of its own) into a new FTS5 table in ``side``, merged into one segment."""
    duck = duckdb.connect()
    duck.execute("SET threads = 1")  # the other core is the loader's
    duck.execute(staging_sql)
    conn = sqlite3.connect(side, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = OFF")  # a scratch file, rebuilt on failure
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute(FTS_DDL)
        conn.execute(NO_AUTOMERGE)
        with sqlite_transaction(conn):
            for batch in duck.sql(CAPTIONS_SQL).to_arrow_reader(50_000):
                rows = zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True)
                conn.executemany("INSERT INTO images_fts (rowid, text) VALUES (?, ?)", rows)
        conn.execute(OPTIMIZE)
        conn.execute(DEFAULT_AUTOMERGE)
    finally:
        conn.close()


def _exit_with_parent(parent: int, every: float = 0.5) -> None:
    """In the index process: end it as soon as the build that started it is gone (killed mid-
    step, say), so nothing is left running. A thread of its own, polling the parent pid."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class SideIndex:
    """Builds ``images_fts`` in ``side`` in a process of its own (``python -m
    laion_pipeline.build.fts``), reading the captions from the parquet files through the same
    staging view, while this process loads the images: both cores busy, and nothing read
    back from the database being written."""

    def __init__(self, side: Path, staging_sql: str) -> None:
        side.unlink(missing_ok=True)
        self.side, self.sql = side, side.with_name(side.name + ".sql")
        self.sql.write_text(staging_sql, encoding="utf-8")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "laion_pipeline.build.fts",
                str(side),
                str(self.sql),
                str(os.getpid()),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self, log: Any = None) -> None:
        """Wait for the index to be complete, saying every few seconds how large it has grown."""

        def status() -> str:
            size = self.side.stat().st_size if self.side.exists() else 0
            return f"caption index: still building, {size / 1e6:,.0f} MB so far"

        wait_logging(self.process, log, status)
        _, errors = self.process.communicate()
        self.sql.unlink(missing_ok=True)
        if self.process.returncode:
            last = errors.strip().splitlines()[-1:] or [f"exit status {self.process.returncode}"]
            raise RuntimeError(f"building the caption index failed: {last[0]}")

    def abandon(self) -> None:
        self.process.kill()
        self.process.communicate()
        self.sql.unlink(missing_ok=True)
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


if __name__ == "__main__":  # the side process of SideIndex: side file, view SQL file, parent pid
    _exit_with_parent(int(sys.argv[3]))
    try:
        build_side_index(Path(sys.argv[1]), Path(sys.argv[2]).read_text(encoding="utf-8"))
    except Exception as error:  # one line on stderr for SideIndex.finish to report
        sys.exit(" ".join(f"{type(error).__name__}: {error}".split()))
