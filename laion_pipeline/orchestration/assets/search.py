"""Search database layer: the SQLite tables Datasette serves, built in `build/`.

`images` (one partition per shard) builds each shard's database afresh; `domains` and the name
tables then write the catalog, where the build's plan (`build.plan.BuildPlan`) puts it: into
the one shard's database, or a fresh file beside several. Every other step adds or replaces its
own tables, each in one transaction, so a failed step leaves the previous tables in place.
"""

import collections
import functools
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)

from laion_pipeline.build.build_db import open_build_db, require_table
from laion_pipeline.build.plan import BuildPlan
from laion_pipeline.build.shards import (
    count_phrase_in_shards,
    make_shards,
    shard_connections,
    write_catalog,
)
from laion_pipeline.build.staging import check_files_unchanged
from laion_pipeline.build.tables import (
    TOP_DOMAINS_SQL,
    build_entity_table,
)
from laion_pipeline.common.layout import ENTITY_KINDS, DataLayout
from laion_pipeline.common.schema import (
    DOMAIN_COLUMNS,
    ENTITY_COLUMNS,
    IMAGE_COLUMNS,
    IMAGES_FTS_COLUMNS,
    SOURCE_IMAGE_COLUMNS,
)
from laion_pipeline.common.versions import CODE_VERSIONS
from laion_pipeline.orchestration.assets.raw import entity_csvs
from laion_pipeline.orchestration.assets.staging import staging_images
from laion_pipeline.orchestration.metadata import (
    StepTimer,
    column_lineage,
    file_metadata,
    markdown_list,
    markdown_table,
    run_worker,
    table_schema,
)
from laion_pipeline.orchestration.partitions import SHARDS
from laion_pipeline.orchestration.resources import LaionData
from laion_pipeline.releases.lock import data_dir_lock
from laion_pipeline.sources.inputs import parse_entity_csv


def list_problems(rows: list[dict[str, str]], log: Any, kind: str) -> dict[str, Any]:
    """Rows of a name list that count nothing useful: blank names (counted 0) and names listed
    more than once (each row kept, counted once), for the asset's metadata and the log."""
    blank = sum(1 for row in rows if not row["name"].strip())
    repeated = collections.Counter(row["name"] for row in rows if row["name"].strip())
    duplicates = sorted(name for name, n in repeated.items() if n > 1)
    if (blank or duplicates) and log:
        log.warning(
            f"{kind}: {blank} blank names (counted 0) and {len(duplicates)} names listed more "
            f"than once: {', '.join(duplicates[:10])}"
        )
    return {
        "blank_names": blank,
        "duplicate_names": len(duplicates),
        "duplicates": MetadataValue.md(markdown_list(duplicates[:50]) or "none"),
    }


def _table_metadata(layout: DataLayout, table: str) -> dict[str, Any]:
    return {**file_metadata(layout.build_db), "dagster/table_name": table}


# Where the columns of the search tables come from.
DOMAINS_LINEAGE = column_lineage(
    {
        "id": [("images", "domain_id")],
        "domain": [("staging_images", "domain")],
        "image_counts": [("images", "domain_id")],
    }
)
IMAGES_LINEAGE = column_lineage(
    {
        **{c: [("staging_images", c)] for c in SOURCE_IMAGE_COLUMNS},
        "domain_id": [("staging_images", "domain")],
        "url_key": [("staging_images", "url")],
    }
)
IMAGES_FTS_LINEAGE = column_lineage({"text": [("images", "text")]})

IMAGES_DESCRIPTION = (
    "The images table: one row per image in file order (url, caption text, size, CLIP "
    "similarity, unsafe and watermark probabilities, aesthetic score, hash), with domain_id "
    "pointing at the image's host in its database's domain table, and url_key (a key of the "
    "URL, indexed, for finding an image by its URL in milliseconds). One partition per shard "
    "(consecutive staged files of at most `LAION_SHARD_ROWS` rows, each a database of its "
    "own, built on one core); one shard (the default up to 20M rows) is the build database."
)
IMAGES_FTS_DESCRIPTION = (
    "The full-text index of image captions (SQLite FTS5 over images.text) behind the search "
    "box and the name counts, one per shard. Built while the images load when both are "
    "materialized."
)


@multi_asset(
    specs=[
        AssetSpec(
            "images",
            deps=[staging_images],
            group_name="search_database",
            kinds={"sqlite"},
            description=IMAGES_DESCRIPTION,
            code_version=CODE_VERSIONS["images"],
            metadata={"dagster/column_schema": table_schema(IMAGE_COLUMNS)},
            skippable=True,
        ),
        AssetSpec(
            "images_fts",
            deps=["images"],
            group_name="search_database",
            kinds={"sqlite"},
            description=IMAGES_FTS_DESCRIPTION,
            code_version=CODE_VERSIONS["images_fts"],
            metadata={"dagster/column_schema": table_schema(IMAGES_FTS_COLUMNS)},
            skippable=True,
        ),
    ],
    partitions_def=SHARDS,
    # A backfill of every shard is a run per shard, so a run launcher spreads them over
    # machines; `make run` builds them in one run, LAION_WORKERS at a time.
    backfill_policy=BackfillPolicy.multi_run(1),
    can_subset=True,
)
def images_and_index(
    context: AssetExecutionContext, laion_data: LaionData
) -> Iterator[MaterializeResult]:
    """Builds the shards of the run; either asset alone is rebuilt on its own (the index then
    from the images table)."""
    timer = StepTimer()
    selected = {key.path[-1] for key in context.selected_asset_keys}
    plan = BuildPlan.of_staged(laion_data.layout)
    # A run of no partition (a subset of the job chosen by hand) builds every shard.
    partitioned = context.has_partition_key or context.has_partition_key_range
    wanted = plan.chosen(context.partition_keys) if partitioned else list(plan.shards)
    if "images" in selected:
        check_files_unchanged([f for shard in wanted for f in shard.files])
    context.log.info(
        f"building {len(wanted)} of {len(plan.shards)} shards, "
        f"{min(laion_data.parallel_files, len(wanted))} at a time"
    )
    reports = make_shards(
        plan,
        wanted,
        images="images" in selected,
        index="images_fts" in selected,
        workers=laion_data.parallel_files,
        log=context.log,
    )
    kept = [s.key for s, r in zip(wanted, reports, strict=True) if r.kept]
    if kept:
        context.log.info(
            f"{len(kept)} of {len(wanted)} shards were built from the same files and code "
            f"before, and are whole (their seal): kept, not built ({', '.join(kept[:5])})"
        )
    loaded = [r.loaded for r in reports if r.loaded is not None]
    shard_table = MetadataValue.md(
        markdown_table(
            ["shard", "files", "first rowid", "last rowid", "images"],
            [(s.key, len(s.files), s.first_rowid, s.last_rowid, s.rows) for s in wanted],
        )
    )
    files = [plan.file(s) for s in wanted]

    def result(asset: str, **metadata: Any) -> MaterializeResult:
        """The materialization of `asset` for the shards of the run."""
        return MaterializeResult(
            asset_key=AssetKey(asset),
            metadata={
                **_shards_metadata(files, asset),
                **timer.metadata(),
                "worker": run_worker(),
                "shards": shard_table,
                **metadata,
            },
        )

    if "images" in selected:
        preview = markdown_table(
            ["rowid", "domain", "text", "width", "height", "aesthetic"], reports[0].preview
        )
        yield result(
            "images",
            **{
                "dagster/row_count": sum(b.rows for b in loaded),
                "dagster/column_lineage": IMAGES_LINEAGE,
                "null_captions": sum(b.null_captions for b in loaded),
                "preview": MetadataValue.md(preview),
            },
        )
    if "images_fts" in selected:
        yield result(
            "images_fts",
            **{
                "dagster/row_count": sum(r.indexed for r in reports),
                "dagster/column_lineage": IMAGES_FTS_LINEAGE,
            },
        )


def _shards_metadata(files: list[Path], table: str) -> dict[str, Any]:
    if len(files) == 1:
        return {**file_metadata(files[0]), "dagster/table_name": table}
    return {
        "size_bytes": sum(f.stat().st_size for f in files),
        "path": MetadataValue.path(str(files[0].parent)),
        "dagster/table_name": table,
    }


@asset(
    deps=["images"],
    group_name="search_database",
    kinds={"sqlite"},
    code_version=CODE_VERSIONS["domains"],
    metadata={"dagster/column_schema": table_schema(DOMAIN_COLUMNS)},
)
def domains(context: AssetExecutionContext, laion_data: LaionData) -> MaterializeResult:
    """The `domain` table of the release: one row per host an image was scraped from
    (`urlparse(url).netloc`), with `image_counts`, the number of images from that host, ids
    in the order hosts first appear. One shard: its own domain table. Several: the totals
    over every shard, in a fresh catalog database (`build/`) with a `shards` table beside
    it (each shard's rowids, images and files)."""
    timer = StepTimer()
    layout = laion_data.layout
    with data_dir_lock(layout, context.log):
        plan = BuildPlan.of_staged(layout)
        with plan.locked(context.log):
            write_catalog(plan)
        conn = open_build_db(layout, write=False)
        try:
            require_table(conn, "domain", "images")
            (count,) = conn.execute("SELECT count(*) FROM domain").fetchone()
            top = conn.execute(TOP_DOMAINS_SQL).fetchall()
            (empty,) = conn.execute(
                "SELECT coalesce(sum(image_counts), 0) FROM domain WHERE domain = ''"
            ).fetchone()
        finally:
            conn.close()
        return MaterializeResult(
            metadata={
                **_table_metadata(layout, "domain"),
                **timer.metadata(),
                "dagster/row_count": count,
                "dagster/column_lineage": DOMAINS_LINEAGE,
                "shard_count": len(plan.shards),
                "images_without_domain": empty,
                "top_domains": MetadataValue.md(markdown_table(["domain", "images"], top)),
            }
        )


ENTITY_DESCRIPTIONS = {
    "artists": "Artists of the 2022 list, with image_counts: captions naming them",
    "celebrities": "Celebrities of the 2022 list, with image_counts: captions naming them",
    "characters": "Fictional characters of the 2022 list, with image_counts: captions naming them",
}


@multi_asset(
    specs=[
        AssetSpec(
            kind,
            deps=["images_fts", domains, entity_csvs],
            group_name="search_database",
            kinds={"sqlite", "csv"},
            description=ENTITY_DESCRIPTIONS[kind]
            + " (the number of captions containing the name as a phrase).",
            code_version=CODE_VERSIONS["entity_tables"],
            metadata={"dagster/column_schema": table_schema(ENTITY_COLUMNS)},
            skippable=True,
        )
        for kind in ENTITY_KINDS
    ],
    can_subset=True,
)
def entity_tables(
    context: AssetExecutionContext, laion_data: LaionData
) -> Iterator[MaterializeResult]:
    """The name lists as tables, each name counted in the caption index."""
    layout = laion_data.layout
    with data_dir_lock(layout, context.log), ExitStack() as stack:
        plan = BuildPlan.of_staged(layout)
        stack.enter_context(plan.locked(context.log))
        conns = stack.enter_context(shard_connections(plan))
        count = functools.partial(count_phrase_in_shards, conns)
        conn = open_build_db(layout, write=True)
        stack.callback(conn.close)
        for key in sorted(context.selected_asset_keys):
            timer = StepTimer()
            kind = key.path[-1]
            columns, rows = parse_entity_csv(
                layout.entity_csv(kind).read_bytes(), str(layout.entity_csv(kind))
            )
            counted = build_entity_table(conn, kind, columns, rows, context.log, count)
            top = sorted(counted, key=lambda pair: (-pair[1], pair[0]))[:20]
            context.log.info(f"{kind}: counted {len(counted)} names")
            schema = {c: ("TEXT", "From the name list CSV") for c in columns}
            schema["image_counts"] = ENTITY_COLUMNS["image_counts"]
            yield MaterializeResult(
                asset_key=key,
                metadata={
                    **_table_metadata(layout, kind),
                    **timer.metadata(),
                    "dagster/column_schema": table_schema(schema),
                    "dagster/column_lineage": column_lineage(
                        {
                            **{c: [("entity_csvs", c)] for c in columns},
                            "image_counts": [("entity_csvs", "name"), ("images_fts", "text")],
                        }
                    ),
                    "dagster/row_count": len(counted),
                    "names_found": sum(1 for _, n in counted if n),
                    **list_problems(rows, context.log, kind),
                    "top_names": MetadataValue.md(markdown_table(["name", "images"], top)),
                },
            )
