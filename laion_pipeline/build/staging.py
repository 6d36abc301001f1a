"""Staging: the rows of every staged file, in file order, numbered, as one DuckDB view (no copy
of the rows: the staged files are already typed for SQLite and carry their domain)."""

from collections.abc import Sequence
from pathlib import Path

import duckdb

from laion_pipeline.build.state import check_staged
from laion_pipeline.common.db import quote_string
from laion_pipeline.common.errors import StaleInputError
from laion_pipeline.common.files import sha256_file
from laion_pipeline.common.layout import DataLayout
from laion_pipeline.common.schema import STAGED_FILE_COLUMNS, STAGING_VIEW_COLUMNS
from laion_pipeline.common.versions import STAGING_CODE_VERSION
from laion_pipeline.sources.ingest import stage_file
from laion_pipeline.sources.inputs import SourceEntry, SourceListing, StagedFile
from laion_pipeline.sources.profiles import Profile


def staging_view_sql(files: Sequence[StagedFile], first_rowid: int = 1) -> str:
    """`staging_images` as a view over the staged files. Row `id` numbers rows in file order
    from ``first_rowid`` (1, or where a shard starts in the release); it becomes the SQLite
    rowid."""
    offsets, cases = first_rowid - 1, []
    for f in files:
        cases.append(f"WHEN {quote_string(f.path)} THEN {offsets}")
        offsets += f.rows
    names = [name for name in STAGING_VIEW_COLUMNS if name != "id"]
    columns = ", ".join(f'"{name}"' for name in STAGING_VIEW_COLUMNS)
    select = ", ".join(f'"{name}"' for name in names)
    paths = ", ".join(quote_string(f.path) for f in files)
    offset = f"CASE filename {' '.join(cases)} END" if files else str(first_rowid - 1)
    source = (
        f"read_parquet([{paths}], file_row_number = true, filename = true)"
        if files
        # No file keeps a row (a filter kept none): an empty view of the right types.
        else "(SELECT "
        + ", ".join(f'CAST(NULL AS {t}) AS "{n}"' for n, (t, _) in STAGED_FILE_COLUMNS.items())
        + ", CAST(0 AS BIGINT) AS file_row_number, '' AS filename WHERE false)"
    )
    return (
        f"CREATE OR REPLACE VIEW staging_images ({columns}) AS "
        f"SELECT file_row_number + 1 + {offset}, {select} FROM {source}"
    )


def schema_problems(conn: duckdb.DuckDBPyConnection, files: Sequence[StagedFile]) -> list[str]:
    """What is wrong with the columns of each staged file and of the staged view; empty when
    nothing is."""
    problems = []
    expected_file = [(name, sql_type) for name, (sql_type, _) in STAGED_FILE_COLUMNS.items()]
    for f in files:
        found = [
            tuple(row[:2])
            for row in conn.execute(
                f"DESCRIBE SELECT * FROM read_parquet({quote_string(f.path)})"
            ).fetchall()
        ]
        if found != expected_file:
            problems.append(f"{f.key}: the staged file has columns {found}, not {expected_file}")
    staged = [tuple(row[:2]) for row in conn.execute("DESCRIBE staging_images").fetchall()]
    expected = [(name, sql_type) for name, (sql_type, _) in STAGING_VIEW_COLUMNS.items()]
    if staged != expected:
        problems.append(f"staging_images has columns {staged}, not {expected}")
    return problems


def check_files_unchanged(files: Sequence[StagedFile]) -> None:
    """The view reads the staged files: refuse if any changed since (or is gone)."""
    for f in files:
        if not f.unchanged():
            raise StaleInputError(
                f"the staged file of {f.key} changed since it was staged: materialize its "
                "partition of source_files, then staging_images (and what follows) again"
            )


def create_staging(conn: duckdb.DuckDBPyConnection, files: Sequence[StagedFile]) -> int:
    """Define `staging_images` over ``files``; returns its row count (from their records)."""
    check_files_unchanged(files)
    conn.execute(staging_view_sql(files))
    return sum(f.rows for f in files)


def stage_source_file(
    layout: DataLayout,
    profile: Profile,
    listing: SourceListing,
    entry: SourceEntry,
    raw: Path,
    sha256: str,
    threads: int | None = None,
) -> StagedFile:
    """Stage the fetched copy ``raw`` of one source file into ``staging/files/`` and record
    what it holds beside it; returns the record."""
    target = layout.staged_parquet(entry.key)
    label = listing.label(entry.key)
    rows = stage_file(raw, label, profile, target, threads)
    stat = target.stat()
    staged = StagedFile(
        key=entry.key,
        path=str(target),
        size=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        rows=rows.rows_kept,
        rows_read=rows.rows_read,
        sha256=sha256,
        source_version=entry.version,
        profile_digest=profile.digest,
        missing_columns=tuple(rows.columns.missing),
        source=label,
        profile=profile.name,
        row_filter=profile.filter_parameters,
        staging_code_version=STAGING_CODE_VERSION,
        staged_sha256=sha256_file(target),
        values_nulled=rows.nulled,
        rows_blocked=rows.blocked,
        takedowns=profile.takedowns.digest,
    )
    staged.write(layout)
    return staged


def staged_files_of(
    layout: DataLayout, listing: SourceListing, profile: Profile
) -> list[StagedFile]:
    """The staged file of every source file of ``listing``, in its order, each staged from
    the listed version with this profile and this staging code (``state.check_staged``);
    else which partitions to materialize, and why."""
    checks = [check_staged(layout, entry, profile) for entry in listing.entries]
    missing = [c for c in checks if c.staged is None]
    if missing:
        shown = "; ".join(f"{c.key}: {c.reason}" for c in missing[:5])
        raise StaleInputError(
            f"{len(missing)} of {len(listing.entries)} source files are not staged at the "
            f"observed revision ({shown}{'; ...' if len(missing) > 5 else ''}): "
            "materialize those partitions of source_files (`make run` does, or a backfill in "
            "the UI), then staging_images"
        )
    return [c.staged for c in checks if c.staged is not None]


def remove_unlisted_staged_files(layout: DataLayout, listing: SourceListing) -> list[Path]:
    """Delete the staged files (and their records) of source files no longer listed."""
    kept = set()
    for entry in listing.entries:
        kept |= {layout.staged_parquet(entry.key), layout.staged_record(entry.key)}
        kept.add(layout.staged_record(entry.key).with_suffix(".lock"))
    # Hidden files are the partial writes of partitions staging now.
    gone = [
        p
        for p in sorted(layout.staged_dir.glob("*"))
        if p.is_file() and p not in kept and not p.name.startswith(".")
    ]
    for path in gone:
        path.unlink(missing_ok=True)
    return gone
