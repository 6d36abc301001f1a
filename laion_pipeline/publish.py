"""Publishing: the checked build database becomes a new release, served by one atomic switch
(``laion_pipeline.release``); and the check of a published release against its manifest."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from laion_pipeline import __version__
from laion_pipeline.build_db import open_build_db
from laion_pipeline.datasette import datasette_metadata, inspect_data, table_counts
from laion_pipeline.db import sqlite_connect
from laion_pipeline.errors import PublishCheckError, StaleInputError
from laion_pipeline.files import read_json, sha256_file, write_json_atomic
from laion_pipeline.inputs import StagingManifest
from laion_pipeline.layout import DEFAULT_DATABASE, ENTITY_KINDS, DataLayout, ReleaseFiles, staged
from laion_pipeline.release import current_release, fault, new_release, pointed_release, switch

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


def publish(layout: DataLayout, log: Any = None) -> dict[str, Any]:
    """Check the build database, put it in a new release folder (a hard link when it is
    compact, else a compacted copy) with its Datasette files and manifest, check that file,
    then make the release current. The caller holds the data folder's lock. Returns the
    manifest."""
    current_id = pointed_release(layout, "current")
    current = layout.release(current_id) if current_id else None
    # Published before and unchanged since: analyzed then, and not to be copied to write again.
    unchanged = (
        current is not None
        and current.db.exists()
        and layout.build_db.exists()
        and os.path.samefile(layout.build_db, current.db)
    )
    counts, compact = _checked_build(layout, analyze=not unchanged, log=log)
    staged = StagingManifest.read(layout)
    database = str(staged.profile.get("database", DEFAULT_DATABASE))
    release_id, release, sha256 = _release_database(layout, compact, database, log)
    manifest = {
        "release": release_id,
        "database": release.db.name,
        "sha256": sha256,
        "size_bytes": release.db.stat().st_size,
        "row_counts": {t: counts[t] for t in ("images", "domain", *ENTITY_KINDS)},
        "source": asdict(staged.source),
        "profile": staged.profile,
        "rows_read": staged.rows_read,
        "parquet_files": [f.published for f in staged.files],
        "entity_csvs": {
            kind: hashlib.sha256(layout.entity_csv(kind).read_bytes()).hexdigest()
            for kind in ENTITY_KINDS
        },
        "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "code_version": __version__,
    }
    write_json_atomic(release.inspect_json, inspect_data(release.db, sha256, counts))
    write_json_atomic(release.metadata_json, datasette_metadata(manifest["source"], staged.profile))
    fault("publish-release-half-written")
    write_json_atomic(release.manifest_json, manifest)
    if unchanged and current is not None and all(p.exists() for p in current.report_files):
        # The same database: its analysis still describes it.
        for old, new in zip(current.report_files, release.report_files, strict=True):
            new.parent.mkdir(exist_ok=True)
            link_or_copy(old, new)
    fault("publish-release-written")
    # The same database again keeps the release before it as the one to roll back to.
    switch(layout, release_id, pointed_release(layout, "previous") if unchanged else current_id)
    if log:
        log.info(f"published release {release_id}: {layout.published_db}")
    return manifest


def _checked_build(layout: DataLayout, *, analyze: bool, log: Any) -> tuple[dict[str, int], bool]:
    """The build database's row counts once its tables agree, and whether it is compact
    (few free pages). ``analyze`` first gathers the query planner's statistics."""
    conn = open_build_db(layout, write=analyze)
    try:
        if analyze:
            if log:
                log.info("ANALYZE: gathering statistics for the query planner")
            conn.execute("PRAGMA analysis_limit = 1000")  # approximate statistics, in ms
            conn.execute("ANALYZE")
        counts = check_tables(conn)
        (free,) = conn.execute("PRAGMA freelist_count").fetchone()
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
    finally:
        conn.close()
    if free > pages * COMPACT_FREE_SHARE and log:
        log.info(f"{free:,} of {pages:,} pages are free: writing a compact copy")
    return counts, free <= pages * COMPACT_FREE_SHARE


def _release_database(
    layout: DataLayout, compact: bool, database: str, log: Any
) -> tuple[str, ReleaseFiles, str]:
    """The build database as the database ``database`` of a new release folder: a hard link
    of a compact file, else a VACUUM INTO copy, written beside the releases, checked
    (quick_check) and hashed, then moved in. Returns the release id, its files and the
    database's sha256."""
    layout.releases_dir.mkdir(parents=True, exist_ok=True)
    candidate = staged(layout.published_dir / layout.build_db.name)
    candidate.unlink(missing_ok=True)
    try:
        if compact:
            link_or_copy(layout.build_db, candidate)
        else:
            conn = sqlite_connect(layout.build_db, read_only=True)
            try:
                conn.execute("VACUUM INTO ?", (str(candidate),))
            finally:
                conn.close()
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
        release_id, release = new_release(layout, sha256, database)
        os.replace(candidate, release.db)
    finally:
        candidate.unlink(missing_ok=True)
    return release_id, release, sha256


def manifest_problems(layout: DataLayout, log: Any = None) -> list[str]:
    """What is wrong with the current release: SQLite's full ``integrity_check`` of its
    database and agreement with its ``manifest.json`` (sha256 and row counts)."""
    try:
        release = current_release(layout)
    except StaleInputError as error:
        return [str(error)]
    return release_problems(release, log)


def release_problems(release: ReleaseFiles, log: Any = None) -> list[str]:
    """What is wrong with one release: its database against its own manifest."""
    if not release.db.exists() or not release.manifest_json.exists():
        return [f"{release.db} or its manifest is missing: materialize published_database"]
    manifest = read_json(release.manifest_json, "materialize published_database")
    problems = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        hashing = pool.submit(sha256_file, release.db)
        conn = sqlite_connect(release.db, read_only=True)
        try:
            if log:
                log.info(f"running PRAGMA integrity_check on {release.db}")
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
