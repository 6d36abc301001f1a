"""Staging layer: every parquet row typed and given its domain, as a DuckDB view."""

import os

from dagster import (
    AssetExecutionContext,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster_duckdb import DuckDBResource

from laion_pipeline.build.plan import shards_of
from laion_pipeline.build.staging import (
    create_staging,
    schema_problems,
    staged_files_of,
)
from laion_pipeline.common.schema import STAGING_VIEW_COLUMNS
from laion_pipeline.common.versions import CODE_VERSIONS
from laion_pipeline.orchestration.assets.raw import source_files
from laion_pipeline.orchestration.metadata import (
    StepTimer,
    column_lineage,
    file_metadata,
    markdown_list,
    markdown_table,
    table_schema,
)
from laion_pipeline.orchestration.partitions import SHARDS, sync_partitions
from laion_pipeline.orchestration.resources import LaionData
from laion_pipeline.releases.lock import data_dir_lock
from laion_pipeline.sources.inputs import SourceListing, StagingManifest

PREVIEW = ["id", "domain", "url", "text"]


# Where each staged column comes from.
STAGING_LINEAGE = column_lineage(
    {
        name: [("source_files", name if name != "id" else "source_row")]
        for name in STAGING_VIEW_COLUMNS
    }
)


@asset(
    deps=[source_files],
    group_name="staging",
    kinds={"duckdb", "parquet"},
    code_version=CODE_VERSIONS["staging_images"],
    metadata={"dagster/column_schema": table_schema(STAGING_VIEW_COLUMNS)},
)
def staging_images(context: AssetExecutionContext, laion_data: LaionData) -> MaterializeResult:
    """Every kept image row of the staged source files, in file order, numbered 1..N (the
    SQLite rowid), typed for SQLite (sizes as integers, NaN as NULL, hash as text), with
    `domain`: the URL's host exactly as Python's `urlparse(url).netloc` gives it. A DuckDB
    view in `staging/laion.duckdb` over the staged files of the observed listing: the rows
    stream from parquet to SQLite without a second copy. Fails, naming them, when some source
    files are not staged at the observed revision. Plans the shards: consecutive files of at
    most `LAION_SHARD_ROWS` rows, the partitions of `images` (added and removed here)."""
    timer = StepTimer()
    layout = laion_data.layout
    profile = laion_data.profile
    with data_dir_lock(layout, context.log):
        listing = SourceListing.read(layout)
        files = staged_files_of(layout, listing, profile)
        manifest = StagingManifest(
            listing.source, profile.summary, tuple(files), laion_data.shard_rows
        )
        # The file holds only this view: it is made anew beside the old one, then renamed over
        # it, so a killed build never leaves it half-written and a check reading the old one
        # (checks take no lock) never finds it missing.
        new = layout.staging_db.with_name(f"{layout.staging_db.name}.new")
        for path in (new, new.with_name(f"{new.name}.wal")):
            path.unlink(missing_ok=True)
        new.parent.mkdir(parents=True, exist_ok=True)
        with DuckDBResource(database=str(new)).get_connection() as conn:
            rows = create_staging(conn, files)
            problems = schema_problems(conn, files)
            preview = (
                []
                if problems
                else conn.execute(
                    f"SELECT {', '.join(PREVIEW)} FROM staging_images LIMIT 5"
                ).fetchall()
            )
        layout.staging_db.with_name(f"{layout.staging_db.name}.wal").unlink(missing_ok=True)
        os.replace(new, layout.staging_db)
        manifest.write(layout)
        shards = shards_of(manifest)
        sync_partitions(context.instance, SHARDS, [s.key for s in shards])
        missing = sorted({c for f in files for c in f.missing_columns})
        context.log.info(
            f"staging_images: {rows:,} rows kept of {manifest.rows_read:,} read, over "
            f"{len(files)} source files"
        )
        return MaterializeResult(
            data_version=DataVersion(manifest.version),
            metadata={
                **file_metadata(layout.staging_db),
                **timer.metadata(),
                "dagster/row_count": rows,
                "rows_read": manifest.rows_read,
                "file_count": len(files),
                "shard_count": len(shards),
                "shards": MetadataValue.md(
                    markdown_table(
                        ["shard", "files", "first rowid", "last rowid", "rows"],
                        [
                            (s.key, len(s.files), s.first_rowid, s.last_rowid, s.rows)
                            for s in shards
                        ],
                    )
                ),
                "source": listing.source.kind,
                "location": listing.source.location,
                "revision": listing.source.revision,
                "profile": profile.name,
                "filter": profile.row_filter.description if profile.row_filter else "none",
                "missing_columns": MetadataValue.md(
                    markdown_list(
                        [f"{c}: not in the source files, stored as NULL" for c in missing]
                    )
                    or "none"
                ),
                "dagster/column_lineage": STAGING_LINEAGE,
                "files": MetadataValue.md(
                    markdown_table(
                        ["file", "rows read", "rows kept", "sha256"],
                        [(f.key, f.rows_read, f.rows, f.sha256) for f in files],
                    )
                ),
                "preview": MetadataValue.md(markdown_table(PREVIEW, preview)),
            },
        )
