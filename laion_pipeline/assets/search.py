"""Search database layer: the SQLite tables Datasette serves, built in ``build/``.

``domains`` starts a fresh build database; the other assets add or replace their own tables,
each in one transaction, so a failed step leaves the previous tables in place.
"""

import collections
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)
from dagster_duckdb import DuckDBResource

from laion_pipeline.assets.raw import entity_csvs
from laion_pipeline.assets.staging import (
    check_files_unchanged,
    staging_images,
    staging_view_sql,
)
from laion_pipeline.build_db import (
    fresh_build_db,
    install_build_db,
    open_build_db,
    require_table,
)
from laion_pipeline.db import quote_identifier, sqlite_connect, sqlite_transaction
from laion_pipeline.errors import StaleInputError
from laion_pipeline.files import check_free_disk
from laion_pipeline.fts import SideIndex, build_images_fts, fts_phrase, install_side_index
from laion_pipeline.inputs import parse_entity_csv, read_parquet_manifest
from laion_pipeline.layout import ENTITY_KINDS, DataLayout
from laion_pipeline.lock import data_dir_lock
from laion_pipeline.metadata import (
    StepTimer,
    column_lineage,
    file_metadata,
    markdown_list,
    markdown_table,
)
from laion_pipeline.progress import Progress
from laion_pipeline.resources import LaionData
from laion_pipeline.schema import (
    DOMAIN_COLUMNS,
    ENTITY_COLUMNS,
    IMAGE_COLUMNS,
    IMAGES_FTS_COLUMNS,
    table_schema,
)

BATCH_ROWS = 50_000
# The database takes up to 2.5x the parquet files (1.7x for the real data), and the build needs
# 1.5x the database at its peak: the database itself and the caption index built beside it.
DATABASE_PER_PARQUET_BYTE = 2.5
BUILD_PEAK_PER_DATABASE_BYTE = 1.5


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
STAGED_COLUMNS = ["id", *(c for c in IMAGE_COLUMNS if c != "domain_id"), "domain"]
STAGED_IMAGES_SQL = (
    f"SELECT {', '.join(quote_identifier(c) for c in STAGED_COLUMNS)} FROM staging_images"
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
    duck: duckdb.DuckDBPyConnection, conn: sqlite3.Connection, total: int, log: Any = None
) -> LoadedImages:
    """Replace the SQLite ``images`` table with the staged rows in file order, rowid = staging
    id, each with the ``domain_id`` of its host. Drops the now stale ``images_fts``."""
    lookup = DomainIds(conn)
    progress, done, null_captions = Progress(log, "images loaded", total), 0, 0
    with sqlite_transaction(conn):
        conn.execute("DROP TABLE IF EXISTS images_fts")
        conn.execute("DROP TABLE IF EXISTS images")
        conn.execute(IMAGES_DDL)
        for batch in duck.sql(STAGED_IMAGES_SQL).to_arrow_reader(BATCH_ROWS):
            if not batch.num_rows:
                continue
            ids = batch.column(0)
            if ids[0].as_py() != done + 1 or ids[-1].as_py() != done + batch.num_rows:
                raise RuntimeError("staging_images did not deliver its rows in file order")
            columns = [c.to_pylist() for c in batch.columns[:-1]]
            columns.append(lookup.of(batch.column(batch.num_columns - 1)))
            conn.executemany(IMAGES_INSERT, zip(*columns, strict=True))
            done += batch.num_rows
            null_captions += batch.column(STAGED_COLUMNS.index("text")).null_count
            progress.update(done)
        if done != total:
            raise StaleInputError(
                f"staging_images gave {done:,} rows, not {total:,}: materialize it again"
            )
        conn.execute("CREATE INDEX idx_images_domain_id ON images (domain_id)")
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
    log: Any = None,
) -> list[tuple[str, int]]:
    """Replace ``table`` with the CSV rows plus ``image_counts``, the number of captions that
    contain the row's name as a phrase. Returns (name, image_counts) per row."""
    counts: dict[str, int] = {}
    progress = Progress(log, f"{table}: names counted", len(rows), unit="names")
    for done, row in enumerate(rows, 1):
        if row["name"] not in counts:
            counts[row["name"]] = count_phrase(conn, row["name"])
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


def list_problems(rows: list[dict[str, str]], log: Any, kind: str) -> dict[str, Any]:
    """Rows of a name list that count nothing useful: blank names (counted 0) and names listed
    more than once (each row kept, counted once), for the asset's metadata and the log."""
    blank = sum(1 for row in rows if not row["name"].strip())
    repeated = collections.Counter(row["name"] for row in rows if row["name"].strip())
    duplicates = sorted(name for name, n in repeated.items() if n > 1)
    if (blank or duplicates) and log:
        log.warning(
            f"{kind}: {blank} blank names (counted 0) and {len(duplicates)} names listed more "
            f"than once: {', '.join(duplicates[:10])}"
        )
    return {
        "blank_names": blank,
        "duplicate_names": len(duplicates),
        "duplicates": MetadataValue.md(markdown_list(duplicates[:50]) or "none"),
    }


def _staging_files(layout: DataLayout) -> list[dict]:
    if not layout.staging_db.exists():
        raise StaleInputError(f"{layout.staging_db} does not exist: materialize staging_images")
    files = read_parquet_manifest(layout)["files"]
    check_files_unchanged(files)
    return files


def _table_metadata(layout: DataLayout, table: str) -> dict[str, Any]:
    return {**file_metadata(layout.build_db), "dagster/table_name": table}


# Where the columns of the search tables come from.
DOMAINS_LINEAGE = column_lineage(
    {
        "id": [("staging_images", "id")],
        "domain": [("staging_images", "domain")],
        "image_counts": [("staging_images", "id")],
    }
)
IMAGES_LINEAGE = column_lineage(
    {
        **{c: [("staging_images", c)] for c in IMAGE_COLUMNS if c != "domain_id"},
        "domain_id": [("domains", "id"), ("staging_images", "domain")],
    }
)
IMAGES_FTS_LINEAGE = column_lineage({"text": [("images", "text")]})


@asset(
    deps=[staging_images],
    group_name="search_database",
    kinds={"sqlite"},
    code_version="1",
    metadata={"dagster/column_schema": table_schema(DOMAIN_COLUMNS)},
)
def domains(
    context: AssetExecutionContext, laion_data: LaionData, staging_duckdb: DuckDBResource
) -> MaterializeResult:
    """The ``domain`` table: one row per host an image was scraped from (``urlparse(url)
    .netloc``), with ``image_counts``, the number of images from that host. Starts a fresh
    build database."""
    timer = StepTimer()
    layout = laion_data.layout
    with data_dir_lock(layout, context.log):
        files = _staging_files(layout)
        database = DATABASE_PER_PARQUET_BYTE * sum(f["size"] for f in files)
        check_free_disk(
            layout.build_db.parent,
            int(BUILD_PEAK_PER_DATABASE_BYTE * database),
            "building the database",
        )
        new = fresh_build_db(layout)
        with staging_duckdb.get_connection() as duck:
            conn = sqlite_connect(new)
            try:
                count = build_domains(duck, conn)
                top = conn.execute(TOP_DOMAINS_SQL).fetchall()
                (empty,) = conn.execute(
                    "SELECT coalesce(sum(image_counts), 0) FROM domain WHERE domain = ''"
                ).fetchone()
            finally:
                conn.close()
        install_build_db(new, layout)
        return MaterializeResult(
            metadata={
                **_table_metadata(layout, "domain"),
                **timer.metadata(),
                "dagster/row_count": count,
                "dagster/column_lineage": DOMAINS_LINEAGE,
                "images_without_domain": empty,
                "top_domains": MetadataValue.md(markdown_table(["domain", "images"], top)),
            }
        )


IMAGES_DESCRIPTION = (
    "The images table: one row per image in file order (url, caption text, size, CLIP "
    "similarity, unsafe and watermark probabilities, aesthetic score, hash), with domain_id "
    "pointing at the image's host in domain."
)
IMAGES_FTS_DESCRIPTION = (
    "The full-text index of image captions (SQLite FTS5 over images.text) behind the search "
    "box and the name counts. Built while the images load when both are materialized."
)


@multi_asset(
    specs=[
        AssetSpec(
            "images",
            deps=[domains],
            group_name="search_database",
            kinds={"sqlite"},
            description=IMAGES_DESCRIPTION,
            code_version="1",
            metadata={"dagster/column_schema": table_schema(IMAGE_COLUMNS)},
            skippable=True,
        ),
        AssetSpec(
            "images_fts",
            deps=["images"],
            group_name="search_database",
            kinds={"sqlite"},
            description=IMAGES_FTS_DESCRIPTION,
            code_version="1",
            metadata={"dagster/column_schema": table_schema(IMAGES_FTS_COLUMNS)},
            skippable=True,
        ),
    ],
    can_subset=True,
)
def images_and_index(
    context: AssetExecutionContext, laion_data: LaionData, staging_duckdb: DuckDBResource
) -> Iterator[MaterializeResult]:
    """Loads the images while a second process indexes their captions, then adds the index;
    either asset alone is rebuilt on its own (the index then from the images table)."""
    timer = StepTimer()
    layout = laion_data.layout
    with data_dir_lock(layout, context.log):
        selected = {key.path[-1] for key in context.selected_asset_keys}
        files = _staging_files(layout) if "images" in selected else None
        conn = open_build_db(layout, write=True)
        try:
            if files is None:
                require_table(conn, "images", "images")
                build_images_fts(conn, context.log)
            else:
                loaded = _load_images_and_index(
                    context, layout, conn, staging_duckdb, files, "images_fts" in selected
                )
                yield MaterializeResult(
                    asset_key=AssetKey("images"),
                    metadata={
                        **_table_metadata(layout, "images"),
                        **timer.metadata(),
                        "dagster/row_count": loaded.rows,
                        "dagster/column_lineage": IMAGES_LINEAGE,
                        "null_captions": loaded.null_captions,
                        "preview": MetadataValue.md(_images_preview(conn)),
                    },
                )
            if "images_fts" in selected:
                (indexed,) = conn.execute("SELECT count(*) FROM images_fts_docsize").fetchone()
                yield MaterializeResult(
                    asset_key=AssetKey("images_fts"),
                    metadata={
                        **_table_metadata(layout, "images_fts"),
                        **timer.metadata(),
                        "dagster/row_count": indexed,
                        "dagster/column_lineage": IMAGES_FTS_LINEAGE,
                    },
                )
        finally:
            conn.close()


def _load_images_and_index(
    context: AssetExecutionContext,
    layout: DataLayout,
    conn: sqlite3.Connection,
    staging_duckdb: DuckDBResource,
    files: list[dict],
    with_index: bool,
) -> LoadedImages:
    """Load ``images``; with ``with_index``, index the captions in a second process meanwhile
    and add the index once both are done."""
    total = sum(f["rows"] for f in files)
    side_path = layout.build_db.with_name("images_fts.side.db")
    side = None
    try:
        require_table(conn, "domain", "domains")
        conn.execute("PRAGMA synchronous = OFF")  # a crash leaves a build file we start again
        if with_index:
            side = SideIndex(side_path, staging_view_sql(files))
        with staging_duckdb.get_connection() as duck:
            loaded = load_images(duck, conn, total, context.log)
        if side:
            context.log.info("images loaded; waiting for the caption index to finish")
            side.finish(context.log)
            side = None
            context.log.info("caption index built; copying it into the build database")
            install_side_index(layout.build_db, side_path)
    finally:
        if side:
            side.abandon()
    return loaded


def _images_preview(conn: sqlite3.Connection) -> str:
    rows = conn.execute(
        "SELECT i.rowid, d.domain, i.text, i.width, i.height, i.aesthetic "
        "FROM images i JOIN domain d ON d.id = i.domain_id ORDER BY i.rowid LIMIT 10"
    ).fetchall()
    return markdown_table(["rowid", "domain", "text", "width", "height", "aesthetic"], rows)


ENTITY_DESCRIPTIONS = {
    "artists": "Artists of the 2022 list, with image_counts: captions naming them",
    "celebrities": "Celebrities of the 2022 list, with image_counts: captions naming them",
    "characters": "Fictional characters of the 2022 list, with image_counts: captions naming them",
}


@multi_asset(
    specs=[
        AssetSpec(
            kind,
            deps=["images_fts", entity_csvs],
            group_name="search_database",
            kinds={"sqlite", "csv"},
            description=ENTITY_DESCRIPTIONS[kind]
            + " (the number of captions containing the name as a phrase).",
            code_version="1",
            metadata={"dagster/column_schema": table_schema(ENTITY_COLUMNS)},
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
    with data_dir_lock(layout, context.log):
        conn = open_build_db(layout, write=True)
        try:
            require_table(conn, "images_fts", "images_fts")
            for key in sorted(context.selected_asset_keys):
                timer = StepTimer()
                kind = key.path[-1]
                columns, rows = parse_entity_csv(
                    layout.entity_csv(kind).read_bytes(), str(layout.entity_csv(kind))
                )
                counted = build_entity_table(conn, kind, columns, rows, context.log)
                top = sorted(counted, key=lambda pair: (-pair[1], pair[0]))[:20]
                context.log.info(f"{kind}: counted {len(counted)} names")
                schema = {c: ("TEXT", "From the name list CSV") for c in columns}
                schema["image_counts"] = ENTITY_COLUMNS["image_counts"]
                yield MaterializeResult(
                    asset_key=key,
                    metadata={
                        **_table_metadata(layout, kind),
                        **timer.metadata(),
                        "dagster/column_schema": table_schema(schema),
                        "dagster/column_lineage": column_lineage(
                            {
                                **{c: [("entity_csvs", c)] for c in columns},
                                "image_counts": [("entity_csvs", "name"), ("images_fts", "text")],
                            }
                        ),
                        "dagster/row_count": len(counted),
                        "names_found": sum(1 for _, n in counted if n),
                        **list_problems(rows, context.log, kind),
                        "top_names": MetadataValue.md(markdown_table(["name", "images"], top)),
                    },
                )
        finally:
            conn.close()
