"""Raw layer: the parquet files and the name lists, fetched and verified, not yet changed."""

import csv
import dataclasses
import hashlib
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue, asset

from laion_pipeline.assets.retries import retry_transient_errors
from laion_pipeline.assets.sources import entity_lists_version, entity_sheets, hf_dataset
from laion_pipeline.errors import InvalidInputError
from laion_pipeline.files import read_json, sha256_file, write_atomic, write_json_atomic
from laion_pipeline.layout import ENTITY_KINDS, DataLayout
from laion_pipeline.lock import data_dir_lock
from laion_pipeline.metadata import StepTimer, file_metadata, markdown_table
from laion_pipeline.resources import EntityLists, LaionData, ParquetSource
from laion_pipeline.schema import (
    ENTITY_CSV_COLUMNS,
    LAION_COLUMNS,
    LAION_PARQUET_COLUMNS,
    table_schema,
)


def verify_parquet_files(
    files: list[Path],
    previous: list[dict] | None = None,
    known_sha256: Mapping[str, str] | None = None,
) -> list[dict]:
    """Check that every file is readable parquet with the LAION columns; describe each.

    The sha256 comes from ``known_sha256`` (hashes the source already verified), or from an
    entry of ``previous`` with the same path, size and modification time, or is computed.
    """
    known = known_sha256 or {}
    cached = {
        (entry["path"], entry["size"], entry["mtime_ns"]): entry["sha256"]
        for entry in previous or []
    }
    described = []
    for path in files:
        try:
            parquet = pq.ParquetFile(path)
        except Exception as error:
            raise InvalidInputError(f"{path} is not a readable parquet file: {error}") from error
        missing = [c for c in LAION_COLUMNS if c not in parquet.schema_arrow.names]
        if missing:
            raise InvalidInputError(
                f"{path} lacks the LAION columns {', '.join(missing)} (it has "
                f"{', '.join(parquet.schema_arrow.names)}): point the source at LAION-Aesthetics "
                "parquet files"
            )
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        described.append(
            {
                "path": str(path),
                "name": path.name,
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "rows": parquet.metadata.num_rows,
                "sha256": known.get(str(path)) or cached.get(key) or sha256_file(path),
            }
        )
    return described


def read_parquet_manifest(layout: DataLayout) -> dict[str, Any]:
    return read_json(layout.parquet_manifest, "materialize laion_parquet_files first")


def files_version(described: list[dict]) -> str:
    """The data version of a set of files: a hash of their names and contents, so a new source
    revision with the same files leaves everything downstream up to date."""
    digest = hashlib.sha256()
    for f in described:
        digest.update(f"{f['name']}\0{f['sha256']}\n".encode())
    return digest.hexdigest()[:24]


@asset(
    deps=[hf_dataset],
    group_name="raw",
    kinds={"parquet"},
    code_version="1",
    metadata={"dagster/column_schema": table_schema(LAION_PARQUET_COLUMNS)},
)
def laion_parquet_files(
    context: AssetExecutionContext, laion_data: LaionData, parquet_source: ParquetSource
) -> MaterializeResult:
    """The LAION-Aesthetics v2 6+ parquet files this build reads, each checked for the LAION
    columns and fingerprinted (size, rows, sha256). One row per image, about 12M in all for
    the real dataset. Files already verified are not fetched again; when the hub does not
    answer, the step is retried later with backoff. Its data version is a hash of the files'
    contents."""
    timer = StepTimer()
    layout = laion_data.layout
    with data_dir_lock(layout, context.log):
        with retry_transient_errors(context, parquet_source):
            fetched = parquet_source.fetch(layout, context.log)
            revision = fetched.revision
            previous = None
            if layout.parquet_manifest.exists():
                previous = read_parquet_manifest(layout).get("files")
            described = verify_parquet_files(fetched.files, previous, fetched.known_sha256)
        manifest = {"source": dataclasses.asdict(revision), "files": described}
        write_json_atomic(layout.parquet_manifest, manifest)
        folder = Path(os.path.commonpath([f["path"] for f in described]))
        return MaterializeResult(
            data_version=DataVersion(files_version(described)),
            metadata={
                **file_metadata(folder if folder.is_dir() else folder.parent),
                **timer.metadata(),
                "source": revision.kind,
                "location": revision.location,
                "revision": revision.revision,
                "file_count": len(described),
                "dagster/row_count": sum(f["rows"] for f in described),
                "files": MetadataValue.md(
                    markdown_table(
                        ["file", "rows", "bytes", "sha256"],
                        [(f["name"], f["rows"], f["size"], f["sha256"]) for f in described],
                    )
                ),
            },
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


@asset(
    deps=[entity_sheets],
    group_name="raw",
    kinds={"csv"},
    code_version="1",
    metadata={"dagster/column_schema": table_schema(ENTITY_CSV_COLUMNS)},
)
def entity_csvs(
    context: AssetExecutionContext, laion_data: LaionData, entity_lists: EntityLists
) -> MaterializeResult:
    """The three name lists of the 2022 analysis (artists, celebrities, characters) as CSV
    files with a ``name`` column, copied into ``raw/entities/`` after a format check. Its data
    version is a hash of the three files, so an unchanged list re-counts nothing."""
    timer = StepTimer()
    layout = laion_data.layout
    with data_dir_lock(layout, context.log):
        metadata: dict[str, Any] = {}
        fetched = {}
        with retry_transient_errors(context, entity_lists):
            for kind in ENTITY_KINDS:
                data = entity_lists.read(kind)
                columns, rows = parse_entity_csv(data, entity_lists.display_url(kind))
                context.log.info(f"{kind}: {len(rows)} names, columns {columns}")
                fetched[kind] = data
                metadata[f"{kind}_rows"] = len(rows)
                metadata[f"{kind}_sha256"] = hashlib.sha256(data).hexdigest()
        # Written only once all three passed, so the lists on disk always belong together.
        for kind, data in fetched.items():
            write_atomic(layout.entity_csv(kind), data)
        return MaterializeResult(
            data_version=DataVersion(entity_lists_version(fetched)),
            metadata={
                **file_metadata(layout.entities_dir),
                **timer.metadata(),
                "dagster/row_count": sum(metadata[f"{kind}_rows"] for kind in ENTITY_KINDS),
                **metadata,
            },
        )
