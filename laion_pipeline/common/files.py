"""File helpers: atomic writes, JSON, hashing."""

import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from laion_pipeline.common.db import is_disk_full
from laion_pipeline.common.errors import NotEnoughDiskError

HASH_CHUNK = 8 * 1024 * 1024


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def snapshot_name(source: Path, sha256: str) -> str:
    """The name of a verified copy of ``source`` whose content has ``sha256``."""
    return f"{sha256[:16]}-{source.name}"


def copy_and_hash(source: Path, folder: Path) -> tuple[Path, str]:
    """Copy ``source`` into ``folder``, hashing the bytes as they are copied, so the copy is
    exactly what the hash describes even if ``source`` changes meanwhile. The copy is named by
    its hash and made read-only. Returns the copy and its sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{source.name}.", suffix=".tmp")
    try:
        with source.open("rb") as reading, os.fdopen(fd, "wb") as writing:
            while chunk := reading.read(HASH_CHUNK):
                digest.update(chunk)
                writing.write(chunk)
        sha256 = digest.hexdigest()
        copy = folder / snapshot_name(source, sha256)
        os.chmod(tmp, 0o444)
        os.replace(tmp, copy)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return copy, sha256


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; published files are for readers
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_bytes(value: Any) -> bytes:
    """``value`` as the JSON files of the pipeline are written: indented, UTF-8."""
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode()


def write_json_atomic(path: Path, value: Any) -> None:
    write_atomic(path, json_bytes(value))


def read_json(path: Path, missing_hint: str) -> Any:
    """Read a JSON file an earlier asset wrote; ``missing_hint`` says which asset to run."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: {missing_hint}")
    return json.loads(path.read_text(encoding="utf-8"))


def disk_size(size: float) -> str:
    """``2.5 GB``, or ``340 MB`` under a gigabyte (a small shortfall is not ``0.0 GB``)."""
    return f"{size / 1e9:,.1f} GB" if size >= 1e9 else f"{max(size / 1e6, 1):,.0f} MB"


@contextmanager
def disk_for(folder: Path, needed: int, what: str) -> Iterator[None]:
    """``what`` (the block) with about ``needed`` bytes of ``folder``'s disk: refused before
    it starts with less free (``check_free_disk``), and a disk that fills up anyway (SQLite's
    "database or disk is full", or ENOSPC) fails as itself, with the folder and the space."""
    check_free_disk(folder, needed, what)
    try:
        yield
    except (sqlite3.OperationalError, OSError) as error:
        if not is_disk_full(error):
            raise
        free = shutil.disk_usage(folder).free
        raise NotEnoughDiskError(
            f"the disk filled up while {what} in {folder} ({error}): it needs about "
            f"{disk_size(needed)} free there, and {disk_size(free)} are now; free some space or "
            "set LAION_DATA_DIR to a larger disk, then run the step again"
        ) from error


def check_free_disk(folder: Path, needed: int, what: str) -> None:
    """Fail before starting ``what`` if ``folder``'s file system has less than ``needed`` bytes
    free."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise NotEnoughDiskError(
            f"{what} needs about {disk_size(needed)} free in {folder}, and only "
            f"{disk_size(free)} are: free some space or set LAION_DATA_DIR to a larger disk"
        )


class VerifiedFiles:
    """The sha256 of files already verified, by path, size and modification time, kept in
    ``path`` (one file per folder, ``.verified.json``, shared by every process), so a re-run
    does not read gigabytes again to know they are intact. A file whose size or time differs
    from its entry is hashed again; a cache file that cannot be read is ignored, with a
    warning, and never trusted."""

    NAME = ".verified.json"

    def __init__(self, path: Path, log: Any = None) -> None:
        self.path = path
        self.log = log
        self.lock = threading.Lock()
        self.entries: dict[str, list] = self._read()

    def _read(self) -> dict[str, list]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raw = error
        if isinstance(raw, dict) and all(_is_entry(v) for v in raw.values()):
            return raw
        if self.log:
            self.log.warning(f"ignored {self.path}: not a cache of verified files ({raw!s:.80})")
        return {}

    @staticmethod
    def stamp(file: Path) -> list[int]:
        """What changes when ``file`` is written: its size and modification time."""
        stat = file.stat()
        return [stat.st_size, stat.st_mtime_ns]

    def known(self, file: Path) -> str | None:
        """The sha256 of ``file`` if it was verified as it is now, else None."""
        try:
            stamp = self.stamp(file)
        except OSError:
            return None
        with self.lock:
            entry = self.entries.get(str(file))
        return entry[2] if entry and entry[:2] == stamp else None

    def record(self, file: Path, sha256: str, stamp: list[int] | None = None) -> None:
        """Remember ``file``'s sha256 (for the size and time ``stamp``, taken before it was
        read, or as it is now)."""
        stamp = stamp or self.stamp(file)
        with self.lock:
            self.entries[str(file)] = [*stamp, sha256]

    def moved(self, old: Path, new: Path) -> None:
        """``old`` was renamed ``new`` (the same bytes, size and time): its entry follows."""
        with self.lock:
            entry = self.entries.pop(str(old), None)
            if entry is not None:
                self.entries[str(new)] = entry

    def sha256(self, file: Path) -> str:
        """The sha256 of ``file``: remembered, or read now (and remembered)."""
        found = self.known(file)
        if found is not None:
            return found
        stamp = self.stamp(file)
        digest = sha256_file(file)
        self.record(file, digest, stamp)
        return digest

    def save(self) -> None:
        """Write the entries, merged with those another process saved meanwhile."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock, self.path.with_name(self.path.name + ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # processes staging in parallel take turns
            try:
                merged = {**VerifiedFiles(self.path).entries, **self.entries}
                write_json_atomic(self.path, merged)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _is_entry(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(v, int) for v in value[:2])
        and isinstance(value[2], str)
        and len(value[2]) == 64
    )
