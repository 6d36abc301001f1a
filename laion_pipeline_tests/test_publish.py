"""Publishing keeps the version it replaces, and `rollback` serves that version again."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from laion_pipeline.files import sha256_file
from laion_pipeline.layout import DataLayout, staged
from laion_pipeline.synthetic import generate, sample_entity_names
from laion_pipeline_tests.conftest import build
from laion_pipeline_tests.datasette_site import DB, served


def manifest(path) -> dict:
    return json.loads(path.read_text())


def rollback(data_dir) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "laion_pipeline", "rollback"],
        env={**os.environ, "LAION_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_previous_version_is_kept_and_rollback_restores_it(tmp_path):
    data = tmp_path / "data"
    layout = DataLayout(data.resolve())
    assert build(data).success
    assert not layout.previous_dir.exists()  # nothing was replaced yet
    refused = rollback(data)
    assert refused.returncode == 1
    assert "Nothing to roll back to" in refused.stderr

    first = manifest(layout.manifest_json)
    first_bytes = layout.published_db.read_bytes()
    artists = tmp_path / "artists.csv"
    artists.write_text("name\nAlphonse Mucha\n")
    assert build(data, {"LAION_ARTISTS_CSV_URL": str(artists)}).success
    second = manifest(layout.manifest_json)
    assert second["row_counts"]["artists"] == 1
    assert manifest(layout.previous_dir / "manifest.json") == first
    assert (layout.previous_dir / layout.published_db.name).read_bytes() == first_bytes

    restored = rollback(data)
    assert restored.returncode == 0, restored.stderr
    assert "Published again" in restored.stdout
    assert manifest(layout.manifest_json) == first
    assert layout.published_db.read_bytes() == first_bytes
    assert (
        json.loads(layout.inspect_json.read_text())["laion-aesthetic-6pls"]["hash"]
        == (first["sha256"])
    )
    assert manifest(layout.previous_dir / "manifest.json") == second

    assert rollback(data).returncode == 0  # twice: back to the newer version
    assert manifest(layout.manifest_json) == second
    leftovers = [p.name for p in layout.published_dir.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_publishing_the_same_build_again_keeps_the_real_previous_version(tmp_path):
    data = tmp_path / "data"
    layout = DataLayout(data.resolve())
    assert build(data).success
    artists = tmp_path / "artists.csv"
    artists.write_text("name\nAlphonse Mucha\n")
    assert build(data, {"LAION_ARTISTS_CSV_URL": str(artists)}).success
    kept = manifest(layout.previous_dir / "manifest.json")
    assert build(data, {"LAION_ARTISTS_CSV_URL": str(artists)}, selection=["published_database"])
    assert manifest(layout.previous_dir / "manifest.json") == kept


def test_a_publish_killed_halfway_leaves_the_old_database_served_intact(tmp_path):
    parquet, data = tmp_path / "parquet", tmp_path / "data"
    generate(parquet, 150_000, names=sample_entity_names(), workers=1)
    env = {"LAION_SOURCE": "local", "LAION_LOCAL_DIR": str(parquet)}
    assert build(data, env).success
    layout = DataLayout(data.resolve())
    before = manifest(layout.manifest_json)
    # New name lists in the build database, not yet published.
    artists = tmp_path / "artists.csv"
    artists.write_text("name\nAlphonse Mucha\n")
    env["LAION_ARTISTS_CSV_URL"] = str(artists)
    assert build(data, env, selection=["entity_csvs", "artists"]).success

    with served(data) as site:
        publishing = subprocess.Popen(
            [sys.executable, "-c", PUBLISH, str(layout.root)], stderr=subprocess.DEVNULL
        )
        candidate = staged(layout.published_db)
        deadline = time.monotonic() + 60
        while not candidate.exists() and publishing.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        publishing.send_signal(signal.SIGKILL)
        assert publishing.wait() == -signal.SIGKILL  # killed while writing the candidate

        assert sha256_file(layout.published_db) == before["sha256"]
        assert manifest(layout.manifest_json) == before
        conn = sqlite3.connect(f"{layout.published_db.as_uri()}?mode=ro", uri=True)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        conn.close()
        served_count = site.json(f"/{DB}/artists.json", _shape="objects")[
            "filtered_table_rows_count"
        ]
        assert served_count == before["row_counts"]["artists"]

    assert build(data, env, selection=["published_database"]).success
    assert manifest(layout.manifest_json)["row_counts"]["artists"] == 1
    assert not [p.name for p in layout.published_dir.iterdir() if p.name.startswith(".")]


PUBLISH = """
import sys
from pathlib import Path
from laion_pipeline.assets.serving import publish
from laion_pipeline.layout import DataLayout
publish(DataLayout(Path(sys.argv[1])))
"""
