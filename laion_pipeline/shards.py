"""Shards: the staged files, in listing order, grouped into parts of at most ``max_rows`` kept
rows (``LAION_SHARD_ROWS``), each built into a SQLite database of its own on one core from its
files alone: its `images` (with their release-wide rowids, so the release's order is shard,
then rowid, and one key pages a search across shards), `images_fts`, and its own `domain`
table (ids local to the shard, counts of the shard).

The catalog is the totals over every shard, as sums of the shards' parts: each host's count,
with ids numbered in the order hosts first appear in the release (the ids one database of the
whole release gives them), and each name's count of captions naming it.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from laion_pipeline.db import sqlite_connect
from laion_pipeline.fts import build_images_fts
from laion_pipeline.inputs import StagedFile
from laion_pipeline.staging import staging_view_sql
from laion_pipeline.tables import build_domains, count_phrase, load_images

# Large enough that the 2022 set (12,096,835 rows) is one shard, so the default build is the
# one-file database of 2022; Re-LAION's 2.1B rows make about 100 shards.
DEFAULT_SHARD_ROWS = 20_000_000


@dataclass(frozen=True)
class Shard:
    """Consecutive staged files built into one database; its images are rowids
    ``first_rowid``..``last_rowid`` of the release."""

    key: str
    files: tuple[StagedFile, ...]
    first_rowid: int

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def last_rowid(self) -> int:
        return self.first_rowid + self.rows - 1

    @property
    def data_version(self) -> str:
        """Changes when a file of the shard, or where the shard starts, changes."""
        parts = [str(self.first_rowid), *(f"{f.key}\0{f.data_version}" for f in self.files)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def plan_shards(files: Sequence[StagedFile], max_rows: int) -> tuple[Shard, ...]:
    """The staged files in order, a new shard started whenever the next file would take the
    current one past ``max_rows`` (a file larger than that is a shard alone). At least one
    shard, empty when no file kept a row."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, not {max_rows}")
    groups: list[list[StagedFile]] = [[]]
    rows = 0
    for staged in files:
        if groups[-1] and rows + staged.rows > max_rows:
            groups.append([])
            rows = 0
        groups[-1].append(staged)
        rows += staged.rows
    shards, first = [], 1
    for number, group in enumerate(groups):
        shards.append(Shard(f"shard-{number:05d}", tuple(group), first))
        first += sum(f.rows for f in group)
    return tuple(shards)


@dataclass(frozen=True)
class BuiltShard:
    rows: int
    domains: int
    null_captions: int


def build_shard(shard: Shard, db: Path, log: Any = None) -> BuiltShard:
    """Write the shard's database ``db`` (a new file): its domain table, its images in file
    order with their release-wide rowids, then their caption index, all on one core."""
    duck = duckdb.connect()
    conn = sqlite_connect(db)
    try:
        duck.execute("SET threads = 1")
        duck.execute(staging_view_sql(shard.files, first_rowid=shard.first_rowid))
        conn.execute("PRAGMA synchronous = OFF")  # a failed shard is built again from scratch
        domains = build_domains(duck, conn)
        loaded = load_images(duck, conn, shard.rows, log, first_rowid=shard.first_rowid)
        build_images_fts(conn, log)
    finally:
        conn.close()
        duck.close()
    return BuiltShard(loaded.rows, domains, loaded.null_captions)


def catalog_domains(shards: Iterable[sqlite3.Connection]) -> list[tuple[int, str, int]]:
    """``(id, domain, image_counts)`` over the shards (given in release order): counts summed,
    ids in the order hosts first appear in the release."""
    ids: dict[str, int] = {}
    counts: dict[str, int] = {}
    for conn in shards:
        for domain, count in conn.execute("SELECT domain, image_counts FROM domain ORDER BY id"):
            ids.setdefault(domain, len(ids) + 1)
            counts[domain] = counts.get(domain, 0) + count
    return [(number, domain, counts[domain]) for domain, number in ids.items()]


def count_phrase_in_shards(shards: Sequence[sqlite3.Connection], name: str) -> int:
    """How many captions of the release contain ``name`` as a phrase: the shards' sum."""
    return sum(count_phrase(conn, name) for conn in shards)
