""" "Is my work in it?": an image found by its exact URL, and hosts found by any part of their
name, both in milliseconds however big the release.

- **An image URL.** Indexing ``images.url`` itself would add about 100 bytes a row; instead
  each image has ``url_key``, a 60-bit key of its URL (the first 15 hex digits of its MD5,
  computed by DuckDB as the rows load), and an index of it (about 20 bytes a row). A lookup
  reads the key's rows, then compares the URL itself, so a key shared by two URLs never
  answers the wrong image.
- **A host, or part of one** (``artstation``, ``pinimg.com``): the release's ``domain`` table
  (the catalog's, with shards) has ``domain_search`` beside it, an FTS5 trigram index of every
  host whose rowid is the host's rank by images (1 = the most), so the hosts containing a text
  come biggest first and a page of them stops early, like the caption search.
"""

from __future__ import annotations

import hashlib
import sqlite3
import urllib.parse
from typing import Any

from laion_pipeline.common.phrases import fts_phrase

# The key of a URL in DuckDB (the staged rows are read there) and in Python (the lookup).
URL_KEY_SQL = "CAST(('0x' || md5({url})[1:15]) AS BIGINT)"


def url_key(url: str) -> int:
    """The ``images.url_key`` of ``url``: the first 60 bits of its UTF-8 MD5."""
    return int(hashlib.md5(url.encode("utf-8", "surrogatepass")).hexdigest()[:15], 16)


IMAGE_BY_URL_SQL = """select images.rowid, images.url, images.text, domain.domain,
  images.width, images.height, images.aesthetic, images.punsafe, images.pwatermark,
  images.hash
from images
  join domain on domain.id = images.domain_id
where images.url_key = :key and images.url = :url
order by images.rowid"""


def images_with_url(conn: sqlite3.Connection, url: str) -> list[dict[str, Any]]:
    """The images of one database whose URL is exactly ``url``."""
    cursor = conn.execute(IMAGE_BY_URL_SQL, {"key": url_key(url), "url": url})
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


HOST_SEARCH_DDL = (
    "CREATE VIRTUAL TABLE domain_search USING fts5(domain, image_counts UNINDEXED, "
    "tokenize = 'trigram')"
)


def build_host_search(conn: sqlite3.Connection) -> int:
    """Replace ``domain_search`` from the ``domain`` table of ``conn`` (in the caller's
    transaction): every host with its count, rowid = its rank by images. Returns the hosts."""
    conn.execute("DROP TABLE IF EXISTS domain_search")
    conn.execute(HOST_SEARCH_DDL)
    conn.execute(
        "INSERT INTO domain_search (rowid, domain, image_counts) "
        "SELECT row_number() OVER (ORDER BY image_counts DESC, id), domain, image_counts "
        "FROM domain WHERE domain != '' ORDER BY 1"
    )
    (count,) = conn.execute("SELECT count(*) FROM domain_search").fetchone()
    return count


# A trigram index finds a text of at least 3 characters.
MIN_HOST_CHARS = 3
HOSTS_PAGE = 50
HOSTS_COUNT_CAP = 10_000
HOSTS_SQL = (
    "SELECT domain, image_counts FROM domain_search WHERE domain_search MATCH :match "
    "ORDER BY rowid LIMIT :limit"
)
HOSTS_COUNT_SQL = (
    "SELECT count(*) FROM (SELECT 1 FROM domain_search WHERE domain_search MATCH :match "
    "LIMIT :limit)"
)


def hosts_containing(
    conn: sqlite3.Connection, text: str, limit: int = HOSTS_PAGE, cap: int = HOSTS_COUNT_CAP
) -> tuple[list[tuple[str, int]], int, bool]:
    """The hosts whose name contains ``text`` (any case), the biggest first, at most
    ``limit``; how many there are, exact up to ``cap``; whether there are more than that."""
    text = text.strip().lower()
    if len(text) < MIN_HOST_CHARS:
        return [], 0, False
    match = fts_phrase(text)
    rows = conn.execute(HOSTS_SQL, {"match": match, "limit": limit}).fetchall()
    (count,) = conn.execute(HOSTS_COUNT_SQL, {"match": match, "limit": cap + 1}).fetchone()
    return [(d, n) for d, n in rows], min(count, cap), count > cap


def host_named(conn: sqlite3.Connection, host: str) -> list[tuple[str, int]]:
    """The host ``host`` itself (any case) with its count, from ``domain``'s unique index."""
    names = dict.fromkeys((host, host.lower()))
    return [
        (d, n)
        for name in names
        for d, n in conn.execute(
            "SELECT domain, image_counts FROM domain WHERE domain = ?", (name,)
        ).fetchall()
    ]


def host_of(text: str) -> str:
    """The host of a URL a person pasted (``https://www.x.com/a.jpg`` -> ``www.x.com``), or
    the text itself when it is no URL (``x.com/a`` -> ``x.com``)."""
    text = text.strip()
    if "://" not in text:
        text = "//" + text
    try:
        return urllib.parse.urlsplit(text).netloc.lower()
    except ValueError:
        return ""


def looks_like_url(text: str) -> bool:
    """Whether a search text is an address rather than words: a scheme, or a host with a
    path (``http://...``, ``www.x.com/...``)."""
    text = text.strip()
    head = text.split("/", 1)[0]
    return "://" in text or (" " not in text and "." in head and "/" in text)
