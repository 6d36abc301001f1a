"""`make bench-scale`: the sharded build through the distributed engine on this machine, with
one worker and then two (one run at a time each, each pinned to a core of its own with
`taskset`, as machines of one core): `--rows` rows in `--files` files, `LAION_SHARD_ROWS` =
one file a shard. Starts `redis-server` on 127.0.0.1
(Debian's package), the workers and `make run-on-workers`'s command; reports the wall time of
each, the speed-up, and the per-core rates of the runs (from the instance's run records),
which docs/scale.md's model uses.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.bench import machine, prepare_inputs, update_report
from laion_pipeline.common.layout import ENTITY_KINDS

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_through_workers(work: Path, parquet: Path, lists: Path, workers: int, shard_rows: int):
    """One build of ``parquet`` by ``workers`` Celery workers; returns the wall time and the
    run records' seconds per job."""
    from dagster import DagsterInstance, RunsFilter

    root = work / f"engine-{workers}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "home").mkdir(parents=True)
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(root / "home"),
        "LAION_DATA_DIR": str(root / "data"),
        "LAION_SOURCE": "local",
        "LAION_LOCAL_DIR": str(parquet),
        "LAION_SHARD_ROWS": str(shard_rows),
        "LAION_WORKERS": "1",  # one run at a time on each worker
        "LAION_CELERY_BROKER": f"redis://127.0.0.1:{port}/0",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        **{f"LAION_{k.upper()}_CSV_URL": str(lists / f"{k}.csv") for k in ENTITY_KINDS},
    }
    shutil.copy(REPO_ROOT / "dagster_home.celery.yaml", root / "home" / "dagster.yaml")
    os.environ["LAION_CELERY_BROKER"] = env["LAION_CELERY_BROKER"]
    with DagsterInstance.from_config(str(root / "home")):
        pass
    processes = []

    def start(*command: str, log: str) -> None:
        out = (root / log).open("w")
        processes.append(
            subprocess.Popen(command, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        )  # fmt: skip

    taskset = shutil.which("taskset")
    cores = sorted(os.sched_getaffinity(0))
    try:
        redis = shutil.which("redis-server") or "redis-server"
        start(redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no", log="redis.log")  # fmt: skip
        for n in range(workers):
            # One core each, as a machine of one core would have: its runs stage and build
            # with one thread (they size themselves by the process's CPU affinity).
            pin = [taskset, "-c", str(cores[n % len(cores)])] if taskset else []
            start(*pin, str(BIN / "dagster-celery"), "worker", "start", "-A",
                  "dagster_celery.app", "-y", str(REPO_ROOT / "celery_worker.yaml"),
                  "-n", f"worker{n + 1}", "--", "--concurrency=1",
                  log=f"worker{n + 1}.log")  # fmt: skip
        from celery import Celery

        app = Celery(broker=env["LAION_CELERY_BROKER"])
        while len(app.control.ping(timeout=1.0)) < workers:
            time.sleep(0.5)
        command = [sys.executable, "-m", "laion_pipeline", "run-on-workers"]
        command += ["--workspace", str(REPO_ROOT / "workspace.yaml")]
        started = time.monotonic()
        subprocess.run(command, env=env, cwd=root, check=True, stdout=subprocess.DEVNULL)
        wall = time.monotonic() - started
    finally:
        for process in reversed(processes):
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)
    seconds: dict[str, float] = {}
    with DagsterInstance.from_config(str(root / "home")) as instance:
        for run in instance.get_runs(RunsFilter()):
            record = instance.get_run_record_by_id(run.run_id)
            if record and record.start_time and record.end_time:
                took = record.end_time - record.start_time
                seconds[run.job_name] = seconds.get(run.job_name, 0.0) + took
    return wall, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=16_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--work", type=Path, default=Path("data/bench"))
    parser.add_argument("--report", type=Path)
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        print("make bench-scale needs redis-server: apt-get install redis-server", file=sys.stderr)
        return 1
    args.work = args.work.resolve()  # the workers and the runs start in folders of their own
    parquet, lists = prepare_inputs(args.work, args.rows, files=args.files)
    shard_rows = -(-args.rows // args.files)  # one file a shard
    results: dict[int, tuple[float, dict[str, float]]] = {}
    for workers in (1, 2):
        results[workers] = run_through_workers(args.work, parquet, lists, workers, shard_rows)
        print(f"{workers} worker(s): {results[workers][0]:.1f} s", flush=True)
    one, two = results[1][0], results[2][0]
    runs = results[1][1]
    rates = {
        job: args.rows / runs[job]
        for job in ("stage_source_files", "build_shards")
        if runs.get(job)
    }
    section = format_section(args.rows, args.files, one, two, runs, rates)
    print(section)
    if args.report:
        update_report(args.report, args.rows, section)
    return 0


def format_section(
    rows: int, files: int, one: float, two: float, runs: dict[str, float], rates: dict[str, Any]
) -> str:
    lines = [
        f"### {rows:,} rows through the engine (`make bench-scale`)",
        "",
        f"{files} files, one shard a file, Celery workers of one run each on {machine()}, "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        "| workers | wall time | vs one worker |",
        "|---|---|---|",
        f"| 1 | {one:.1f} s | 100% |",
        f"| 2 | {two:.1f} s | {two / one:.0%} (target: at most 60%) |",
        "",
        "With one worker, seconds in the runs of each job (summed over its runs) and the rows "
        "per second per core they make:",
        "",
        "| job | seconds | rows/s per core |",
        "|---|---|---|",
        *(
            f"| {job} | {took:.1f} | " + (f"{rates[job]:,.0f}" if job in rates else "") + " |"
            for job, took in sorted(runs.items())
        ),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
