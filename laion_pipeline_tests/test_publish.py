"""Publishing keeps the version it replaces, and `rollback` serves that version again."""

import json
import os
import subprocess
import sys

from laion_pipeline.layout import DataLayout
from laion_pipeline_tests.conftest import build


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
