"""Raw layer: the parquet files and the name lists, fetched and verified, not yet changed."""

import csv
import dataclasses
import hashlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from laion_pipeline.assets.sources import entity_sheets, hf_dataset
from laion_pipeline.errors import InvalidInputError
from laion_pipeline.files import read_json, sha256_file, write_atomic, write_json_atomic
from laion_pipeline.layout import ENTITY_KINDS, DataLayout
from laion_pipeline.markdown import markdown_table
from laion_pipeline.resources import EntityLists, LaionData, ParquetSource
from laion_pipeline.schema import LAION_COLUMNS


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


@asset(
    deps=[hf_dataset],
    group_name="raw",
    kinds={"parquet"},
)
def laion_parquet_files(
    context: AssetExecutionContext, laion_data: LaionData, parquet_source: ParquetSource
) -> MaterializeResult:
    """The LAION-Aesthetics v2 6+ parquet files this build reads, each checked for the LAION
    columns and fingerprinted (size, rows, sha256). One row per image, about 12M in all for
    the real dataset."""
    layout = laion_data.layout
    fetched = parquet_source.fetch(layout, context.log)
    revision = fetched.revision
    previous = None
    if layout.parquet_manifest.exists():
        previous = read_parquet_manifest(layout).get("files")
    described = verify_parquet_files(fetched.files, previous, fetched.known_sha256)
    manifest = {"source": dataclasses.asdict(revision), "files": described}
    write_json_atomic(layout.parquet_manifest, manifest)
    return MaterializeResult(
        metadata={
            "source": revision.kind,
            "location": revision.location,
            "revision": revision.revision,
            "file_count": len(described),
            "dagster/row_count": sum(f["rows"] for f in described),
            "total_bytes": sum(f["size"] for f in described),
            "files": MetadataValue.md(
                markdown_table(
                    ["file", "rows", "bytes", "sha256"],
                    [(f["name"], f["rows"], f["size"], f["sha256"]) for f in described],
                )
            ),
        }
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
)
def entity_csvs(
    context: AssetExecutionContext, laion_data: LaionData, entity_lists: EntityLists
) -> MaterializeResult:
    """The three name lists of the 2022 analysis (artists, celebrities, characters) as CSV
    files with a ``name`` column, copied into the data directory after a format check."""
    layout = laion_data.layout
    metadata: dict[str, Any] = {}
    fetched = {}
    for kind in ENTITY_KINDS:
        data = entity_lists.read(kind)
        columns, rows = parse_entity_csv(data, entity_lists.url(kind))
        context.log.info(f"{kind}: {len(rows)} names, columns {columns}")
        fetched[kind] = data
        metadata[f"{kind}_rows"] = len(rows)
        metadata[f"{kind}_sha256"] = hashlib.sha256(data).hexdigest()
    # Written only once all three passed, so the lists on disk always belong together.
    for kind, data in fetched.items():
        write_atomic(layout.entity_csv(kind), data)
    return MaterializeResult(metadata=metadata)
