"""Staging layer: every parquet row typed and given its domain, as a DuckDB view."""

from dagster import (
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster_duckdb import DuckDBResource

from laion_pipeline.assets.raw import laion_parquet_files
from laion_pipeline.inputs import ParquetManifest
from laion_pipeline.lock import data_dir_lock
from laion_pipeline.metadata import (
    StepTimer,
    column_lineage,
    file_metadata,
    markdown_table,
    table_schema,
)
from laion_pipeline.resources import LaionData
from laion_pipeline.schema import LAION_COLUMNS
from laion_pipeline.staging import STAGING_COLUMNS, create_staging, schema_problems

PREVIEW = ["id", "domain", "url", "text"]


# Where each staged column comes from in the parquet files.
STAGING_LINEAGE = column_lineage(
    {
        staged: [("laion_parquet_files", source)]
        for staged, source in zip(
            [c for c in STAGING_COLUMNS if c != "id"], [*LAION_COLUMNS, "URL"], strict=True
        )
    }
)


@asset(
    deps=[laion_parquet_files],
    group_name="staging",
    kinds={"duckdb", "parquet"},
    code_version="1",
    metadata={"dagster/column_schema": table_schema(STAGING_COLUMNS)},
)
def staging_images(
    context: AssetExecutionContext, laion_data: LaionData, staging_duckdb: DuckDBResource
) -> MaterializeResult:
    """Every image row of the parquet files in file order, typed for SQLite (sizes as
    integers, NaN as NULL, hash as text) with ``domain``: the URL's host exactly as Python's
    ``urlparse(url).netloc`` gives it. A DuckDB view in ``staging/laion.duckdb`` over the
    verified parquet files: the rows stream from parquet to SQLite without a second copy."""
    timer = StepTimer()
    layout = laion_data.layout
    with data_dir_lock(layout, context.log):
        files = ParquetManifest.read(layout).files
        layout.staging_db.parent.mkdir(parents=True, exist_ok=True)
        with staging_duckdb.get_connection() as conn:
            rows = create_staging(conn, files)
            problems = schema_problems(conn, files)
            preview = (
                []
                if problems
                else conn.execute(
                    f"SELECT {', '.join(PREVIEW)} FROM staging_images LIMIT 5"
                ).fetchall()
            )
        context.log.info(f"staging_images: {rows:,} rows over {len(files)} parquet files")
        return MaterializeResult(
            metadata={
                **file_metadata(layout.staging_db),
                **timer.metadata(),
                "dagster/row_count": rows,
                "dagster/column_lineage": STAGING_LINEAGE,
                "preview": MetadataValue.md(markdown_table(PREVIEW, preview)),
            }
        )
