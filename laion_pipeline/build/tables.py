"""The tables of the search database: `domain`, `images` (with its caption index, built by a
second process meanwhile) and the name tables, from the staged rows."""

import collections
import itertools
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from laion_pipeline.common.db import quote_identifier, quote_string, sqlite_transaction
from laion_pipeline.common.errors import StaleInputError
from laion_pipeline.common.phrases import TOKEN, fts_phrase
from laion_pipeline.common.progress import Progress
from laion_pipeline.common.schema import IMAGE_COLUMNS, STAGING_VIEW_COLUMNS
from laion_pipeline.search.lookup import URL_KEY_SQL
from laion_pipeline.sources.inputs import StagedFile

BATCH_ROWS = 50_000


# The database from what its rows hold, not from the parquet bytes (compression varies from 2x
# to 10x): each byte of URL, caption and host about 1.6 bytes (the table and the caption
# index), each row about 80 bytes (numbers, keys, the two indexes). At 12M rows of the 2022
# shape: 146 bytes of text and 295 of database a row, 3.1x the staged parquet. With a margin
# (17% over, that build):
DATABASE_BYTES_PER_TEXT_BYTE = 1.75
DATABASE_BYTES_PER_ROW = 90
TEXT_COLUMNS = ("url", "text", "domain")
# The build needs 1.5x the database at its peak: the database and the caption index beside it.
BUILD_PEAK_PER_DATABASE_BYTE = 1.5


def estimated_database_bytes(files: Sequence[StagedFile]) -> int:
    """About how large the database of ``files`` (staged parquet) will be, from their rows and
    the bytes of their URLs, captions and hosts (summed by DuckDB: a repeated caption takes a
    few bytes of parquet, and its full length in the database)."""
    if not files:
        return 0
    paths = ", ".join(quote_string(f.path) for f in files)
    lengths = " + ".join(f"coalesce(sum(strlen({c})), 0)" for c in TEXT_COLUMNS)
    duck = duckdb.connect()
    try:
        (text,) = duck.execute(f"SELECT {lengths} FROM read_parquet([{paths}])").fetchone()
    finally:
        duck.close()
    rows = sum(file.rows for file in files)
    return int(DATABASE_BYTES_PER_TEXT_BYTE * text + DATABASE_BYTES_PER_ROW * rows)


DOMAIN_DDL = (
    "CREATE TABLE domain (id INTEGER PRIMARY KEY, domain TEXT UNIQUE, image_counts INTEGER)"
)


# Ids follow the order in which domains first appear in the files, as `sqlite-utils extract`
# numbered them in 2022.
DOMAIN_COUNTS_SQL = """
SELECT row_number() OVER (ORDER BY min(id)) AS id, domain, count(*) AS image_counts
FROM staging_images
GROUP BY domain
ORDER BY id
"""

TOP_DOMAINS_SQL = "SELECT domain, image_counts FROM domain ORDER BY image_counts DESC, id LIMIT 20"


def build_domains(duck: duckdb.DuckDBPyConnection, conn: sqlite3.Connection) -> int:
    """Replace the SQLite ``domain`` table with one row per host and its image count."""
    domains = duck.sql(DOMAIN_COUNTS_SQL).fetchall()
    with sqlite_transaction(conn):
        conn.execute("DROP TABLE IF EXISTS domain")
        conn.execute(DOMAIN_DDL)
        conn.executemany("INSERT INTO domain (id, domain, image_counts) VALUES (?, ?, ?)", domains)
    return len(domains)


IMAGES_DDL = (
    "CREATE TABLE images (\n    "
    + ",\n    ".join(
        f"{quote_identifier(name)} {sql_type}"
        + (" REFERENCES domain(id)" if name == "domain_id" else "")
        for name, (sql_type, _) in IMAGE_COLUMNS.items()
    )
    + "\n)"
)

IMAGES_INSERT = (
    f"INSERT INTO images (rowid, {', '.join(quote_identifier(c) for c in IMAGE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * (len(IMAGE_COLUMNS) + 1))})"
)

# The staged rows as the images table takes them: the host (for domain_id) and the URL's key
# (computed by DuckDB, on its threads, as the rows stream to SQLite) last.
STAGED_COLUMNS = list(STAGING_VIEW_COLUMNS)
STAGED_IMAGES_SQL = (
    f"SELECT {', '.join(quote_identifier(c) for c in STAGED_COLUMNS)}, "
    f"{URL_KEY_SQL.format(url='url')} AS url_key FROM staging_images"
)


class DomainIds:
    """Looks up ``domain.id`` for a column of domains, a batch at a time."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.ids = dict((d, i) for i, d in conn.execute("SELECT id, domain FROM domain"))

    def of(self, domains: pa.Array) -> list[int]:
        # Look each distinct domain of the batch up once, then spread the ids over the rows.
        encoded = pc.dictionary_encode(domains)
        try:
            per_value = [self.ids[d] for d in encoded.dictionary.to_pylist()]
        except KeyError as error:
            raise StaleInputError(
                f"the domain {error.args[0]!r} is missing from the domain table: materialize "
                "domains, then images"
            ) from None
        return pc.take(pa.array(per_value, pa.int64()), encoded.indices).to_pylist()


@dataclass(frozen=True)
class LoadedImages:
    rows: int
    null_captions: int


def load_images(
    duck: duckdb.DuckDBPyConnection,
    conn: sqlite3.Connection,
    total: int,
    log: Any = None,
    first_rowid: int = 1,
) -> LoadedImages:
    """Replace the SQLite ``images`` table with the staged rows in file order, rowid = staging
    id (from ``first_rowid``), each with the ``domain_id`` of its host and the ``url_key`` of
    its URL (``laion_pipeline.search.lookup``). Drops the now stale ``images_fts`` (and the
    ``image_urls`` of builds before ``url_key``)."""
    lookup = DomainIds(conn)
    progress, done, null_captions = Progress(log, "images loaded", total), 0, 0
    with sqlite_transaction(conn):
        conn.execute("DROP TABLE IF EXISTS images_fts")
        conn.execute("DROP TABLE IF EXISTS image_urls")
        conn.execute("DROP TABLE IF EXISTS images")
        conn.execute(IMAGES_DDL)
        for batch in duck.sql(STAGED_IMAGES_SQL).to_arrow_reader(BATCH_ROWS):
            if not batch.num_rows:
                continue
            ids = batch.column(0)
            first = first_rowid + done
            if ids[0].as_py() != first or ids[-1].as_py() != first + batch.num_rows - 1:
                raise RuntimeError("staging_images did not deliver its rows in file order")
            *staged, domains, keys = batch.columns
            columns = [c.to_pylist() for c in staged]
            columns += [lookup.of(domains), keys.to_pylist()]
            conn.executemany(IMAGES_INSERT, zip(*columns, strict=True))
            done += batch.num_rows
            null_captions += batch.column(STAGED_COLUMNS.index("text")).null_count
            progress.update(done)
        if done != total:
            raise StaleInputError(
                f"staging_images gave {done:,} rows, not {total:,}: materialize it again"
            )
        conn.execute("CREATE INDEX idx_images_domain_id ON images (domain_id)")
        conn.execute("CREATE INDEX idx_images_url_key ON images (url_key)")
    return LoadedImages(done, null_captions)


def count_phrase(conn: sqlite3.Connection, name: str) -> int:
    """How many captions contain ``name`` as an FTS5 phrase."""
    (count,) = conn.execute(
        "SELECT count(*) FROM images_fts WHERE images_fts MATCH ?", (fts_phrase(name),)
    ).fetchone()
    return count


def build_entity_table(
    conn: sqlite3.Connection,
    table: str,
    columns: list[str],
    rows: list[dict[str, str]],
    log: Any,
    count: Callable[[str], int],
) -> list[tuple[str, int]]:
    """Replace ``table`` with the CSV rows plus ``image_counts``, the number of captions that
    contain the row's name as a phrase, as ``count`` counts them (over the shards of the
    release). Returns (name, image_counts) per row."""
    counts: dict[str, int] = {}
    progress = Progress(log, f"{table}: names counted", len(rows), unit="names")
    for done, row in enumerate(rows, 1):
        if row["name"] not in counts:
            counts[row["name"]] = count(row["name"])
        progress.update(done)
    quoted = [quote_identifier(c) for c in [*columns, "image_counts"]]
    with sqlite_transaction(conn):
        conn.execute(f"DROP TABLE IF EXISTS {quote_identifier(table)}")
        conn.execute(
            f"CREATE TABLE {quote_identifier(table)} ("
            + ", ".join(
                f"{q} {'INTEGER' if i == len(columns) else 'TEXT'}" for i, q in enumerate(quoted)
            )
            + ")"
        )
        conn.executemany(
            f"INSERT INTO {quote_identifier(table)} ({', '.join(quoted)}) "
            f"VALUES ({', '.join('?' * len(quoted))})",
            [[row[c] for c in columns] + [counts[row["name"]]] for row in rows],
        )
    return [(row["name"], counts[row["name"]]) for row in rows]


# Words too common to show what a search finds (examples are words of four letters or more).
STOPWORDS = frozenset(
    (
        "from", "have", "that", "this", "were", "with", "your", "they", "them", "their",
        "will", "just", "free", "best", "more", "most", "jpeg", "image", "images", "photo",
        "photos", "picture", "pictures", "stock", "vector", "about", "what", "when", "into",
    )
)  # fmt: skip
EXAMPLE_SAMPLE_ROWS = 20_000
WORD = re.compile(r"[^\W\d_]{4,}")


def _example_word(token: str) -> bool:
    return WORD.fullmatch(token) is not None and token not in STOPWORDS


def search_examples(conn: sqlite3.Connection, count: int = 3) -> list[str]:
    """Searches that find images in this release, for the search page: its most frequent
    words and its most frequent pair of words (as a phrase), among the captions of its first
    ``EXAMPLE_SAMPLE_ROWS`` images (letters only, four or more, no common word)."""
    words: collections.Counter[str] = collections.Counter()
    pairs: collections.Counter[str] = collections.Counter()
    rows = conn.execute("SELECT text FROM images ORDER BY rowid LIMIT ?", (EXAMPLE_SAMPLE_ROWS,))
    for (text,) in rows:
        tokens = TOKEN.findall((text or "").lower())
        words.update({t for t in tokens if _example_word(t)})
        pairs.update(
            f"{a} {b}"
            for a, b in itertools.pairwise(tokens)
            if a != b and _example_word(a) and _example_word(b)
        )
    examples = [word for word, _ in words.most_common(count)]
    phrase = next((p for p, n in pairs.most_common(1) if n > 1), None)
    return examples + ([fts_phrase(phrase)] if phrase else [])
