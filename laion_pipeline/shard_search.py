"""The fast search over a release of one or many shards: the shards asked in release order
(each holds a range of the release's rowids) until a page is full, the next page keyed by the
last rowid shown, and the number of matches summed over the shards up to a cap, so a word in
most captions costs what a rare one does.

Each step is a query on one shard's connection; ``search_page`` walks the shards through a
``run`` callable of each shard (Datasette's ``execute_fn``, or a plain connection in a test or
a benchmark), so one walk serves every caller.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from laion_pipeline.fts import laion_match

PAGE_ROWS = 50
# Matches are counted exactly up to here; beyond it a search says "more than 10,000".
COUNT_CAP = 10_000

RESULT_COLUMNS = (
    "rowid",
    "url",
    "text",
    "domain",
    "width",
    "height",
    "aesthetic",
    "punsafe",
    "pwatermark",
)


def search_sql(match: str, after: str, limit: str) -> str:
    """The fast search query, given the SQL of its FTS5 query, its ``after`` rowid and its
    page size: from the FTS index in rowid order (FTS5 walks its doclist in that order and
    stops at the LIMIT), joined to images and domain by their keys; the next page starts after
    the last rowid shown (keyset paging), so every page costs the same however common the
    words are."""
    selected = ", ".join(
        "domain.domain" if c == "domain" else f"images.{c}" for c in RESULT_COLUMNS
    )
    return f"""select {selected}
from images_fts
  join images on images.rowid = images_fts.rowid
  join domain on domain.id = images.domain_id
where images_fts match {match} and images_fts.rowid > {after}
order by images_fts.rowid
limit {limit}"""


PAGE_SQL = search_sql(":match", ":after", ":limit")
COUNT_SQL = (
    "SELECT count(*) FROM (SELECT 1 FROM images_fts WHERE images_fts MATCH :match LIMIT :limit)"
)


HOST_SELECTED = ", ".join(
    "domain.domain" if c == "domain" else f"images.{c}" for c in RESULT_COLUMNS
)
# A host's images in rowid order: its id from the shard's domain table, then the domain_id
# index (equal keys are in rowid order), so a page of a host costs what a page of words does.
HOST_PAGE_SQL = f"""select {HOST_SELECTED}
from domain join images on images.domain_id = domain.id
where domain.domain = :host and images.rowid > :after
order by images.rowid
limit :limit"""
HOST_COUNT_SQL = "SELECT coalesce(sum(image_counts), 0) FROM domain WHERE domain = :host"


Run = Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]


@dataclass(frozen=True)
class SearchedShard:
    """A shard as the search sees it: the last rowid it holds, and how to run a query on it."""

    name: str
    last_rowid: int
    run: Run


@dataclass(frozen=True)
class SearchPage:
    rows: list[dict[str, Any]]  # each with the shard that holds it
    count: int  # matches in the release, exact up to the cap
    more_than_count: bool  # the release has more matches than ``count`` (the cap)
    next_after: int | None  # the ``after`` of the next page; None on the last page


async def search_page(
    shards: Sequence[SearchedShard],
    q: str,
    after: int = 0,
    limit: int = PAGE_ROWS,
    cap: int = COUNT_CAP,
    host: str | None = None,
) -> SearchPage:
    """The page of matches for ``q`` after rowid ``after`` over ``shards`` (in release order),
    with the number of matches in the release up to ``cap``; with ``host``, instead the
    images from that host (``domain``), all counted."""
    params: dict[str, Any] = {"host": host} if host is not None else {"match": laion_match(q)}
    page_sql, count_sql = (
        (HOST_PAGE_SQL, HOST_COUNT_SQL)
        if host is not None
        else (
            PAGE_SQL,
            COUNT_SQL,
        )
    )
    rows: list[dict[str, Any]] = []
    for shard in shards:
        if len(rows) > limit:
            break
        if shard.last_rowid <= after:
            continue
        wanted = limit + 1 - len(rows)  # one more than the page: is there a next one?

        def page(conn: sqlite3.Connection, wanted: int = wanted) -> list[tuple]:
            return conn.execute(page_sql, {**params, "after": after, "limit": wanted}).fetchall()

        found = await shard.run(page)
        rows += [{**dict(zip(RESULT_COLUMNS, r, strict=True)), "shard": shard.name} for r in found]
    count = 0
    for shard in shards:
        if count > cap and host is None:
            break

        def counted(conn: sqlite3.Connection, left: int = cap + 1 - count) -> int:
            return conn.execute(count_sql, {**params, "limit": left}).fetchone()[0]

        count += await shard.run(counted)
    more = len(rows) > limit
    rows = rows[:limit]
    capped = host is None and count > cap
    return SearchPage(
        rows=rows,
        count=min(count, cap) if capped else count,
        more_than_count=capped,
        next_after=rows[-1]["rowid"] if more else None,
    )
