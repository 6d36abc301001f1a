"""One writer at a time per data directory, across processes and runs: a lock file that the
operating system releases when its holder ends, however it ends (a crash or SIGKILL leaves no
stale lock)."""

import errno
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from laion_pipeline.common.errors import ConfigurationError, DataDirBusyError
from laion_pipeline.common.layout import DataLayout, candidate
from laion_pipeline.releases.switch import recover

WAIT_LOG_SECONDS = 30.0


def writable_data_dir(layout: DataLayout) -> None:
    """Create the data directory if its parent exists; fail clearly if it cannot be."""
    root = layout.root
    if not root.exists() and not root.parent.is_dir():
        raise ConfigurationError(
            f"LAION_DATA_DIR={root} does not exist, nor does its parent: create it or point "
            "LAION_DATA_DIR at an existing folder"
        )
    if root.exists() and not root.is_dir():
        raise ConfigurationError(f"LAION_DATA_DIR={root} is a file, not a folder")
    try:
        root.mkdir(exist_ok=True)
    except OSError as error:
        raise ConfigurationError(
            f"cannot create LAION_DATA_DIR={root} ({error.strerror}): point LAION_DATA_DIR at a "
            "folder you can write"
        ) from error


@contextmanager
def _exclusive(
    path: Path, what: Path, log: Any, wait: bool, doing: str = "is writing {what} (a build step)"
) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` for writing ``what``; wait (saying so)
    while another process holds it, or with ``wait=False`` raise ``DataDirBusyError``."""
    try:
        lock = path.open("a+")
    except OSError as error:  # a read-only folder or file system
        raise ConfigurationError(
            f"LAION_DATA_DIR={what} is not writable ({error.strerror}): fix its "
            "permissions or point LAION_DATA_DIR at a writable folder"
        ) from error
    with lock:
        started = next_log = time.monotonic()
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            if not wait:
                raise DataDirBusyError(
                    f"{holder} {doing.format(what=what)}: try again when it has finished"
                )
            now = time.monotonic()
            if log and now >= next_log:
                log.info(
                    f"waiting for {holder} to finish writing {what} ({now - started:.0f} s so far)"
                )
                next_log = now + WAIT_LOG_SECONDS
            time.sleep(0.2)
        lock.seek(0)
        lock.truncate()
        lock.write(f"process {os.getpid()}")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def remove_stale_temporaries(layout: DataLayout) -> list[Path]:
    """Delete what a writer killed mid-step left behind (a half-built file, a side index, an
    unpublished candidate); only the holder of the data directory's lock may call it, since
    every live writer's temporaries exist only while it holds the lock. Returns what was
    deleted."""
    build, published = layout.build_db.parent, layout.published_dir
    patterns = [
        (build, f"{layout.build_db.name}.new*"),
        (build, f"{layout.build_db.name}.copy"),
        (build, "images_fts.side.db*"),
        *(
            (folder, candidate(Path("*")).name)
            for folder in (published, *layout.releases_dir.glob("*/report"))
        ),
    ]
    stale = [path for folder, pattern in patterns for path in sorted(folder.glob(pattern))]
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return stale


@contextmanager
def data_dir_lock(layout: DataLayout, log: Any = None, *, wait: bool = True) -> Iterator[None]:
    """Hold the data directory's write lock; wait (saying so) while another run holds it, or
    with ``wait=False`` raise ``DataDirBusyError`` naming the holder."""
    writable_data_dir(layout)
    with _exclusive(layout.root / ".lock", layout.root, log, wait):
        stale = remove_stale_temporaries(layout) + recover(layout)
        if stale and log:
            log.warning("removed what an interrupted run left: " + ", ".join(str(p) for p in stale))
        yield


@contextmanager
def staged_file_lock(
    layout: DataLayout, key: str, log: Any = None, *, wait: bool = True
) -> Iterator[None]:
    """Hold the lock of one source file's staged file and its record: partitions of different
    files stage at once (they write nothing else), two runs of the same file take turns; with
    ``wait=False``, ``DataDirBusyError`` while another holds it."""
    writable_data_dir(layout)
    layout.staged_dir.mkdir(parents=True, exist_ok=True)
    lock = layout.staged_record(key).with_suffix(".lock")
    with _exclusive(lock, layout.staged_parquet(key), log, wait=wait):
        yield


@contextmanager
def shard_lock(layout: DataLayout, db: Path, log: Any = None) -> Iterator[None]:
    """Hold the lock of one shard's database ``db`` (``<db>.lock`` beside it): shards build
    at once (each writes only its own file), two runs of the same shard take turns, and the
    catalog's steps and the publish hold every shard's lock while they read, check and link
    their files."""
    writable_data_dir(layout)
    db.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(db.with_suffix(".lock"), db, log, wait=True):
        yield


@contextmanager
def command_lock(layout: DataLayout, *, wait: bool = True) -> Iterator[None]:
    """One `make run` (or `make run-on-workers`) at a time per data folder, held from its
    decision to the end of its build: a second one waits, then decides again from what the
    first one made (two deciding at once would both stage and build the same release)."""
    writable_data_dir(layout)
    doing = "is `make run` on {what}"
    with _exclusive(layout.root / ".run.lock", layout.root, None, wait, doing):
        yield
