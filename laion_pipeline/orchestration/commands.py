"""Command line: `python -m laion_pipeline run|where|serve|rollback`.

- `run` observes the sources, stages each new or changed source file (one run of
  `stage_source_files` per file, `LAION_WORKERS` at a time), then launches the `full_build`
  job through the Dagster instance (`$DAGSTER_HOME`), as the UI does, and waits for it;
- `where` prints the current release: its database, when and from what it was built, its
  row counts and the address `make serve` serves it at;
- `serve` runs Datasette on the current release (immutable, with the inspect file and the
  2022 deployment's settings), following each publish;
- `rollback` serves the previously published release again (run it twice to undo).
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack

from laion_pipeline.build.state import DataFolderState
from laion_pipeline.common.errors import (
    ConfigurationError,
    DataDirBusyError,
    InvalidInputError,
    NotEnoughDiskError,
    SourceError,
    StaleInputError,
)
from laion_pipeline.common.layout import REPORT_URL, DataLayout
from laion_pipeline.orchestration.resources import LaionData, build_resources
from laion_pipeline.releases.datasette_files import SERVE_SETTINGS
from laion_pipeline.releases.lock import command_lock, data_dir_lock
from laion_pipeline.releases.switch import pointed_release
from laion_pipeline.releases.switch import rollback as restore_previous
from laion_pipeline.search.shard_search import count_cap

# Below this many bytes to stage in all, one process stages them faster than workers start.
IN_PROCESS_BYTES = 64 * 1024 * 1024
# Why files are staged again: the first lines said, then how many more.
SHOWN_REASONS = 10
# What a command says in a line instead of a traceback: each names what is wrong, what to do.
REFUSALS = (ConfigurationError, InvalidInputError, NotEnoughDiskError, SourceError, StaleInputError)
# The exit status of a command refused for a setting to change (as argparse's usage errors).
CONFIGURATION_EXIT = 2
# How often a command that waits says so.
PROGRESS_SECONDS = 10.0


def _layout():
    return build_resources()["laion_data"].layout


DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8001


def where(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> int:
    """Say which release is served (`make where`): its database, when and from what it was
    built, its rows and report, and the address `make serve` serves it at."""
    layout = _layout()
    if not layout.manifest_json.exists():
        print(f"Nothing published yet in {layout.published_dir}: run `make run` first.")
        return 1
    manifest = json.loads(layout.manifest_json.read_text(encoding="utf-8"))
    counts = ", ".join(f"{table} {n:,}" for table, n in manifest["row_counts"].items())
    source = manifest.get("source", {})
    print(f"Published database: {layout.published_db}")
    print(f"Release: {manifest['release']} (the current one), built at {manifest['built_at']}")
    if source:
        print(
            f"Source: {source.get('kind')} {source.get('location')} at revision "
            f"{source.get('revision')}, profile {manifest.get('profile', {}).get('name', '?')}"
        )
    print(f"Rows: {counts}")
    report = layout.report_dir / "index.html"
    if report.exists():
        print(f"Analysis: {report} (charts and tables; served at {REPORT_URL})")
    options = (f" HOST={host}" if host != DEFAULT_HOST else "") + (
        f" PORT={port}" if port != DEFAULT_PORT else ""
    )
    print(f"Serve it with `make serve{options}` (Datasette on http://{host}:{port}).")
    return 0


def observe() -> bool:
    """Observe the sources (a run of observe_sources in this process): the listing written
    into the data folder, a partition of source_files per file, the versions in the UI."""
    from dagster import DagsterInstance

    from laion_pipeline.orchestration.definitions import defs
    from laion_pipeline.orchestration.jobs import CONSOLE_AT_INFO, MAKE_RUN_TAGS

    with DagsterInstance.get() as instance:
        observed = defs.resolve_job_def("observe_sources").execute_in_process(
            instance=instance, raise_on_error=False, tags=MAKE_RUN_TAGS, run_config=CONSOLE_AT_INFO
        )
    if not observed.success:
        print(f"Run {observed.run_id} of observe_sources: FAILURE", file=sys.stderr)
    return observed.success


def say_state(state: DataFolderState) -> None:
    """The data folder against the sources, in a line, and why each file is staged again."""
    print(state.summary())
    reasons = state.reasons()
    for line in reasons[:SHOWN_REASONS]:
        print(f"  {line}")
    if len(reasons) > SHOWN_REASONS:
        print(f"  ... and {len(reasons) - SHOWN_REASONS} more")


def assess_and_observe(resources: dict, force: bool) -> DataFolderState | int:
    """Decide from the data folder what to do; when something is, observe the sources (the
    run that records the listing), and decide again from the listing observed. An exit code
    instead when there is nothing to do (0, said) or the observation failed (1)."""
    from dagster import DagsterInstance

    from laion_pipeline.orchestration.jobs import data_folder_state, record_history
    from laion_pipeline.sources.inputs import SourceListing

    state = data_folder_state(resources)
    say_state(state)
    if state.up_to_date and not force:
        with DagsterInstance.get() as instance:
            reported = record_history(instance, resources["laion_data"].layout, state)
        if reported:
            print(
                f"the Dagster instance had no history of {len(reported)} assets and partitions "
                "the data folder holds: reported them as materializations"
            )
        say_up_to_date(state)
        return 0
    if not observe():
        return 1
    return data_folder_state(resources, SourceListing.read(resources["laion_data"].layout))


def say_up_to_date(state: DataFolderState) -> None:
    print(f"up to date: release {state.served} ({state.why}); `make run FORCE=1` builds anyway")


def to_build(resources: dict, state: DataFolderState, force: bool) -> DataFolderState | None:
    """What to build once the files the data folder lacked are staged: decided again (files
    restaged because they were damaged or missing leave a release of the same inputs
    standing: then None, said), and said."""
    from laion_pipeline.orchestration.jobs import data_folder_state

    if state.to_stage:
        state = data_folder_state(resources, state.listing)
        if state.up_to_date and not force:
            say_up_to_date(state)
            return None
    print(f"building a new release: {state.why}")
    if state.inputs is not None:
        built, shards = len(state.shards_to_build), len(state.inputs.shards)
        print(
            f"{built} of {shards} shards to build" + (", the others kept" if built < shards else "")
        )
    return state


def stage(laion_data: LaionData, state: DataFolderState) -> int:
    """Stage the source files the data folder lacks (a run of stage_source_files per file,
    `LAION_WORKERS` at a time)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from laion_pipeline.orchestration.engine import stage_partition

    keys = state.to_stage
    wanted = set(keys)
    size = sum(entry.size or 0 for entry in state.listing.entries if entry.key in wanted)
    # Worker processes cost seconds to start: unless told how many, small inputs are staged
    # in this process.
    small = not laion_data.workers and size < IN_PROCESS_BYTES
    workers = 1 if small else laion_data.parallel_files
    print(f"{len(keys)} of {len(state.listing.entries)} source files to stage, {workers} at a time")
    failed = []
    with ExitStack() as stack:
        if workers == 1:
            staged = map(stage_partition, keys)
        else:
            pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
            staged = stack.enter_context(pool).map(stage_partition, keys)
        for key, run_id, success in staged:
            print(
                f"Run {run_id} of stage_source_files [{key}]: {'SUCCESS' if success else 'FAILURE'}"
            )
            if not success:
                failed.append(key)
    if failed:
        print(f"{len(failed)} source files failed to stage: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def run(
    job: str,
    workspace: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    force: bool = False,
) -> int:
    """`full_build` (what `make run` runs): decide from the data folder what is missing or
    stale; when nothing is, say "up to date" and stop (unless ``force``); else stage the
    files the data folder lacks, then launch full_build over every shard they make. Any other
    job: launch it."""
    from dagster import DagsterInstance

    from laion_pipeline.orchestration.engine import launch, run_in_process_instead
    from laion_pipeline.orchestration.jobs import shard_run_tags

    instance_home()
    with DagsterInstance.get() as instance:
        in_process = run_in_process_instead(instance)
    if job != "full_build":
        if launch(job, workspace, None, in_process=in_process):
            return 1
        return where(host, port)
    resources = build_resources()
    laion_data = resources["laion_data"]
    with ExitStack() as stack:
        command_for(laion_data.layout, stack)
        state = assess_and_observe(resources, force)
        if isinstance(state, int):
            return state
        if state.to_stage and stage(laion_data, state):
            return 1
        if to_build(resources, state, force) is None:
            return 0
        with DagsterInstance.get() as instance:
            tags = shard_run_tags(instance, laion_data)
        if launch(job, workspace, tags, in_process=in_process):
            return 1
    return where(host, port)


def instance_home() -> None:
    """The Dagster instance's folder, `$DAGSTER_HOME`: made (empty: Dagster's default
    settings) when it does not exist yet, and said; its settings are never written."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise ConfigurationError(
            "DAGSTER_HOME is not set: run `make run` (it uses the project's own instance in "
            ".dagster_home/), or set DAGSTER_HOME to a folder for the Dagster instance"
        )
    if not os.path.isdir(home):
        os.makedirs(home)
        print(f"DAGSTER_HOME={home} did not exist: made it (an instance of Dagster's defaults)")


def hold_when_free(stack: ExitStack, lock: Callable[[], AbstractContextManager]) -> None:
    """Enter ``lock()`` (a lock taken with ``wait=False``) into ``stack``; while another
    process holds it, say who every few seconds and try again."""
    started, said = time.monotonic(), 0.0
    while True:
        try:
            stack.enter_context(lock())
            return
        except DataDirBusyError as error:
            waited = time.monotonic() - started
            if waited >= said:
                print(f"waiting ({waited:.0f} s): {error}", flush=True)
                said = waited + PROGRESS_SECONDS
            time.sleep(0.5)


def command_for(layout: DataLayout, stack: ExitStack) -> None:
    """What a build command holds before it decides: the data folder's command lock, for
    its whole run (another `make run` of the folder is waited for, said), after waiting for
    any build step writing the folder now; a read-only folder is refused."""
    hold_when_free(stack, lambda: command_lock(layout, wait=False))
    with ExitStack() as step:
        hold_when_free(step, lambda: data_dir_lock(layout, wait=False))


def run_on_workers(workspace: str, force: bool = False) -> int:
    """The whole build as runs of the instance's run launcher, partition by partition: a run
    per source file the data folder lacks, the shard plan, a run per shard, then the catalog,
    the publish and the analysis (each waits for the one before); nothing when the data
    folder is up to date (unless ``force``). The runs are submitted from this process, the
    workspace loaded once."""
    from dagster import DagsterInstance

    from laion_pipeline.orchestration.engine import Launcher
    from laion_pipeline.orchestration.jobs import MAKE_RUN_TAGS

    resources = build_resources()
    with ExitStack() as stack:
        command_for(resources["laion_data"].layout, stack)
        state = assess_and_observe(resources, force)
        if isinstance(state, int):
            return state
        files = state.to_stage
        with DagsterInstance.get() as instance, Launcher(instance, workspace) as launcher:
            print(f"{len(files)} source files to stage, a run each")
            if launcher.backfill("stage_source_files", files):
                return 1
            if to_build(resources, state, force) is None:
                return 0
            if launcher.run("plan_shards", MAKE_RUN_TAGS):
                return 1
            shards = instance.get_dynamic_partitions("shards")
            print(f"{len(shards)} shards to build, a run each")
            if launcher.backfill("build_shards", shards):
                return 1
            if launcher.run("catalog", MAKE_RUN_TAGS):
                return 1
    return where()


def rollback(wait: bool) -> int:
    layout = _layout()
    if not layout.published_dir.is_dir():  # never a folder made for a mistyped path
        print(
            f"Nothing to roll back to: {layout.published_dir} does not exist (is "
            f"LAION_DATA_DIR={layout.root} the data folder you built?)",
            file=sys.stderr,
        )
        return 1
    try:
        with data_dir_lock(layout, wait=wait):
            served = restore_previous(layout)
    except StaleInputError as error:
        print(f"Nothing to roll back to: {error}", file=sys.stderr)
        return 1
    except DataDirBusyError as error:
        print(f"Not rolled back: {error} (or use --wait).", file=sys.stderr)
        return 1
    manifest = json.loads(layout.release(served).manifest_json.read_text(encoding="utf-8"))
    print(f"Serving release {served} again, built at {manifest['built_at']}")
    print(
        f"The release it replaced, {pointed_release(layout, 'previous')}, is kept as "
        f"{layout.previous_dir}: run rollback again to undo."
    )
    print("A running `make serve` switches to it with its next request.")
    return 0


def datasette_command(host: str, port: int) -> list[str]:
    """The Datasette command line that serves the published folder."""
    layout = _layout()
    command = [sys.executable, "-m", "datasette", "serve", "-i", str(layout.published_db)]
    command += ["--inspect-file", str(layout.inspect_json), "-m", str(layout.metadata_json)]
    for name, value in SERVE_SETTINGS.items():
        command += ["--setting", name, str(value)]
    return [*command, "-h", host, "-p", str(port)]


def serve(host: str, port: int) -> int:
    from laion_pipeline.common.blocklist import blocklist_from_environment
    from laion_pipeline.serve.pools import SqlLimits
    from laion_pipeline.serve.takedowns import thumbnails_setting

    try:  # refused here, with the variable's name, rather than by the server
        count_cap()
        SqlLimits.from_environment()
        thumbnails_setting()
        takedowns = blocklist_from_environment()
    except ValueError as error:
        print(error, file=sys.stderr)
        return CONFIGURATION_EXIT
    except SourceError as error:  # a list of takedowns at a URL that does not answer
        print(error, file=sys.stderr)
        return 1
    if takedowns:
        print(f"Takedowns in force: {takedowns.entries:,} entries of {takedowns.origin}.")
    layout = _layout()
    if not layout.published_db.exists():
        print(f"{layout.published_db} does not exist: run `make run` first.", file=sys.stderr)
        return 1
    command = datasette_command(host, port)
    os.execv(command[0], command)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m laion_pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the list as written
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser(
        "run", help="launch a job through the Dagster instance and wait for it (make run)"
    )
    run_parser.add_argument("--job", default="full_build", help="the job to launch")
    run_parser.add_argument(
        "--workspace", default="workspace.yaml", help="the Dagster workspace file"
    )
    workers_parser = commands.add_parser(
        "run-on-workers",
        help="build partition by partition through the instance's run launcher (Celery workers)",
    )
    for parser_with_force in (run_parser, workers_parser):
        parser_with_force.add_argument(
            "--force",
            action="store_true",
            help="build and publish even when the current release holds exactly the inputs a "
            "build would have (make run FORCE=1)",
        )
    workers_parser.add_argument(
        "--workspace", default="workspace.yaml", help="the Dagster workspace file"
    )
    where_parser = commands.add_parser(
        "where", help="print which release is published, and where (make where)"
    )
    serve_parser = commands.add_parser("serve", help="serve the published database")
    for command_parser in (run_parser, where_parser, serve_parser):
        command_parser.add_argument(
            "--host", default=DEFAULT_HOST, help="the address `make serve` listens on (HOST)"
        )
        command_parser.add_argument(
            "--port", type=int, default=DEFAULT_PORT, help="the port `make serve` listens on (PORT)"
        )
    rollback_parser = commands.add_parser(
        "rollback", help="serve the previous release again (run it twice to undo)"
    )
    rollback_parser.add_argument(
        "--wait",
        action="store_true",
        help="wait for a build step that is writing the data folder, instead of refusing",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return run(args.job, args.workspace, args.host, args.port, args.force)
        if args.command == "run-on-workers":
            return run_on_workers(args.workspace, args.force)
        if args.command == "where":
            return where(args.host, args.port)
        if args.command == "rollback":
            return rollback(args.wait)
        return serve(args.host, args.port)
    except REFUSALS as error:  # said in a line: what is wrong and what to do
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        # A setting to change is a usage error (2, as argparse's); anything else 1.
        return CONFIGURATION_EXIT if isinstance(error, ConfigurationError) else 1
