"""A shard's seal: the checks a release needs of each shard's file, made by the run that built
the shard (on its worker, in parallel with the other shards) instead of one after another by
the publish: ANALYZE for the query planner, SQLite's full ``integrity_check`` and the file's
sha256, recorded beside the file (``<shard>.db.seal.json``) with the file's identity (device,
inode, size, modification time).

A seal holds for a file while its identity is the recorded one: publishing hard-links the
file (the same inode), so the publish and the release's check take the seal's sha256 and
integrity check instead of reading every byte again; any write to the file (rebuilding its
index unshares it first, a new build replaces it) changes its identity, and then every byte
is read again, as for a database without a seal.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from laion_pipeline.common.db import sqlite_connect
from laion_pipeline.common.errors import PublishCheckError
from laion_pipeline.common.files import read_json, sha256_file, write_json_atomic


@dataclass(frozen=True)
class FileIdentity:
    """What changes whenever a file's bytes are written or it is replaced."""

    device: int
    inode: int
    size_bytes: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        st = path.stat()
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class Seal:
    sha256: str
    integrity_check: str
    sealed_at: str
    file: FileIdentity
    inputs: str = ""  # what the file was built from (a shard's data and code versions)

    def holds_for(self, path: Path) -> bool:
        """Whether ``path`` is still the file that was sealed."""
        try:
            return FileIdentity.of(path) == self.file
        except FileNotFoundError:
            return False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Seal:
        return cls(
            data["sha256"],
            data["integrity_check"],
            data["sealed_at"],
            FileIdentity(**data["file"]),
            data.get("inputs", ""),
        )


def seal_path(db: Path) -> Path:
    return db.with_name(db.name + ".seal.json")


def unseal(db: Path) -> None:
    """Remove ``db``'s seal, before the file is written or replaced."""
    seal_path(db).unlink(missing_ok=True)


def prepare(db: Path, what: str) -> tuple[str, str]:
    """ANALYZE ``db`` (approximate statistics, in milliseconds), flush it to disk, then check
    all of it with SQLite's ``integrity_check`` while hashing it on another thread; an error
    naming ``what`` unless the check says "ok". Returns the sha256 and the check's result,
    for ``seal`` once the file is in place."""
    from concurrent.futures import ThreadPoolExecutor

    conn = sqlite_connect(db)
    try:
        conn.execute("PRAGMA analysis_limit = 1000")
        conn.execute("ANALYZE")
    finally:
        conn.close()
    with db.open("rb") as written:  # built with synchronous = OFF: on disk before it is sealed
        os.fsync(written.fileno())
    with ThreadPoolExecutor(max_workers=1) as pool:
        hashing = pool.submit(sha256_file, db)
        conn = sqlite_connect(db, read_only=True)
        try:
            result = "; ".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
        finally:
            conn.close()
        sha256 = hashing.result()
    if result != "ok":
        raise PublishCheckError(f"{what}: {db} fails SQLite's integrity_check: {result}")
    return sha256, result


def seal(db: Path, sha256: str, integrity_check: str, inputs: str = "") -> Seal:
    """Record the seal of ``db`` (prepared, then moved into place: a rename keeps its
    identity), built from ``inputs``."""
    made = Seal(
        sha256,
        integrity_check,
        dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        FileIdentity.of(db),
        inputs,
    )
    write_json_atomic(seal_path(db), made.as_dict())
    return made


def read_seal(db: Path) -> Seal | None:
    """The seal recorded for ``db``, whether or not it still holds for it."""
    try:
        return Seal.from_dict(read_json(seal_path(db), "materialize images"))
    except (OSError, KeyError, TypeError, ValueError):
        return None  # none, or a seal of another version: every byte is read instead


def valid_seal(db: Path) -> Seal | None:
    """The seal of ``db`` if it has one that still holds for it."""
    found = read_seal(db)
    return found if found is not None and found.holds_for(db) else None


def built_from(db: Path, inputs: str) -> Seal | None:
    """The seal of ``db`` when it was built from ``inputs`` and is whole: its identity the
    sealed one, or (a copy, a restore, a move: another inode or time) its sha256 the sealed
    one, read again and sealed anew. None when the file is to be built."""
    found = read_seal(db)
    if found is None or not inputs or found.inputs != inputs or not db.exists():
        return None
    if found.holds_for(db):
        return found
    if sha256_file(db) != found.sha256:
        return None
    return seal(db, found.sha256, found.integrity_check, inputs)
