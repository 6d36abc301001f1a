"""The inputs of a build, checked: the parquet files (verified, fingerprinted and
snapshotted) and the name lists (parsed)."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from laion_pipeline.errors import InvalidInputError
from laion_pipeline.files import copy_and_hash, read_json, sha256_file, write_json_atomic
from laion_pipeline.layout import DataLayout
from laion_pipeline.schema import LAION_COLUMNS


@dataclass(frozen=True)
class SourceRevision:
    """Which parquet data a build reads: the source kind, where, and an exact version."""

    kind: str
    location: str
    revision: str


@dataclass(frozen=True)
class ParquetFile:
    """One verified source file, as the build reads it: ``path`` is the copy in
    ``raw/snapshot/`` (or the download in ``raw/``), ``source_*`` the file it came from."""

    path: str
    name: str
    size: int
    mtime_ns: int
    rows: int
    sha256: str
    source_path: str
    source_size: int
    source_mtime_ns: int

    def unchanged(self) -> bool:
        """The file the build reads is still the one verified."""
        try:
            stat = Path(self.path).stat()
        except OSError:
            return False
        return (stat.st_size, stat.st_mtime_ns) == (self.size, self.mtime_ns)

    @property
    def published(self) -> dict[str, Any]:
        """What a release's manifest says of the file."""
        return {"name": self.name, "rows": self.rows, "sha256": self.sha256}


@dataclass(frozen=True)
class ParquetManifest:
    """The verified parquet files a build reads, in file order, and where they came from
    (``raw/parquet_files.json``, written by `laion_parquet_files`, read by every later step)."""

    source: SourceRevision
    files: tuple[ParquetFile, ...]

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def version(self) -> str:
        """The data version of the files: a hash of their names and contents, so a new source
        revision with the same files leaves everything downstream up to date."""
        digest = hashlib.sha256()
        for f in self.files:
            digest.update(f"{f.name}\0{f.sha256}\n".encode())
        return digest.hexdigest()[:24]

    def write(self, layout: DataLayout) -> None:
        write_json_atomic(layout.parquet_manifest, asdict(self))

    @classmethod
    def read(cls, layout: DataLayout) -> ParquetManifest:
        raw = read_json(layout.parquet_manifest, "materialize laion_parquet_files first")
        return cls(
            SourceRevision(**raw["source"]),
            # A manifest from before snapshots: each file was read where it was.
            tuple(
                ParquetFile(
                    **{
                        "source_path": f["path"],
                        "source_size": f["size"],
                        "source_mtime_ns": f["mtime_ns"],
                        **f,
                    }
                )
                for f in raw["files"]
            ),
        )


def verify_parquet_files(
    files: list[Path],
    layout: DataLayout,
    previous: ParquetManifest | None = None,
    known_sha256: Mapping[str, str] | None = None,
) -> tuple[ParquetFile, ...]:
    """Check that every file is readable parquet with the LAION columns; describe each.

    A file from outside the data folder (a local folder, the bundled sample) is first copied
    into `raw/snapshot/`, hashed as it is copied, and checked there: the build reads only
    that copy, which nothing else writes, so a source file changed or replaced during a build
    never reaches it. Files the data folder already holds (downloads from the hub) are read
    where they are. The sha256 comes from ``known_sha256`` (hashes the source already
    verified), or from the ``previous`` verification of the same unchanged file, or is
    computed.
    """
    known = known_sha256 or {}
    cached = {
        (f.source_path, f.source_size, f.source_mtime_ns): f
        for f in (previous.files if previous else ())
        if f.unchanged()
    }
    described = []
    for source in files:
        stat = source.stat()
        entry = cached.get((str(source), stat.st_size, stat.st_mtime_ns))
        if entry is not None:
            path, sha256 = Path(entry.path), entry.sha256
        elif source.is_relative_to(layout.root):
            path, sha256 = source, known.get(str(source)) or sha256_file(source)
        else:
            path, sha256 = copy_and_hash(source, layout.snapshot_dir)
        try:
            parquet = pq.ParquetFile(path)
        except Exception as error:
            raise InvalidInputError(f"{source} is not a readable parquet file: {error}") from error
        missing = [c for c in LAION_COLUMNS if c not in parquet.schema_arrow.names]
        if missing:
            raise InvalidInputError(
                f"{source} lacks the LAION columns {', '.join(missing)} (it has "
                f"{', '.join(parquet.schema_arrow.names)}): point the source at LAION-Aesthetics "
                "parquet files"
            )
        read = path.stat()
        described.append(
            ParquetFile(
                path=str(path),
                name=source.name,
                size=read.st_size,
                mtime_ns=read.st_mtime_ns,
                rows=parquet.metadata.num_rows,
                sha256=sha256,
                source_path=str(source),
                source_size=stat.st_size,
                source_mtime_ns=stat.st_mtime_ns,
            )
        )
    kept = {Path(f.path) for f in described}
    if layout.snapshot_dir.is_dir():
        for old in layout.snapshot_dir.iterdir():
            if old not in kept:
                old.unlink()
    return tuple(described)


def _unique_columns(columns: list[str]) -> list[str]:
    """Column names SQLite accepts together: repeats (in any case) get a ``_2``, ``_3``...
    suffix, and ``image_counts``, which the build adds, is never taken by the CSV."""
    taken = {"image_counts"}
    unique = []
    for column in columns:
        candidate, n = column, 1
        while candidate.lower() in taken:
            n += 1
            candidate = f"{column}_{n}"
        taken.add(candidate.lower())
        unique.append(candidate)
    return unique


def parse_entity_csv(data: bytes, source: str) -> tuple[list[str], list[dict[str, str]]]:
    """Parse a name list: returns (columns, rows). The list must be CSV with a ``name`` column.

    A UTF-8 byte order mark and CRLF line ends are accepted; the column called ``name`` (any
    case, spaces around it ignored) is renamed ``name``.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidInputError(f"{source} is not UTF-8 text: export the list as CSV") from error
    head = text.lstrip()[:512].lower()
    if head.startswith(("<!doctype html", "<html")) or "<head" in head:
        raise InvalidInputError(
            f"{source} is an HTML page, not CSV (a private or missing Google Sheet answers so): "
            "check the sheet is shared and the URL ends in export?format=csv"
        )
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        raise InvalidInputError(f"{source} is empty: it needs a header row with a name column")
    columns = [c.strip() for c in header]
    lowered = [c.lower() for c in columns]
    if "name" not in lowered:
        raise InvalidInputError(
            f"{source} has no name column (its columns are: {', '.join(columns)}): "
            "add a column called name"
        )
    columns[lowered.index("name")] = "name"
    columns = _unique_columns([c or f"column_{i + 1}" for i, c in enumerate(columns)])
    rows = [
        dict(zip(columns, values + [""] * (len(columns) - len(values)), strict=False))
        for values in reader
        if any(v.strip() for v in values)
    ]
    return columns, rows
