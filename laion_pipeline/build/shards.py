"""Shards: the staged files, in listing order, grouped into parts of at most ``max_rows`` kept
rows (``LAION_SHARD_ROWS``), each built into a SQLite database of its own on one core from its
files alone: its `images` (with their release-wide rowids, so the release's order is shard,
then rowid, and one key pages a search across shards), `images_fts`, and its own `domain`
table (ids local to the shard, counts of the shard).

The catalog is the totals over every shard, as sums of the shards' parts: each host's count,
with ids numbered in the order hosts first appear in the release (the ids one database of the
whole release gives them), and each name's count of captions naming it.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import duckdb

from laion_pipeline.build.build_db import (
    SIDE_FILES,
    fresh_build_db,
    install_build_db,
    open_writable,
    remove_side_files,
    require_table,
)
from laion_pipeline.build.fts import SideIndex, build_images_fts, install_side_index
from laion_pipeline.build.plan import BuildPlan, Shard, plan_shards, shard_inputs
from laion_pipeline.build.seal import built_from, prepare, seal, unseal
from laion_pipeline.build.staging import staged_files_of, staging_view_sql
from laion_pipeline.build.tables import (
    BUILD_PEAK_PER_DATABASE_BYTE,
    DOMAIN_DDL,
    build_domains,
    count_phrase,
    estimated_database_bytes,
    load_images,
)
from laion_pipeline.common.db import sqlite_connect, sqlite_transaction
from laion_pipeline.common.errors import StaleInputError
from laion_pipeline.common.files import disk_for
from laion_pipeline.common.layout import DataLayout
from laion_pipeline.releases.lock import data_dir_lock, shard_lock
from laion_pipeline.search.lookup import build_host_search
from laion_pipeline.sources.inputs import SourceListing
from laion_pipeline.sources.profiles import Profile

SHARDS_DDL = (
    "CREATE TABLE shards (key TEXT PRIMARY KEY, first_rowid INTEGER, last_rowid INTEGER, "
    "images INTEGER, files TEXT)"
)


def plan_of_staged_files(
    layout: DataLayout, profile: Profile, shard_rows: int
) -> tuple[Shard, ...]:
    """The shards ``staging_images`` will plan from the staged files of the observed listing
    (an error naming the files not staged yet)."""
    return plan_shards(staged_files_of(layout, SourceListing.read(layout), profile), shard_rows)


@dataclass(frozen=True)
class BuiltShard:
    rows: int
    domains: int
    null_captions: int


def build_shard(
    shard: Shard,
    db: Path,
    log: Any = None,
    *,
    index: bool = True,
    side_index: Path | None = None,
    threads: int | None = 1,
) -> BuiltShard:
    """Write the shard's database ``db`` (a new file): its domain table, its images in file
    order with their release-wide rowids, then (with ``index``) their caption index. A shard
    built alone on the machine gives the index a core of its own: with ``side_index`` (a
    scratch file) the captions are indexed in a second process while the images load, then
    copied in (``fts.SideIndex``); otherwise one core does both, one after the other.
    ``threads``: DuckDB's threads for the scan (None: one a core)."""
    duck = duckdb.connect()
    conn = sqlite_connect(db)
    side = None
    try:
        if threads is not None:
            duck.execute(f"SET threads = {int(threads)}")
        view = staging_view_sql(shard.files, first_rowid=shard.first_rowid)
        duck.execute(view)
        conn.execute("PRAGMA synchronous = OFF")  # a failed shard is built again from scratch
        domains = build_domains(duck, conn)
        if index and side_index is not None:
            side = SideIndex(side_index, view)
        loaded = load_images(duck, conn, shard.rows, log, first_rowid=shard.first_rowid)
        if side is not None:
            if log:
                log.info("images loaded; waiting for the caption index to finish")
            side.finish(log)
            side = None
            conn.close()  # the index is copied in by a connection of its own
            if log:
                log.info("caption index built; copying it into the database")
            install_side_index(db, side_index)
        elif index:
            build_images_fts(conn, log)
    finally:
        if side is not None:
            side.abandon()
        conn.close()
        duck.close()
    return BuiltShard(loaded.rows, domains, loaded.null_captions)


PREVIEW_SQL = (
    "SELECT i.rowid, d.domain, i.text, i.width, i.height, i.aesthetic "
    "FROM images i JOIN domain d ON d.id = i.domain_id ORDER BY i.rowid LIMIT 10"
)


@dataclass(frozen=True)
class ShardReport:
    """What a build of one shard's database made, read while its writer still holds it: the
    images loaded (None when only the index was rebuilt), the captions indexed, the first
    rows; ``kept`` when the file was built from the same inputs before and kept."""

    loaded: BuiltShard | None
    indexed: int
    preview: list[tuple]
    kept: bool = False


def shard_report(db: Path, loaded: BuiltShard | None, kept: bool = False) -> ShardReport:
    conn = sqlite_connect(db, read_only=True)
    try:
        indexed = 0
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'images_fts_docsize'").fetchone():
            (indexed,) = conn.execute("SELECT count(*) FROM images_fts_docsize").fetchone()
        if kept:
            (rows, nulls) = conn.execute(
                "SELECT count(*), count(*) - count(text) FROM images"
            ).fetchone()
            (domains,) = conn.execute("SELECT count(*) FROM domain").fetchone()
            loaded = BuiltShard(rows, domains, nulls)
        return ShardReport(loaded, indexed, conn.execute(PREVIEW_SQL).fetchall(), kept)
    finally:
        conn.close()


def rebuild_index(db: Path, what: str, log: Any = None) -> None:
    """The caption index alone, again, from the images table of ``db`` (unshared from any
    release first)."""
    conn = open_writable(db, what)
    try:
        require_table(conn, "images", what)
        build_images_fts(conn, log)
    finally:
        conn.close()


def build_bytes(shard: Shard) -> int:
    """The free disk a build of ``shard``'s database needs at its peak."""
    return int(BUILD_PEAK_PER_DATABASE_BYTE * estimated_database_bytes(shard.files))


def make_shard(
    plan: BuildPlan, shard: Shard, *, images: bool, index: bool, log: Any = None
) -> ShardReport:
    """Build the database of one shard of ``plan``, under the shard's lock: with ``images``, a
    new file (then with ``index`` its caption index too) that replaces the old one at once;
    else the caption index alone, again, in the existing file (unshared from any release
    first). Where the plan seals its shards, the file is then sealed
    (``laion_pipeline.build.seal``): analyzed, integrity-checked and hashed here, on this
    shard's core, so the publish need not read it again; and a file sealed as built from the
    same inputs is kept, not built."""
    db = plan.file(shard)
    what = f"images [{shard.key}]"
    inputs = shard_inputs(shard)
    # The one shard is the build database, whose temporaries (``<db>.new``, the side index)
    # only a holder of the data folder's lock may have: any other holder deletes them as an
    # interrupted run's (``remove_stale_temporaries``). Taken first, as every holder of both does.
    folder_lock = data_dir_lock(plan.layout, log) if plan.catalog_in_shard else nullcontext()
    with folder_lock, shard_lock(plan.layout, db, log):
        if plan.sealed and images and index and built_from(db, inputs) is not None:
            return shard_report(db, None, kept=True)  # built from these inputs, and whole
        unseal(db)
        if not images:
            rebuild_index(db, what, log)
            if plan.sealed:
                seal(db, *prepare(db, what), inputs)
            return shard_report(db, None)
        new = db.with_name(db.name + ".new")
        for leftover in (new, *(new.with_name(new.name + s) for s in SIDE_FILES)):
            leftover.unlink(missing_ok=True)  # what a killed build of this shard left
        with disk_for(db.parent, build_bytes(shard), f"building shard {shard.key}"):
            built = build_shard(
                shard,
                new,
                log,
                index=index,
                side_index=plan.side_index(shard),
                threads=plan.threads,
            )
        prepared = prepare(new, what) if plan.sealed else None
        remove_side_files(db)
        new.replace(db)
        if prepared is not None:
            seal(db, *prepared, inputs)
        # Read before the lock is released: another run may start a new file after it.
        return shard_report(db, built)


def make_shards(
    plan: BuildPlan, shards: Sequence[Shard], *, images: bool, index: bool, workers: int, log: Any
) -> list[ShardReport]:
    """``make_shard`` for each of ``shards``, ``workers`` at a time (each a process on one
    core), in their order; ``log`` is told of a shard built in this process."""
    if workers == 1 or len(shards) == 1:
        return [make_shard(plan, s, images=images, index=index, log=log) for s in shards]
    build = functools.partial(make_shard, plan, images=images, index=index)
    with ProcessPoolExecutor(min(workers, len(shards)), mp_context=get_context("spawn")) as pool:
        return list(pool.map(build, shards))


def write_catalog(plan: BuildPlan) -> None:
    """Write the catalog's tables from the shards' databases: the ``domain`` table over
    every shard (with its ``domain_search``) and the ``shards`` table. Into a fresh file
    that then becomes the build database; or, where the plan puts the catalog in its one
    shard, into that shard's database, whose own domain table is the release's. The caller
    holds the plan's locks."""
    domains: list[tuple[int, str, int]] = []
    if plan.catalog_in_shard:  # its own domain table is the release's: nothing to sum
        new, conn = None, open_writable(plan.catalog, "images")
    else:
        with shard_connections(plan) as conns:
            domains = catalog_domains(conns)
        new = fresh_build_db(plan.layout)
        conn = sqlite_connect(new)
    try:
        with sqlite_transaction(conn):
            if new is not None:
                conn.execute(DOMAIN_DDL)
                conn.executemany("INSERT INTO domain VALUES (?, ?, ?)", domains)
            build_host_search(conn)
            conn.execute("DROP TABLE IF EXISTS shards")
            conn.execute(SHARDS_DDL)
            conn.executemany(
                "INSERT INTO shards VALUES (?, ?, ?, ?, ?)",
                [
                    (s.key, s.first_rowid, s.last_rowid, s.rows, "\n".join(f.key for f in s.files))
                    for s in plan.shards
                ],
            )
    finally:
        conn.close()
    if new is not None:
        install_build_db(new, plan.layout)


@contextmanager
def shard_connections(plan: BuildPlan) -> Iterator[list[sqlite3.Connection]]:
    """Read-only connections to every shard's database, in release order; an error naming
    the shards not built (with their caption index) yet."""
    paths = [plan.file(s) for s in plan.shards]
    missing = [s.key for s, path in zip(plan.shards, paths, strict=True) if not path.exists()]
    if missing:
        raise StaleInputError(
            f"{len(missing)} of {len(plan.shards)} shards are not built "
            f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): materialize "
            "those partitions of images and images_fts"
        )
    with ExitStack() as stack:
        conns = []
        for shard, path in zip(plan.shards, paths, strict=True):
            conn = sqlite_connect(path, read_only=True)
            stack.callback(conn.close)
            require_table(conn, "images_fts", f"images_fts [{shard.key}]")
            conns.append(conn)
        yield conns


def catalog_domains(shards: Iterable[sqlite3.Connection]) -> list[tuple[int, str, int]]:
    """``(id, domain, image_counts)`` over the shards (given in release order): counts summed,
    ids in the order hosts first appear in the release."""
    ids: dict[str, int] = {}
    counts: dict[str, int] = {}
    for conn in shards:
        for domain, count in conn.execute("SELECT domain, image_counts FROM domain ORDER BY id"):
            ids.setdefault(domain, len(ids) + 1)
            counts[domain] = counts.get(domain, 0) + count
    return [(number, domain, counts[domain]) for domain, number in ids.items()]


def count_phrase_in_shards(shards: Sequence[sqlite3.Connection], name: str) -> int:
    """How many captions of the release contain ``name`` as a phrase: the shards' sum."""
    return sum(count_phrase(conn, name) for conn in shards)
