"""The data folder is the truth: `make run`'s command, with a real Dagster instance in
``tmp_path``, after the user starts over, damages, changes, moves or restores the data folder,
or deletes the instance, builds exactly what the files say is missing, and nothing when
nothing changed."""

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    RunsFilter,
)

from laion_pipeline.common.layout import ENTITY_KINDS, SAMPLE_DIR, DataLayout
from laion_pipeline.orchestration.definitions import make_definitions
from laion_pipeline.orchestration.resources import build_resources
from laion_pipeline.releases.lock import data_dir_lock
from laion_pipeline_tests.conftest import evaluate_sensor, local, row, run_command, write

FILES = ("part-0.parquet", "part-1.parquet", "part-2.parquet")


def source_rows(part: int, rows: int = 40, aesthetic_low: float = 6.5) -> list[dict]:
    """Rows of one source file: half of them at ``aesthetic_low``, half at 7.5."""
    return [
        row(
            part * 1000 + i,
            TEXT=f"a painting of a lighthouse number {i}",
            AESTHETIC_SCORE=aesthetic_low if i % 2 else 7.5,
        )
        for i in range(rows)
    ]


class Folder:
    """A source folder, a data folder and a Dagster instance, and `make run`'s command on
    them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.source = root / "source"
        self.data = root / "data"
        self.home = root / "dagster_home"
        for part, name in enumerate(FILES):
            write(self.source / name, source_rows(part))

    @property
    def layout(self) -> DataLayout:
        return DataLayout(self.data.resolve())

    def run(self, *args: str, data: Path | None = None, **env: str) -> str:
        """`make run`'s command; its output (stdout then stderr) once it succeeded."""
        command = run_command(self.home) + list(args)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("LAION_")}
        environ |= {
            "DAGSTER_HOME": str(self.home),
            "LAION_DATA_DIR": str(data or self.data),
            **local(self.source),
            **env,
        }
        done = subprocess.run(
            command, env=environ, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        return done.stdout + done.stderr

    def manifest(self, data: Path | None = None) -> dict:
        layout = DataLayout((data or self.data).resolve())
        return json.loads(layout.manifest_json.read_text(encoding="utf-8"))

    def stage_runs(self) -> list[str]:
        """The partitions the instance's runs of stage_source_files staged, oldest first."""
        with DagsterInstance.from_config(str(self.home)) as instance:
            runs = instance.get_runs(RunsFilter(job_name="stage_source_files"))
        return [r.tags["dagster/partition"] for r in reversed(runs)]


def images(db: Path) -> list[tuple]:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT rowid, url, text, aesthetic FROM images ORDER BY rowid"
        ).fetchall()
    finally:
        conn.close()


def built(output: str) -> bool:
    """Whether the command ran full_build."""
    return re.search(r"Run \S+ of full_build: SUCCESS", output) is not None


@pytest.fixture
def folder(tmp_path: Path) -> Folder:
    return Folder(tmp_path)


def test_start_over_damage_change_and_refilter_build_exactly_what_is_missing(folder):
    first = folder.run()
    assert "data folder has 0 of 3 staged files: staging 3" in first and built(first)
    release = folder.manifest()
    rows = images(folder.layout.published_db)
    assert len(rows) == 120
    record = json.loads(folder.layout.staged_record(FILES[0]).read_text())
    assert record["source"] == f"{folder.source.resolve()}/{FILES[0]}"
    assert record["staging_code_version"] and len(record["staged_sha256"]) == 64
    assert record["profile"] == "6plus" and record["rows_read"] == record["rows"] == 40
    assert set(release["inputs"]) == {"files", "shards", "profile", "lists", "code_version"}

    # Nothing changed: nothing staged, nothing built, the same release.
    again = folder.run()
    assert f"up to date: release {release['release']}" in again and not built(again)
    assert "data folder has 3 of 3 staged files: nothing to stage" in again
    assert folder.stage_runs() == sorted(FILES)

    # The instance deleted, the data folder kept: up to date, and the history says so.
    shutil.rmtree(folder.home)
    fresh = folder.run()
    assert f"up to date: release {release['release']}" in fresh and not built(fresh)
    with DagsterInstance.from_config(str(folder.home)) as instance:
        assert instance.get_runs(RunsFilter(job_name="stage_source_files")) == []
        for asset in ("source_files", "published_database", "images", "analysis"):
            found = instance.fetch_materializations(AssetRecordsFilter(AssetKey(asset)), 10)
            assert found.records, f"{asset} shows as never materialized"
        assert set(instance.get_dynamic_partitions("source_files")) == set(FILES)

    # One staged file truncated, another deleted: those two restaged, the release stands.
    truncated = folder.layout.staged_parquet(FILES[0])
    truncated.write_bytes(truncated.read_bytes()[:100])
    folder.layout.staged_parquet(FILES[2]).unlink()
    repaired = folder.run()
    assert "data folder has 1 of 3 staged files: staging 2" in repaired
    assert f"{FILES[0]}: {truncated.name} is 100 bytes, its record says" in repaired
    assert f"{FILES[2]}: {folder.layout.staged_parquet(FILES[2]).name} is missing" in repaired
    assert folder.stage_runs() == [FILES[0], FILES[2]]
    assert f"up to date: release {release['release']}" in repaired and not built(repaired)

    # Started over: the same rows published again.
    shutil.rmtree(folder.data)
    over = folder.run()
    assert "data folder has 0 of 3 staged files: staging 3" in over and built(over)
    assert folder.manifest()["sha256"] == release["sha256"]
    assert images(folder.layout.published_db) == rows

    # One source file changed: that file alone restaged, and a new release.
    write(folder.source / FILES[1], source_rows(1, rows=10))
    changed = folder.run()
    assert "staging 1" in changed and f"{FILES[1]}: the source file changed" in changed
    assert built(changed) and folder.stage_runs()[-1] == FILES[1]
    assert folder.manifest()["row_counts"]["images"] == 90

    # Another profile and filter: every file restaged, no row of the old staging read.
    refiltered = folder.run(LAION_PROFILE="aesthetics-v2-6plus", LAION_MIN_AESTHETIC="7")
    assert "staging 3" in refiltered
    assert "staged with another profile, filter or list of takedowns" in refiltered
    assert folder.manifest()["row_counts"]["images"] == 45
    assert {r[3] for r in images(folder.layout.published_db)} == {7.5}


def shard_lines(output: str) -> str:
    found = re.search(r"(\d+) of (\d+) shards were built from the same files", output)
    return found.group(0) if found else ""


def test_a_second_folder_a_restored_copy_and_a_rollback(folder, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    for kind in ENTITY_KINDS:
        shutil.copy(SAMPLE_DIR / f"{kind}.csv", lists / f"{kind}.csv")
    env = {"LAION_SHARD_ROWS": "50"} | {
        f"LAION_{kind.upper()}_CSV_URL": str(lists / f"{kind}.csv") for kind in ENTITY_KINDS
    }
    assert built(folder.run(**env))
    first = folder.manifest()
    assert len(first["shards"]) == 3

    # A second data folder on the same instance builds; back on the first, nothing to do.
    other = tmp_path / "other"
    assert "staging 3" in (second := folder.run(data=other, **env)) and built(second)
    assert folder.manifest(other)["sha256"] == first["sha256"]
    staged = folder.stage_runs()
    back = folder.run(**env)
    assert f"up to date: release {first['release']}" in back and not built(back)
    assert folder.stage_runs() == staged

    # A copy, then a publish (a name list changed): its shards kept, by their seal.
    backup = tmp_path / "backup"
    subprocess.run(["cp", "-a", str(folder.data), str(backup)], check=True)
    with (lists / "artists.csv").open("a") as out:
        out.write("Lighthouse Number,Invented\n")
    changed = folder.run(**env)
    assert "changed since release" in changed and "the name lists" in changed
    assert shard_lines(changed) == "3 of 3 shards were built from the same files"
    assert folder.manifest()["release"] != first["release"]

    # The copy restored: it serves its release, and the next run stages nothing and checks
    # the shards it has by their hash (new inodes) instead of building them.
    shutil.rmtree(folder.data)
    subprocess.run(["cp", "-a", str(backup), str(folder.data)], check=True)
    assert folder.manifest()["release"] == first["release"]
    assert len(images(folder.layout.current.shard_db(first["shards"][0]["key"]))) == 40
    restored = folder.run(**env)
    assert "nothing to stage" in restored and built(restored)
    assert shard_lines(restored) == "3 of 3 shards were built from the same files"
    latest = folder.manifest()
    conn = sqlite3.connect(folder.layout.published_db)
    assert conn.execute(
        "SELECT image_counts FROM artists WHERE name = 'Lighthouse Number'"
    ).fetchone() == (120,)
    conn.close()

    # A rollback holds: the weekly schedule's run (observe_sources, then the sensor) and
    # make run leave the release it serves again, until an input changes.
    done = subprocess.run(
        [sys.executable, "-m", "laion_pipeline", "rollback"],
        env={**os.environ, "LAION_DATA_DIR": str(folder.data), **local(folder.source), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"Serving release {first['release']} again" in done.stdout
    resources = build_resources({"LAION_DATA_DIR": str(folder.data), **local(folder.source), **env})
    defs = make_definitions(resources)
    with DagsterInstance.from_config(str(folder.home)) as instance:
        observation = defs.resolve_job_def("observe_sources").execute_in_process(instance=instance)
        skipped = evaluate_sensor(defs, instance, observation)
    assert "up to date" in skipped.skip_message and "rollback" in skipped.skip_message
    held = folder.run(**env)
    assert f"up to date: release {first['release']}" in held and not built(held)
    assert folder.manifest()["release"] == first["release"]
    # An input changes: the next run builds, and the hold is over.
    write(folder.source / FILES[0], source_rows(0, rows=20))
    assert built(folder.run(**env))
    assert folder.manifest()["release"] not in (first["release"], latest["release"])


def test_a_run_waits_for_another_build_of_its_data_folder_and_says_so(folder):
    folder.data.mkdir()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LAION_")}
    environ |= {"DAGSTER_HOME": str(folder.home), "LAION_DATA_DIR": str(folder.data)}
    environ |= local(folder.source)
    with data_dir_lock(folder.layout):  # another build, as far as the command can tell
        command = subprocess.Popen(
            run_command(folder.home), env=environ, stdout=subprocess.PIPE, text=True
        )
        first = command.stdout.readline()
    rest, _ = command.communicate(timeout=300)
    assert first.startswith("waiting (0 s): process ") and str(folder.layout.root) in first
    assert command.returncode == 0 and built(rest)
