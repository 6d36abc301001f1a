"""The inputs of a build: the listing of the source files, the staged files made from them,
and the name lists (parsed)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path, PurePath
from typing import Any

from laion_pipeline.common.errors import ConfigurationError, InvalidInputError, StaleInputError
from laion_pipeline.common.files import read_json, write_json_atomic
from laion_pipeline.common.layout import DataLayout

# Large enough that the 2022 set (12,096,835 rows) is one shard, so the default build is the
# one-file database of 2022; Re-LAION's 2.1B rows make about 100 shards.
DEFAULT_SHARD_ROWS = 20_000_000


@dataclass(frozen=True)
class SourceRevision:
    """Which parquet data a build reads: the source kind, where, and an exact version."""

    kind: str
    location: str
    revision: str


def shown_location(source: dict[str, str]) -> str:
    """Where a release's source is, as its pages say it: a Hub repo by its id; a folder on the
    server by its name alone, never the server's absolute path."""
    if source.get("kind") == "huggingface":
        return source["location"]
    return PurePath(source["location"]).name or source["location"]


@dataclass(frozen=True)
class SourceEntry:
    """One source file of a listing: its path in the repo or folder (the partition key of
    `source_files`), its size if known, and a version that changes with its content (a sha256,
    a git blob id, an ETag, or size and modification time for a local folder)."""

    key: str
    size: int | None
    version: str


@dataclass(frozen=True)
class SourceListing:
    """The source files at one revision, in path order (``raw/source_files.json``, written when
    `hf_dataset` is observed, read by each `source_files` partition and by `staging_images`)."""

    source: SourceRevision
    entries: tuple[SourceEntry, ...]

    def entry(self, key: str) -> SourceEntry:
        for entry in self.entries:
            if entry.key == key:
                return entry
        raise StaleInputError(
            f"{key} is not a file of {self.source.location} at {self.source.revision}: observe "
            "hf_dataset again (its partitions follow the listing)"
        )

    def label(self, key: str) -> str:
        """How messages name a source file: its folder or repo, and its path there."""
        return f"{self.source.location}/{key}"

    def write(self, layout: DataLayout) -> None:
        write_json_atomic(layout.source_listing, asdict(self))

    @classmethod
    def read(cls, layout: DataLayout) -> SourceListing:
        raw = read_json(layout.source_listing, "observe hf_dataset first (`make run` does)")
        return cls(SourceRevision(**raw["source"]), tuple(SourceEntry(**e) for e in raw["entries"]))


# The format of a staged file's record: 2 names the staged file's own sha256, the source
# path, the profile's name, filter and the staging code version (1 did not).
RECORD_FORMAT = 2


@dataclass(frozen=True)
class StagedFile:
    """One source file as the build reads it: our staged parquet at ``path`` (the rows the
    profile kept, typed, with their domain), and what it was made from: the record written
    beside it (``staging/files/<name>.json``) once the file is in place."""

    key: str  # the source file's path in the repo or folder: its partition of source_files
    path: str
    size: int
    mtime_ns: int
    rows: int  # rows kept
    rows_read: int
    sha256: str  # of the source file
    source_version: str  # the listing's version of the source file it was staged from
    profile_digest: str
    missing_columns: tuple[str, ...] = ()
    source: str = ""  # where the source file is: its folder or repo, and its path there
    profile: str = ""  # the profile's name
    # The profile's row filter and its parameters (column, at_least, variable), or None.
    row_filter: dict[str, Any] | None = None
    staging_code_version: str = ""
    staged_sha256: str = ""  # of the staged parquet file
    format: int = RECORD_FORMAT
    # Per column, the values that broke the column's rule and were stored as NULL.
    values_nulled: dict[str, int] = field(default_factory=dict)
    # The rows the filter kept that the takedowns left out, and the list's digest ("" for none).
    rows_blocked: int = 0
    takedowns: str = ""

    @property
    def name(self) -> str:
        return self.key

    @property
    def data_version(self) -> str:
        """Its partition's data version: the source content, what the profile made of it and
        the staging code that made it."""
        parts = (self.sha256, self.profile_digest, self.staging_code_version)
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]

    @property
    def identity(self) -> tuple[int, int]:
        """What changes when the staged file is written: its size and modification time."""
        return (self.size, self.mtime_ns)

    def unchanged(self) -> bool:
        """The staged file is still the one recorded."""
        try:
            stat = Path(self.path).stat()
        except OSError:
            return False
        return (stat.st_size, stat.st_mtime_ns) == self.identity

    @property
    def published(self) -> dict[str, Any]:
        """What a release's manifest says of the file."""
        published = {
            "name": self.key,
            "rows_read": self.rows_read,
            "rows": self.rows,
            "sha256": self.sha256,
        }
        if self.takedowns:
            published |= {"rows_blocked": self.rows_blocked, "takedowns": self.takedowns}
        return published

    @property
    def input(self) -> dict[str, str]:
        """What a release built from this file depends on: the source content, the profile's
        digest and the staging code."""
        return {
            "name": self.key,
            "sha256": self.sha256,
            "profile_digest": self.profile_digest,
            "staging_code_version": self.staging_code_version,
        }

    def write(self, layout: DataLayout) -> None:
        write_json_atomic(layout.staged_record(self.key), asdict(self))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: Path | str) -> StagedFile:
        """A record as read from ``where``: refused, naming the file, when a newer version of
        the pipeline wrote it; a ``ValueError`` when it is not a record at all."""
        version = raw.get("format", 1) if isinstance(raw, dict) else None
        if not isinstance(version, int):
            raise ValueError(f"{where} is not the record of a staged file")
        if version > RECORD_FORMAT:
            raise ConfigurationError(
                f"{where} was written by a newer laion-pipeline (record format {version}; "
                f"this one reads up to {RECORD_FORMAT}): upgrade laion-pipeline, or delete the "
                "file to stage its source file again"
            )
        known = {f.name for f in fields(cls)}
        try:
            return cls(
                **{
                    **{k: v for k, v in raw.items() if k in known},
                    "missing_columns": tuple(raw.get("missing_columns", ())),
                    "format": version,
                }
            )
        except TypeError as error:
            raise ValueError(f"{where} is not the record of a staged file ({error})") from error

    @classmethod
    def read(cls, layout: DataLayout, key: str) -> StagedFile | None:
        """The record of ``key``'s staged file, None when there is none; a ``ValueError`` when
        it is unreadable."""
        path = layout.staged_record(key)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is unreadable ({error})") from error
        return cls.from_dict(raw, path)


@dataclass(frozen=True)
class StagingManifest:
    """The staged files a build reads, in file order, where they came from and how they were
    filtered (``staging/staged_files.json``, written by `staging_images`, read by every later
    step)."""

    source: SourceRevision
    profile: dict[str, Any]
    files: tuple[StagedFile, ...]
    shard_rows: int = DEFAULT_SHARD_ROWS  # the most rows of a shard database (LAION_SHARD_ROWS)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def rows_read(self) -> int:
        return sum(f.rows_read for f in self.files)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def version(self) -> str:
        """The data version of the staged rows: a hash of the source files and how they were
        staged, so a new source revision with the same files leaves everything downstream up
        to date."""
        digest = hashlib.sha256()
        for f in self.files:
            digest.update(f"{f.key}\0{f.data_version}\n".encode())
        return digest.hexdigest()[:24]

    def write(self, layout: DataLayout) -> None:
        write_json_atomic(layout.staging_manifest, asdict(self))

    @classmethod
    def read(cls, layout: DataLayout) -> StagingManifest:
        raw = read_json(layout.staging_manifest, "materialize staging_images first")
        return cls(
            SourceRevision(**raw["source"]),
            raw["profile"],
            tuple(StagedFile.from_dict(f, layout.staging_manifest) for f in raw["files"]),
            raw.get("shard_rows", DEFAULT_SHARD_ROWS),
        )


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


# A name table holds the list's columns and image_counts, within SQLite's 2,000 columns.
MAX_LIST_COLUMNS = 1_999


def parse_entity_csv(
    data: bytes, source: str, notes: list[str] | None = None
) -> tuple[list[str], list[dict[str, str]]]:
    """Parse a name list: returns (columns, rows). The list must be CSV with a ``name`` column.

    A UTF-8 byte order mark and CRLF line ends are accepted; the column called ``name`` (any
    case, spaces around it ignored) is renamed ``name``. NUL characters (left by some exports)
    are removed, and said in ``notes``.
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
    if "\x00" in text:
        lines = [n for n, line in enumerate(text.splitlines(), 1) if "\x00" in line]
        text = text.replace("\x00", "")
        if notes is not None:
            shown = ", ".join(str(n) for n in lines[:10]) + (" ..." if len(lines) > 10 else "")
            notes.append(f"{source}: NUL characters removed from line {shown}")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if not header:
            raise InvalidInputError(f"{source} is empty: it needs a header row with a name column")
        if len(header) > MAX_LIST_COLUMNS:
            raise InvalidInputError(
                f"{source} has {len(header):,} columns: a name list keeps at most "
                f"{MAX_LIST_COLUMNS:,} (SQLite's limit, with image_counts); remove the columns "
                "you do not need"
            )
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
    except csv.Error as error:
        raise InvalidInputError(
            f"{source}, line {reader.line_num}: {error} (csv.field_size_limit() is "
            f"{csv.field_size_limit():,} characters): no name is that long; fix or remove the "
            "row"
            if "field larger" in str(error)
            else f"{source}, line {reader.line_num}: not CSV ({error}): export the list as CSV"
        ) from error
    return columns, rows
