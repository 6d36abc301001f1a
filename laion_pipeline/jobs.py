"""Jobs: named selections of the asset graph."""

from dagster import AssetSelection, define_asset_job

build_everything_job = define_asset_job(
    "build_everything",
    selection=AssetSelection.all(),
    description="Fetch, stage, index and publish: every asset, in one run.",
)
