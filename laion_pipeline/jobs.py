"""Jobs: named selections of the asset graph, each one Dagster run."""

from dagster import AssetSelection, DagsterInstance, define_asset_job, in_process_executor

from laion_pipeline.layout import ENTITY_KINDS
from laion_pipeline.partitions import SHARDS, range_tags, sync_partitions
from laion_pipeline.resources import LaionData
from laion_pipeline.shards import plan_of_staged_files

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


def stage_partition(key: str) -> tuple[str, str, bool]:
    """One run of stage_source_files for the partition `key`, in this process, recorded in
    the instance of `$DAGSTER_HOME` (`make run` calls it in worker processes); returns the
    key, the run id and whether it succeeded."""
    from laion_pipeline.definitions import defs  # the definitions import this module

    with DagsterInstance.get() as instance:
        result = defs.resolve_job_def("stage_source_files").execute_in_process(
            partition_key=key,
            instance=instance,
            raise_on_error=False,
            tags=MAKE_RUN_TAGS,
            run_config=CONSOLE_AT_INFO,
        )
    return key, result.run_id, result.success
