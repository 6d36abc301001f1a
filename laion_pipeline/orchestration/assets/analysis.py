"""Analysis layer: the `analysis` asset, the report of each release (the numbers and charts
come from `laion_pipeline.analysis.findings`)."""

import base64

from dagster import (
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster_duckdb import DuckDBResource

from laion_pipeline.analysis.findings import NUMBERS, analyze, charts, publish_report
from laion_pipeline.analysis.report import percent
from laion_pipeline.common.versions import CODE_VERSIONS
from laion_pipeline.orchestration.assets.serving import published_database
from laion_pipeline.orchestration.assets.staging import staging_images
from laion_pipeline.orchestration.metadata import (
    StepTimer,
    file_metadata,
    markdown_table,
    table_schema,
)
from laion_pipeline.orchestration.resources import LaionData
from laion_pipeline.releases.lock import data_dir_lock
from laion_pipeline.releases.switch import current_release

# Shares and means as the UI shows and plots them: 0.0849, not 0.08485714285714285.
METADATA_DECIMALS = 4


def _chart_markdown(title: str, png: bytes) -> MetadataValue:
    # The UI renders markdown images; a data: URI keeps the chart inside the event log.
    return MetadataValue.md(f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})")


@asset(
    deps=[published_database, staging_images],
    group_name="analysis",
    kinds={"duckdb", "sqlite", "html"},
    code_version=CODE_VERSIONS["analysis"],
    metadata={"dagster/column_schema": table_schema(NUMBERS)},
)
def analysis(
    context: AssetExecutionContext, laion_data: LaionData, staging_duckdb: DuckDBResource
) -> MaterializeResult:
    """The findings of the 2022 analysis for the published database: the top domains and
    their share of all images, the most named artists, celebrities and characters, the share of
    captions naming anyone listed, and the spread of aesthetic scores, sizes and unsafe and
    watermark probabilities. Published in the release it describes,
    `published/current/report/` (`index.html`, the charts as PNG, `analysis.json`), which
    Datasette links from its index page; the shares are numeric metadata, so the UI plots them
    across builds."""
    timer = StepTimer()
    layout = laion_data.layout
    with data_dir_lock(layout, context.log):
        release = current_release(layout)
        with staging_duckdb.get_connection() as duck:
            result = analyze(layout, release, duck, context.log)
        context.log.info("drawing the charts and writing the report")
        pngs = charts(result)
        publish_report(release, result, pngs)
    context.log.info(f"report published: {release.report_dir / 'index.html'}")
    top = [(d["domain"], d["images"], percent(d["share"])) for d in result["top_domains"]]
    return MaterializeResult(
        metadata={
            **file_metadata(release.report_dir),
            "dagster/uri": MetadataValue.url((release.report_dir / "index.html").as_uri()),
            "release": release.folder.name,
            **timer.metadata(),
            **{
                name: MetadataValue.int(result[name])
                if sql_type == "INTEGER"
                else MetadataValue.float(round(result[name] or 0.0, METADATA_DECIMALS))
                for name, (sql_type, _) in NUMBERS.items()
            },
            "top_domains": MetadataValue.md(markdown_table(["domain", "images", "share"], top)),
            **{
                f"chart_{name}": _chart_markdown(name.replace("_", " "), png)
                for name, png in pngs.items()
            },
        }
    )
