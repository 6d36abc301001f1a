"""Serving layer: the compacted, checked database and its Datasette files, published atomically."""

import datetime as dt
import hashlib
import os
import shutil
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from laion_pipeline import __version__
from laion_pipeline.assets.raw import read_parquet_manifest
from laion_pipeline.build_db import open_build_db
from laion_pipeline.datasette import datasette_metadata, inspect_data, table_counts
from laion_pipeline.db import sqlite_connect
from laion_pipeline.errors import PublishCheckError, StaleInputError
from laion_pipeline.files import read_json, sha256_file, write_json_atomic
from laion_pipeline.layout import ENTITY_KINDS, DataLayout, staged
from laion_pipeline.lock import data_dir_lock
from laion_pipeline.metadata import StepTimer, file_metadata
from laion_pipeline.resources import LaionData
from laion_pipeline.schema import IMAGE_COLUMNS, table_schema

REQUIRED_TABLES = ("images", "images_fts", "domain", *ENTITY_KINDS)
# Above this share of free pages the published copy is written compacted (VACUUM INTO).
COMPACT_FREE_SHARE = 0.05


def check_tables(conn: sqlite3.Connection) -> dict[str, int]:
    """Check that the build database has every table, and that they agree; return their row
    counts."""
    present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = [t for t in REQUIRED_TABLES if t not in present]
    if missing:
        raise StaleInputError(
            f"the build database lacks {', '.join(missing)}: materialize every asset upstream "
            "of published_database"
        )
    counts = table_counts(conn)
    (indexed,) = conn.execute("SELECT count(*) FROM images_fts_docsize").fetchone()
    if indexed != counts["images"]:
        raise PublishCheckError(
            f"images_fts indexes {indexed:,} captions but images has {counts['images']:,} rows: "
            "materialize images_fts"
        )
    (domain_total,) = conn.execute("SELECT coalesce(sum(image_counts), 0) FROM domain").fetchone()
    if domain_total != counts["images"]:
        raise PublishCheckError(
            f"domain image_counts sum to {domain_total:,} but images has {counts['images']:,} "
            "rows: materialize domains, images and images_fts"
        )
    return counts


def quick_check(db: Path) -> str:
    """SQLite's check that every page and record of ``db`` is well formed ("ok" if so)."""
    conn = sqlite_connect(db, read_only=True)
    try:
        return "; ".join(row[0] for row in conn.execute("PRAGMA quick_check"))
    finally:
        conn.close()


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not supported
        shutil.copyfile(source, target)


def _link_files(layout: DataLayout, folder: Path) -> Path:
    """A new folder beside ``folder`` with hard links to the published files (at the same
    paths below it), then put in its place. Links cost no copy: the published database is
    never written in place."""
    staged = folder.with_name(folder.name + ".new")
    shutil.rmtree(staged, ignore_errors=True)
    for file in layout.published_files:
        if file.exists():
            link = staged / file.relative_to(layout.published_dir)
            link.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(file, link)
    staged.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
    staged.rename(folder)
    return folder


def keep_previous(layout: DataLayout) -> None:
    """Keep the published version in ``published/previous/`` before it is replaced."""
    _link_files(layout, layout.previous_dir)


def rollback(layout: DataLayout) -> dict[str, Any]:
    """Serve the previous version again, and keep the current one as the previous: running it
    twice restores what was there. Each file is replaced atomically, the database first; a file
    the previous version did not have (a report) is removed rather than left describing
    another database. Returns the manifest now published."""
    previous = [
        layout.previous_dir / f.relative_to(layout.published_dir) for f in layout.published_files
    ]
    if not previous[0].exists():
        raise StaleInputError(
            f"there is no previous version in {layout.previous_dir}: it is kept from the second "
            "publish on"
        )
    swap = _link_files(layout, layout.published_dir / ".rollback")
    for source, target in zip(previous, layout.published_files, strict=True):
        if source.exists():
            incoming = staged(target, "rollback")
            incoming.parent.mkdir(parents=True, exist_ok=True)
            incoming.unlink(missing_ok=True)
            link_or_copy(source, incoming)
            os.replace(incoming, target)
        else:
            target.unlink(missing_ok=True)
    shutil.rmtree(layout.previous_dir)
    swap.rename(layout.previous_dir)
    return read_json(layout.manifest_json, "publish a database first")


def publish(layout: DataLayout, log: Any = None) -> dict[str, Any]:
    """Check the build database, put it beside the published one (a hard link when it is
    compact, else a compacted copy), check that file, then replace the published database
    and its Datasette files. Returns the manifest."""
    # Published before and unchanged since: analyzed then, and not to be copied to write again.
    unchanged = (
        layout.published_db.exists()
        and layout.build_db.exists()
        and os.path.samefile(layout.build_db, layout.published_db)
    )
    conn = open_build_db(layout, write=not unchanged)
    try:
        if not unchanged:
            if log:
                log.info("ANALYZE: gathering statistics for the query planner")
            conn.execute("PRAGMA analysis_limit = 1000")  # approximate statistics, in ms
            conn.execute("ANALYZE")
        counts = check_tables(conn)
        (free,) = conn.execute("PRAGMA freelist_count").fetchone()
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
    finally:
        conn.close()
    layout.published_dir.mkdir(parents=True, exist_ok=True)
    candidate = staged(layout.published_db)
    candidate.unlink(missing_ok=True)
    try:
        if free > pages * COMPACT_FREE_SHARE:
            if log:
                log.info(f"{free:,} of {pages:,} pages are free: writing a compact copy")
            conn = sqlite_connect(layout.build_db, read_only=True)
            try:
                conn.execute("VACUUM INTO ?", (str(candidate),))
            finally:
                conn.close()
        else:
            link_or_copy(layout.build_db, candidate)
        if log:
            log.info(
                f"checking the candidate ({candidate.stat().st_size / 1e6:,.0f} MB): "
                "quick_check and sha256"
            )
        with ThreadPoolExecutor(max_workers=2) as pool:
            hashing = pool.submit(sha256_file, candidate)
            checked = quick_check(candidate)
            sha256 = hashing.result()
        if checked != "ok":
            raise PublishCheckError(f"{layout.build_db} fails SQLite's quick_check: {checked}")
        parquet = read_parquet_manifest(layout)
        manifest = {
            "database": layout.published_db.name,
            "sha256": sha256,
            "size_bytes": candidate.stat().st_size,
            "row_counts": {t: counts[t] for t in ("images", "domain", *ENTITY_KINDS)},
            "source": parquet["source"],
            "parquet_files": [
                {k: f[k] for k in ("name", "rows", "sha256")} for f in parquet["files"]
            ],
            "entity_csvs": {
                kind: hashlib.sha256(layout.entity_csv(kind).read_bytes()).hexdigest()
                for kind in ENTITY_KINDS
            },
            "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "code_version": __version__,
        }
        files = {
            layout.inspect_json: inspect_data(candidate, sha256, counts),
            layout.metadata_json: datasette_metadata(parquet["source"]),
            layout.manifest_json: manifest,
        }
        for target, value in files.items():
            write_json_atomic(staged(target), value)
        replaced = layout.published_db.exists() and not os.path.samefile(
            candidate, layout.published_db
        )
        if replaced:
            keep_previous(layout)
        # Everything is written beside its target: the database, then its files, each replaced
        # by a rename, one after the other.
        os.replace(candidate, layout.published_db)
        for target in files:
            os.replace(staged(target), target)
        if replaced:
            # The report described the database just replaced (it is kept in previous/ with
            # it): none is better than a wrong one until `analysis` writes the new one.
            for path in layout.report_files:
                path.unlink(missing_ok=True)
    finally:
        for path in (candidate, *map(staged, layout.datasette_files)):
            path.unlink(missing_ok=True)
    if log:
        log.info(f"published {layout.published_db}")
    return manifest


@asset(
    deps=["images_fts", *ENTITY_KINDS],
    group_name="serving",
    kinds={"sqlite", "datasette"},
    code_version="1",
    metadata={"dagster/column_schema": table_schema(IMAGE_COLUMNS)},
)
def published_database(context: AssetExecutionContext, laion_data: LaionData) -> MaterializeResult:
    """The database Datasette serves, ``published/laion-aesthetic-6pls.db`` (tables images,
    images_fts, domain, artists, celebrities, characters; the schema shown is of images): the
    checked, compact build database, replaced atomically, with ``metadata.json``,
    ``inspect.json`` and ``manifest.json`` (row counts, sha256, source revision, build time)
    beside it."""
    timer = StepTimer()
    layout = laion_data.layout
    with data_dir_lock(layout, context.log):
        manifest = publish(layout, context.log)
        return MaterializeResult(
            metadata={
                **file_metadata(layout.published_db),
                **timer.metadata(),
                "dagster/row_count": manifest["row_counts"]["images"],
                "sha256": manifest["sha256"],
                "row_counts": MetadataValue.json(manifest["row_counts"]),
                "source_revision": manifest["source"]["revision"],
                "serve": MetadataValue.md(f"`make serve` serves `{layout.published_dir}`"),
            }
        )


def manifest_problems(layout: DataLayout, log: Any = None) -> list[str]:
    """What is wrong with the published database: SQLite's full ``integrity_check`` and
    agreement with ``manifest.json`` (sha256 and row counts)."""
    if not layout.published_db.exists() or not layout.manifest_json.exists():
        return [f"{layout.published_db} or its manifest is missing: materialize published_database"]
    manifest = read_json(layout.manifest_json, "materialize published_database")
    problems = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        hashing = pool.submit(sha256_file, layout.published_db)
        conn = sqlite_connect(layout.published_db, read_only=True)
        try:
            if log:
                log.info(f"running PRAGMA integrity_check on {layout.published_db}")
            result = "; ".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
            if result != "ok":
                problems.append(f"integrity_check: {result}")
            counts = table_counts(conn)
        finally:
            conn.close()
        sha256 = hashing.result()
    if sha256 != manifest["sha256"]:
        problems.append(f"sha256 is {sha256}, the manifest says {manifest['sha256']}")
    for table, rows in manifest["row_counts"].items():
        if counts.get(table) != rows:
            problems.append(f"{table} has {counts.get(table)} rows, the manifest says {rows}")
    return problems


@asset_check(
    asset=published_database,
    blocking=True,
    description="The published file passes SQLite's PRAGMA integrity_check, and its sha256 "
    "and row counts match manifest.json. Reads the published file only, so it can run while "
    "Datasette serves it.",
)
def published_database_matches_manifest(
    context: AssetCheckExecutionContext, laion_data: LaionData
) -> AssetCheckResult:
    timer = StepTimer()
    problems = manifest_problems(laion_data.layout, context.log)
    return AssetCheckResult(
        passed=not problems,
        description="; ".join(problems) or None,
        metadata=timer.metadata(),
    )
