"""The whole pipeline with several shards (`LAION_SHARD_ROWS`): each shard a partition of
images and images_fts, the catalog summed over them, one release of every file; the same
counts and the same search results as the one-database build of the same files."""

import json
import sqlite3

import pytest
from dagster import DagsterInstance

from laion_pipeline.layout import DataLayout
from laion_pipeline.publish import release_problems
from laion_pipeline.release import current_release
from laion_pipeline_tests.conftest import build

NAME_TABLES = ("artists", "celebrities", "characters")


def rows(db, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def seven_shards(tmp_path_factory) -> tuple[DataLayout, DagsterInstance, list]:
    """The sample (7 files of 1,000 rows) built with at most 2,500 rows a shard: 4 shards."""
    data_dir = tmp_path_factory.mktemp("sharded")
    instance = DagsterInstance.ephemeral()
    runs: list = []
    result = build(data_dir, {"LAION_SHARD_ROWS": "2500"}, instance=instance, runs=runs)
    assert result.success
    return DataLayout(data_dir.resolve()), instance, runs


def test_each_shard_is_a_partition_built_on_its_own(seven_shards):
    layout, instance, runs = seven_shards
    assert instance.get_dynamic_partitions("shards") == [f"shard-0000{n}" for n in range(4)]
    built = runs[-1]
    for asset in ("images", "images_fts"):
        partitions = {
            e.partition
            for e in built.get_asset_materialization_events()
            if e.asset_key.path == [asset]
        }
        assert partitions == {f"shard-0000{n}" for n in range(4)}, asset
    for n, (first, last) in enumerate([(1, 2000), (2001, 4000), (4001, 6000), (6001, 7000)]):
        db = layout.shard_db(f"shard-0000{n}")
        assert rows(db, "SELECT min(rowid), max(rowid), count(*) FROM images") == [
            (first, last, last - first + 1)
        ]
        (indexed,) = rows(db, "SELECT count(*) FROM images_fts_docsize")
        assert indexed == (last - first + 1,)
    # Every check of the run ran, and passed.
    evaluations = built.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} >= {
        "domain_ids_valid",
        "row_counts_match",
        "caption_index_matches_captions",
    }
    assert all(e.passed for e in evaluations), [e.check_name for e in evaluations if not e.passed]


def test_the_release_holds_the_catalog_and_every_shard_with_the_counts_of_one_database(
    seven_shards, sample_build
):
    layout, _, _ = seven_shards
    release = current_release(layout)
    whole = current_release(sample_build)
    manifest = json.loads(release.manifest_json.read_text())
    assert [s["key"] for s in manifest["shards"]] == [f"shard-0000{n}" for n in range(4)]
    assert [p.name for p in release.databases] == [
        "laion-aesthetic-6pls.db",
        *(f"laion-aesthetic-6pls-shard-0000{n}.db" for n in range(4)),
    ]
    assert manifest["row_counts"] == json.loads(whole.manifest_json.read_text())["row_counts"]
    assert release_problems(release) == []
    # The catalog: the domains and the names with exactly the one database's ids and counts.
    for table in ("domain", *NAME_TABLES):
        sql = f"SELECT * FROM {table} ORDER BY rowid"
        assert rows(release.db, sql) == rows(whole.db, sql), table
    assert rows(release.db, "SELECT key, first_rowid, last_rowid, images FROM shards") == [
        ("shard-00000", 1, 2000, 2000),
        ("shard-00001", 2001, 4000, 2000),
        ("shard-00002", 4001, 6000, 2000),
        ("shard-00003", 6001, 7000, 1000),
    ]
    # The images, shard after shard, are the one database's, each with its host's name.
    images = (
        "SELECT images.rowid, url, text, aesthetic, domain.domain FROM images "
        "JOIN domain ON domain.id = images.domain_id ORDER BY images.rowid"
    )
    assert [r for db in release.databases[1:] for r in rows(db, images)] == rows(whole.db, images)
    # The report: the same numbers as the one database's, but for the release's own id.
    analysis = json.loads((release.report_dir / "analysis.json").read_text())
    one = json.loads((whole.report_dir / "analysis.json").read_text())
    assert analysis["named_images"] == one["named_images"]
    assert analysis["top_domains"] == one["top_domains"]
    inspect = json.loads(release.inspect_json.read_text())
    assert sorted(inspect) == sorted(p.stem for p in release.databases)
