"""The Dagster UI end to end: `dg dev` on 127.0.0.1 with a temporary DAGSTER_HOME, driven
through its GraphQL API the way the UI drives it: lineage, "Materialize all" with the
multiprocess executor, metadata, checks, an edited name list refreshed by the sensor, and the
schedule."""

import re
import shutil
import subprocess
import sys
import time

import pytest

from laion_pipeline.common.layout import ENTITY_KINDS, SAMPLE_DIR
from laion_pipeline_tests.conftest import CHROMIUM, EXPECTED_DEPENDENCIES, OUTPUT, needs_chromium
from laion_pipeline_tests.dagster_dev import LOCATION, REPO_ROOT, DagsterDev

ASSETS = """{ assetNodes {
    assetKey { path }
    dependencyKeys { path }
    isMaterializable
    groupName
    kinds
    opVersion
    staleStatus
    assetMaterializations(limit: 1) {
        runId
        metadataEntries {
            label
            ... on IntMetadataEntry { intValue }
            ... on FloatMetadataEntry { floatValue }
            ... on MarkdownMetadataEntry { mdStr }
            ... on UrlMetadataEntry { url }
            ... on TextMetadataEntry { text }
            ... on TableColumnLineageMetadataEntry { lineage { columnName } }
        }
    }
    assetChecksOrError { ... on AssetChecks { checks {
        name
        blocking
        executionForLatestMaterialization { status }
    } } }
} }"""


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    root = tmp_path_factory.mktemp("dagster_dev")
    lists = root / "lists"
    lists.mkdir()
    env = {"LAION_DATA_DIR": str(root / "data"), "LAION_SOURCE": "sample"}
    for kind in ENTITY_KINDS:
        shutil.copy(SAMPLE_DIR / f"{kind}.csv", lists / f"{kind}.csv")
        env[f"LAION_{kind.upper()}_CSV_URL"] = str(lists / f"{kind}.csv")
    server = DagsterDev(root / "dagster_home", env, root / "dagster_dev.log")
    try:
        server.wait_until_up()
        server.lists = lists
        server.data = root / "data"
        yield server
    finally:
        server.stop()
        assert not server.group_alive(), "a process of dg dev outlived stop()"


CHECK_RUNS = """{ assetNodes {
    assetKey { path }
    assetChecksOrError { ... on AssetChecks { checks {
        name
        executionForLatestMaterialization { runId status }
    } } }
} }"""


def assets(dev: DagsterDev, query: str = ASSETS) -> dict[str, dict]:
    return {"/".join(node["assetKey"]["path"]): node for node in dev.query(query)["assetNodes"]}


def metadata(node: dict) -> dict[str, dict]:
    return {entry["label"]: entry for entry in node["assetMaterializations"][0]["metadataEntries"]}


def test_the_ui_shows_the_asset_graph_of_the_design(dev):
    nodes = assets(dev)
    found = {
        name: {"/".join(dep["path"]) for dep in node["dependencyKeys"]}
        for name, node in nodes.items()
    }
    assert found == EXPECTED_DEPENDENCIES
    assert {node["groupName"] for node in nodes.values()} == {
        "sources",
        "raw",
        "staging",
        "search_database",
        "serving",
        "analysis",
    }
    for name, node in nodes.items():
        assert node["kinds"], name
        if node["isMaterializable"]:
            assert node["opVersion"], f"{name} has no code version"


def test_observed_sources_build_everything_then_an_edited_list_refreshes_only_what_depends_on_it(
    dev,
):
    nodes = assets(dev)
    checks = [
        {"assetKey": node["assetKey"], "name": check["name"]}
        for node in nodes.values()
        for check in node["assetChecksOrError"].get("checks", [])
    ]
    assert len(checks) == 12, checks

    # "Observe sources", as the weekly schedule does: the sensor stages every source file (a
    # run per partition), then refreshes everything else in one run.
    observed = dev.launch("observe_sources")
    assert dev.wait_for_run(observed) == "SUCCESS", dev.run_messages(observed)
    run_id = wait_for_sensor_run(dev, "refresh_stale_assets", "refresh_stale")
    assert dev.wait_for_run(run_id) == "SUCCESS", dev.run_messages(run_id)
    staged = sensor_runs(dev, "refresh_stale_assets", "stage_source_files")
    assert len(staged) == 7
    assert {dev.wait_for_run(r) for r in staged} == {"SUCCESS"}

    nodes = assets(dev)
    row_counts = {
        name: metadata(node)["dagster/row_count"]["intValue"]
        for name, node in nodes.items()
        if node["isMaterializable"] and name != "analysis"
    }
    assert row_counts["images"] == row_counts["images_fts"] == 7000
    assert row_counts["published_database"] == row_counts["staging_images"] == 7000
    assert row_counts["domains"] > 1000
    assert (row_counts["artists"], row_counts["celebrities"], row_counts["characters"]) == (
        40,
        35,
        36,
    )
    # The analysis: numbers the UI plots across builds, and its charts shown as images.
    analysis = metadata(nodes["analysis"])
    assert analysis["images"]["intValue"] == 7000
    assert 0 < analysis["named_share"]["floatValue"] < 1
    assert analysis["chart_top_domains"]["mdStr"].startswith("![top domains](data:image/png;")
    published = metadata(nodes["published_database"])
    assert published["dagster/uri"]["url"].startswith("file:///")
    release = published["release"]["text"]
    assert published["dagster/uri"]["url"].endswith(
        f"/published/releases/{release}/laion-aesthetic-6pls.db"
    )
    lineage = metadata(nodes["images"])["dagster/column_lineage"]["lineage"]
    assert {c["columnName"] for c in lineage} >= {"url", "text", "domain_id"}
    results = {
        (name, check["name"]): check["executionForLatestMaterialization"]["status"]
        for name, node in nodes.items()
        for check in node["assetChecksOrError"].get("checks", [])
    }
    assert set(results.values()) == {"SUCCEEDED"}, results
    assert {
        n["staleStatus"]
        for name, n in nodes.items()
        if n["isMaterializable"] and name != "source_files"
    } == {"FRESH"}

    # An edited name list, then "observe sources": the sensor refreshes what is stale.
    with (dev.lists / "celebrities.csv").open("a") as out:
        out.write("Zyxwv Qutsr,Invented\n")
    observed = dev.launch("observe_sources")
    assert dev.wait_for_run(observed) == "SUCCESS", dev.run_messages(observed)
    refresh = wait_for_sensor_run(dev, "refresh_stale_assets", "refresh_stale", after={run_id})
    assert dev.wait_for_run(refresh) == "SUCCESS", dev.run_messages(refresh)
    run = dev.query(
        """query($id: ID!) { runOrError(runId: $id) { ... on Run {
            jobName
            stepStats { stepKey status }
            assetMaterializations { assetKey { path } }
        } } }""",
        id=refresh,
    )["runOrError"]
    assert run["jobName"] == "refresh_stale"
    assert {s["stepKey"] for s in run["stepStats"]} == {
        "entity_csvs",
        "entity_tables",
        "published_database",
        *(f"{kind}_image_counts_in_range" for kind in ENTITY_KINDS),
        "published_database_published_database_matches_manifest",
        "analysis",
        "analysis_report_complete",
    }
    assert {"/".join(m["assetKey"]["path"]) for m in run["assetMaterializations"]} == {
        "entity_csvs",
        *ENTITY_KINDS,
        "published_database",
        "analysis",
    }
    nodes = assets(dev)
    assert metadata(nodes["celebrities"])["dagster/row_count"]["intValue"] == 36
    assert {
        n["staleStatus"]
        for name, n in nodes.items()
        if n["isMaterializable"] and name != "source_files"
    } == {"FRESH"}


def build_through_the_sensor(dev: DagsterDev) -> None:
    """What a user of the UI does first: "Observe sources"; the sensor stages the source files,
    then refreshes everything else."""
    observed = dev.launch("observe_sources")
    assert dev.wait_for_run(observed) == "SUCCESS", dev.run_messages(observed)
    run_id = wait_for_sensor_run(dev, "refresh_stale_assets", "refresh_stale")
    assert dev.wait_for_run(run_id) == "SUCCESS", dev.run_messages(run_id)


def sensor_runs(dev: DagsterDev, sensor: str, job: str) -> list[str]:
    """The runs of ``job`` that ``sensor`` started, newest first."""
    runs = dev.query(
        """query($sensor: String!) {
            runsOrError(filter: {tags: [{key: "dagster/sensor_name", value: $sensor}]}) {
                ... on Runs { results { runId jobName } }
            }
        }""",
        sensor=sensor,
    )["runsOrError"]["results"]
    return [r["runId"] for r in runs if r["jobName"] == job]


def wait_for_sensor_run(
    dev: DagsterDev, sensor: str, job: str, after: set[str] = frozenset(), timeout: float = 180
) -> str:
    """The newest run of ``job`` that ``sensor`` started, other than those ``after`` names."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [r for r in sensor_runs(dev, sensor, job) if r not in after]
        if runs:
            return runs[0]
        time.sleep(2)
    raise TimeoutError(f"the {sensor} sensor started no {job} run in {timeout} s")


def test_the_run_make_run_starts_is_listed_under_full_build(dev):
    done = subprocess.run(
        # --force: the data folder is built already, and make run would say "up to date".
        [sys.executable, "-m", "laion_pipeline", "run", "--force"],
        cwd=REPO_ROOT,
        env=dev.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run_id,) = re.findall(r"Run (\S+) of full_build: SUCCESS", done.stdout)
    # The job's Runs tab (and the Timeline) list the runs of the job in this code location.
    job = dev.query(
        """query($params: PipelineSelector!) { pipelineOrError(params: $params) {
            ... on Pipeline { runs { runId status } }
        } }""",
        params={**LOCATION, "pipelineName": "full_build"},
    )["pipelineOrError"]
    assert {"runId": run_id, "status": "SUCCESS"} in job["runs"]


def files_of(folder) -> dict[str, tuple[int, int, int]]:
    """Every file below ``folder`` (links not followed) with its inode, size and mtime."""
    return {
        str(path): (path.lstat().st_ino, path.lstat().st_size, path.lstat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
    }


def test_executing_the_checks_evaluates_them_and_rebuilds_nothing(dev):
    nodes = assets(dev)
    if not nodes["analysis"]["assetMaterializations"]:  # this test alone: build first
        build_through_the_sensor(dev)
        nodes = assets(dev)
    checks = [
        {"assetKey": node["assetKey"], "name": check["name"]}
        for node in nodes.values()
        for check in node["assetChecksOrError"].get("checks", [])
    ]
    before = files_of(dev.data)
    # What the UI's "Execute" button on checks launches: the asset job with the checks alone,
    # no asset. One run for all of them: no check relies on another's run (each reads its files).
    run_id = dev.launch("__ASSET_JOB", assetSelection=[], assetCheckSelection=checks)
    assert dev.wait_for_run(run_id) == "SUCCESS", dev.run_messages(run_id)
    executed = {
        (tuple(node["assetKey"]["path"]), check["name"]): check["executionForLatestMaterialization"]
        for node in assets(dev, CHECK_RUNS).values()
        for check in node["assetChecksOrError"].get("checks", [])
    }
    assert len(executed) == len(checks) == 12
    for key, execution in executed.items():
        assert execution == {"runId": run_id, "status": "SUCCEEDED"}, key
    assert files_of(dev.data) == before


def test_the_weekly_schedule_is_listed_and_starts_off(dev):
    selector = {"repositoryLocationName": "laion_pipeline", "repositoryName": "__repository__"}
    data = dev.query(
        """query($repo: RepositorySelector!) {
            schedulesOrError(repositorySelector: $repo) { ... on Schedules { results {
                name cronSchedule executionTimezone pipelineName scheduleState { status }
            } } }
            sensorsOrError(repositorySelector: $repo) { ... on Sensors { results {
                name sensorState { status }
            } } }
        }""",
        repo=selector,
    )
    assert data["schedulesOrError"]["results"] == [
        {
            "name": "weekly_refresh",
            "cronSchedule": "0 4 * * 1",
            "executionTimezone": "UTC",
            "pipelineName": "observe_sources",
            "scheduleState": {"status": "STOPPED"},
        }
    ]
    assert data["sensorsOrError"]["results"] == [
        {"name": "refresh_stale_assets", "sensorState": {"status": "RUNNING"}}
    ]


@needs_chromium
def test_the_analysis_charts_open_in_the_asset_page(dev):
    from playwright.sync_api import sync_playwright

    if not assets(dev)["analysis"]["assetMaterializations"]:  # this test alone: build first
        build_through_the_sensor(dev)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            # The UI may greet a new instance with a "join the community" dialog: skip it.
            skip = page.get_by_role("button", name="Skip")
            page.add_locator_handler(skip, lambda button: button.click())
            page.goto(f"{dev.url}/assets/analysis?view=events")
            row = page.locator("tr", has_text="chart_top_domains")
            row.get_by_text("Show Markdown").click()
            chart = page.get_by_role("img", name="top domains")
            # Dagster's markdown keeps the data: URI, and the PNG in it decodes.
            assert chart.evaluate("img => img.complete && img.naturalWidth") == 800
            page.wait_for_timeout(500)  # the dialog fades in
            page.screenshot(path=OUTPUT / "dagster-analysis-chart.png")
        finally:
            browser.close()
