"""Raw layer: the parquet files and the name lists, fetched and verified, not yet changed."""

import hashlib
import os
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue, asset

from laion_pipeline.assets.retries import retry_transient_errors
from laion_pipeline.assets.sources import entity_lists_version, entity_sheets, hf_dataset
from laion_pipeline.files import write_atomic
from laion_pipeline.inputs import (
    ParquetManifest,
    parse_entity_csv,
    verify_parquet_files,
)
from laion_pipeline.layout import ENTITY_KINDS
from laion_pipeline.lock import data_dir_lock
from laion_pipeline.metadata import StepTimer, file_metadata, markdown_table, table_schema
from laion_pipeline.resources import EntityLists, LaionData, ParquetSource
from laion_pipeline.schema import (
    ENTITY_CSV_COLUMNS,
    LAION_PARQUET_COLUMNS,
)


@asset(
    deps=[hf_dataset],
    group_name="raw",
    kinds={"parquet"},
    code_version="1",
    metadata={"dagster/column_schema": table_schema(LAION_PARQUET_COLUMNS)},
)
def laion_parquet_files(
    context: AssetExecutionContext, laion_data: LaionData, parquet_source: ParquetSource
) -> MaterializeResult:
    """The LAION-Aesthetics v2 6+ parquet files this build reads, each checked for the LAION
    columns and fingerprinted (size, rows, sha256). One row per image, about 12M in all for
    the real dataset. Files already verified are not fetched again; when the hub does not
    answer, the step is retried later with backoff. Its data version is a hash of the files'
    contents."""
    timer = StepTimer()
    layout = laion_data.layout
    with data_dir_lock(layout, context.log):
        with retry_transient_errors(context, parquet_source):
            fetched = parquet_source.fetch(layout, context.log)
            revision = fetched.revision
            previous = None
            if layout.parquet_manifest.exists():
                previous = ParquetManifest.read(layout)
            described = verify_parquet_files(fetched.files, layout, previous, fetched.known_sha256)
        manifest = ParquetManifest(revision, described)
        manifest.write(layout)
        folder = Path(os.path.commonpath([f.source_path for f in described]))
        return MaterializeResult(
            data_version=DataVersion(manifest.version),
            metadata={
                **file_metadata(folder if folder.is_dir() else folder.parent),
                **timer.metadata(),
                "source": revision.kind,
                "location": revision.location,
                "revision": revision.revision,
                "file_count": len(described),
                "dagster/row_count": manifest.rows,
                "files": MetadataValue.md(
                    markdown_table(
                        ["file", "rows", "bytes", "sha256"],
                        [(f.name, f.rows, f.size, f.sha256) for f in described],
                    )
                ),
            },
        )


@asset(
    deps=[entity_sheets],
    group_name="raw",
    kinds={"csv"},
    code_version="1",
    metadata={"dagster/column_schema": table_schema(ENTITY_CSV_COLUMNS)},
)
def entity_csvs(
    context: AssetExecutionContext, laion_data: LaionData, entity_lists: EntityLists
) -> MaterializeResult:
    """The three name lists of the 2022 analysis (artists, celebrities, characters) as CSV
    files with a ``name`` column, copied into ``raw/entities/`` after a format check. Its data
    version is a hash of the three files, so an unchanged list re-counts nothing."""
    timer = StepTimer()
    layout = laion_data.layout
    with data_dir_lock(layout, context.log):
        metadata: dict[str, Any] = {}
        fetched = {}
        with retry_transient_errors(context, entity_lists):
            for kind in ENTITY_KINDS:
                data = entity_lists.read(kind)
                columns, rows = parse_entity_csv(data, entity_lists.display_url(kind))
                context.log.info(f"{kind}: {len(rows)} names, columns {columns}")
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
