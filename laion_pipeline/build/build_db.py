"""The life of the build database (``build/laion-aesthetic-6pls.db``).

A full build starts a fresh file (``domains``), so it is compact without a VACUUM. Publishing
hard-links the checked file into ``published/``, so the build and the published database can
share one inode: any step that writes to the build database afterwards first gives it a copy
of its own, and the published file is never written again.
"""

import shutil
import sqlite3
from pathlib import Path

import sqlite_utils

from laion_pipeline.common.db import sqlite_connect
from laion_pipeline.common.errors import StaleInputError
from laion_pipeline.common.layout import DataLayout

SIDE_FILES = ("-wal", "-shm", "-journal")


def remove_side_files(db: Path) -> None:
    """Delete a database's WAL, shared-memory and journal files left by a crash, so they can
    never be applied to another file that takes its name."""
    for suffix in SIDE_FILES:
        db.with_name(db.name + suffix).unlink(missing_ok=True)


def fresh_build_db(layout: DataLayout) -> Path:
    """An empty file beside the build database, to be filled and then installed."""
    new = layout.build_db.with_name(layout.build_db.name + ".new")
    new.parent.mkdir(parents=True, exist_ok=True)
    new.unlink(missing_ok=True)
    remove_side_files(new)
    return new


def install_build_db(new: Path, layout: DataLayout) -> None:
    """Make ``new`` the build database, atomically."""
    remove_side_files(layout.build_db)
    new.replace(layout.build_db)


def open_writable(db: Path, asset_name: str) -> sqlite3.Connection:
    """A build file to write to, first unshared from the published release that links it."""
    if not db.exists():
        raise StaleInputError(f"{db} does not exist: materialize {asset_name} (and what follows)")
    if db.stat().st_nlink > 1:
        own = db.with_name(db.name + ".copy")
        shutil.copyfile(db, own)
        own.replace(db)
    return sqlite_connect(db)


def open_build_db(layout: DataLayout, *, write: bool) -> sqlite3.Connection:
    """The build database; for ``write``, first unshared from the published database."""
    if write:
        return open_writable(layout.build_db, "images")
    if not layout.build_db.exists():
        raise StaleInputError(
            f"{layout.build_db} does not exist: materialize images (and what follows)"
        )
    return sqlite_connect(layout.build_db)


def require_table(conn: sqlite3.Connection, table: str, asset_name: str) -> None:
    if not sqlite_utils.Database(conn, recursive_triggers=False).table(table).exists():
        raise StaleInputError(f"the build database has no {table} table: materialize {asset_name}")
