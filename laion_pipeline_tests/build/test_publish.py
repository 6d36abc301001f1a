"""Releases: a publish makes a new release current in one atomic switch and keeps the one it
replaced as previous; `rollback` serves that one again; a kill at any step of either leaves
`current` whole (its database matches its manifest, its report describes it or is absent), and
the next writer finishes or undoes the switch."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from benchmarks.synthetic import generate, sample_entity_names
from laion_pipeline.analysis.report import report_problems
from laion_pipeline.build.publish import publish as publish_core
from laion_pipeline.build.publish import release_problems
from laion_pipeline.common.layout import DataLayout, candidate
from laion_pipeline.releases.lock import data_dir_lock
from laion_pipeline.releases.switch import FAULT_VARIABLE, current_release, pointed_release
from laion_pipeline_tests.conftest import build, table_rows_count
from laion_pipeline_tests.datasette_site import DB, served


def manifest(path) -> dict:
    return json.loads(path.read_text())


def run(
    module_args: list[str], data_dir, kill_at: str | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "LAION_DATA_DIR": str(data_dir)}
    if kill_at:
        env[FAULT_VARIABLE] = kill_at
    return subprocess.run(
        [sys.executable, *module_args], env=env, capture_output=True, text=True, check=False
    )


def rollback(data_dir, *args: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    return run(["-m", "laion_pipeline", "rollback", *args], data_dir, kill_at)


def publish(data_dir, kill_at: str | None = None) -> subprocess.CompletedProcess:
    return run(["-c", PUBLISH, str(data_dir)], data_dir, kill_at)


PUBLISH = """
import sys
from pathlib import Path
from laion_pipeline.common.layout import DataLayout
from laion_pipeline.releases.lock import data_dir_lock
from laion_pipeline.build.publish import publish
layout = DataLayout(Path(sys.argv[1]))
with data_dir_lock(layout):
    publish(layout)
"""


def pointers(layout: DataLayout) -> tuple[str | None, str | None]:
    return pointed_release(layout, "current"), pointed_release(layout, "previous")


def assert_current_is_whole(layout: DataLayout) -> None:
    """The served release's database matches its manifest; its report describes it or is
    absent."""
    release = current_release(layout)
    assert release_problems(release) == []
    if any(path.exists() for path in release.report_files):
        assert report_problems(release) == []


def assert_tidy(layout: DataLayout) -> None:
    """Nothing half-done is left: no staged link or file, only the two releases named."""
    assert not [p.name for p in layout.published_dir.iterdir() if p.name.startswith(".")]
    assert {p.name for p in layout.releases_dir.iterdir()} == {r for r in pointers(layout) if r}


def test_the_previous_release_is_kept_and_rollback_restores_it(tmp_path):
    data = tmp_path / "data"
    layout = DataLayout(data.resolve())
    assert build(data).success
    assert pointers(layout)[1] is None  # nothing was replaced yet
    assert layout.published_db == layout.published_dir / "current" / f"{DB}.db"
    refused = rollback(data)
    assert refused.returncode == 1
    assert "Nothing to roll back to" in refused.stderr

    first = manifest(layout.manifest_json)
    artists = tmp_path / "artists.csv"
    artists.write_text("name\nAlphonse Mucha\n")
    assert build(data, {"LAION_ARTISTS_CSV_URL": str(artists)}).success
    second = manifest(layout.manifest_json)
    assert second["row_counts"]["artists"] == 1
    assert pointers(layout) == (second["release"], first["release"])
    assert manifest(layout.previous_dir / "manifest.json") == first
    assert_tidy(layout)

    restored = rollback(data)
    assert restored.returncode == 0, restored.stderr
    assert f"Serving release {first['release']} again" in restored.stdout
    assert manifest(layout.manifest_json) == first
    assert (
        json.loads(layout.inspect_json.read_text())[DB]["hash"]
        == first["sha256"]
        == manifest(layout.current.manifest_json)["sha256"]
    )
    assert_current_is_whole(layout)
    assert pointers(layout) == (first["release"], second["release"])

    assert rollback(data).returncode == 0  # twice: back where we were
    assert pointers(layout) == (second["release"], first["release"])
    assert_current_is_whole(layout)
    assert_tidy(layout)


def test_old_releases_are_removed_and_unchanged_files_are_hard_links(tmp_path):
    data = tmp_path / "data"
    layout = DataLayout(data.resolve())
    assert build(data).success
    first = manifest(layout.manifest_json)
    artists = tmp_path / "artists.csv"
    artists.write_text("name\nAlphonse Mucha\n")
    env = {"LAION_ARTISTS_CSV_URL": str(artists)}
    assert build(data, env).success
    second = manifest(layout.manifest_json)
    # The same build published again: a new release of the same file (no copy), with the
    # report that describes it, and the real previous release kept.
    assert build(data, env, selection=["published_database"]).success
    third = manifest(layout.manifest_json)
    assert third["release"] != second["release"]
    assert third["sha256"] == second["sha256"]
    assert pointers(layout) == (third["release"], first["release"])
    assert not layout.release(second["release"]).folder.exists()
    assert layout.published_db.stat().st_ino == layout.build_db.stat().st_ino
    assert layout.published_db.stat().st_nlink == 2
    assert_current_is_whole(layout)
    assert report_problems(current_release(layout)) == []
    assert_tidy(layout)


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory) -> DataLayout:
    """A data folder with a release current, one previous, and in the build database new
    name lists that are not yet published."""
    root = tmp_path_factory.mktemp("releases")
    data = root / "data"
    assert build(data).success
    artists = root / "artists.csv"
    artists.write_text("name\nAlphonse Mucha\nHokusai\n")
    env = {"LAION_ARTISTS_CSV_URL": str(artists)}
    assert build(data, env).success
    artists.write_text("name\nAlphonse Mucha\n")
    assert build(data, env, selection=["entity_csvs", "artists"]).success
    return DataLayout(data.resolve())


def copy_of(layout: DataLayout, tmp_path) -> DataLayout:
    copy = tmp_path / "data"
    shutil.copytree(layout.root, copy, symlinks=True)
    return DataLayout(copy)


@pytest.mark.parametrize(
    ("step", "switched"),
    [
        ("publish-release-half-written", False),
        ("publish-release-written", False),
        ("switch-links-written", False),
        ("switch-current-renamed", True),
        ("switch-previous-renamed", True),
    ],
)
def test_a_publish_killed_at_any_step_leaves_current_whole(two_builds, tmp_path, step, switched):
    layout = copy_of(two_builds, tmp_path)
    before = pointers(layout)
    killed = publish(layout.root, kill_at=step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert_current_is_whole(layout)
    new = manifest(layout.manifest_json)
    assert (pointers(layout)[0] != before[0]) is switched
    assert new["row_counts"]["artists"] == (1 if switched else 2)

    with data_dir_lock(layout):  # the next writer finishes or undoes the switch
        pass
    assert pointers(layout) == ((new["release"], before[0]) if switched else before)
    assert_tidy(layout)
    done = publish(layout.root)
    assert done.returncode == 0, done.stderr
    assert manifest(layout.manifest_json)["row_counts"]["artists"] == 1
    assert_current_is_whole(layout)
    assert_tidy(layout)


@pytest.mark.parametrize(
    ("step", "switched"),
    [
        ("switch-links-written", False),
        ("switch-current-renamed", True),
        ("switch-previous-renamed", True),
    ],
)
def test_a_rollback_killed_at_any_step_leaves_current_whole_and_loses_no_release(
    two_builds, tmp_path, step, switched
):
    layout = copy_of(two_builds, tmp_path)
    newer, older = pointers(layout)
    killed = rollback(layout.root, kill_at=step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert_current_is_whole(layout)
    assert pointers(layout)[0] == (older if switched else newer)

    # Two more rollbacks: each one swaps the two releases; neither is ever lost.
    first = rollback(layout.root)
    assert first.returncode == 0, first.stderr
    after_one = pointers(layout)
    assert set(after_one) == {newer, older}
    assert after_one[0] == (newer if switched else older)
    assert rollback(layout.root).returncode == 0
    assert pointers(layout) == after_one[::-1]
    assert_current_is_whole(layout)
    assert_tidy(layout)


def test_a_rollback_during_a_build_refuses_and_the_build_is_served(two_builds, tmp_path):
    layout = copy_of(two_builds, tmp_path)
    with data_dir_lock(layout):  # the build's publish step
        refused = rollback(layout.root)
        assert refused.returncode == 1
        assert "Not rolled back" in refused.stderr and f"process {os.getpid()}" in refused.stderr
        built = publish_core(layout)
    assert pointers(layout)[0] == built["release"]
    assert manifest(layout.manifest_json) == built
    assert_current_is_whole(layout)


def test_a_rollback_with_wait_waits_for_the_build_step(two_builds, tmp_path):
    layout = copy_of(two_builds, tmp_path)
    before = pointers(layout)
    with data_dir_lock(layout):  # a build step writing the data folder
        waiting = subprocess.Popen(
            [sys.executable, "-m", "laion_pipeline", "rollback", "--wait"],
            env={**os.environ, "LAION_DATA_DIR": str(layout.root)},
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(2)
        assert waiting.poll() is None
        assert pointers(layout) == before
    assert waiting.wait(timeout=60) == 0
    assert pointers(layout) == before[::-1]
    assert_current_is_whole(layout)


def test_a_publish_killed_while_writing_the_database_leaves_the_old_release_served(tmp_path):
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
        written = candidate(layout.published_dir / layout.build_db.name)
        deadline = time.monotonic() + 60
        while not written.exists() and publishing.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        publishing.send_signal(signal.SIGKILL)
        assert publishing.wait() == -signal.SIGKILL  # killed while writing the candidate

        assert manifest(layout.manifest_json) == before
        assert_current_is_whole(layout)
        conn = sqlite3.connect(f"{layout.published_db.as_uri()}?mode=ro", uri=True)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        conn.close()
        served_count = table_rows_count(
            site.json(f"/{DB}/artists.json", _shape="objects", _extra="count")
        )
        assert served_count == before["row_counts"]["artists"]

    assert build(data, env, selection=["published_database"]).success
    assert manifest(layout.manifest_json)["row_counts"]["artists"] == 1
    assert_tidy(layout)
