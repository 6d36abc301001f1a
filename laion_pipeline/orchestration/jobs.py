"""Jobs: named selections of the asset graph, each one Dagster run."""

from collections.abc import Mapping
from typing import Any

from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetRecordsFilter,
    AssetSelection,
    DagsterInstance,
    define_asset_job,
    in_process_executor,
)

from laion_pipeline.build.shards import plan_of_staged_files
from laion_pipeline.build.state import DataFolderState, assess, list_hashes
from laion_pipeline.common.errors import ConfigurationError, SourceError
from laion_pipeline.common.layout import ENTITY_KINDS, DataLayout
from laion_pipeline.orchestration import partitions
from laion_pipeline.orchestration.partitions import SHARDS, range_tags, sync_partitions
from laion_pipeline.orchestration.resources import LaionData
from laion_pipeline.sources.inputs import SourceListing

SOURCES = AssetSelection.assets("hf_dataset", "entity_sheets")
# The tag of the runs `make run` starts itself, which the refresh sensor leaves alone.
MAKE_RUN_TAGS = {"laion/started_by": "make run"}
# The runs `make run` starts print their progress and results (INFO) on the terminal; each
# step's DEBUG events stay in the run's event log, which the UI shows.
CONSOLE_AT_INFO = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
# The per-file partitions; the per-shard ones; every other asset is one for the whole build.
SOURCE_FILES = AssetSelection.assets("source_files")
SHARD_ASSETS = AssetSelection.assets("images", "images_fts")
BUILD = AssetSelection.all() - SOURCE_FILES
# The graph is a chain that writes one file at a time, so one process runs a job's steps in
# order without a process start per step (3 s instead of 30 s on the sample). The UI's
# "Materialize all" uses Dagster's multiprocess executor, which the dependencies keep in order.
EXECUTOR = in_process_executor

stage_source_files_job = define_asset_job(
    "stage_source_files",
    selection=SOURCE_FILES,
    executor_def=EXECUTOR,
    description="Fetch, verify, filter and stage one source file: a run per partition of "
    "source_files (`make run` starts one for each file that is new or changed, "
    "`LAION_WORKERS` at a time; in the UI, a backfill).",
)

full_build_job = define_asset_job(
    "full_build",
    selection=BUILD | AssetSelection.assets("entity_sheets"),
    executor_def=EXECUTOR,
    description="From the staged files to the published release: the name lists, the "
    "staging view, every shard of the search database (LAION_WORKERS at a time), the "
    "catalog, the publish and the analysis, with every check, in one run over every "
    "partition of shards. `make run` runs it once the source files are staged.",
)

plan_shards_job = define_asset_job(
    "plan_shards",
    selection=AssetSelection.assets("staging_images"),
    executor_def=EXECUTOR,
    description="The staging view over the staged files and the plan of the shards (the "
    "partitions of images and images_fts): what `make run-on-workers` runs between the "
    "staging of the files and the build of the shards.",
)

build_shards_job = define_asset_job(
    "build_shards",
    selection=SHARD_ASSETS,
    executor_def=EXECUTOR,
    description="Build one shard's database (its images, caption index and domain table) on "
    "one core: a run per partition of shards, so a backfill of every shard spreads over "
    "the workers of the run launcher (Celery), each shard retried alone if it fails. Then "
    "`catalog` completes the release.",
)

catalog_job = define_asset_job(
    "catalog",
    selection=BUILD - SHARD_ASSETS - AssetSelection.assets("staging_images"),
    executor_def=EXECUTOR,
    description="Once every shard is built: the domain totals, the name counts over every "
    "shard, the publish of the release (catalog and shards in one switch) and its analysis.",
)

entity_refresh_job = define_asset_job(
    "entity_refresh",
    executor_def=EXECUTOR,
    selection=AssetSelection.assets("entity_sheets", "entity_csvs", *ENTITY_KINDS)
    | AssetSelection.assets("published_database", "analysis"),
    description="Fetch the name lists again, re-count every name in the existing caption "
    "index, publish and analyze: seconds, where a full build takes minutes.",
)

observe_sources_job = define_asset_job(
    "observe_sources",
    executor_def=EXECUTOR,
    selection=SOURCES,
    description="Look at the sources (the hub revision or the sample/local files, and the "
    "name lists) and record their versions. When it succeeds, the refresh_stale_assets "
    "sensor materializes whatever is now stale.",
)

refresh_stale_job = define_asset_job(
    "refresh_stale",
    executor_def=EXECUTOR,
    selection=BUILD,
    description="Materializes the assets it is given: the refresh_stale_assets sensor starts "
    "it with the stale assets and everything downstream of them.",
)


def shard_run_tags(instance: DagsterInstance, laion_data: LaionData) -> dict[str, str]:
    """The tags of a run over every shard the staged files make (the partitions of shards,
    made those now): what full_build and refresh_stale are launched with."""
    keys = [
        s.key
        for s in plan_of_staged_files(laion_data.layout, laion_data.profile, laion_data.shard_rows)
    ]
    sync_partitions(instance, SHARDS, keys)
    return range_tags(keys)


def data_folder_state(
    resources: Mapping[str, Any], listing: SourceListing | None = None
) -> DataFolderState:
    """What the data folder holds against the sources (``state.assess``): ``listing`` as
    observed, or the source's listing now (without a Dagster run); the name lists as the
    `entity_lists` resource reads them now."""
    laion_data: LaionData = resources["laion_data"]
    layout, profile = laion_data.layout, laion_data.profile
    if listing is None:
        listing = resources["parquet_source"].listing(layout, profile)
    try:
        lists: dict[str, str] | str = list_hashes(
            {kind: resources["entity_lists"].read(kind) for kind in ENTITY_KINDS}
        )
    except (ConfigurationError, SourceError, OSError) as error:
        # Said by the build's entity_csvs step, with its retries; unknown lists need a build.
        lists = f"the name lists cannot be read now ({error})"
    return assess(layout, listing, profile, lists, laion_data.shard_rows)


# What a release holds, asset by asset, for the history `record_history` writes.
RELEASE_ASSETS = (
    "entity_csvs",
    "staging_images",
    "domains",
    *ENTITY_KINDS,
    "published_database",
)
SHARD_ASSET_NAMES = ("images", "images_fts")
REPORTED = {"laion/reported_from": "data folder"}


def _never_materialized(instance: DagsterInstance, asset: str, partition: str | None) -> bool:
    records = AssetRecordsFilter(
        asset_key=AssetKey(asset), asset_partitions=[partition] if partition else None
    )
    return not instance.fetch_materializations(records, limit=1).records


def record_history(
    instance: DagsterInstance, layout: DataLayout, state: DataFolderState
) -> list[str]:
    """Make the instance's history show what the data folder holds, where it has none: the
    partitions of source_files (one per listed file) with a materialization reported for each
    staged file, and, for the release that stands, one for each asset it holds (a new or
    deleted instance otherwise shows "never materialized"). Returns what it reported."""
    sync_partitions(
        instance, partitions.SOURCE_FILES, [entry.key for entry in state.listing.entries]
    )
    reported = []

    def report(asset: str, partition: str | None, version: str, **metadata: Any) -> None:
        if _never_materialized(instance, asset, partition):
            instance.report_runless_asset_event(
                AssetMaterialization(
                    asset_key=asset,
                    partition=partition,
                    metadata={**REPORTED, **metadata},
                    tags={"dagster/data_version": version},
                )
            )
            reported.append(f"{asset}[{partition}]" if partition else asset)

    for f in state.staged:
        report("source_files", f.key, f.data_version, rows_kept=f.rows, rows_read=f.rows_read)
    if state.served is None or state.inputs is None:
        return reported
    shards = [key for key, _, _ in state.inputs.shards]
    sync_partitions(instance, SHARDS, shards)
    release, version = {"release": state.served}, state.inputs.digest[:24]
    for shard in shards:
        for asset in SHARD_ASSET_NAMES:
            report(asset, shard, version, **release)
    analyzed = (layout.release(state.served).report_dir / "index.html").exists()
    for asset in (*RELEASE_ASSETS, "analysis") if analyzed else RELEASE_ASSETS:
        report(asset, None, version, **release)
    return reported
