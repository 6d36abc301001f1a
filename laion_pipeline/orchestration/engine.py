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
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    QueuedRunCoordinator,
    RunsFilter,
)
from dagster._core.storage.tags import PARTITION_NAME_TAG, WILL_RETRY_TAG

from laion_pipeline.orchestration.jobs import CONSOLE_AT_INFO, MAKE_RUN_TAGS

RUN_POLL_SECONDS = 1.0
# How often a command waiting for a run says how it stands.
PROGRESS_SECONDS = 10.0
# The daemon that launches queued runs, and how long it may be silent and still be running
# (it beats every 30 s or so).
QUEUE_DAEMON = "QUEUED_RUN_COORDINATOR"
DAEMON_SILENT_SECONDS = 90.0
# How long a failed run is given to be marked for a retry (by the daemon's run retries).
RETRY_GRACE_SECONDS = 10.0
# The tag of every run one `run-on-workers` starts, retries included (Dagster copies tags).
BATCH_TAG = "laion/batch"


def dagster_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "dagster"), *args]


def daemon_running(instance: DagsterInstance) -> bool:
    """Whether a dagster-daemon of this instance takes queued runs: its run queue's heartbeat
    is recent."""
    heartbeat = instance.get_daemon_heartbeats().get(QUEUE_DAEMON)
    return heartbeat is not None and time.time() - heartbeat.timestamp < DAEMON_SILENT_SECONDS


def run_in_process_instead(instance: DagsterInstance) -> bool:
    """Whether this command runs its job in its own process: the instance queues runs for a
    daemon (QueuedRunCoordinator) and none is running, so a launched run would wait in the
    queue forever. Says so, and what to do."""
    if not isinstance(instance.run_coordinator, QueuedRunCoordinator) or daemon_running(instance):
        return False
    print(
        f"The Dagster instance in {instance.root_directory} queues runs for dagster-daemon "
        "(QueuedRunCoordinator) and no daemon is running: this command runs its job in its "
        "own process instead. To have a daemon launch it, start `dagster-daemon run` with this "
        "DAGSTER_HOME; to use the project's own instance, unset DAGSTER_HOME.",
        flush=True,
    )
    return True


def launch(
    job: str, workspace: str, tags: dict[str, str] | None = None, *, in_process: bool = False
) -> int:
    """Launch ``job`` with the instance's run launcher, so that the run belongs to the job in
    the UI (its Runs tab, the Timeline), and wait for it to end, saying how it stands every
    few seconds; with ``in_process``, run it in this process (recorded in the instance)."""
    if in_process:
        from laion_pipeline.orchestration.definitions import defs  # the definitions import the jobs

        with DagsterInstance.get() as instance:
            result = defs.resolve_job_def(job).execute_in_process(
                instance=instance, raise_on_error=False, tags=tags, run_config=CONSOLE_AT_INFO
            )
            dagster_run = instance.get_run_by_id(result.run_id)
        return _said(job, dagster_run)
    run_id = str(uuid.uuid4())
    command = dagster_command("job", "launch", "-w", workspace, "-j", job, "--run-id", run_id)
    command += ["--config-json", json.dumps(CONSOLE_AT_INFO)]
    if tags:
        command += ["--tags", json.dumps(tags)]
    if subprocess.run(command, check=False).returncode != 0:
        return 1
    with DagsterInstance.get() as instance:
        # The launcher's process normally ends with the run; a run launcher that runs it
        # elsewhere (Celery, Kubernetes) or a run queue returns at once, and this waits.
        dagster_run = wait_for_run(instance, run_id, job)
    return _said(job, dagster_run)


def wait_for_run(instance: DagsterInstance, run_id: str, job: str) -> DagsterRun:
    """The run once it has ended; meanwhile, every ``PROGRESS_SECONDS``, a line saying how
    it stands (and, while it is queued, what it waits for)."""
    started = time.monotonic()
    next_said = started + PROGRESS_SECONDS
    while not (dagster_run := instance.get_run_by_id(run_id)).is_finished:
        now = time.monotonic()
        if now >= next_said:
            line = f"run {run_id} of {job}: {dagster_run.status.value} for {now - started:.0f} s"
            if dagster_run.status == DagsterRunStatus.QUEUED:
                ahead = instance.get_runs_count(RunsFilter(statuses=[DagsterRunStatus.QUEUED]))
                line += (
                    f" ({ahead} runs queued; the instance's dagster-daemon launches them"
                    + ("" if daemon_running(instance) else ", and none is running")
                    + ")"
                )
            print(line, flush=True)
            next_said = now + PROGRESS_SECONDS
        time.sleep(RUN_POLL_SECONDS)
    return dagster_run


def _said(job: str, dagster_run: DagsterRun | None) -> int:
    """Say how the run of ``job`` ended; 0 when it succeeded."""
    if dagster_run is None or dagster_run.status != DagsterRunStatus.SUCCESS:
        status = dagster_run.status.value if dagster_run else "not recorded"
        print(
            f"Run {dagster_run.run_id if dagster_run else '?'} of {job}: {status}", file=sys.stderr
        )
        return 1
    print(f"Run {dagster_run.run_id} of {job}: {dagster_run.status.value}")
    return 0


def stage_partition(key: str) -> tuple[str, str, bool]:
    """One run of stage_source_files for the partition `key`, in this process, recorded in
    the instance of `$DAGSTER_HOME` (`make run` calls it in worker processes); returns the
    key, the run id and whether it succeeded."""
    from laion_pipeline.orchestration.definitions import defs  # the definitions import the jobs

    with DagsterInstance.get() as instance:
        result = defs.resolve_job_def("stage_source_files").execute_in_process(
            partition_key=key,
            instance=instance,
            raise_on_error=False,
            tags=MAKE_RUN_TAGS,
            run_config=CONSOLE_AT_INFO,
        )
    return key, result.run_id, result.success


def last_attempts(runs: Sequence[DagsterRun]) -> dict[str, DagsterRun]:
    """The latest run of each partition among ``runs`` (newest first, as the instance lists
    them): a retry replaces the run it retries."""
    latest: dict[str, DagsterRun] = {}
    for dagster_run in reversed(runs):
        latest[dagster_run.tags.get(PARTITION_NAME_TAG, "")] = dagster_run
    return latest


class Launcher:
    """Runs submitted to the instance's run launcher from this process, with the workspace
    loaded once: what `dagster job launch` does for one run, for every run of a build (a
    `dagster job launch` process per run costs seconds of a core to load the workspace,
    which the workers then lack). Uses the run creation of Dagster's own CLI (an internal
    of the pinned version, exercised by test_engine.py)."""

    def __init__(self, instance: DagsterInstance, workspace: str):
        self.instance = instance
        self.workspace_file = workspace
        self._stack = ExitStack()

    def __enter__(self) -> "Launcher":
        from dagster._cli.workspace.cli_target import (
            WorkspaceOpts,
            get_code_location_from_workspace,
            get_remote_repository_from_code_location,
            get_workspace_from_cli_opts,
        )
        from dagster.version import __version__

        opts = WorkspaceOpts(workspace=(self.workspace_file,))
        self.workspace = self._stack.enter_context(
            get_workspace_from_cli_opts(self.instance, __version__, opts)
        )
        self.code_location = get_code_location_from_workspace(self.workspace, None)
        self.repository = get_remote_repository_from_code_location(self.code_location, None)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def submit(self, job: str, tags: dict[str, str]) -> str:
        """Create a run of ``job`` with ``tags`` and hand it to the run launcher (through the
        run queue when the instance has one); returns its id."""
        from dagster._cli.job import _create_run
        from dagster._cli.workspace.cli_target import get_remote_job_from_remote_repo

        remote_job = get_remote_job_from_remote_repo(self.repository, job)
        dagster_run = _create_run(
            instance=self.instance,
            code_location=self.code_location,
            remote_repo=self.repository,
            remote_job=remote_job,
            run_config={},
            tags=tags,
            op_selection=None,
            run_id=None,
        )
        with warnings.catch_warnings():
            # dagster-celery defines its task again for each run it launches: the same task.
            warnings.filterwarnings("ignore", message="Task name 'execute_job' is already")
            self.instance.submit_run(dagster_run.run_id, self.workspace)
        return dagster_run.run_id

    def run(self, job: str, tags: dict[str, str]) -> int:
        """One run of ``job``, waited for; 0 when it succeeded."""
        run_id = self.submit(job, tags)
        while not (dagster_run := self.instance.get_run_by_id(run_id)).is_finished:
            time.sleep(RUN_POLL_SECONDS)
        print(f"Run {run_id} of {job}: {dagster_run.status.value}")
        return 0 if dagster_run.status == DagsterRunStatus.SUCCESS else 1

    def backfill(self, job: str, keys: Sequence[str]) -> int:
        """A run of ``job`` per partition of ``keys``, all submitted at once, then wait until
        each partition's last attempt succeeded, or failed with no retry to come. Each run is
        submitted on its own (not as a backfill): the runs of a `dagster job backfill` are
        never retried, since that backfill is over once its runs are launched."""
        if not keys:
            return 0
        batch = str(uuid.uuid4())
        for key in keys:
            self.submit(job, {**MAKE_RUN_TAGS, BATCH_TAG: batch, PARTITION_NAME_TAG: key})
        return wait_for_batch(self.instance, job, keys, batch)


def wait_for_batch(instance: DagsterInstance, job: str, keys: Sequence[str], batch: str) -> int:
    """Wait until the last attempt of each partition of ``keys`` in ``batch`` succeeded, or
    failed with no retry to come (the daemon marks a failed run for a retry a moment after it
    fails); 0 when every one succeeded."""
    failed_since = None
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
