"""Faults around the data directory: where it cannot be written, a lock the operating system
frees whatever happens to its holder, two builds at once, readers during a publish."""

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from laion_pipeline.common.layout import DataLayout
from laion_pipeline.orchestration.assets.serving import manifest_problems
from laion_pipeline.releases.lock import data_dir_lock
from laion_pipeline_tests.conftest import build, failure_text, run_command


@pytest.mark.parametrize(
    ("data_dir", "message"),
    [
        ("{tmp}/missing/data", "does not exist, nor does its parent"),
        ("{tmp}/a-file", "is a file, not a folder"),
        ("/sys/laion-pipeline-test", "cannot create LAION_DATA_DIR=/sys/laion-pipeline-test"),
        ("/sys/kernel", "LAION_DATA_DIR=/sys/kernel is not writable"),
    ],
)
def test_a_data_dir_that_cannot_be_written_fails_clearly(tmp_path, data_dir, message):
    (tmp_path / "a-file").write_text("not a folder")
    result = build(data_dir.format(tmp=tmp_path), raise_on_error=False)
    assert not result.success
    assert message in failure_text(result)


HOLD_LOCK = """
import sys, time
from pathlib import Path
from laion_pipeline.common.layout import DataLayout
from laion_pipeline.releases.lock import data_dir_lock
with data_dir_lock(DataLayout(Path(sys.argv[1]))):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_lock(tmp_path, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "locked\n"
    return holder


def test_a_second_writer_waits_for_the_first_and_says_so(tmp_path, caplog):
    holder = hold_lock(tmp_path, 1.5)
    log = logging.getLogger("lock-test")
    started = time.monotonic()
    with (
        caplog.at_level(logging.INFO, logger="lock-test"),
        data_dir_lock(DataLayout(tmp_path), log),
    ):
        waited = time.monotonic() - started
    assert waited > 0.5
    assert holder.wait() == 0
    assert caplog.messages[0].startswith(f"waiting for process {holder.pid} to finish writing")


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = hold_lock(tmp_path, 600)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    started = time.monotonic()
    with data_dir_lock(DataLayout(tmp_path)):
        assert time.monotonic() - started < 1


def test_two_builds_at_once_never_corrupt_the_published_database(tmp_path):
    home = tmp_path / "dagster_home"
    env = {**os.environ, "LAION_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(home)}
    command = run_command(home)
    runs = [
        subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    codes = [run.returncode for run in runs]
    assert 0 in codes, outputs[0][-3000:]
    for code, output in zip(codes, outputs, strict=True):
        if code:  # a run that lost the race says what to rebuild, nothing worse
            assert "materialize" in output, output[-3000:]
    layout = DataLayout((tmp_path / "data").resolve())
    assert manifest_problems(layout) == []


def test_readers_never_see_an_error_while_new_versions_are_published(tmp_path):
    data = tmp_path / "data"
    layout = DataLayout(data.resolve())
    assert build(data).success
    stop, errors, reads = threading.Event(), [], [0]

    def read() -> None:
        while not stop.is_set():
            try:
                conn = sqlite3.connect(f"{layout.published_db.as_uri()}?mode=ro", uri=True)
                (images,) = conn.execute("SELECT count(*) FROM images").fetchone()
                conn.execute("SELECT count(*) FROM images_fts WHERE images_fts MATCH 'the'")
                (names,) = conn.execute("SELECT count(*) FROM artists").fetchone()
                conn.close()
                assert images == 7000 and names in (1, 2, 40)
                reads[0] += 1
            except Exception as error:  # every failure is the finding
                errors.append(repr(error))

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        for names in (["Alphonse Mucha"], ["Alphonse Mucha", "Nobody Here"], ["Kinkade"]):
            artists = tmp_path / "artists.csv"
            artists.write_text("name\n" + "\n".join(names) + "\n")
            result = build(
                data,
                {"LAION_ARTISTS_CSV_URL": str(artists)},
                selection=["entity_csvs", "artists", "published_database"],
            )
            assert result.success
            published = json.loads(layout.manifest_json.read_text())
            assert published["row_counts"]["artists"] == len(names)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert errors == []
    assert reads[0] > 20
