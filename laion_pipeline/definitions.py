"""The one code location: every asset of the pipeline and the resources for this environment."""

from dagster import Definitions, load_assets_from_modules

from laion_pipeline.assets import raw, search, serving, sources, staging
from laion_pipeline.jobs import build_everything_job
from laion_pipeline.resources import build_resources

all_assets = load_assets_from_modules([sources, raw, staging, search, serving])

defs = Definitions(
    assets=all_assets,
    jobs=[build_everything_job],
    resources=build_resources(),
)
