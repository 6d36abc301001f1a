"""Staging layer: every parquet row typed and given its domain, in a DuckDB table."""

from pathlib import Path

import duckdb
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset
from dagster_duckdb import DuckDBResource

from laion_pipeline.assets.raw import laion_parquet_files, read_parquet_manifest
from laion_pipeline.errors import StaleInputError
from laion_pipeline.markdown import markdown_table
from laion_pipeline.resources import LaionData
from laion_pipeline.schema import IMAGE_COLUMNS, table_schema

# The host part of a URL exactly as Python's urllib.parse.urlparse(url).netloc gives it:
# tabs and newlines removed (the replace only runs where there are some: it is the costly
# part), leading control characters and spaces skipped, an optional scheme (a letter, then
# letters, digits, "+", "-" or "."; up to the first ":"), then "//" and everything up to the
# first "/", "?" or "#". No "//" means no host: "".
DOMAIN_SQL = r"""coalesce(regexp_extract(
    CASE WHEN contains("URL", chr(9)) OR contains("URL", chr(10)) OR contains("URL", chr(13))
        THEN regexp_replace("URL", '[\t\r\n]', '', 'g') ELSE "URL" END,
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


def _pixels(column: str) -> str:
    # pandas wrote missing sizes as NaN in float columns: NaN, infinities and nonsense become NULL.
    value = f'CAST("{column}" AS DOUBLE)'
    return f"CASE WHEN isfinite({value}) AND abs({value}) < 1e15 THEN CAST({value} AS BIGINT) END"


def _float32(column: str) -> str:
    # The shortest decimal of the float32, as the 2022 CSV route stored it: 0.1, not 0.100000001.
    return f'CAST(CAST(CAST("{column}" AS FLOAT) AS VARCHAR) AS DOUBLE)'


# The typed columns, in STAGING_COLUMNS order, over read_parquet(..., file_row_number, filename).
STAGING_SELECT = f"""
    file_row_number + 1 + {{offsets}},
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
"""


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def staging_view_sql(files: list[dict]) -> str:
    """``staging_images`` as a view over the verified parquet files (entries of the parquet
    manifest). Row ``id`` numbers rows 1..N in file order; it becomes the SQLite rowid."""
    offsets, cases = 0, []
    for f in files:
        cases.append(f"WHEN {_literal(f['path'])} THEN {offsets}")
        offsets += f["rows"]
    columns = ", ".join(f'"{name}"' for name in STAGING_COLUMNS)
    paths = ", ".join(_literal(f["path"]) for f in files)
    select = STAGING_SELECT.format(offsets=f"CASE filename {' '.join(cases)} END")
    return (
        f"CREATE OR REPLACE VIEW staging_images ({columns}) AS SELECT {select} "
        f"FROM read_parquet([{paths}], file_row_number = true, filename = true)"
    )


def check_files_unchanged(files: list[dict]) -> None:
    """The view reads the files themselves: refuse if any changed since they were verified."""
    for f in files:
        path = Path(f["path"])
        stat = path.stat() if path.exists() else None
        if stat is None or (stat.st_size, stat.st_mtime_ns) != (f["size"], f["mtime_ns"]):
            raise StaleInputError(
                f"{path} changed since laion_parquet_files verified it: materialize "
                "laion_parquet_files (and what follows) again"
            )


def create_staging(conn: duckdb.DuckDBPyConnection, files: list[dict]) -> int:
    """Define ``staging_images`` over ``files``; returns its row count (from the manifest)."""
    check_files_unchanged(files)
    conn.execute(staging_view_sql(files))
    return sum(f["rows"] for f in files)


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
    ``urlparse(url).netloc`` gives it. A DuckDB view in ``staging/laion.duckdb`` over the
    verified parquet files: the rows stream from parquet to SQLite without a second copy."""
    layout = laion_data.layout
    files = read_parquet_manifest(layout)["files"]
    layout.staging_db.parent.mkdir(parents=True, exist_ok=True)
    with staging_duckdb.get_connection() as conn:
        rows = create_staging(conn, files)
        preview = conn.execute(
            "SELECT id, domain, url, text FROM staging_images LIMIT 5"
        ).fetchall()
    context.log.info(f"staging_images: {rows:,} rows over {len(files)} parquet files")
    return MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "path": MetadataValue.path(str(layout.staging_db)),
            "preview": MetadataValue.md(markdown_table(["id", "domain", "url", "text"], preview)),
        }
    )
