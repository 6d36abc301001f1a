"""Raw layer: each source file fetched, verified and staged (one partition each), and the name
lists, fetched and checked."""

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, DataVersion, MaterializeResult, asset

from laion_pipeline.build.staging import stage_source_file
from laion_pipeline.build.state import check_staged
from laion_pipeline.common.files import write_atomic
from laion_pipeline.common.layout import ENTITY_KINDS
from laion_pipeline.common.schema import ENTITY_CSV_COLUMNS, STAGED_FILE_COLUMNS
from laion_pipeline.common.versions import CODE_VERSIONS
from laion_pipeline.orchestration.assets.retries import retry_transient_errors
from laion_pipeline.orchestration.assets.sources import (
    entity_lists_version,
    entity_sheets,
    hf_dataset,
)
from laion_pipeline.orchestration.metadata import StepTimer, file_metadata, run_worker, table_schema
from laion_pipeline.orchestration.partitions import SOURCE_FILES
from laion_pipeline.orchestration.resources import EntityLists, LaionData, ParquetSource
from laion_pipeline.releases.lock import data_dir_lock, staged_file_lock
from laion_pipeline.sources.inputs import SourceListing, parse_entity_csv


def nulled_text(nulled: Mapping[str, int]) -> str:
    """``punsafe 1, width 2``: the values of each column stored as NULL for breaking its rule."""
    return ", ".join(f"{column} {n:,}" for column, n in sorted(nulled.items()))


@asset(
    deps=[hf_dataset],
    partitions_def=SOURCE_FILES,
    group_name="raw",
    kinds={"parquet"},
    code_version=CODE_VERSIONS["source_files"],
    metadata={"dagster/column_schema": table_schema(STAGED_FILE_COLUMNS)},
)
def source_files(
    context: AssetExecutionContext, laion_data: LaionData, parquet_source: ParquetSource
) -> MaterializeResult:
    """One source file of the dataset, staged: downloaded (or copied from the local folder)
    and verified against its size and sha256, its rows filtered by the profile (for
    `aesthetics-v2-6plus`, `aesthetic >= LAION_MIN_AESTHETIC`), its columns found by the
    profile's names and typed for SQLite (a column the file lacks is NULL), each row given
    its domain and its row number in the file, written as our own parquet file in
    `staging/files/`. The build never reads the source file again; with `LAION_KEEP_RAW=0`
    the download is deleted once staged. Partitions run in parallel (`LAION_WORKERS`)."""
    timer = StepTimer()
    layout = laion_data.layout
    profile = laion_data.profile
    key = context.partition_key
    listing = SourceListing.read(layout)
    entry = listing.entry(key)
    with staged_file_lock(layout, key, context.log):
        # Staged by another run meanwhile (two builds decided at once): kept as it is.
        staged = check_staged(layout, entry, profile, repair=False).staged
        if staged is not None:
            context.log.info(f"{key}: staged by another run meanwhile, from this version: kept")
        else:
            with retry_transient_errors(context, parquet_source):
                fetched = parquet_source.fetch(layout, profile, listing, entry, context.log)
            threads = laion_data.threads_per_file
            staged = stage_source_file(
                layout, profile, listing, entry, fetched.path, fetched.sha256, threads
            )
            if not laion_data.keep_raw:
                fetched.path.unlink(missing_ok=True)
                context.log.info(f"LAION_KEEP_RAW=0: deleted {fetched.path}")
    context.log.info(
        f"{key}: kept {staged.rows:,} of {staged.rows_read:,} rows"
        + (f" ({profile.row_filter.description})" if profile.row_filter else "")
        + (
            f"; no {', '.join(staged.missing_columns)} (stored as NULL)"
            if staged.missing_columns
            else ""
        )
    )
    if staged.takedowns:
        context.log.info(
            f"{key}: left out {staged.rows_blocked:,} rows taken down ({profile.takedowns.origin})"
        )
    if staged.values_nulled:
        nulled = nulled_text(staged.values_nulled)
        context.log.warning(f"{key}: values outside their column's rule stored as NULL: {nulled}")
    return MaterializeResult(
        data_version=DataVersion(staged.data_version),
        metadata={
            **file_metadata(Path(staged.path)),
            **timer.metadata(),
            "dagster/row_count": staged.rows,
            "rows_read": staged.rows_read,
            "rows_kept": staged.rows,
            "worker": run_worker(),
            "source_sha256": staged.sha256,
            "profile": profile.name,
            "filter": profile.row_filter.description if profile.row_filter else "none",
            "missing_columns": ", ".join(staged.missing_columns) or "none",
            "rows_blocked": staged.rows_blocked,
            "takedowns": staged.takedowns or "none",
            "values_nulled": sum(staged.values_nulled.values()),
            "values_nulled_by_column": nulled_text(staged.values_nulled) or "none",
            "raw_kept": laion_data.keep_raw,
        },
    )


@asset(
    deps=[entity_sheets],
    group_name="raw",
    kinds={"csv"},
    code_version=CODE_VERSIONS["entity_csvs"],
    metadata={"dagster/column_schema": table_schema(ENTITY_CSV_COLUMNS)},
)
def entity_csvs(
    context: AssetExecutionContext, laion_data: LaionData, entity_lists: EntityLists
) -> MaterializeResult:
    """The three name lists of the 2022 analysis (artists, celebrities, characters) as CSV
    files with a `name` column, copied into `raw/entities/` after a format check. Its data
    version is a hash of the three files, so an unchanged list re-counts nothing."""
    timer = StepTimer()
    layout = laion_data.layout
    with data_dir_lock(layout, context.log):
        metadata: dict[str, Any] = {}
        fetched = {}
        with retry_transient_errors(context, entity_lists):
            for kind in ENTITY_KINDS:
                data = entity_lists.read(kind)
                notes: list[str] = []
                columns, rows = parse_entity_csv(data, entity_lists.display_url(kind), notes)
                context.log.info(f"{kind}: {len(rows)} names, columns {columns}")
                for note in notes:
                    context.log.warning(note)
                if notes:
                    metadata[f"{kind}_cleaned"] = "; ".join(notes)
                fetched[kind] = data
                metadata[f"{kind}_rows"] = len(rows)
                metadata[f"{kind}_sha256"] = hashlib.sha256(data).hexdigest()
        # Written only once all three passed, so the lists on disk always belong together.
        for kind, data in fetched.items():
            write_atomic(layout.entity_csv(kind), data)
        return MaterializeResult(
            data_version=DataVersion(entity_lists_version(fetched)),
            metadata={
                **file_metadata(layout.entities_dir),
                **timer.metadata(),
                "dagster/row_count": sum(metadata[f"{kind}_rows"] for kind in ENTITY_KINDS),
                **metadata,
            },
        )
