"""The commands the README gives: `make run`'s Dagster CLI call, `where`, and `make serve`."""

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.storage.tags import REPOSITORY_LABEL_TAG

from laion_pipeline.common.layout import DataLayout
from laion_pipeline_tests.conftest import connected_databases

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def env_for(tmp_path: Path, data_dir: Path) -> dict[str, str]:
    """The environment of a command with a data folder and a Dagster instance of its own (with
    the project's instance settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAION_")}
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_bytes((PROJECT / "dagster_home.yaml").read_bytes())
    return {**env, "LAION_DATA_DIR": str(data_dir), "DAGSTER_HOME": str(home)}


def test_make_run_stages_each_file_then_builds_in_one_run_and_says_where(tmp_path):
    env = {**env_for(tmp_path, tmp_path / "data"), "LAION_WORKERS": "2"}
    # BIN= this interpreter's folder and an empty STAMP: the target as it is, minus the install.
    done = subprocess.run(
        ["make", "run", f"BIN={BIN}", "STAMP="],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # A run per source file, then full_build, each with its progress, and no DEBUG line.
    assert (
        len(re.findall(r"Run [0-9a-f-]{36} of stage_source_files \[.+\]: SUCCESS", done.stdout))
        == 7
    )
    assert "7 of 7 source files to stage, 2 at a time" in done.stdout
    assert " - INFO - stage_source_files - " in done.stderr and "kept 1,000 of 1,000" in done.stderr
    printed = done.stderr + done.stdout
    assert "DEBUG" not in printed and "Warning" not in printed, printed[-3000:]
    assert "superseded" not in printed  # no notice to puzzle a newcomer
    # The run belongs to the job of the code location, as the UI lists a job's runs.
    with DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        runs = instance.get_runs(
            RunsFilter(
                job_name="full_build",
                tags={REPOSITORY_LABEL_TAG: "__repository__@laion_pipeline"},
            )
        )
    assert [r.status for r in runs] == [DagsterRunStatus.SUCCESS]
    with DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        staged = instance.get_runs(RunsFilter(job_name="stage_source_files"))
        (observed,) = instance.get_runs(RunsFilter(job_name="observe_sources"))
        # in two worker processes, neither of them make run's own; the DEBUG events are kept
        stagers = {pid for run in staged for pid in _pids(instance, run.run_id)}
        assert len(stagers) == 2 and not stagers & _pids(instance, observed.run_id)
        assert any(e.level == logging.DEBUG for e in instance.all_logs(runs[0].run_id))
    assert len({r.tags["dagster/partition"] for r in staged}) == 7
    assert {r.status for r in staged} == {DagsterRunStatus.SUCCESS}
    assert f"Run {runs[0].run_id} of full_build: SUCCESS" in done.stdout
    layout = DataLayout((tmp_path / "data").resolve())
    assert f"Published database: {layout.published_db}" in done.stdout
    assert "images 7,000" in done.stdout
    assert f"Analysis: {layout.report_dir / 'index.html'}" in done.stdout


def _pids(instance: DagsterInstance, run_id: str) -> set[int]:
    """The processes that recorded the events of a run."""
    return {
        e.dagster_event.pid
        for e in instance.all_logs(run_id)
        if e.dagster_event and e.dagster_event.pid is not None
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.load(response)
        except (ConnectionError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_where_says_which_release_is_served_and_at_which_address(tmp_path, sample_build):
    env = env_for(tmp_path, sample_build.root)
    done = subprocess.run(
        ["make", "where", "PORT=8123", f"BIN={BIN}", "STAMP="],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads(sample_build.manifest_json.read_text())
    assert f"Release: {manifest['release']} (the current one), built at " in done.stdout
    source = manifest["source"]
    assert f"Source: sample {source['location']} at revision {source['revision']}" in done.stdout
    assert "`make serve PORT=8123` (Datasette on http://127.0.0.1:8123)" in done.stdout


def test_serve_runs_datasette_on_the_published_database(tmp_path, sample_build):
    env = env_for(tmp_path, sample_build.root)
    port = free_port()
    server = subprocess.Popen(  # the port of make's command line
        ["make", "serve", f"PORT={port}", f"BIN={BIN}", "STAMP="],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}/laion-aesthetic-6pls"
        found = get_json(f"{base}/images.json?_search=Mucha&_shape=objects&_size=max")
        assert found["rows"] and all("mucha" in r["text"].lower() for r in found["rows"])
        domains = get_json(f"{base}/domain.json?_shape=objects&_sort_desc=image_counts&_size=1")
        assert domains["rows"][0]["domain"] == "i.pinimg.com"
        settings = get_json(f"http://127.0.0.1:{port}/-/settings.json")
        assert settings["sql_time_limit_ms"] == 10_000
        assert settings["suggest_facets"] is False and settings["allow_download"] is False
        databases = connected_databases(get_json(f"http://127.0.0.1:{port}/-/databases.json"))
        assert databases[0]["is_mutable"] is False  # immutable: opened with -i
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)


def test_serve_without_a_published_database_says_what_to_do(tmp_path):
    env = env_for(tmp_path, tmp_path / "empty")
    done = subprocess.run(
        [sys.executable, "-m", "laion_pipeline", "serve"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "run `make run` first" in done.stderr


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # The servers are on 127.0.0.1; a proxy from the environment must not be asked for them.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


QUEUED_INSTANCE = """# A user's own instance: runs wait in a queue for dagster-daemon.
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
telemetry:
  enabled: false
"""


def test_a_users_instance_is_used_as_it_is_and_a_queue_without_daemon_is_said(tmp_path):
    home = tmp_path / "my_dagster_home"
    home.mkdir()
    settings = home / "dagster.yaml"
    settings.write_text(QUEUED_INSTANCE)
    os.utime(settings, (1_000_000_000, 1_000_000_000))  # older than the repository's copy
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LAION_")},
        "LAION_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(home),
    }
    make = ["make", f"BIN={BIN}", "STAMP="]
    for target in ("run", "dev"):
        planned = subprocess.run(
            [*make, "-n", target], cwd=PROJECT, env=env, capture_output=True, text=True
        )
        assert "dagster_home.yaml" not in planned.stdout, planned.stdout
    done = subprocess.run(
        [*make, "run"], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert settings.read_text() == QUEUED_INSTANCE
    assert settings.stat().st_mtime == 1_000_000_000
    # Said before anything else is done, then the job runs in this process, in that instance.
    said = done.stdout.index("queues runs for dagster-daemon (QueuedRunCoordinator)")
    assert said < done.stdout.index("data folder has 0 of 7 staged files")
    with DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs(RunsFilter(job_name="full_build"))
    assert run.status == DagsterRunStatus.SUCCESS
    assert f"Run {run.run_id} of full_build: SUCCESS" in done.stdout
