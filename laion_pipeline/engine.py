"""Runs through the instance's run launcher: one job at a time (`make run`'s full_build), or
the whole build partition by partition (`make run-on-workers`): a run per source file, the
shard plan, a run per shard, then the catalog and the publish. With the Celery run launcher
(`dagster_home.celery.yaml`) every run is a task that any `dagster-celery` worker takes, on
this machine or another; a run whose worker dies is failed by Dagster's run monitoring and
retried by its run retries (the daemon), so this waits for each partition's last attempt.
"""

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from dagster._core.storage.tags import PARTITION_NAME_TAG, WILL_RETRY_TAG

from laion_pipeline.jobs import MAKE_RUN_TAGS

RUN_POLL_SECONDS = 1.0
# How long a failed run is given to be marked for a retry (by the daemon's run retries).
RETRY_GRACE_SECONDS = 10.0
# The tag of every run one `run-on-workers` starts, retries included (Dagster copies tags).
BATCH_TAG = "laion/batch"


def dagster_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "dagster"), *args]


def launch(job: str, workspace: str, tags: dict[str, str] | None = None) -> int:
    """Launch ``job`` with the instance's run launcher, so that the run belongs to the job in
    the UI (its Runs tab, the Timeline), and wait for it to end."""
    run_id = str(uuid.uuid4())
    command = dagster_command("job", "launch", "-w", workspace, "-j", job, "--run-id", run_id)
    if tags:
        command += ["--tags", json.dumps(tags)]
    if subprocess.run(command, check=False).returncode != 0:
        return 1
    with DagsterInstance.get() as instance:
        # The launcher's process normally ends with the run; a run launcher that runs it
        # elsewhere (Celery, Kubernetes) returns at once, and this waits.
        while not (dagster_run := instance.get_run_by_id(run_id)).is_finished:
            time.sleep(RUN_POLL_SECONDS)
    if dagster_run.status != DagsterRunStatus.SUCCESS:
        print(f"Run {run_id} of {job}: {dagster_run.status.value}", file=sys.stderr)
        return 1
    print(f"Run {run_id} of {job}: {dagster_run.status.value}")
    return 0


def last_attempts(runs: Sequence[DagsterRun]) -> dict[str, DagsterRun]:
    """The latest run of each partition among ``runs`` (newest first, as the instance lists
    them): a retry replaces the run it retries."""
    latest: dict[str, DagsterRun] = {}
    for dagster_run in reversed(runs):
        latest[dagster_run.tags.get(PARTITION_NAME_TAG, "")] = dagster_run
    return latest


def backfill(job: str, keys: Sequence[str], workspace: str) -> int:
    """A run of ``job`` per partition of ``keys`` through the run launcher, then wait until
    each partition's last attempt succeeded, or failed with no retry to come. Each run is
    launched on its own (`dagster job launch`, all at once): the runs of a `dagster job
    backfill` are never retried, since that backfill is over once its runs are launched."""
    if not keys:
        return 0
    batch = str(uuid.uuid4())
    launches = []
    for key in keys:
        tags = {**MAKE_RUN_TAGS, BATCH_TAG: batch, PARTITION_NAME_TAG: key}
        command = dagster_command("job", "launch", "-w", workspace, "-j", job)
        launches.append(
            subprocess.Popen([*command, "--tags", json.dumps(tags)], stdout=subprocess.DEVNULL)
        )
    if any(process.wait() != 0 for process in launches):
        return 1
    failed_since = None
    with DagsterInstance.get() as instance:
        while True:
            runs = instance.get_runs(RunsFilter(tags={BATCH_TAG: batch}))
            attempts = last_attempts(runs)
            pending = [
                r
                for r in attempts.values()
                if not r.is_finished or r.tags.get(WILL_RETRY_TAG) == "true"
            ]
            failed = sorted(k for k, r in attempts.items() if r.status != DagsterRunStatus.SUCCESS)
            if len(attempts) == len(keys) and not pending:
                # The daemon marks a failed run for a retry a moment after it fails.
                failed_since = failed_since or time.monotonic()
                if not failed or time.monotonic() - failed_since > RETRY_GRACE_SECONDS:
                    break
            else:
                failed_since = None
            time.sleep(RUN_POLL_SECONDS)
    retries = len(runs) - len(keys)
    print(
        f"{job}: {len(keys) - len(failed)} of {len(keys)} partitions succeeded"
        + (f" ({retries} retried)" if retries else "")
    )
    if failed:
        print(f"{job} failed for {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
