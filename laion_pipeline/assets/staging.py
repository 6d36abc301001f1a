"""Staging layer: every parquet row typed and given its domain, in a DuckDB table."""

from pathlib import Path
from typing import Any

import duckdb
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset
from dagster_duckdb import DuckDBResource

from laion_pipeline.assets.raw import laion_parquet_files, read_parquet_manifest
from laion_pipeline.db import duckdb_scalar
from laion_pipeline.markdown import markdown_table
from laion_pipeline.progress import Progress
from laion_pipeline.resources import LaionData
from laion_pipeline.schema import IMAGE_COLUMNS, table_schema

# The host part of a URL exactly as Python's urllib.parse.urlparse(url).netloc gives it:
# tabs and newlines removed, leading control characters and spaces skipped, an optional
# scheme (a letter, then letters, digits, "+", "-" or "."; up to the first ":"), then "//"
# and everything up to the first "/", "?" or "#". No "//" means no host: "".
DOMAIN_SQL = r"""coalesce(regexp_extract(
    regexp_replace("URL", '[\t\r\n]', '', 'g'),
    '^[\x00-\x20]*(?:[A-Za-z][A-Za-z0-9+.\-]*:)?//([^/?#]*)', 1), '')"""

_DUCKDB_TYPES = {"TEXT": "VARCHAR", "INTEGER": "BIGINT", "FLOAT": "DOUBLE"}
STAGING_COLUMNS: dict[str, tuple[str, str]] = {
    "id": ("BIGINT", "Row number in file order, 1..N: the SQLite rowid of the image"),
    **{
        name: (_DUCKDB_TYPES[sql_type], text)
        for name, (sql_type, text) in IMAGE_COLUMNS.items()
        if name != "domain_id"
    },
    "domain": ("VARCHAR", "Host of the URL: urlparse(url).netloc; '' when there is none"),
}
STAGING_DDL = (
    "CREATE OR REPLACE TABLE staging_images ("
    + ", ".join(f'"{name}" {duck_type}' for name, (duck_type, _) in STAGING_COLUMNS.items())
    + ")"
)


def _pixels(column: str) -> str:
    # pandas wrote missing sizes as NaN in float columns: NaN, infinities and nonsense become NULL.
    value = f'CAST("{column}" AS DOUBLE)'
    return f"CASE WHEN isfinite({value}) AND abs({value}) < 1e15 THEN CAST({value} AS BIGINT) END"


def _float32(column: str) -> str:
    # The shortest decimal of the float32, as the 2022 CSV route stored it: 0.1, not 0.100000001.
    return f'CAST(CAST(CAST("{column}" AS FLOAT) AS VARCHAR) AS DOUBLE)'


STAGING_INSERT = f"""
INSERT INTO staging_images
SELECT
    $offset + file_row_number + 1,
    CAST("URL" AS VARCHAR),
    CAST("TEXT" AS VARCHAR),
    {_pixels("WIDTH")},
    {_pixels("HEIGHT")},
    CAST("similarity" AS DOUBLE),
    {_float32("punsafe")},
    {_float32("pwatermark")},
    {_float32("AESTHETIC_SCORE")},
    CAST("hash" AS VARCHAR),
    CAST("__index_level_0__" AS BIGINT),
    {DOMAIN_SQL}
FROM read_parquet($path, file_row_number = true)
"""


def build_staging(conn: duckdb.DuckDBPyConnection, files: list[dict], log: Any = None) -> int:
    """Replace ``staging_images`` with the rows of ``files`` (entries of the parquet manifest).

    Row ``id`` numbers rows 1..N in file order; it becomes the SQLite rowid. Returns N.
    """
    total = sum(f["rows"] for f in files)
    conn.execute("SET preserve_insertion_order = true")
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute(STAGING_DDL)
        offset, progress = 0, Progress(log, "rows staged", total, every=0)
        for f in files:
            conn.execute(STAGING_INSERT, {"offset": offset, "path": f["path"]})
            offset += f["rows"]
            progress.update(offset, note=Path(f["path"]).name)
        staged = duckdb_scalar(conn, "SELECT count(*) FROM staging_images")
        if staged != total:
            raise RuntimeError(f"staged {staged} rows but the parquet files hold {total}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return total


@asset(
    deps=[laion_parquet_files],
    group_name="staging",
    kinds={"duckdb"},
    metadata={"dagster/column_schema": table_schema(STAGING_COLUMNS)},
)
def staging_images(
    context: AssetExecutionContext, laion_data: LaionData, staging_duckdb: DuckDBResource
) -> MaterializeResult:
    """Every image row of the parquet files in file order, typed for SQLite (sizes as
    integers, NaN as NULL, hash as text) with ``domain``: the URL's host exactly as Python's
    ``urlparse(url).netloc`` gives it. A DuckDB table in ``staging/laion.duckdb``."""
    layout = laion_data.layout
    files = read_parquet_manifest(layout)["files"]
    layout.staging_db.parent.mkdir(parents=True, exist_ok=True)
    with staging_duckdb.get_connection() as conn:
        rows = build_staging(conn, files, context.log)
        preview = conn.execute(
            "SELECT id, domain, url, text FROM staging_images ORDER BY id LIMIT 5"
        ).fetchall()
        empty_domains = duckdb_scalar(conn, "SELECT count(*) FROM staging_images WHERE domain = ''")
    return MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "rows_without_domain": empty_domains,
            "path": MetadataValue.path(str(layout.staging_db)),
            "preview": MetadataValue.md(markdown_table(["id", "domain", "url", "text"], preview)),
        }
    )
