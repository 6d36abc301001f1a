"""Schedules: when the pipeline looks for new data by itself."""

from dagster import DefaultScheduleStatus, ScheduleDefinition

from laion_pipeline.orchestration.jobs import observe_sources_job

# Mondays at 04:00 UTC. Off until turned on (UI: Automation, or
# `dagster schedule start weekly_refresh`), so a fresh checkout never downloads by itself.
weekly_refresh_schedule = ScheduleDefinition(
    name="weekly_refresh",
    job=observe_sources_job,
    cron_schedule="0 4 * * 1",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Every Monday: observe the sources; the refresh_stale_assets sensor then "
    "rebuilds only what changed (a new hub revision: everything; an edited name list: the "
    "name tables and the published database).",
)
