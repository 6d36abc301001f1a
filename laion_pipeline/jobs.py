"""Jobs: named selections of the asset graph, each one Dagster run."""

from dagster import AssetSelection, define_asset_job, in_process_executor

from laion_pipeline.layout import ENTITY_KINDS

SOURCES = AssetSelection.assets("hf_dataset", "entity_sheets")
# The graph is a chain that writes one file at a time, so one process runs a job's steps in
# order without a process start per step (3 s instead of 30 s on the sample). The UI's
# "Materialize all" uses Dagster's multiprocess executor, which the dependencies keep in order.
EXECUTOR = in_process_executor

full_build_job = define_asset_job(
    "full_build",
    selection=AssetSelection.all() | SOURCES,
    executor_def=EXECUTOR,
    description="Observe the sources, then fetch, stage, index and publish: every asset and "
    "check, in one run. `make run` runs this job.",
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
    selection=AssetSelection.all(),
    description="Materializes the assets it is given: the refresh_stale_assets sensor starts "
    "it with the stale assets and everything downstream of them.",
)
