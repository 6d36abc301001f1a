"""Search database layer: the SQLite tables Datasette serves, built in ``build/``.

Each asset replaces its own tables in one transaction, so a failed step leaves the previous
tables in place.
"""

import sqlite3
from collections.abc import Iterator
from typing import Any

import duckdb
import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)
from dagster_duckdb import DuckDBResource

from laion_pipeline.assets.raw import entity_csvs, parse_entity_csv
from laion_pipeline.assets.staging import staging_images
from laion_pipeline.db import duckdb_scalar, quote_identifier, sqlite_connect, sqlite_transaction
from laion_pipeline.fts import fts_phrase
from laion_pipeline.layout import ENTITY_KINDS, DataLayout
from laion_pipeline.markdown import markdown_table
from laion_pipeline.progress import Progress
from laion_pipeline.resources import LaionData
from laion_pipeline.schema import DOMAIN_COLUMNS, IMAGE_COLUMNS, table_schema

BATCH_ROWS = 50_000
FTS_CHUNK_ROWS = 500_000


class StaleInputError(RuntimeError):
    """An upstream table does not match this one's input; the message says what to rebuild."""


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
STAGED_IMAGES_SQL = f"""
SELECT s.id, {", ".join(f's."{c}"' for c in IMAGE_COLUMNS if c != "domain_id")}, d.id
FROM staging_images s JOIN domain_ids d ON s.domain = d.domain
ORDER BY s.id
"""


def build_images(duck: duckdb.DuckDBPyConnection, conn: sqlite3.Connection, log: Any = None) -> int:
    """Replace the SQLite ``images`` table with the staged rows, rowid = staging id, each
    with the ``domain_id`` of its host in the SQLite ``domain`` table. Drops the now stale
    ``images_fts``."""
    lookup = conn.execute("SELECT id, domain FROM domain").fetchall()
    duck.register(
        "domain_ids",
        pa.table({"id": [r[0] for r in lookup], "domain": [r[1] for r in lookup]}),
    )
    try:
        unknown = duckdb_scalar(
            duck,
            "SELECT count(*) FROM staging_images s ANTI JOIN domain_ids d ON s.domain = d.domain",
        )
        if unknown:
            raise StaleInputError(
                f"{unknown:,} staged rows have a domain missing from the domain table: "
                "materialize domains, then images"
            )
        total = duckdb_scalar(duck, "SELECT count(*) FROM staging_images")
        reader = duck.sql(STAGED_IMAGES_SQL).to_arrow_reader(BATCH_ROWS)
        with sqlite_transaction(conn):
            conn.execute("DROP TABLE IF EXISTS images_fts")
            conn.execute("DROP TABLE IF EXISTS images")
            conn.execute(IMAGES_DDL)
            progress, done = Progress(log, "images loaded", total), 0
            for batch in reader:
                conn.executemany(
                    IMAGES_INSERT, zip(*(c.to_pylist() for c in batch.columns), strict=True)
                )
                done += batch.num_rows
                progress.update(done)
            conn.execute("CREATE INDEX idx_images_domain_id ON images (domain_id)")
    finally:
        duck.unregister("domain_ids")
    return total


def build_images_fts(conn: sqlite3.Connection, log: Any = None) -> int:
    """Replace ``images_fts``: an FTS5 index of ``images.text`` (external content, default
    unicode61 tokenizer, full detail for phrase queries). Returns the rows indexed."""
    (total,) = conn.execute("SELECT count(*) FROM images").fetchone()
    (last,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM images").fetchone()
    with sqlite_transaction(conn):
        conn.execute("DROP TABLE IF EXISTS images_fts")
        conn.execute('CREATE VIRTUAL TABLE images_fts USING fts5(text, content="images")')
        # Merging segments once at the end is faster than merging while loading.
        conn.execute("INSERT INTO images_fts (images_fts, rank) VALUES ('automerge', 0)")
        progress = Progress(log, "captions indexed", last)
        for low in range(1, last + 1, FTS_CHUNK_ROWS):
            high = low + FTS_CHUNK_ROWS - 1
            conn.execute(
                "INSERT INTO images_fts (rowid, text) "
                "SELECT rowid, text FROM images WHERE rowid BETWEEN ? AND ?",
                (low, high),
            )
            progress.update(min(high, last))
        conn.execute("INSERT INTO images_fts (images_fts) VALUES ('optimize')")
        conn.execute("INSERT INTO images_fts (images_fts, rank) VALUES ('automerge', 4)")
    return total


def count_phrase(conn: sqlite3.Connection, name: str) -> int:
    """How many captions contain ``name`` as an FTS5 phrase."""
    (count,) = conn.execute(
        "SELECT count(*) FROM images_fts WHERE images_fts MATCH ?", (fts_phrase(name),)
    ).fetchone()
    return count


def build_entity_table(
    conn: sqlite3.Connection, table: str, columns: list[str], rows: list[dict[str, str]]
) -> list[tuple[str, int]]:
    """Replace ``table`` with the CSV rows plus ``image_counts``, the number of captions that
    contain the row's name as a phrase. Returns (name, image_counts) per row."""
    counts: dict[str, int] = {}
    for row in rows:
        if row["name"] not in counts:
            counts[row["name"]] = count_phrase(conn, row["name"])
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


def _require_staging(layout: DataLayout) -> None:
    if not layout.staging_db.exists():
        raise FileNotFoundError(f"{layout.staging_db} does not exist: materialize staging_images")


def _require_build_table(conn: sqlite3.Connection, table: str, asset_name: str) -> None:
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone():
        raise StaleInputError(f"the build database has no {table} table: materialize {asset_name}")


@asset(
    deps=[staging_images],
    group_name="search_database",
    kinds={"sqlite"},
    metadata={"dagster/column_schema": table_schema(DOMAIN_COLUMNS)},
)
def domains(laion_data: LaionData, staging_duckdb: DuckDBResource) -> MaterializeResult:
    """The ``domain`` table: one row per host an image was scraped from (``urlparse(url)
    .netloc``), with ``image_counts``, the number of images from that host."""
    layout = laion_data.layout
    _require_staging(layout)
    with staging_duckdb.get_connection() as duck:
        conn = sqlite_connect(layout.build_db)
        try:
            count = build_domains(duck, conn)
            top = conn.execute(
                "SELECT domain, image_counts FROM domain ORDER BY image_counts DESC, id LIMIT 20"
            ).fetchall()
        finally:
            conn.close()
    return MaterializeResult(
        metadata={
            "dagster/row_count": count,
            "top_domains": MetadataValue.md(markdown_table(["domain", "images"], top)),
        }
    )


@asset(
    deps=[domains],
    group_name="search_database",
    kinds={"sqlite"},
    metadata={"dagster/column_schema": table_schema(IMAGE_COLUMNS)},
)
def images(
    context: AssetExecutionContext, laion_data: LaionData, staging_duckdb: DuckDBResource
) -> MaterializeResult:
    """The ``images`` table: one row per image in file order (url, caption ``text``, size,
    CLIP similarity, unsafe and watermark probabilities, aesthetic score, hash), with
    ``domain_id`` pointing at the image's host in ``domain``."""
    layout = laion_data.layout
    _require_staging(layout)
    with staging_duckdb.get_connection() as duck:
        conn = sqlite_connect(layout.build_db)
        try:
            _require_build_table(conn, "domain", "domains")
            count = build_images(duck, conn, context.log)
            preview = conn.execute(
                "SELECT i.rowid, d.domain, i.text, i.width, i.height, i.aesthetic "
                "FROM images i JOIN domain d ON d.id = i.domain_id ORDER BY i.rowid LIMIT 10"
            ).fetchall()
        finally:
            conn.close()
    return MaterializeResult(
        metadata={
            "dagster/row_count": count,
            "preview": MetadataValue.md(
                markdown_table(["rowid", "domain", "text", "width", "height", "aesthetic"], preview)
            ),
        }
    )


@asset(
    deps=[images],
    group_name="search_database",
    kinds={"sqlite"},
)
def images_fts(context: AssetExecutionContext, laion_data: LaionData) -> MaterializeResult:
    """The full-text index of image captions (SQLite FTS5 over ``images.text``) behind the
    search box and the name counts."""
    conn = sqlite_connect(laion_data.layout.build_db)
    try:
        _require_build_table(conn, "images", "images")
        count = build_images_fts(conn, context.log)
    finally:
        conn.close()
    return MaterializeResult(metadata={"dagster/row_count": count})


ENTITY_DESCRIPTIONS = {
    "artists": "Artists of the 2022 list, with image_counts: captions naming them",
    "celebrities": "Celebrities of the 2022 list, with image_counts: captions naming them",
    "characters": "Fictional characters of the 2022 list, with image_counts: captions naming them",
}


@multi_asset(
    specs=[
        AssetSpec(
            kind,
            deps=[images_fts, entity_csvs],
            group_name="search_database",
            kinds={"sqlite"},
            description=ENTITY_DESCRIPTIONS[kind]
            + " (the number of captions containing the name as a phrase).",
            skippable=True,
        )
        for kind in ENTITY_KINDS
    ],
    can_subset=True,
)
def entity_tables(
    context: AssetExecutionContext, laion_data: LaionData
) -> Iterator[MaterializeResult]:
    """The name lists as tables, each name counted in the caption index."""
    layout = laion_data.layout
    conn = sqlite_connect(layout.build_db)
    try:
        _require_build_table(conn, "images_fts", "images_fts")
        for key in sorted(context.selected_asset_keys):
            kind = key.path[-1]
            columns, rows = parse_entity_csv(
                layout.entity_csv(kind).read_bytes(), str(layout.entity_csv(kind))
            )
            counted = build_entity_table(conn, kind, columns, rows)
            top = sorted(counted, key=lambda pair: (-pair[1], pair[0]))[:20]
            context.log.info(f"{kind}: counted {len(counted)} names")
            schema = {c: ("TEXT", "From the name list CSV") for c in columns}
            schema["image_counts"] = ("INTEGER", "Captions that contain the name as a phrase")
            yield MaterializeResult(
                asset_key=key,
                metadata={
                    "dagster/column_schema": table_schema(schema),
                    "dagster/row_count": len(counted),
                    "names_found": sum(1 for _, n in counted if n),
                    "top_names": MetadataValue.md(markdown_table(["name", "images"], top)),
                },
            )
    finally:
        conn.close()
