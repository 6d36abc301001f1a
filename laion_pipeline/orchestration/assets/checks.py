"""The checks of the search database and the report. Each reads (never writes) the build
database or the current release, so "Execute" on a check in the UI evaluates it against the
files as they are and rebuilds nothing. In a run, a failed blocking check stops the steps after
its asset: nothing is published."""

import collections
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    MetadataValue,
    asset_check,
)
from dagster_duckdb import DuckDBResource

from laion_pipeline.analysis.report import report_problems
from laion_pipeline.build.build_db import require_table
from laion_pipeline.build.fts import caption_index_mismatches
from laion_pipeline.build.plan import BuildPlan, Shard
from laion_pipeline.build.staging import schema_problems
from laion_pipeline.common.db import quote_identifier, sqlite_connect
from laion_pipeline.common.errors import StaleInputError
from laion_pipeline.common.layout import ENTITY_KINDS, DataLayout
from laion_pipeline.orchestration.assets.raw import nulled_text
from laion_pipeline.orchestration.metadata import markdown_list, markdown_table
from laion_pipeline.orchestration.resources import LaionData
from laion_pipeline.releases.switch import current_release
from laion_pipeline.sources.ingest import VALUE_RULES
from laion_pipeline.sources.inputs import StagingManifest

# Above this share of images without a host (URLs with no "//"), the domain counts say little.
EMPTY_DOMAIN_WARN_SHARE = 0.01
# Above this share of images without a caption, search and name counts miss many images.
NULL_CAPTION_WARN_SHARE = 0.01


# The asset that makes each table of the build database.
MADE_BY = {"domain": "images", "images": "images", "images_fts_docsize": "images_fts"}


@contextmanager
def build_database(layout: DataLayout, *tables: str) -> Iterator[sqlite3.Connection]:
    """The build database, read-only, once it has `tables` (else: what to materialize; a
    check may run after another run started a new build database)."""
    if not layout.build_db.exists():
        raise StaleInputError(f"{layout.build_db} does not exist: materialize images first")
    conn = sqlite_connect(layout.build_db, read_only=True)
    try:
        conn.execute("BEGIN")  # one snapshot for the whole check: writers wait for it
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        for table in tables:
            require_table(conn, table, MADE_BY.get(table, table))
        yield conn
    finally:
        conn.close()


@contextmanager
def shard_databases(
    context: AssetCheckExecutionContext, layout: DataLayout, *tables: str
) -> Iterator[list[tuple[Shard, sqlite3.Connection]]]:
    """The databases of the shards a run built (every shard, for a check executed on its
    own), read-only, once they have `tables`, each with its shard."""
    plan = BuildPlan.of_staged(layout)
    shards = plan.shards
    if context.has_partition_key or context.has_partition_key_range:
        shards = tuple(plan.chosen(context.partition_keys))
    with ExitStack() as stack:
        opened = []
        for shard in shards:
            path = plan.file(shard)
            if not path.exists():
                raise StaleInputError(f"{path} does not exist: materialize images [{shard.key}]")
            conn = sqlite_connect(path, read_only=True)
            stack.callback(conn.close)
            conn.execute("BEGIN")  # one snapshot for the whole check
            for table in tables:
                require_table(conn, table, f"{MADE_BY.get(table, table)} [{shard.key}]")
            opened.append((shard, conn))
        yield opened


def in_shard(shard: Shard, problems: list[str]) -> list[str]:
    """Problems of one shard's database, named by its shard."""
    return [f"{shard.key}: {p}" for p in problems]


def share_check(count: int, total: int, limit: float, what: str) -> AssetCheckResult:
    """A warning when more than `limit` of the `total` images are `what` says."""
    share = count / total if total else 0.0
    return AssetCheckResult(
        passed=share <= limit,
        severity=AssetCheckSeverity.WARN,
        description=f"{count:,} of {total:,} images ({share:.2%}) {what}; expected at most "
        f"{limit:.0%}",
        metadata={"count": count, "share": MetadataValue.float(share)},
    )


def problems_result(found: list[str], **metadata: Any) -> AssetCheckResult:
    """Passed when nothing was found wrong; else each problem in the description. The number
    of problems is numeric metadata, which the UI plots across runs."""
    return AssetCheckResult(
        passed=not found,
        description="; ".join(found) or None,
        metadata={"problems_found": len(found), **metadata},
    )


@asset_check(
    asset="staging_images",
    blocking=True,
    description="Every parquet file has the LAION columns with readable types (text for URL "
    "and TEXT, numbers for the scores and sizes), and the staged view has the typed columns "
    "the SQLite tables are built from.",
)
def laion_columns_and_types(
    laion_data: LaionData, staging_duckdb: DuckDBResource
) -> AssetCheckResult:
    files = StagingManifest.read(laion_data.layout).files
    with staging_duckdb.get_connection() as conn:
        problems = schema_problems(conn, files)
    return problems_result(problems, problems=MetadataValue.md(markdown_list(problems) or "none"))


@asset_check(
    asset="staging_images",
    description="Every number kept its column's rule (sizes whole numbers of pixels from 1 to "
    "2^31 - 1, probabilities from 0 to 1, scores finite); a value that broke it was stored as "
    "NULL, never rounded or clamped, and is counted here per column and source file (a "
    "warning: the build goes on).",
)
def values_within_rules(laion_data: LaionData) -> AssetCheckResult:
    files = StagingManifest.read(laion_data.layout).files
    totals: collections.Counter[str] = collections.Counter()
    for f in files:
        totals.update(f.values_nulled)
    rows = [
        (f.key, c, VALUE_RULES.get(c, ""), n)
        for f in files
        for c, n in sorted(f.values_nulled.items())
    ]
    described = nulled_text(totals)
    return AssetCheckResult(
        passed=not totals,
        severity=AssetCheckSeverity.WARN,
        description=f"values stored as NULL for breaking their column's rule: {described}"
        if totals
        else None,
        metadata={
            "values_nulled": sum(totals.values()),
            "by_file": MetadataValue.md(
                markdown_table(["source file", "column", "its rule", "values"], rows[:100])
                if rows
                else "none"
            ),
        },
    )


@asset_check(
    asset="domains",
    description=f"At most {EMPTY_DOMAIN_WARN_SHARE:.0%} of the images have a URL with no host "
    "(a warning: the build goes on).",
)
def few_images_without_domain(laion_data: LaionData) -> AssetCheckResult:
    with build_database(laion_data.layout, "domain") as conn:
        images, empty = conn.execute(
            "SELECT coalesce(sum(image_counts), 0), "
            "coalesce(sum(image_counts) FILTER (WHERE domain = ''), 0) FROM domain"
        ).fetchone()
    return share_check(empty, images, EMPTY_DOMAIN_WARN_SHARE, "have no host in their URL")


def domain_id_problems(conn: sqlite3.Connection) -> list[str]:
    """Images whose `domain_id` is not a domain, and domains whose `image_counts` differ
    from the images that point at them; empty when every count agrees."""
    counted = dict(conn.execute("SELECT domain_id, count(*) FROM images GROUP BY domain_id"))
    recorded = dict(conn.execute("SELECT id, image_counts FROM domain"))
    problems = []
    orphans = sum(n for domain_id, n in counted.items() if domain_id not in recorded)
    if orphans:
        problems.append(f"{orphans:,} images have a domain_id that is not in domain")
    wrong = [d for d, n in recorded.items() if counted.get(d, 0) != n]
    if wrong:
        problems.append(
            f"{len(wrong):,} domains have image_counts that differ from their images "
            f"(ids {', '.join(str(d) for d in wrong[:5])}...)"
        )
    return problems


@asset_check(
    asset="images",
    blocking=True,
    description="Every image's domain_id is a row of domain, and each domain's image_counts "
    "equals the number of images pointing at it (so they sum to the image count).",
)
def domain_ids_valid(
    context: AssetCheckExecutionContext, laion_data: LaionData
) -> AssetCheckResult:
    with shard_databases(context, laion_data.layout, "domain", "images") as shards:
        found = [p for s, c in shards for p in in_shard(s, domain_id_problems(c))]
    return problems_result(found, shards=len(shards))


@asset_check(
    asset="images",
    description=f"At most {NULL_CAPTION_WARN_SHARE:.0%} of the images have no caption (a "
    "warning: the build goes on).",
)
def few_null_captions(
    context: AssetCheckExecutionContext, laion_data: LaionData
) -> AssetCheckResult:
    images = empty = 0
    with shard_databases(context, laion_data.layout, "images") as shards:
        for _, conn in shards:
            rows, nulls = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE text IS NULL) FROM images"
            ).fetchone()
            images, empty = images + rows, empty + nulls
    return share_check(empty, images, NULL_CAPTION_WARN_SHARE, "have no caption")


def row_count_problems(conn: sqlite3.Connection, staged: int) -> tuple[list[str], dict]:
    """Whether staging, `images` and the caption index hold the same number of rows."""
    (images,) = conn.execute("SELECT count(*) FROM images").fetchone()
    (indexed,) = conn.execute("SELECT count(*) FROM images_fts_docsize").fetchone()
    counts = {"staging_images": staged, "images": images, "images_fts": indexed}
    if len(set(counts.values())) == 1:
        return [], counts
    return [f"row counts differ: {counts}"], counts


@asset_check(
    asset="images_fts",
    blocking=True,
    description="staging_images, images and the caption index hold the same number of rows.",
)
def row_counts_match(
    context: AssetCheckExecutionContext, laion_data: LaionData
) -> AssetCheckResult:
    found, totals = [], collections.Counter()
    with shard_databases(context, laion_data.layout, "images", "images_fts_docsize") as shards:
        for shard, conn in shards:
            problems, counts = row_count_problems(conn, shard.rows)
            found += in_shard(shard, problems)
            totals.update(counts)
    return problems_result(found, **totals)


@asset_check(
    asset="images_fts",
    blocking=True,
    description="The caption index holds, for a random sample of 2,000 images, exactly their "
    "captions: the same number of words, and for 500 of them the caption's first words as a "
    "phrase at that image. An index built from other captions than the images table holds (a "
    "source file changed between the two) fails it.",
)
def caption_index_matches_captions(
    context: AssetCheckExecutionContext, laion_data: LaionData
) -> AssetCheckResult:
    problems, checked_in_all, wrong_in_all = [], 0, 0
    with shard_databases(context, laion_data.layout, "images", "images_fts_docsize") as shards:
        for shard, conn in shards:
            checked, wrong = caption_index_mismatches(conn)
            checked_in_all, wrong_in_all = checked_in_all + checked, wrong_in_all + len(wrong)
            if wrong:
                problem = (
                    f"{len(wrong):,} of {checked:,} sampled images have other captions in the "
                    f"index (rowids {', '.join(map(str, wrong[:5]))}...): materialize images "
                    "and images_fts again"
                )
                problems += in_shard(shard, [problem])
    return problems_result(problems, checked=checked_in_all, mismatched=wrong_in_all)


def _image_counts_in_range(kind: str) -> AssetChecksDefinition:
    @asset_check(
        asset=kind,
        name="image_counts_in_range",
        blocking=True,
        description="Every name has an image_counts between 0 and the number of images.",
    )
    def check(laion_data: LaionData) -> AssetCheckResult:
        images = StagingManifest.read(laion_data.layout).rows  # row_counts_match: the images'
        with build_database(laion_data.layout, kind) as conn:
            (outside,) = conn.execute(
                f"SELECT count(*) FROM {quote_identifier(kind)} "
                "WHERE image_counts IS NULL OR image_counts NOT BETWEEN 0 AND ?",
                (images,),
            ).fetchone()
        problems = [f"{outside:,} names have image_counts outside 0..{images:,}"] if outside else []
        return problems_result(problems, names_outside=outside)

    return check


artists_counts_in_range, celebrities_counts_in_range, characters_counts_in_range = (
    _image_counts_in_range(kind) for kind in ENTITY_KINDS
)


@asset_check(
    asset="analysis",
    description="The current release's report has every chart as a PNG image, its page links "
    "each of them, and it describes the database of its release.",
)
def report_complete(laion_data: LaionData) -> AssetCheckResult:
    problems = report_problems(current_release(laion_data.layout))
    return problems_result(problems)
