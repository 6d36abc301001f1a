"""Publishing: the checked build database becomes a new release, served by one atomic switch
(``laion_pipeline.releases.switch``); and the check of a published release against its manifest."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from laion_pipeline import __version__
from laion_pipeline.build.build_db import open_writable
from laion_pipeline.build.plan import BuildPlan, Shard, shards_of
from laion_pipeline.build.seal import Seal, valid_seal
from laion_pipeline.build.state import ReleaseInputs, list_hashes
from laion_pipeline.build.tables import search_examples
from laion_pipeline.common.db import sqlite_connect
from laion_pipeline.common.errors import PublishCheckError, StaleInputError
from laion_pipeline.common.files import read_json, sha256_file, write_json_atomic
from laion_pipeline.common.layout import (
    DEFAULT_DATABASE,
    ENTITY_KINDS,
    DataLayout,
    ReleaseFiles,
    candidate,
)
from laion_pipeline.releases.datasette_files import datasette_metadata, inspect_data, table_counts
from laion_pipeline.releases.switch import (
    current_release,
    fault,
    new_release,
    pointed_release,
    switch,
)
from laion_pipeline.sources.inputs import StagingManifest

# The catalog's tables, and each shard's (one database holds both).
CATALOG_TABLES = ("domain", "shards", *ENTITY_KINDS)
SHARD_TABLES = ("images", "images_fts", "domain")
# Above this share of free pages the published copy is written compacted (VACUUM INTO).
COMPACT_FREE_SHARE = 0.05


def _require_tables(conn: sqlite3.Connection, tables: Sequence[str], what: str) -> None:
    present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = [t for t in tables if t not in present]
    if missing:
        raise StaleInputError(
            f"{what} lacks {', '.join(missing)}: materialize every asset upstream of "
            "published_database"
        )


def _agreeing_images(conn: sqlite3.Connection, what: str, hint: str) -> dict[str, int]:
    """The row counts of a database holding images, once its caption index and its domain
    table agree with them."""
    with _readable(what, hint):
        return _counted_images(conn, what, hint)


@contextmanager
def _readable(what: str, hint: str) -> Iterator[None]:
    """Turn SQLite's "database disk image is malformed" (a damaged file) into an error that
    names the file and says what to build again."""
    try:
        yield
    except sqlite3.OperationalError:
        raise  # locked, busy, out of disk: not a damaged file
    except sqlite3.DatabaseError as error:
        raise PublishCheckError(
            f"{what} is damaged ({error}): materialize images and images_fts{hint} again"
        ) from error


def _counted_images(conn: sqlite3.Connection, what: str, hint: str) -> dict[str, int]:
    counts = table_counts(conn)
    (indexed,) = conn.execute("SELECT count(*) FROM images_fts_docsize").fetchone()
    if indexed != counts["images"]:
        raise PublishCheckError(
            f"{what}: images_fts indexes {indexed:,} captions but images has "
            f"{counts['images']:,} rows: materialize images_fts{hint}"
        )
    (domain_total,) = conn.execute("SELECT coalesce(sum(image_counts), 0) FROM domain").fetchone()
    if domain_total != counts["images"]:
        raise PublishCheckError(
            f"{what}: domain image_counts sum to {domain_total:,} but images has "
            f"{counts['images']:,} rows: materialize images, images_fts and domains{hint}"
        )
    return counts


def check_build_tables(
    files: Sequence[BuildFile], conns: Sequence[sqlite3.Connection], shards: Sequence[Shard]
) -> tuple[dict[str, int], list[dict[str, int]]]:
    """Check the build's databases (``files``, the catalog's first, open as ``conns``): each
    shard's tables agree and hold exactly its planned rowids, the catalog's ``shards`` table
    is the plan and its domain counts sum to every image. Returns the release's row counts
    (the images over every shard, the rest the catalog's) and each file's."""
    per_file = []
    for f, conn in zip(files, conns, strict=True):
        if f.catalog:
            _require_tables(conn, CATALOG_TABLES, f.what)
        if f.shard is None:
            per_file.append(table_counts(conn))
            continue
        hint = f" [{f.shard.key}]"
        _require_tables(conn, SHARD_TABLES, f.what)
        counts = _agreeing_images(conn, f.what, hint)
        rowids = conn.execute("SELECT min(rowid), max(rowid) FROM images").fetchone()
        if counts["images"] != f.shard.rows or (f.shard.rows and rowids != f.shard.rowid_range):
            raise PublishCheckError(
                f"{f.what} holds {counts['images']:,} images (rowids {rowids}), the plan "
                f"{f.shard.rows:,} ({f.shard.rowid_range}): materialize images{hint}"
            )
        per_file.append(counts)
    catalog = conns[0]
    planned = [(s.key, s.first_rowid, s.last_rowid, s.rows) for s in shards]
    recorded = catalog.execute(
        "SELECT key, first_rowid, last_rowid, images FROM shards ORDER BY key"
    ).fetchall()
    if recorded != planned:
        raise PublishCheckError(
            "the catalog's shards table is not the plan of the staged files: materialize domains"
        )
    images = sum(c["images"] for f, c in zip(files, per_file, strict=True) if f.shard)
    (domain_total,) = catalog.execute(
        "SELECT coalesce(sum(image_counts), 0) FROM domain"
    ).fetchone()
    if domain_total != images:
        raise PublishCheckError(
            f"the catalog's domain image_counts sum to {domain_total:,} but the shards hold "
            f"{images:,} images: materialize domains"
        )
    return {**per_file[0], "images": images}, per_file


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


@dataclass(frozen=True)
class BuildFile:
    """One database of a build and the name it is published under."""

    name: str  # the file's stem in the release: what Datasette serves it as
    path: Path
    catalog: bool  # holds the catalog's tables
    shard: Shard | None  # the shard whose images it holds, if any

    @property
    def what(self) -> str:
        """The file, as an error names it."""
        return "the build database" if self.catalog else f"shard {self.shard.key}"


def build_files(plan: BuildPlan, database: str) -> list[BuildFile]:
    """The databases a release of ``plan`` publishes, the catalog's first, as ``plan``
    places them."""
    return [
        BuildFile(
            database if path == plan.catalog else f"{database}-{shard.key}",
            path,
            path == plan.catalog,
            shard,
        )
        for path, shard in _files_and_shards(plan)
    ]


def _files_and_shards(plan: BuildPlan) -> list[tuple[Path, Shard | None]]:
    by_file = {plan.file(s): s for s in plan.shards}
    return [(path, by_file.get(path)) for path in plan.files()]


def _same_files(files: Sequence[BuildFile], release: ReleaseFiles) -> bool:
    """Whether the build's databases are the release's (hard links of the same files)."""
    return len(release.databases) == len(files) and all(
        published.exists() and f.path.exists() and os.path.samefile(f.path, published)
        for f, published in zip(files, release.databases, strict=True)
    )


def build_is_release(layout: DataLayout, release: ReleaseFiles) -> bool:
    """Whether the build in the data folder is the one ``release`` published, from staged
    files still in place: then a step that changes only some of its tables (the name counts)
    makes a release of the same rows. False after a rollback, a restore or a move."""
    try:
        staged = StagingManifest.read(layout)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    database = str(staged.profile.get("database", DEFAULT_DATABASE))
    files = build_files(BuildPlan(layout, shards_of(staged)), database)
    return all(f.unchanged() for f in staged.files) and _same_files(files, release)


def publish(layout: DataLayout, log: Any = None) -> dict[str, Any]:
    """Check the build's databases (one, or the catalog and every shard), put them in a new
    release folder (hard links of compact files, else compacted copies) with their
    Datasette files and manifest, check those files, then make the release current: every
    file at once. The caller holds the data folder's lock; this takes each shard's too, so
    no shard is rebuilt meanwhile. Returns the manifest."""
    staged = StagingManifest.read(layout)
    plan = BuildPlan(layout, shards_of(staged))
    database = str(staged.profile.get("database", DEFAULT_DATABASE))
    with plan.locked(log):
        return _publish(layout, staged, plan.shards, build_files(plan, database), log)


def _publish(
    layout: DataLayout,
    staged: StagingManifest,
    shards: Sequence[Shard],
    files: Sequence[BuildFile],
    log: Any,
) -> dict[str, Any]:
    current_id = pointed_release(layout, "current")
    current = layout.release(current_id) if current_id else None
    # Published before and unchanged since: analyzed then, and not to be copied to write again.
    unchanged = current is not None and _same_files(files, current)
    counts, per_file, compact = _checked_build(
        layout, shards, files, analyze=not unchanged, log=log
    )
    release_id, release, sha256, seals = _release_databases(layout, files, compact, log)
    if log and seals:
        log.info(
            f"{len(seals)} of {len(files)} databases sealed by their shard's build "
            "(their integrity_check there): only hashed again"
        )
    shard_entries = [
        {
            "key": f.shard.key,
            "database": f.name,
            "sha256": sha256[f.name],
            "size_bytes": (release.folder / f"{f.name}.db").stat().st_size,
            "first_rowid": f.shard.first_rowid,
            "last_rowid": f.shard.last_rowid,
            "images": f.shard.rows,
            **({"seal": seals[f.name].as_dict()} if f.name in seals else {}),
        }
        for f in files
        if f.shard is not None and not f.catalog
    ]
    # What the next run compares to decide whether a build is needed (laion_pipeline.build.state).
    lists = list_hashes({kind: layout.entity_csv(kind).read_bytes() for kind in ENTITY_KINDS})
    inputs = ReleaseInputs.of(staged.files, shards, staged.profile, lists)
    first = next(f for f in files if f.shard is not None)  # the release's first images
    conn = sqlite_connect(release.folder / f"{first.name}.db", read_only=True)
    try:
        examples = search_examples(conn)
    finally:
        conn.close()
    manifest = {
        "release": release_id,
        "database": release.db.name,
        "sha256": sha256[files[0].name],
        "size_bytes": release.db.stat().st_size,
        "row_counts": {t: counts[t] for t in ("images", "domain", *ENTITY_KINDS)},
        "shards": shard_entries,
        "source": asdict(staged.source),
        "profile": staged.profile,
        "rows_read": staged.rows_read,
        "parquet_files": [f.published for f in staged.files],
        "entity_csvs": inputs.lists,
        "inputs": inputs.as_dict(),
        "inputs_digest": inputs.digest,
        "search_examples": examples,  # the search page's examples, from its own captions
        "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "code_version": __version__,
    }
    inspect: dict[str, Any] = {}
    for f, file_counts in zip(files, per_file, strict=True):
        inspect |= inspect_data(release.folder / f"{f.name}.db", sha256[f.name], file_counts)
    write_json_atomic(release.inspect_json, inspect)
    metadata = datasette_metadata(
        manifest["source"], staged.profile, [s["database"] for s in shard_entries]
    )
    write_json_atomic(release.metadata_json, metadata)
    fault("publish-release-half-written")
    write_json_atomic(release.manifest_json, manifest)
    if unchanged and current is not None and all(p.exists() for p in current.report_files):
        # The same databases: their analysis still describes them.
        for old, new in zip(current.report_files, release.report_files, strict=True):
            new.parent.mkdir(exist_ok=True)
            link_or_copy(old, new)
    fault("publish-release-written")
    # The same database again keeps the release before it as the one to roll back to.
    switch(layout, release_id, pointed_release(layout, "previous") if unchanged else current_id)
    layout.held_json.unlink(missing_ok=True)  # a new release ends what a rollback held
    if log:
        log.info(f"published release {release_id}: {layout.published_db}")
    return manifest


def _checked_build(
    layout: DataLayout,
    shards: Sequence[Shard],
    files: Sequence[BuildFile],
    *,
    analyze: bool,
    log: Any,
) -> tuple[dict[str, int], list[dict[str, int]], list[bool]]:
    """The release's row counts once the build's tables agree, each file's, and whether each
    file is compact (few free pages). ``analyze`` first gathers the query planner's
    statistics."""
    with ExitStack() as stack:
        conns = []
        # A sealed shard was analyzed by its own build, and is not to be written again.
        to_analyze = [analyze and valid_seal(f.path) is None for f in files]
        for f, analyzing in zip(files, to_analyze, strict=True):
            if analyzing:
                conn = open_writable(f.path, "images")
            else:
                if not f.path.exists():
                    raise StaleInputError(f"{f.path} does not exist: materialize images")
                conn = sqlite_connect(f.path, read_only=True)
            stack.callback(conn.close)
            conns.append(conn)
        if any(to_analyze):
            if log:
                log.info("ANALYZE: gathering statistics for the query planner")
            for conn, analyzing in zip(conns, to_analyze, strict=True):
                if analyzing:
                    conn.execute("PRAGMA analysis_limit = 1000")  # approximate statistics, in ms
                    conn.execute("ANALYZE")
        counts, per_file = check_build_tables(files, conns, shards)
        compact = []
        for f, conn in zip(files, conns, strict=True):
            (free,) = conn.execute("PRAGMA freelist_count").fetchone()
            (pages,) = conn.execute("PRAGMA page_count").fetchone()
            compact.append(free <= pages * COMPACT_FREE_SHARE)
            if not compact[-1] and log:
                log.info(f"{f.path.name}: {free:,} of {pages:,} pages are free: a compact copy")
    return counts, per_file, compact


def _release_databases(
    layout: DataLayout, files: Sequence[BuildFile], compact: Sequence[bool], log: Any
) -> tuple[str, ReleaseFiles, dict[str, str], dict[str, Seal]]:
    """The build's databases in a new release folder: hard links of compact files, else
    VACUUM INTO copies, written beside the releases, checked (quick_check) and hashed (a link
    of a sealed shard: its seal's), then moved in. Returns the release id, its files, each
    database's sha256 by name and the seals taken instead of reading the file."""
    layout.releases_dir.mkdir(parents=True, exist_ok=True)
    candidates = {f.name: candidate(layout.published_dir / f"{f.name}.db") for f in files}
    sha256: dict[str, str] = {}
    seals: dict[str, Seal] = {}
    try:
        for f, is_compact in zip(files, compact, strict=True):
            written = candidates[f.name]
            written.unlink(missing_ok=True)
            if is_compact:
                link_or_copy(f.path, written)
            else:
                conn = sqlite_connect(f.path, read_only=True)
                try:
                    conn.execute("VACUUM INTO ?", (str(written),))
                finally:
                    conn.close()
            sealed = valid_seal(f.path)
            if sealed is not None and sealed.holds_for(written):  # a link of the sealed file
                # Its integrity_check is the seal's; its bytes are hashed again, so a file
                # changed behind its seal (size and time put back) is never published.
                if sha256_file(written) != sealed.sha256:
                    raise PublishCheckError(
                        f"{f.path} is not the file its seal describes (its sha256 differs): "
                        f"materialize images{f' [{f.shard.key}]' if f.shard else ''} again"
                    )
                seals[f.name] = sealed
                sha256[f.name] = sealed.sha256
                continue
            if log:
                log.info(
                    f"checking the candidate {f.name} ({written.stat().st_size / 1e6:,.0f} "
                    "MB): quick_check and sha256"
                )
            with ThreadPoolExecutor(max_workers=2) as pool:
                hashing = pool.submit(sha256_file, written)
                checked = quick_check(written)
                sha256[f.name] = hashing.result()
            if checked != "ok":
                raise PublishCheckError(f"{f.path} fails SQLite's quick_check: {checked}")
        # One database names its release by its sha256; several, by the hash of theirs.
        digest = (
            sha256[files[0].name]
            if len(files) == 1
            else hashlib.sha256("".join(sha256[f.name] for f in files).encode()).hexdigest()
        )
        release_id, release = new_release(layout, digest, files[0].name)
        for f in files:
            os.replace(candidates[f.name], release.folder / f"{f.name}.db")
    finally:
        for written in candidates.values():
            written.unlink(missing_ok=True)
    return release_id, release, sha256, seals


def manifest_problems(layout: DataLayout, log: Any = None) -> list[str]:
    """What is wrong with the current release: SQLite's full ``integrity_check`` of its
    database and agreement with its ``manifest.json`` (sha256 and row counts)."""
    try:
        release = current_release(layout)
    except StaleInputError as error:
        return [str(error)]
    return release_problems(release, log)


def release_problems(release: ReleaseFiles, log: Any = None, *, full: bool = False) -> list[str]:
    """What is wrong with one release: each of its databases against its own manifest (SQLite's
    ``integrity_check``, sha256, row counts). A shard whose file is still the one its build
    sealed (``laion_pipeline.build.seal``: same device, inode, size and modification time) is taken
    at its seal's word, unless ``full``; its tables are still counted."""
    if not release.db.exists() or not release.manifest_json.exists():
        return [f"{release.db} or its manifest is missing: materialize published_database"]
    manifest = read_json(release.manifest_json, "materialize published_database")
    expected: dict[Path, tuple[str, Seal | None]] = {release.db: (manifest["sha256"], None)}
    for entry in manifest.get("shards", ()):
        sealed = Seal.from_dict(entry["seal"]) if "seal" in entry else None
        expected[release.shard_db(entry["key"])] = (entry["sha256"], sealed)
    problems = []
    found: list[dict[str, int]] = []
    trusted = 0
    for db, (recorded, sealed) in expected.items():
        if not db.exists():
            problems.append(f"{db} is missing")
            continue
        if not full and sealed is not None and sealed.sha256 == recorded and sealed.holds_for(db):
            conn = sqlite_connect(db, read_only=True)
            try:
                found.append(table_counts(conn))
            finally:
                conn.close()
            trusted += 1
            continue
        with ThreadPoolExecutor(max_workers=1) as pool:
            hashing = pool.submit(sha256_file, db)
            conn = sqlite_connect(db, read_only=True)
            try:
                if log:
                    log.info(f"running PRAGMA integrity_check on {db}")
                result = "; ".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
                if result != "ok":
                    problems.append(f"{db.name}: integrity_check: {result}")
                found.append(table_counts(conn))
            finally:
                conn.close()
            sha256 = hashing.result()
        if sha256 != recorded:
            problems.append(f"{db.name}: sha256 is {sha256}, the manifest says {recorded}")
    if log and trusted:
        log.info(
            f"{trusted} shard files unchanged since their build's integrity_check and sha256 "
            "(same inode, size and modification time): not read again"
        )
    counts = found[0] if found else {}
    if len(found) > 1:  # the images are the shards' together; every other table the catalog's
        counts = {**counts, "images": sum(c.get("images", 0) for c in found[1:])}
    for table, rows in manifest["row_counts"].items():
        if counts.get(table) != rows:
            problems.append(f"{table} has {counts.get(table)} rows, the manifest says {rows}")
    return problems
