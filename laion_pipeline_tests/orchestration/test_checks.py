"""Asset checks and step retries: a failed blocking check stops the steps after it and
publishes nothing; a warning lets the build go on; network steps retry transient trouble
only."""

import json
import sqlite3

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import AssetCheckSeverity, build_asset_check_context
from pytest_httpserver import HTTPServer

from laion_pipeline.build.build_db import open_build_db
from laion_pipeline.build.fts import FTS_DDL, caption_index_mismatches
from laion_pipeline.build.publish import manifest_problems
from laion_pipeline.common.layout import SAMPLE_DIR, DataLayout
from laion_pipeline.common.schema import LAION_ARROW_SCHEMA
from laion_pipeline.orchestration.assets.checks import caption_index_matches_captions
from laion_pipeline.orchestration.resources import EntityLists, LaionData
from laion_pipeline_tests.conftest import build, failure_text, local, row, write


def evaluations(result) -> dict[tuple[str, str], object]:
    return {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in result.get_asset_check_evaluations()
    }


def materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_a_retyped_column_fails_its_file_and_stops_the_build(tmp_path):
    table = pa.Table.from_pylist([row(i) for i in range(20)], LAION_ARROW_SCHEMA)
    table = table.set_column(1, "TEXT", pa.array(range(20), pa.int64()))  # captions as numbers
    (tmp_path / "parquet").mkdir()
    pq.write_table(table, tmp_path / "parquet" / "a.parquet")
    result = build(tmp_path / "data", local(tmp_path / "parquet"), raise_on_error=False)
    assert not result.success
    assert "a.parquet: TEXT is BIGINT (text needs text)" in failure_text(result)
    assert materialized(result) == set()
    assert not DataLayout(tmp_path / "data").published_db.exists()


def test_the_schema_check_passes_on_the_staged_files(sample_build):
    from laion_pipeline.orchestration.assets.checks import laion_columns_and_types
    from laion_pipeline.orchestration.resources import build_resources

    resources = build_resources({"LAION_DATA_DIR": str(sample_build.root)})
    result = laion_columns_and_types(resources["laion_data"], resources["staging_duckdb"])
    assert result.passed


def test_many_empty_captions_warn_but_the_build_goes_on(tmp_path):
    captions = [None if i % 4 == 0 else f"caption {i}" for i in range(40)]
    write(tmp_path / "parquet" / "a.parquet", [row(i, TEXT=t) for i, t in enumerate(captions)])
    result = build(tmp_path / "data", local(tmp_path / "parquet"))
    assert result.success
    check = evaluations(result)[("images", "few_null_captions")]
    assert not check.passed
    assert check.severity == AssetCheckSeverity.WARN
    assert check.description.startswith("10 of 40 images (25.00%) have no caption")
    assert DataLayout(tmp_path / "data").published_db.exists()
    assert all(e.passed for key, e in evaluations(result).items() if key[1] != "few_null_captions")


def test_the_published_check_finds_a_file_that_does_not_match_its_manifest(tmp_path):
    assert build(tmp_path).success
    layout = DataLayout(tmp_path.resolve())
    assert manifest_problems(layout) == []
    manifest = json.loads(layout.manifest_json.read_text())
    manifest["row_counts"]["artists"] += 1
    manifest["sha256"] = "0" * 64
    layout.manifest_json.write_text(json.dumps(manifest))
    problems = manifest_problems(layout)
    assert any(p.startswith("laion-aesthetic-6pls.db: sha256 is ") for p in problems)
    assert any(p.startswith("artists has 40 rows, the manifest says 41") for p in problems)
    layout.manifest_json.unlink()
    assert "materialize published_database" in manifest_problems(layout)[0]


def sheets(httpserver: HTTPServer, path: str, **retries) -> EntityLists:
    bundled = {f"{k}_csv_url": str(SAMPLE_DIR / f"{k}.csv") for k in ("celebrities", "characters")}
    return EntityLists(
        artists_csv_url=httpserver.url_for(path),
        **bundled,
        attempts=1,
        backoff_seconds=0.01,
        **retries,
    )


def retries(result) -> list[str]:
    return [e.step_key for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


def test_a_sheet_server_that_keeps_failing_is_retried_with_backoff(tmp_path, httpserver):
    httpserver.expect_request("/down").respond_with_data("busy", status=503)
    lists = sheets(httpserver, "/down", step_retries=2, step_retry_seconds=0.01)
    result = build(tmp_path, resources={"entity_lists": lists}, raise_on_error=False)
    assert retries(result) == ["entity_csvs", "entity_csvs"]
    assert "answered HTTP 503" in failure_text(result)


def test_a_sheet_that_recovers_succeeds_on_the_step_retry(tmp_path, httpserver):
    data = (SAMPLE_DIR / "artists.csv").read_bytes()
    httpserver.expect_ordered_request("/flaky").respond_with_data("busy", status=503)
    httpserver.expect_ordered_request("/flaky").respond_with_data(data, content_type="text/csv")
    lists = sheets(httpserver, "/flaky", step_retries=3, step_retry_seconds=0.01)
    result = build(tmp_path, resources={"entity_lists": lists})
    assert result.success
    assert retries(result) == ["entity_csvs"]


def test_a_missing_sheet_is_not_retried(tmp_path, httpserver):
    httpserver.expect_request("/gone").respond_with_data("nope", status=404)
    lists = sheets(httpserver, "/gone", step_retries=3, step_retry_seconds=0.01)
    result = build(tmp_path, resources={"entity_lists": lists}, raise_on_error=False)
    assert retries(result) == []
    assert "answered HTTP 404" in failure_text(result)


ODD_CAPTIONS = [
    "a painting of a lighthouse by the sea",
    None,
    "",
    "!!! ... ???",
    "before\x00after the NUL",
    "x" * 5000,  # one long word: no phrase, the word count alone
    "word " * 2000,
    'quotes "inside" and AND OR NOT NEAR * - :',
    "東京 タワー",
]


def caption_db(captions: list[str | None]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE images (text TEXT)")
    conn.execute(FTS_DDL.replace("main.", ""))
    conn.executemany("INSERT INTO images (text) VALUES (?)", [(c,) for c in captions])
    conn.execute("INSERT INTO images_fts (rowid, text) SELECT rowid, text FROM images")
    return conn


@pytest.mark.fast
def test_the_caption_index_check_passes_an_index_of_these_captions_whatever_they_hold():
    conn = caption_db(ODD_CAPTIONS * 3)
    assert caption_index_mismatches(conn, samples=1000) == (len(ODD_CAPTIONS) * 3, [])


@pytest.mark.fast
def test_the_caption_index_check_finds_captions_the_index_was_not_built_from():
    conn = caption_db(ODD_CAPTIONS)
    # The index says what it was built from; images now hold other captions (external content).
    conn.execute("UPDATE images SET text = 'a photo of a cat' WHERE rowid = 1")
    conn.execute("UPDATE images SET text = 'a painting of a lighthouse' WHERE rowid = 2")
    conn.execute("UPDATE images SET text = 'word ' || text WHERE rowid = 7")
    conn.execute("UPDATE images SET text = '大阪 タワー' WHERE rowid = 9")  # as many words
    assert caption_index_mismatches(conn, samples=1000) == (len(ODD_CAPTIONS), [1, 2, 7, 9])


def test_a_build_whose_index_holds_other_captions_fails_the_blocking_check(tmp_path):
    data = tmp_path / "data"
    assert build(data).success
    layout = DataLayout(data.resolve())
    laion_data = LaionData(data_dir=str(data))
    assert caption_index_matches_captions(build_asset_check_context(), laion_data).passed
    conn = open_build_db(layout, write=True)  # its own copy: the published file stays
    conn.execute("UPDATE images SET text = text || ' extra words' WHERE rowid % 10 = 0")
    conn.close()
    result = caption_index_matches_captions(build_asset_check_context(), laion_data)
    assert not result.passed
    assert "sampled images have other captions in the index" in result.description
    assert 100 < result.metadata["mismatched"].value < 400  # about a tenth of 2,000
    conn = sqlite3.connect(layout.build_db)
    with pytest.raises(sqlite3.DatabaseError):  # what FTS5's own full check says
        conn.execute("INSERT INTO images_fts (images_fts, rank) VALUES ('integrity-check', 1)")
    conn.close()
    assert manifest_problems(layout) == []  # the published release is untouched
