"""Sensors: after the sources are observed, stage what the data folder lacks and build a release
when its inputs changed, and only then (the data folder decides: `laion_pipeline.build.state`)."""

from dagster import (
    AssetKey,
    DagsterRunStatus,
    DefaultSensorStatus,
    RepositoryDefinition,
    RunRequest,
    RunsFilter,
    RunStatusSensorContext,
    SkipReason,
    run_status_sensor,
)

from laion_pipeline.build.publish import build_is_release
from laion_pipeline.build.state import DataFolderState
from laion_pipeline.common.layout import ENTITY_KINDS, DataLayout
from laion_pipeline.orchestration.jobs import (
    BUILD,
    MAKE_RUN_TAGS,
    data_folder_state,
    observe_sources_job,
    refresh_stale_job,
    shard_run_tags,
    stage_source_files_job,
)
from laion_pipeline.orchestration.resources import EntityLists, LaionData
from laion_pipeline.sources.inputs import SourceListing

# A run that has not ended.
IN_PROGRESS = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]
# What a change of the name lists alone rebuilds: the lists, the counts, the release.
NAME_LIST_ASSETS = ("entity_csvs", *ENTITY_KINDS, "published_database", "analysis")


def assets_to_refresh(
    state: DataFolderState, layout: DataLayout, repository: RepositoryDefinition
) -> list[AssetKey]:
    """What a new release of ``state`` rebuilds, in the graph's order: with only the name
    lists changed and the build in the data folder the current release's, the lists, their
    counts, the publish and the analysis; else every asset after the staged files."""
    if (
        set(state.changed) == {"lists"}
        and state.current is not None
        and build_is_release(layout, layout.release(state.current))
    ):
        chosen = {AssetKey(name) for name in NAME_LIST_ASSETS}
    else:
        chosen = BUILD.resolve(repository.asset_graph)
    return [key for key in repository.asset_graph.toposorted_asset_keys if key in chosen]


@run_status_sensor(
    name="refresh_stale_assets",
    run_status=DagsterRunStatus.SUCCESS,
    monitored_jobs=[observe_sources_job, stage_source_files_job],
    request_jobs=[stage_source_files_job, refresh_stale_job],
    minimum_interval_seconds=10,
    default_status=DefaultSensorStatus.RUNNING,
    description="When observe_sources succeeds (the weekly_refresh schedule, or by hand), "
    "starts a stage_source_files run for each source file the data folder lacks (new, changed, "
    "missing or damaged); when the last of those succeeds (or none was needed), starts "
    "refresh_stale when the inputs of a release changed (the whole build; only the name "
    "tables and the publish when only the name lists did); skips when the current release "
    "holds exactly those inputs, or a rollback holds the release it serves.",
)
def refresh_stale_assets(
    context: RunStatusSensorContext, laion_data: LaionData, entity_lists: EntityLists
) -> list[RunRequest] | SkipReason:
    instance = context.instance
    finished = context.dagster_run
    if all(finished.tags.get(k) == v for k, v in MAKE_RUN_TAGS.items()):
        return SkipReason("a run of `make run`, which stages and builds by itself")
    resources = {"laion_data": laion_data, "entity_lists": entity_lists}
    state = data_folder_state(resources, SourceListing.read(laion_data.layout))
    if finished.job_name == observe_sources_job.name and state.to_stage:
        context.log.info(state.summary())
        return [
            RunRequest(
                run_key=f"{finished.run_id}:{key}",
                job_name=stage_source_files_job.name,
                partition_key=key,
            )
            for key in state.to_stage
        ]
    if state.to_stage or instance.get_runs(
        RunsFilter(job_name=stage_source_files_job.name, statuses=IN_PROGRESS),
        limit=1,
    ):
        return SkipReason(f"source files are still being staged ({state.summary()})")
    if state.up_to_date:
        return SkipReason(f"up to date: release {state.served} ({state.why})")
    keys = assets_to_refresh(state, laion_data.layout, context.repository_def)
    context.log.info(f"a new release: {state.why}")
    # One refresh per observation, however many staging runs end at about the same time.
    (observation,) = instance.get_runs(
        RunsFilter(job_name=observe_sources_job.name, statuses=[DagsterRunStatus.SUCCESS]),
        limit=1,
    ) or [finished]
    return [
        RunRequest(
            run_key=f"refresh:{observation.run_id}",
            job_name=refresh_stale_job.name,
            asset_selection=keys,
            tags=shard_run_tags(instance, laion_data),
        )
    ]
