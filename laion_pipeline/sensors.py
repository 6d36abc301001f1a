"""Sensors: after the sources are observed, materialize what is stale, and only that."""

from dagster import (
    AssetKey,
    AssetSelection,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    RunStatusSensorContext,
    SkipReason,
    run_status_sensor,
)

# The stale-status resolver is what the Dagster UI uses for "stale"; it has no public API yet.
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES
from dagster._time import get_current_datetime

from laion_pipeline.jobs import (
    MAKE_RUN_TAGS,
    observe_sources_job,
    refresh_stale_job,
    shard_run_tags,
    stage_source_files_job,
)
from laion_pipeline.resources import LaionData

SOURCE_FILES_KEY = AssetKey("source_files")


def _resolver(instance: DagsterInstance, asset_graph: BaseAssetGraph) -> CachingStaleStatusResolver:
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=asset_graph,
    )
    return CachingStaleStatusResolver(instance, asset_graph, loading_context=view)


def stale_partitions(instance: DagsterInstance, asset_graph: BaseAssetGraph) -> list[str]:
    """The partitions of source_files (one per listed source file) never materialized, or
    whose file changed since (its observed version), in listing order."""
    resolver = _resolver(instance, asset_graph)
    keys = instance.get_dynamic_partitions("source_files")
    return [
        key
        for key in sorted(keys)
        if resolver.get_status(SOURCE_FILES_KEY, key) != StaleStatus.FRESH
    ]


def assets_to_refresh(instance: DagsterInstance, asset_graph: BaseAssetGraph) -> list[AssetKey]:
    """The assets that are missing or stale (their code version, or the data version of an
    input, changed since they were materialized), and everything downstream of them, in
    topological order."""
    resolver = _resolver(instance, asset_graph)

    def fresh(key: AssetKey) -> bool:
        partitions = asset_graph.get(key).partitions_def
        if partitions is None:
            return resolver.get_status(key) == StaleStatus.FRESH
        # A partitioned asset (a shard's tables) is fresh when each of its partitions is.
        keys = partitions.get_partition_keys(dynamic_partitions_store=instance)
        return bool(keys) and all(resolver.get_status(key, k) == StaleStatus.FRESH for k in keys)

    materializable = asset_graph.materializable_asset_keys - {SOURCE_FILES_KEY}
    roots = [key for key in materializable if not fresh(key)]
    if not roots:
        return []
    selected = AssetSelection.assets(*roots).downstream().resolve(asset_graph)
    return [key for key in asset_graph.toposorted_asset_keys if key in selected & materializable]


@run_status_sensor(
    name="refresh_stale_assets",
    run_status=DagsterRunStatus.SUCCESS,
    monitored_jobs=[observe_sources_job, stage_source_files_job],
    request_jobs=[stage_source_files_job, refresh_stale_job],
    minimum_interval_seconds=10,
    default_status=DefaultSensorStatus.RUNNING,
    description="When observe_sources succeeds (the weekly_refresh schedule, or by hand), "
    "starts a stage_source_files run for each source file that is new or changed; when the "
    "last of those succeeds (or none was needed), starts refresh_stale with the assets that "
    "are stale or missing and their downstream assets, over every shard the staged files "
    "make; skips when everything is up to date.",
)
def refresh_stale_assets(
    context: RunStatusSensorContext, laion_data: LaionData
) -> list[RunRequest] | SkipReason:
    instance, graph = context.instance, context.repository_def.asset_graph
    finished = context.dagster_run
    if all(finished.tags.get(k) == v for k, v in MAKE_RUN_TAGS.items()):
        return SkipReason("a run of `make run`, which stages and builds by itself")
    if finished.job_name == observe_sources_job.name:
        partitions = stale_partitions(instance, graph)
        if partitions:
            context.log.info(f"staging {len(partitions)} new or changed source files")
            return [
                RunRequest(
                    run_key=f"{finished.run_id}:{key}",
                    job_name=stage_source_files_job.name,
                    partition_key=key,
                )
                for key in partitions
            ]
    elif instance.get_runs(
        RunsFilter(job_name=stage_source_files_job.name, statuses=IN_PROGRESS_RUN_STATUSES),
        limit=1,
    ) or stale_partitions(instance, graph):
        return SkipReason("source files are still being staged")
    keys = assets_to_refresh(instance, graph)
    if not keys:
        return SkipReason("every asset is up to date with the sources and the code")
    context.log.info(f"refreshing {', '.join(k.to_user_string() for k in keys)}")
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
