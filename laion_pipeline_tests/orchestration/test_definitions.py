"""The code location loads and has the asset graph the README describes ("What gets built")."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, DynamicPartitionsDefinition

from laion_pipeline.definitions import defs
from laion_pipeline_tests.conftest import EXPECTED_DEPENDENCIES


@pytest.mark.fast
def test_definitions_load():
    defs.validate_loadable(defs)
    assert defs.resolve_job_def("full_build") is not None


@pytest.mark.fast
def test_asset_graph_matches_the_design():
    graph = defs.resolve_asset_graph()
    found = {
        key.to_user_string(): {dep.to_user_string() for dep in graph.get(key).parent_keys}
        for key in graph.get_all_asset_keys()
    }
    assert found == EXPECTED_DEPENDENCIES


@pytest.mark.fast
def test_sources_are_observable_and_everything_else_materializable():
    graph = defs.resolve_asset_graph()
    for name in ("hf_dataset", "entity_sheets"):
        assert graph.get(AssetKey(name)).is_observable
        assert not graph.get(AssetKey(name)).is_materializable
    for name in set(EXPECTED_DEPENDENCIES) - {"hf_dataset", "entity_sheets"}:
        assert graph.get(AssetKey(name)).is_materializable, name


@pytest.mark.fast
def test_every_asset_says_what_its_data_is():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert graph.get(key).description, f"{key.to_user_string()} has no description"


@pytest.mark.fast
def test_what_the_ui_shows_is_markdown_not_rst():
    graph = defs.resolve_asset_graph()
    shown = {key.to_user_string(): graph.get(key).description for key in graph.get_all_asset_keys()}
    for check in graph.asset_check_keys:
        shown[check.to_user_string()] = graph.get(check).description
    for name, resource in defs.resources.items():
        shown[f"resource {name}"] = type(resource).__doc__
    for job in defs.resolve_all_job_defs():
        shown[f"job {job.name}"] = job.description
    rst = {name: text for name, text in shown.items() if text and "``" in text}
    assert rst == {}
    help_text = subprocess.run(
        [sys.executable, "-m", "laion_pipeline", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "``" not in help_text and "\n- `run` observes" in help_text


@pytest.mark.fast
def test_tables_publish_their_column_schema():
    graph = defs.resolve_asset_graph()
    schema = graph.get(AssetKey("images")).metadata["dagster/column_schema"]
    assert [c.name for c in schema.columns][-2:] == ["domain_id", "url_key"]
    assert len(schema.columns) == 12


KINDS = {"huggingface", "parquet", "duckdb", "sqlite", "csv", "datasette", "html"}
GROUPS = {
    "sources": {"hf_dataset", "entity_sheets"},
    "raw": {"source_files", "entity_csvs"},
    "staging": {"staging_images"},
    "search_database": {"domains", "images", "images_fts", "artists", "celebrities", "characters"},
    "serving": {"published_database"},
    "analysis": {"analysis"},
}


@pytest.mark.fast
def test_every_asset_has_a_layer_kinds_a_code_version_and_a_column_schema():
    graph = defs.resolve_asset_graph()
    groups: dict[str, set[str]] = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        groups.setdefault(node.group_name, set()).add(name)
        assert node.kinds, f"{name} has no kinds"
        assert node.kinds <= KINDS
        assert "dagster/column_schema" in node.metadata, f"{name} has no column schema"
        if node.is_materializable:
            assert node.code_version, f"{name} has no code version"
    assert groups == GROUPS


PARTITIONS = {"hf_dataset": "source_files", "source_files": "source_files"}
PARTITIONS |= {"images": "shards", "images_fts": "shards"}


@pytest.mark.fast
def test_one_partition_per_source_file_and_one_per_shard():
    graph = defs.resolve_asset_graph()
    for name, partitions_name in PARTITIONS.items():
        partitions = graph.get(AssetKey(name)).partitions_def
        assert isinstance(partitions, DynamicPartitionsDefinition), name
        assert partitions.name == partitions_name
    for name in set(EXPECTED_DEPENDENCIES) - set(PARTITIONS):
        assert graph.get(AssetKey(name)).partitions_def is None, name
    assert defs.resolve_job_def("stage_source_files").partitions_def.name == "source_files"
    for job in ("build_shards", "full_build", "refresh_stale"):
        assert defs.resolve_job_def(job).partitions_def.name == "shards", job
    assert defs.resolve_job_def("catalog").partitions_def is None


@pytest.mark.fast
def test_jobs_schedule_and_sensor():
    assert {job.name for job in defs.resolve_all_job_defs()} >= {
        "stage_source_files",
        "full_build",
        "plan_shards",
        "build_shards",
        "catalog",
        "entity_refresh",
        "observe_sources",
        "refresh_stale",
    }
    schedule = defs.resolve_schedule_def("weekly_refresh")
    assert schedule.cron_schedule == "0 4 * * 1"
    assert schedule.job_name == "observe_sources"
    assert defs.resolve_sensor_def("refresh_stale_assets") is not None


def test_dg_check_defs_loads_the_project():
    """`dg check defs`, the project's definitions as the dg command line loads them."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dg"), "check", "defs"],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "VIRTUAL_ENV": str(Path(sys.executable).parents[1])},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All definitions loaded successfully." in done.stdout + done.stderr
    assert "superseded" not in done.stdout + done.stderr


@pytest.mark.fast
def test_only_orchestration_loads_dagster_and_only_serve_loads_datasette():
    """The work (sources, build, releases, search, analysis) is plain functions a test or a
    command calls without Dagster or Datasette; at run time too, lazy imports included, which
    the layers contract (`make lint`) reads only from the source."""
    package = Path(__file__).resolve().parents[2] / "laion_pipeline"
    core = sorted(
        ".".join(("laion_pipeline", *path.relative_to(package).with_suffix("").parts))
        for layer in ("common", "sources", "search", "releases", "build", "analysis")
        for path in (package / layer).glob("*.py")
        if path.stem != "__init__"
    )
    assert {"laion_pipeline.build.publish", "laion_pipeline.build.tables"} <= set(core)
    code = (
        f"import sys\nfor m in {core!r}: __import__(m)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'dagster', 'dagster_celery', 'dagster_duckdb', 'datasette'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.fast
def test_dagster_internals_are_imported_in_one_module_only():
    """Dagster's private modules (`dagster._...`) change without notice between releases: the
    package imports them in `orchestration/engine.py` alone (test_engine.py exercises what it
    uses)."""
    package = Path(__file__).resolve().parents[2] / "laion_pipeline"
    private = re.compile(r"^\s*(from|import) dagster\._", re.MULTILINE)
    importing = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if private.search(path.read_text(encoding="utf-8"))
    )
    assert importing == ["orchestration/engine.py"]
