"""Search database layer: the SQLite tables Datasette serves, built in ``build/``.

``domains`` starts a fresh build database; the other assets add or replace their own tables,
each in one transaction, so a failed step leaves the previous tables in place.
"""

import collections
import sqlite3
from collections.abc import Iterator
from typing import Any

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
from laion_pipeline.assets.staging import staging_images
from laion_pipeline.build_db import (
    fresh_build_db,
    install_build_db,
    open_build_db,
    require_table,
)
from laion_pipeline.db import sqlite_connect
from laion_pipeline.files import check_free_disk
from laion_pipeline.fts import build_images_fts
from laion_pipeline.inputs import parse_entity_csv
from laion_pipeline.layout import ENTITY_KINDS, DataLayout
from laion_pipeline.lock import data_dir_lock
from laion_pipeline.metadata import (
    StepTimer,
    column_lineage,
    file_metadata,
    markdown_list,
    markdown_table,
    table_schema,
)
from laion_pipeline.resources import LaionData
from laion_pipeline.schema import (
    DOMAIN_COLUMNS,
    ENTITY_COLUMNS,
    IMAGE_COLUMNS,
    IMAGES_FTS_COLUMNS,
)
from laion_pipeline.tables import (
    BUILD_PEAK_PER_DATABASE_BYTE,
    DATABASE_PER_PARQUET_BYTE,
    TOP_DOMAINS_SQL,
    build_domains,
    build_entity_table,
    load_images_and_index,
    staged_files,
)


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
        files = staged_files(layout)
        database = DATABASE_PER_PARQUET_BYTE * sum(f.size for f in files)
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
        files = staged_files(layout) if "images" in selected else None
        conn = open_build_db(layout, write=True)
        try:
            if files is None:
                require_table(conn, "images", "images")
                build_images_fts(conn, context.log)
            else:
                with staging_duckdb.get_connection() as duck:
                    loaded = load_images_and_index(
                        layout, conn, duck, files, "images_fts" in selected, context.log
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
