"""Sensors: after the sources are observed, materialize what is stale, and only that."""

from dagster import (
    AssetKey,
    AssetSelection,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunStatusSensorContext,
    SkipReason,
    run_status_sensor,
)

# The stale-status resolver is what the Dagster UI uses for "stale"; it has no public API yet.
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._time import get_current_datetime

from laion_pipeline.jobs import observe_sources_job, refresh_stale_job


def assets_to_refresh(instance: DagsterInstance, asset_graph: BaseAssetGraph) -> list[AssetKey]:
    """The assets that are missing or stale (their code version, or the data version of an
    input, changed since they were materialized), and everything downstream of them, in
    topological order."""
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=asset_graph,
    )
    resolver = CachingStaleStatusResolver(instance, asset_graph, loading_context=view)
    materializable = asset_graph.materializable_asset_keys
    roots = [key for key in materializable if resolver.get_status(key) != StaleStatus.FRESH]
    if not roots:
        return []
    selected = AssetSelection.assets(*roots).downstream().resolve(asset_graph)
    return [key for key in asset_graph.toposorted_asset_keys if key in selected & materializable]


@run_status_sensor(
    name="refresh_stale_assets",
    run_status=DagsterRunStatus.SUCCESS,
    monitored_jobs=[observe_sources_job],
    request_job=refresh_stale_job,
    minimum_interval_seconds=10,
    default_status=DefaultSensorStatus.RUNNING,
    description="When observe_sources succeeds (the weekly_refresh schedule, or by hand), "
    "starts refresh_stale with the assets that are stale or missing and their downstream "
    "assets; skips when everything is up to date.",
)
def refresh_stale_assets(context: RunStatusSensorContext) -> RunRequest | SkipReason:
    keys = assets_to_refresh(context.instance, context.repository_def.asset_graph)
    if not keys:
        return SkipReason("every asset is up to date with the sources and the code")
    context.log.info(f"refreshing {', '.join(k.to_user_string() for k in keys)}")
    return RunRequest(run_key=context.dagster_run.run_id, asset_selection=keys)
