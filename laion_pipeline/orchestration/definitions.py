"""The one code location: every asset, check, job, schedule and sensor of the pipeline, and the
resources for this environment."""

from collections.abc import Mapping
from typing import Any

from dagster import Definitions, load_asset_checks_from_modules, load_assets_from_modules

from laion_pipeline.orchestration.assets import (
    analysis,
    checks,
    raw,
    search,
    serving,
    sources,
    staging,
)
from laion_pipeline.orchestration.jobs import (
    build_shards_job,
    catalog_job,
    entity_refresh_job,
    full_build_job,
    observe_sources_job,
    plan_shards_job,
    refresh_stale_job,
    stage_source_files_job,
)
from laion_pipeline.orchestration.resources import build_resources
from laion_pipeline.orchestration.schedules import weekly_refresh_schedule
from laion_pipeline.orchestration.sensors import refresh_stale_assets

ASSET_MODULES = [sources, raw, staging, search, serving, analysis]
all_assets = load_assets_from_modules(ASSET_MODULES)
all_asset_checks = load_asset_checks_from_modules([*ASSET_MODULES, checks])


def make_definitions(resources: Mapping[str, Any]) -> Definitions:
    """The pipeline with the given resources: `build_resources()` of this environment here,
    of a temporary one in the tests."""
    return Definitions(
        assets=all_assets,
        asset_checks=all_asset_checks,
        jobs=[
            stage_source_files_job,
            full_build_job,
            plan_shards_job,
            build_shards_job,
            catalog_job,
            entity_refresh_job,
            observe_sources_job,
            refresh_stale_job,
        ],
        schedules=[weekly_refresh_schedule],
        sensors=[refresh_stale_assets],
        resources=resources,
    )


defs = make_definitions(build_resources())
