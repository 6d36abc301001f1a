"""The distributed engine on 127.0.0.1: Dagster's Celery run launcher with a Redis broker
(`dagster_home.celery.yaml`), two `dagster-celery` workers of one task each
(`celery_worker.yaml`) and the daemon (run monitoring and run retries). `make run-on-workers`
builds the sample as 4 shards, a run per source file and per shard, each on a worker; a worker
process killed mid-shard is retried and the release is still whole."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

from laion_pipeline.build.publish import release_problems
from laion_pipeline.common.layout import DataLayout
from laion_pipeline.releases.switch import current_release, pointed_release
from laion_pipeline_tests.conftest import REPO_ROOT

REDIS = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(
    REDIS is None and not os.environ.get("CI"), reason="needs redis-server (.ci/run installs it)"
)
BIN = Path(sys.executable).parent
WORKERS = ("worker1", "worker2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Engine:
    """Redis, the instance, two workers and the daemon, all on 127.0.0.1, and the environment
    a build through them needs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.broker = f"redis://127.0.0.1:{self.port}/0"
        self.home = root / "dagster_home"
        self.data = root / "data"
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "LAION_DATA_DIR": str(self.data),
            "LAION_SHARD_ROWS": "2500",
            "LAION_CELERY_BROKER": self.broker,
            # dagster-celery starts `celery` from the PATH
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        self.processes: list[subprocess.Popen] = []

    def start(self, *command: str, log: str) -> subprocess.Popen:
        process = subprocess.Popen(
            command,
            cwd=self.root,
            env=self.env,
            stdout=(self.root / log).open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def __enter__(self) -> "Engine":
        self.start(REDIS or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no", log="redis.log")  # fmt: skip
        self.home.mkdir(parents=True)
        shutil.copy(REPO_ROOT / "dagster_home.celery.yaml", self.home / "dagster.yaml")
        os.environ["LAION_CELERY_BROKER"] = self.broker  # the instance's config reads it here
        with DagsterInstance.from_config(str(self.home)):
            pass  # its storage created once, before several processes open it
        for name in WORKERS:
            self.start(str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                       "-y", str(REPO_ROOT / "celery_worker.yaml"), "-n", name, "--",
                       "--concurrency=1", log=f"{name}.log")  # fmt: skip
        workspace = str(REPO_ROOT / "workspace.yaml")
        self.start(str(BIN / "dagster-daemon"), "run", "-w", workspace, log="daemon.log")
        app = Celery(broker=self.broker)
        deadline = time.monotonic() + 90
        while len(app.control.ping(timeout=1.0)) < len(WORKERS):
            assert time.monotonic() < deadline, self.logs()
        return self

    def __exit__(self, *exc) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.root.glob("*.log"))
        )

    def run_on_workers(self, *options: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "laion_pipeline", "run-on-workers", *options]
        command += ["--workspace", str(REPO_ROOT / "workspace.yaml")]
        return subprocess.Popen(
            command, cwd=self.root, env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    def instance(self) -> DagsterInstance:
        return DagsterInstance.from_config(str(self.home))


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Iterator[Engine]:
    with Engine(tmp_path_factory.mktemp("engine")) as running:
        yield running


def workers_of(instance: DagsterInstance, asset: str) -> dict[str, str]:
    """The worker recorded in the latest materialization of each partition of ``asset``."""
    found: dict[str, str] = {}
    for record in instance.fetch_materializations(AssetKey(asset), limit=1000).records:
        materialization = record.asset_materialization  # newest first
        if materialization and materialization.partition not in found:
            found[materialization.partition] = materialization.metadata["worker"].value
    return found


def test_a_backfill_of_every_shard_runs_on_the_workers_then_publishes(engine):
    done = engine.run_on_workers()
    output = done.communicate(timeout=600)[0]
    assert done.returncode == 0, output + engine.logs()
    assert "4 shards to build, a run each" in output
    assert "build_shards: 4 of 4 partitions succeeded" in output
    with engine.instance() as instance:
        shard_runs = instance.get_runs(RunsFilter(job_name="build_shards"))
        assert sorted(r.tags["dagster/partition"] for r in shard_runs) == [
            f"shard-0000{n}" for n in range(4)
        ]
        assert all(r.status == DagsterRunStatus.SUCCESS for r in shard_runs)
        shards = workers_of(instance, "images")
        files = workers_of(instance, "source_files")
    host = socket.gethostname()
    # Each shard and each file ran on a worker, and both workers took part.
    assert len(shards) == 4 and len(files) == 7
    assert set(shards.values()) | set(files.values()) == {f"{w}@{host}" for w in WORKERS}
    layout = DataLayout(engine.data.resolve())
    release = current_release(layout)
    assert len(release.databases) == 5
    assert release_problems(release) == []
    assert json.loads(release.manifest_json.read_text())["row_counts"]["images"] == 7000


def test_a_worker_killed_mid_shard_is_retried_and_nothing_is_published_before(engine):
    layout = DataLayout(engine.data.resolve())
    before = pointed_release(layout, "current")
    assert before is not None  # the test before published one
    victim = layout.shard_db("shard-00002")
    victim.unlink()  # built again (the other shards are kept: their seals name these inputs)
    done = engine.run_on_workers("--force")
    deadline, killed, seen = time.monotonic() + 300, None, set()
    while done.poll() is None:
        seen.add(pointed_release(layout, "current"))
        if killed is None and victim.with_name(victim.name + ".new").exists():
            holder = victim.with_suffix(".lock").read_text().split()[-1]
            os.kill(int(holder), signal.SIGKILL)  # the worker process building the shard
            killed = int(holder)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    output = done.stdout.read()
    assert done.returncode == 0, output + engine.logs()
    assert killed is not None, output
    assert "build_shards: 4 of 4 partitions succeeded (1 retried)" in output
    with engine.instance() as instance:
        runs = instance.get_runs(RunsFilter(tags={"dagster/partition": "shard-00002"}))
        latest, failed = runs[0], runs[1]
        assert failed.status == DagsterRunStatus.FAILURE
        assert latest.status == DagsterRunStatus.SUCCESS
        assert latest.parent_run_id == failed.run_id
        catalog = instance.get_runs(RunsFilter(job_name="catalog"), limit=1)[0]
        retried = instance.get_run_record_by_id(latest.run_id)
        published = instance.get_run_record_by_id(catalog.run_id)
        assert published.start_time >= retried.end_time  # the publish waited for the retry
    after = pointed_release(layout, "current")
    assert after != before and seen <= {before, after}
    assert release_problems(current_release(layout)) == []
