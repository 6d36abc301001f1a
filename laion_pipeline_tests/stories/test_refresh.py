"""Incremental refresh: the data folder, against the observed sources and the code versions,
decides what is stale, and a refresh rebuilds only that. Runs the real jobs, sensor and checks
in process."""

import shutil
import sqlite3

import pytest
from dagster import DagsterInstance, RunRequest

from laion_pipeline.common import versions
from laion_pipeline.common.layout import ENTITY_KINDS, SAMPLE_DIR, DataLayout
from laion_pipeline.orchestration.definitions import make_definitions
from laion_pipeline.orchestration.jobs import BUILD, data_folder_state, shard_run_tags
from laion_pipeline.orchestration.resources import build_resources
from laion_pipeline.sources.inputs import SourceListing
from laion_pipeline_tests.conftest import evaluate_sensor

ENTITY_REFRESH = [
    "entity_csvs",
    "artists",
    "celebrities",
    "characters",
    "published_database",
    "analysis",
]


@pytest.fixture
def pipeline(tmp_path):
    """The real definitions over a data directory and name lists of this test's own."""
    lists = tmp_path / "lists"
    lists.mkdir()
    env = {"LAION_DATA_DIR": str(tmp_path / "data")}
    for kind in ENTITY_KINDS:
        shutil.copy(SAMPLE_DIR / f"{kind}.csv", lists / f"{kind}.csv")
        env[f"LAION_{kind.upper()}_CSV_URL"] = str(lists / f"{kind}.csv")
    defs = make_definitions(build_resources(env))
    with DagsterInstance.ephemeral() as instance:
        yield defs, instance, lists, DataLayout((tmp_path / "data").resolve())


def names(keys) -> list[str]:
    return [key.to_user_string() for key in keys]


def materialized(result) -> set[str]:
    return {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}


def state_of(defs, layout):
    """What the data folder holds against the observed listing and the name lists now."""
    return data_folder_state(defs.resources, SourceListing.read(layout))


def run_full_build(defs, instance):
    """What `make run` does, in process: observe the sources, stage each source file the data
    folder lacks (a run of stage_source_files each), then run full_build."""
    assert defs.resolve_job_def("observe_sources").execute_in_process(instance=instance).success
    layout = defs.resources["laion_data"].layout
    for key in state_of(defs, layout).to_stage:
        staged = defs.resolve_job_def("stage_source_files").execute_in_process(
            instance=instance, partition_key=key
        )
        assert staged.success
    tags = shard_run_tags(instance, defs.resources["laion_data"])
    return defs.resolve_job_def("full_build").execute_in_process(instance=instance, tags=tags)


def test_full_build_observes_the_sources_and_passes_every_check(pipeline):
    defs, instance, _, layout = pipeline
    result = run_full_build(defs, instance)
    assert result.success
    observed = {e.asset_key.to_user_string() for e in result.get_asset_observation_events()}
    assert observed == {"entity_sheets"}  # hf_dataset is observed before the files are staged
    evaluations = result.get_asset_check_evaluations()
    assert {(e.asset_key.to_user_string(), e.check_name) for e in evaluations} == {
        ("staging_images", "laion_columns_and_types"),
        ("staging_images", "values_within_rules"),
        ("domains", "few_images_without_domain"),
        ("images", "domain_ids_valid"),
        ("images", "few_null_captions"),
        ("images_fts", "row_counts_match"),
        ("images_fts", "caption_index_matches_captions"),
        *((kind, "image_counts_in_range") for kind in ENTITY_KINDS),
        ("published_database", "published_database_matches_manifest"),
        ("analysis", "report_complete"),
    }
    assert all(e.passed for e in evaluations)
    assert layout.published_db.exists()
    assert state_of(defs, layout).up_to_date


def test_an_edited_name_list_refreshes_only_the_name_tables_and_the_publish(pipeline):
    defs, instance, lists, layout = pipeline
    assert run_full_build(defs, instance).success
    published_before = layout.published_db.stat().st_ino

    with (lists / "celebrities.csv").open("a") as out:
        out.write("Zyxwv Qutsr,Invented\n")
    # The data folder's release names the lists it was built from: only they changed.
    state = state_of(defs, layout)
    assert not state.up_to_date and state.changed == ("lists",) and not state.to_stage
    observation = defs.resolve_job_def("observe_sources").execute_in_process(instance=instance)
    assert observation.success

    # The sensor turns the successful observation into a run of exactly those assets.
    (request,) = evaluate_sensor(defs, instance, observation)
    assert isinstance(request, RunRequest)
    assert names(request.asset_selection) == ENTITY_REFRESH

    refresh = defs.resolve_job_def("refresh_stale").execute_in_process(
        instance=instance, asset_selection=request.asset_selection
    )
    assert refresh.success
    assert materialized(refresh) == set(ENTITY_REFRESH)
    steps = {e.step_key for e in refresh.all_events if e.event_type_value == "STEP_SUCCESS"}
    assert steps == {
        "entity_csvs",
        "entity_tables",
        "published_database",
        *(f"{kind}_image_counts_in_range" for kind in ENTITY_KINDS),
        "published_database_published_database_matches_manifest",
        "analysis",
        "analysis_report_complete",
    }
    assert layout.published_db.stat().st_ino != published_before
    conn = sqlite3.connect(layout.published_db)
    added = conn.execute("SELECT count(*) FROM celebrities WHERE name = 'Zyxwv Qutsr'")
    assert added.fetchone() == (1,)
    conn.close()
    assert state_of(defs, layout).up_to_date


def test_an_observation_with_nothing_new_refreshes_nothing(pipeline):
    defs, instance, _, _ = pipeline
    assert run_full_build(defs, instance).success
    observation = defs.resolve_job_def("observe_sources").execute_in_process(instance=instance)
    skipped = evaluate_sensor(defs, instance, observation)
    assert not isinstance(skipped, RunRequest)
    assert "up to date" in skipped.skip_message


def test_the_entity_refresh_job_rebuilds_the_lists_and_publishes(pipeline):
    defs, instance, lists, layout = pipeline
    assert run_full_build(defs, instance).success
    (lists / "artists.csv").write_text("name\nKinkade\n")
    result = defs.resolve_job_def("entity_refresh").execute_in_process(instance=instance)
    assert result.success
    assert materialized(result) == set(ENTITY_REFRESH)
    manifest = layout.manifest_json.read_text()
    assert '"artists": 1' in manifest


def test_a_new_code_version_rebuilds_the_release(pipeline, monkeypatch):
    defs, instance, _, layout = pipeline
    assert run_full_build(defs, instance).success
    monkeypatch.setitem(versions.CODE_VERSIONS, "images", "changed")
    state = state_of(defs, layout)
    assert not state.up_to_date and state.changed == ("code_version",)
    assert "the build's code version" in state.why
    observation = defs.resolve_job_def("observe_sources").execute_in_process(instance=instance)
    (request,) = evaluate_sensor(defs, instance, observation)
    graph = defs.resolve_asset_graph()
    assert set(request.asset_selection) == BUILD.resolve(graph)
