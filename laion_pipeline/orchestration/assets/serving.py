"""Serving layer: the checked database and its Datasette files, published as a release."""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from laion_pipeline.build.publish import manifest_problems, publish
from laion_pipeline.build.staging import remove_unlisted_staged_files
from laion_pipeline.common.layout import ENTITY_KINDS
from laion_pipeline.common.schema import IMAGE_COLUMNS
from laion_pipeline.common.versions import CODE_VERSIONS
from laion_pipeline.orchestration.metadata import StepTimer, file_metadata, table_schema
from laion_pipeline.orchestration.resources import LaionData
from laion_pipeline.releases.lock import data_dir_lock
from laion_pipeline.sources.inputs import SourceListing


@asset(
    deps=["images_fts", *ENTITY_KINDS],
    group_name="serving",
    kinds={"sqlite", "datasette"},
    code_version=CODE_VERSIONS["published_database"],
    metadata={"dagster/column_schema": table_schema(IMAGE_COLUMNS)},
)
def published_database(context: AssetExecutionContext, laion_data: LaionData) -> MaterializeResult:
    """The database Datasette serves, `published/current/<database>.db` (named by the
    profile: `laion-aesthetic-6pls.db` for the 2022 set; tables
    images, images_fts, domain, artists, celebrities, characters; the schema shown is of
    images): the checked, compact build database as a new release in
    `published/releases/<id>/`, with `metadata.json`, `inspect.json` and `manifest.json` (row
    counts, sha256, source revision, build time) beside it, made current by one atomic switch;
    the release it replaces stays as `published/previous` for `make rollback`."""
    timer = StepTimer()
    layout = laion_data.layout
    with data_dir_lock(layout, context.log):
        manifest = publish(layout, context.log)
        # Only once a release no longer needs them: the staged files of unlisted sources.
        for gone in remove_unlisted_staged_files(layout, SourceListing.read(layout)):
            context.log.info(f"removed {gone.name}: its source file is no longer listed")
        return MaterializeResult(
            metadata={
                **file_metadata(layout.release(manifest["release"]).db),
                **timer.metadata(),
                "dagster/row_count": manifest["row_counts"]["images"],
                "sha256": manifest["sha256"],
                "row_counts": MetadataValue.json(manifest["row_counts"]),
                "source_revision": manifest["source"]["revision"],
                "release": manifest["release"],
                "serve": MetadataValue.md(f"`make serve` serves `{layout.current.folder}`"),
            }
        )


@asset_check(
    asset=published_database,
    blocking=True,
    description="The published file passes SQLite's PRAGMA integrity_check, and its sha256 "
    "and row counts match manifest.json. Reads the published file only, so it can run while "
    "Datasette serves it. A shard file still the one its build sealed (same inode, size and "
    "modification time; its build ran both checks) is not read again.",
)
def published_database_matches_manifest(
    context: AssetCheckExecutionContext, laion_data: LaionData
) -> AssetCheckResult:
    timer = StepTimer()
    problems = manifest_problems(laion_data.layout, context.log)
    return AssetCheckResult(
        passed=not problems,
        description="; ".join(problems) or None,
        metadata=timer.metadata(),
    )
