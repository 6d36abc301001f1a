"""The fast search over a release of one or many shards: the shards asked in release order
(each holds a range of the release's rowids) until a page is full, the next page keyed by the
last rowid shown, and the number of matches summed over the shards up to a cap, so a word in
most captions costs what a rare one does.

Each step is a query on one shard's connection; ``search_page`` walks the shards through a
``run`` callable of each shard (Datasette's ``execute_fn``, or a plain connection in a test or
a benchmark), so one walk serves every caller.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from laion_pipeline.common.phrases import laion_match
from laion_pipeline.common.settings import whole_number

PAGE_ROWS = 50
# Matches are counted exactly up to here; beyond it a search says "more than 10,000".
COUNT_CAP = 10_000
COUNT_CAP_VARIABLE = "LAION_SEARCH_COUNT_CAP"


def count_cap(environ: Mapping[str, str] = os.environ) -> int:
    """The cap of the search's count the server uses: ``LAION_SEARCH_COUNT_CAP``, or
    ``COUNT_CAP``. Counting two common words or a phrase to the cap is most of what an
    uncached search costs; a lower cap serves more distinct searches a second."""
    return whole_number(
        COUNT_CAP_VARIABLE,
        environ.get(COUNT_CAP_VARIABLE),
        COUNT_CAP,
        f"the number of matches a search counts exactly, a whole number of at least "
        f"{PAGE_ROWS} (one page); unset it for {COUNT_CAP:,}",
        at_least=PAGE_ROWS,
    )


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
    "hash",  # LAION's: what a takedown may name the image by
)


# The caption with the words the query found between these two characters (FTS5's
# highlight()), for the search page to mark; a caption holding either is shown unmarked.
FOUND_START, FOUND_END = "\x01", "\x02"
FOUND_SQL = "highlight(images_fts, 0, char(1), char(2))"


def search_sql(match: str, after: str, limit: str, found: bool = False) -> str:
    """The fast search query, given the SQL of its FTS5 query, its ``after`` rowid and its
    page size: from the FTS index in rowid order (FTS5 walks its doclist in that order and
    stops at the LIMIT), joined to images and domain by their keys; the next page starts after
    the last rowid shown (keyset paging), so every page costs the same however common the
    words are. With ``found``, also the caption with the words found marked, as ``found``."""
    selected = ", ".join(
        "domain.domain" if c == "domain" else f"images.{c}" for c in RESULT_COLUMNS
    ) + (f", {FOUND_SQL} as found" if found else "")
    return f"""select {selected}
from images_fts
  join images on images.rowid = images_fts.rowid
  join domain on domain.id = images.domain_id
where images_fts match {match} and images_fts.rowid > {after}
order by images_fts.rowid
limit {limit}"""


PAGE_SQL = search_sql(":match", ":after", ":limit", found=True)
# What each row of a page holds: the result's columns and the marked caption (None for the
# images of a host, where no words are searched).
PAGE_COLUMNS = (*RESULT_COLUMNS, "found")
COUNT_SQL = (
    "SELECT count(*) FROM (SELECT 1 FROM images_fts WHERE images_fts MATCH :match LIMIT :limit)"
)


HOST_SELECTED = ", ".join(
    "domain.domain" if c == "domain" else f"images.{c}" for c in RESULT_COLUMNS
)
# A host's images in rowid order: its id from the shard's domain table, then the domain_id
# index (equal keys are in rowid order), so a page of a host costs what a page of words does.
HOST_PAGE_SQL = f"""select {HOST_SELECTED}, null as found
from domain join images on images.domain_id = domain.id
where domain.domain = :host and images.rowid > :after
order by images.rowid
limit :limit"""
HOST_COUNT_SQL = "SELECT coalesce(sum(image_counts), 0) FROM domain WHERE domain = :host"

# The page before a rowid: the same walks backwards (FTS5 and the index read either way).
PAGE_BEFORE_SQL = PAGE_SQL.replace(
    "images_fts.rowid > :after", "images_fts.rowid < :before"
).replace("order by images_fts.rowid", "order by images_fts.rowid desc")
HOST_PAGE_BEFORE_SQL = HOST_PAGE_SQL.replace(
    "images.rowid > :after", "images.rowid < :before"
).replace("order by images.rowid", "order by images.rowid desc")


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
    previous_before: int | None = None  # the ``before`` of the previous page; None on the first


async def _walk(
    shards: Sequence[SearchedShard],
    sql: str,
    params: dict[str, Any],
    wanted: int,
    *,
    after: int | None = None,
    before: int | None = None,
) -> list[dict[str, Any]]:
    """Up to ``wanted`` matches after rowid ``after`` (in rowid order), or before rowid
    ``before`` (nearest first), asking the shards in that order and only those holding such
    rowids."""
    rows: list[dict[str, Any]] = []
    firsts = [1, *(shard.last_rowid + 1 for shard in shards[:-1])]
    order = list(zip(firsts, shards, strict=True))
    bound = {"before": before} if before is not None else {"after": after}
    for first, shard in reversed(order) if before is not None else order:
        if len(rows) >= wanted:
            break
        if (before is not None and first >= before) or (
            after is not None and shard.last_rowid <= after
        ):
            continue
        asked = {**params, **bound, "limit": wanted - len(rows)}

        def page(conn: sqlite3.Connection, asked: dict[str, Any] = asked) -> list[tuple]:
            return conn.execute(sql, asked).fetchall()

        found = await shard.run(page)
        rows += [{**dict(zip(PAGE_COLUMNS, r, strict=True)), "shard": shard.name} for r in found]
    return rows


async def search_page(
    shards: Sequence[SearchedShard],
    q: str,
    after: int = 0,
    limit: int = PAGE_ROWS,
    cap: int = COUNT_CAP,
    host: str | None = None,
    before: int | None = None,
) -> SearchPage:
    """The page of matches for ``q`` after rowid ``after`` (or, with ``before``, the page
    that ends just before that rowid) over ``shards`` (in release order), with the number of
    matches in the release up to ``cap``; with ``host``, instead the images from that host
    (``domain``), all counted. Pages are keyed by rowid, so the page before a page is the
    page a reader came from."""
    params: dict[str, Any] = {"host": host} if host is not None else {"match": laion_match(q)}
    forward, backward, count_sql = (
        (HOST_PAGE_SQL, HOST_PAGE_BEFORE_SQL, HOST_COUNT_SQL)
        if host is not None
        else (PAGE_SQL, PAGE_BEFORE_SQL, COUNT_SQL)
    )
    if before is None:
        rows = await _walk(shards, forward, params, limit + 1, after=after)
        more_after = len(rows) > limit
        rows = rows[:limit]
        # A page further on has pages before it when a match comes before its first row.
        edge = rows[0]["rowid"] if rows else after + 1
        earlier = after > 0 and bool(await _walk(shards, backward, params, 1, before=edge))
        next_after = rows[-1]["rowid"] if more_after else None
        previous_before = edge if earlier else None
    else:
        rows = await _walk(shards, backward, params, limit + 1, before=before)
        more_before = len(rows) > limit
        rows = rows[:limit][::-1]
        edge = rows[-1]["rowid"] if rows else before - 1
        later = bool(await _walk(shards, forward, params, 1, after=edge))
        next_after = edge if later else None
        previous_before = rows[0]["rowid"] if more_before else None
    count = 0
    # The first page that holds every match (a rare word, a rare phrase) has counted them.
    whole = host is None and before is None and after == 0 and next_after is None
    for shard in () if whole else shards:
        if count > cap and host is None:
            break

        def counted(conn: sqlite3.Connection, left: int = cap + 1 - count) -> int:
            return conn.execute(count_sql, {**params, "limit": left}).fetchone()[0]

        count += await shard.run(counted)
    if whole:
        count = len(rows)
    capped = host is None and count > cap
    return SearchPage(
        rows=rows,
        count=min(count, cap) if capped else count,
        more_than_count=capped,
        next_after=next_after,
        previous_before=previous_before,
    )
