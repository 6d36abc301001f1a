"""File helpers: atomic writes, JSON, hashing."""

import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from laion_pipeline.db import is_disk_full
from laion_pipeline.errors import NotEnoughDiskError

HASH_CHUNK = 8 * 1024 * 1024


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
        copy = folder / f"{sha256[:16]}-{source.name}"
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
