"""A build killed with SIGKILL at each stage: the published database stays intact and readable,
and the next run succeeds with no manual cleanup (leftovers removed, no stale lock, no index
process left running)."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.synthetic import generate, sample_entity_names
from laion_pipeline.common.files import sha256_file
from laion_pipeline.common.layout import DataLayout
from laion_pipeline.orchestration.assets.serving import manifest_problems
from laion_pipeline_tests.conftest import REPO_ROOT, build, run_command

# Enough rows that each stage lasts long enough to be caught (a tenth of a second or more).
ROWS = 80_000


@pytest.fixture(scope="module")
def parquet(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("crash_parquet")
    generate(folder, ROWS, names=sample_entity_names(), workers=1)
    return folder


@pytest.fixture(scope="module")
def published(tmp_path_factory, parquet) -> Path:
    """A data directory with a published database, built once and copied for each test."""
    data = tmp_path_factory.mktemp("crash_published") / "data"
    assert build(data, {"LAION_SOURCE": "local", "LAION_LOCAL_DIR": str(parquet)}).success
    return data


def leftovers(layout: DataLayout) -> list[str]:
    found = [
        *layout.build_db.parent.glob("*.new*"),
        *layout.build_db.parent.glob("*.copy"),
        *layout.build_db.parent.glob("images_fts.side.db*"),
        *layout.published_dir.glob(".*"),
    ]
    return sorted(p.name for p in found)


def kill_build_when(data: Path, parquet: Path, ready, make_run: bool) -> None:
    """Build in a process group of its own; SIGKILL it as soon as ``ready()``."""
    process = act_when(data, parquet, ready, make_run)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


# The build of conftest's build() (the real definitions, every run in this process) on its own:
# seconds less to start than `make run`'s command, whose launched run is a third process.
BUILD = """
import os, sys
from pathlib import Path
from dagster import DagsterInstance
from laion_pipeline_tests.conftest import build
with DagsterInstance.get() as instance:
    sys.exit(0 if build(Path(sys.argv[1]), os.environ, instance=instance).success else 1)
"""


def act_when(data: Path, parquet: Path, ready, make_run: bool = False) -> subprocess.Popen:
    """Start a build of ``parquet`` in a process group of its own (`make run`'s command, or
    the same runs in one process); return once ``ready()``, with the build still running."""
    env = {
        **os.environ,
        "LAION_DATA_DIR": str(data),
        "LAION_SOURCE": "local",
        "LAION_LOCAL_DIR": str(parquet),
        "DAGSTER_HOME": str(data.parent / "dagster_home"),
    }
    # --force: the folder's release may hold these inputs already (then make run builds nothing).
    command = [*run_command(data.parent / "dagster_home"), "--force"]
    if not make_run:
        command = [sys.executable, "-c", BUILD, str(data)]
        env["PYTHONPATH"] = str(REPO_ROOT)
    process = subprocess.Popen(
        command,
        cwd=data.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not ready():
        assert process.poll() is None, "the build ended before the stage to interrupt"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    return process


STAGES = {
    "staging": lambda layout: (layout.staging_db.parent / "laion.duckdb").exists(),
    "images load": lambda layout: layout.build_db.with_name(
        layout.build_db.name + "-journal"
    ).exists(),
    "caption index": lambda layout: (layout.build_db.parent / "images_fts.side.db").exists(),
    "publish": lambda layout: any(layout.published_dir.glob(".*.candidate")),
}


@pytest.mark.parametrize("stage", STAGES)
def test_a_build_killed_mid_stage_leaves_the_published_database_and_recovers(
    tmp_path, parquet, published, stage
):
    # `make run`'s own command once: its launched run and the index process die with it.
    data = tmp_path / "data"
    shutil.copytree(published, data, symlinks=True)
    layout = DataLayout(data.resolve())
    shutil.rmtree(layout.staging_db.parent)  # so the staging stage can be seen starting
    before = sha256_file(layout.published_db)

    kill_build_when(data, parquet, lambda: STAGES[stage](layout), stage == "caption index")

    assert sha256_file(layout.published_db) == before
    assert manifest_problems(layout) == []
    result = build(data, {"LAION_SOURCE": "local", "LAION_LOCAL_DIR": str(parquet)})
    assert result.success
    assert manifest_problems(layout) == []
    assert leftovers(layout) == []


def captions_of(path: Path) -> list[str | None]:
    return pq.read_table(path, columns=["TEXT"]).column("TEXT").to_pylist()


@pytest.mark.parametrize(
    ("stage", "how"),
    [
        ("images load", "renamed over"),
        ("caption index", "renamed over"),
        ("images load", "rewritten in place"),
    ],
)
def test_a_source_file_changed_during_a_build_never_reaches_it(
    tmp_path, parquet, published, stage, how
):
    data, source = tmp_path / "data", tmp_path / "parquet"
    shutil.copytree(published, data, symlinks=True)
    shutil.copytree(parquet, source)
    layout = DataLayout(data.resolve())
    shutil.rmtree(layout.staging_db.parent)
    shutil.rmtree(layout.raw_dir / "snapshot")  # so this build verifies the files again
    first = sorted(source.rglob("*.parquet"))[0]
    original, sha256 = captions_of(first), sha256_file(first)
    # The same rows with other captions: row counts agree, so only the captions can tell.
    changed = pq.read_table(first)
    texts = pa.array([f"replaced caption {i}" for i in range(changed.num_rows)], pa.string())
    changed = changed.set_column(changed.schema.get_field_index("TEXT"), "TEXT", texts)

    building = act_when(data, source, lambda: STAGES[stage](layout))
    if how == "renamed over":
        pq.write_table(changed, tmp_path / "next.parquet")
        os.replace(tmp_path / "next.parquet", first)
    else:
        pq.write_table(changed, first)
    assert building.wait(timeout=300) == 0

    manifest = json.loads(layout.manifest_json.read_text())
    key = first.relative_to(source).as_posix()
    read = {"name": key, "rows_read": len(original), "rows": len(original), "sha256": sha256}
    assert manifest["parquet_files"][0] == read
    conn = sqlite3.connect(f"{layout.published_db.as_uri()}?mode=ro", uri=True)
    loaded = [t for (t,) in conn.execute("SELECT text FROM images LIMIT ?", (len(original),))]
    assert loaded == original
    conn.close()
    # FTS5's full check of the index against the captions (a command: on a copy).
    shutil.copy(layout.published_db, tmp_path / "copy.db")
    conn = sqlite3.connect(tmp_path / "copy.db")
    conn.execute("INSERT INTO images_fts (images_fts, rank) VALUES ('integrity-check', 1)")
    conn.close()
    assert manifest_problems(layout) == []


# A parent that starts a child as SideIndex starts the index process, then waits forever.
PARENT = """
import os, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid())])
print(child.pid, flush=True)
child.wait()
"""
# The child: what `python -m laion_pipeline.build.fts` does first (given its parent's pid, since the
# parent may be gone before the child gets to ask), then a long index build.
CHILD = """
import sys, time
from laion_pipeline.build.fts import _exit_with_parent
_exit_with_parent(int(sys.argv[1]), every=0.1)
time.sleep(60)
"""


def test_the_caption_index_process_ends_when_its_build_is_killed():
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, CHILD], stdout=subprocess.PIPE, text=True
    )
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)  # only the build, as the out-of-memory killer would
    parent.wait()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and b"Z" not in status(child):
        assert time.monotonic() < deadline, "the index process outlived its build"
        time.sleep(0.05)


def status(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().split(b") ")[1][:1]
    except OSError:
        return b"Z"
