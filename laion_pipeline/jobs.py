"""Jobs: named selections of the asset graph, each one Dagster run."""

from dagster import AssetSelection, DagsterInstance, define_asset_job, in_process_executor

from laion_pipeline.layout import ENTITY_KINDS

SOURCES = AssetSelection.assets("hf_dataset", "entity_sheets")
# The tag of the runs `make run` starts itself, which the refresh sensor leaves alone.
MAKE_RUN_TAGS = {"laion/started_by": "make run"}
# The per-file partitions; every other asset is one for the whole build.
SOURCE_FILES = AssetSelection.assets("source_files")
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
    "staging view, the search database, the publish and the analysis, with every check, in "
    "one run. `make run` runs it once the source files are staged.",
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


def stage_partition(key: str) -> tuple[str, str, bool]:
    """One run of stage_source_files for the partition ``key``, in this process, recorded in
    the instance of ``$DAGSTER_HOME`` (`make run` calls it in worker processes); returns the
    key, the run id and whether it succeeded."""
    from laion_pipeline.definitions import defs  # the definitions import this module

    with DagsterInstance.get() as instance:
        result = defs.resolve_job_def("stage_source_files").execute_in_process(
            partition_key=key, instance=instance, raise_on_error=False, tags=MAKE_RUN_TAGS
        )
    return key, result.run_id, result.success
