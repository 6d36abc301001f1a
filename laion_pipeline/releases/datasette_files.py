"""The Datasette files published beside the database: metadata and the inspect file."""

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlite_utils
from markupsafe import Markup

from laion_pipeline.common.layout import DEFAULT_DATABASE, ENTITY_KINDS, REPORT_URL
from laion_pipeline.common.schema import IMAGE_COLUMNS
from laion_pipeline.search.shard_search import PAGE_ROWS, search_sql
from laion_pipeline.sources.inputs import shown_location

SEARCH_PAGE_ROWS = PAGE_ROWS
# Datasette's canned query of the fast search: any text typed in q is a valid FTS5 query
# (laion_match), an empty after is the first page.
SEARCH_SQL = search_sql(
    "laion_match(:q)", "cast(coalesce(nullif(:after, ''), '0') as integer)", str(PAGE_ROWS)
)

# The settings of the 2022 deployment, passed by `make serve`.
SERVE_SETTINGS = {"sql_time_limit_ms": 10_000, "suggest_facets": 0, "allow_download": 0}


def _source(source: dict[str, str]) -> tuple[str, str]:
    if source["kind"] == "huggingface":
        return (
            f"{source['location']} at {source['revision'][:12]}",
            f"https://huggingface.co/datasets/{source['location']}",
        )
    if source["kind"] == "sample":  # no page to link: the 2022 dataset was taken down
        return ("Synthetic LAION-shaped sample bundled with laion-pipeline (not real images)", "")
    return (f"LAION parquet files of the folder {shown_location(source)}", "")


# Where the search page is served, over the one database or every shard (a route of ours).
SHARD_SEARCH_URL = "/-/search"
# "Is my work in it?": an image URL or a host looked up (a route of ours).
LOOKUP_URL = "/-/lookup"

IMAGES_TABLE = {
    "description": "One row per image: its URL, caption and scores. "
    "hash, __index_level_0__ and url_key are hidden (add ?_col=hash to see them).",
    "sort": "rowid",
    "columns": {name: text for name, (_, text) in IMAGE_COLUMNS.items()},
}


# The front page's text (every value escaped: a Markup format string).
DESCRIPTION_HTML = Markup(
    "<p>{about}{kept}</p>"
    '<p><a href="{lookup}">Is your work in it?</a> Look up an image by its URL, or a website '
    "by any part of its name.</p>"
    '<p><a href="{search}">Search the captions</a> (fast: words, or "a phrase" in double '
    'quotes), browse <a href="{images}">the images</a>{across}, see '
    '<a href="/{database}/domain">where the images come from</a>, or count the '
    '<a href="/{database}/artists">artists</a>, <a href="/{database}/celebrities">celebrities'
    '</a> and <a href="/{database}/characters">characters</a> they name.</p>'
    '<p><a href="{report}">The analysis</a>: charts and tables of the top domains, the most '
    "named people, and the aesthetic scores, sizes and unsafe and watermark probabilities.</p>"
)


def datasette_metadata(
    source: dict[str, str], profile: dict[str, Any], shards: Sequence[str] = ()
) -> dict[str, Any]:
    """Datasette ``metadata.json`` of a release of ``profile`` (its summary: title, about,
    database): title, source and licence, and per-table display hints; with ``shards`` (the
    names of the shard databases of a release of several), theirs too."""
    database = profile.get("database", DEFAULT_DATABASE)
    kept = f" The rows kept: {profile['filter']}." if profile.get("filter") else ""
    source_text, source_url = _source(source)
    entity_tables = {
        kind: {
            "description": f"{kind.capitalize()} named in captions; image_counts is the number "
            "of captions that contain the name as a phrase.",
            "sort_desc": "image_counts",
        }
        for kind in ENTITY_KINDS
    }
    images = f"/{shards[0]}/images" if shards else f"/{database}/images"
    across = f" (in {len(shards)} shard databases)" if shards else ""
    catalog: dict[str, Any] = {
        "tables": {
            "domain": {
                "description": "The hosts the images were scraped from.",
                "label_column": "domain",
                "sort_desc": "image_counts",
                "columns": {"image_counts": "Number of images from this host"},
            },
            **entity_tables,
            # The lookups' indexes (search/lookup.py): tables for the site, not to browse.
            "domain_search": {"hidden": True},
        }
    }
    catalog["tables"]["shards"] = {
        "description": "The shards of the release: each holds the images with rowids "
        "first_rowid to last_rowid, from the source files listed (a release of one shard "
        "holds them in this database).",
    }
    if not shards:
        catalog["queries"] = {
            "search": {
                "title": "Search the captions",
                "description": 'Words (each must occur) or "a phrase" in double '
                f"quotes; {SEARCH_PAGE_ROWS} images a page in file order. For the next "
                "page, put the last rowid shown in after. The same search with the "
                f"number of matches and page links: {SHARD_SEARCH_URL}.",
                "sql": SEARCH_SQL,
                "hide_sql": True,
            }
        }
        catalog["tables"]["images"] = IMAGES_TABLE
    shard_tables = {
        "images": IMAGES_TABLE,
        "domain": {
            "description": "The hosts of this shard's images, with their counts in this shard "
            "(the catalog has the release's).",
            "label_column": "domain",
            "sort_desc": "image_counts",
        },
    }
    return {
        "title": profile["title"],
        "description_html": str(
            DESCRIPTION_HTML.format(
                about=profile.get("about", ""),
                kept=kept,
                lookup=LOOKUP_URL,
                search=SHARD_SEARCH_URL,
                images=images,
                across=across,
                database=database,
                report=REPORT_URL,
            )
        ),
        "source": source_text,
        "source_url": source_url,
        "license": "CC-BY 4.0 (LAION metadata; the images keep their own rights)",
        "license_url": "https://creativecommons.org/licenses/by/4.0/",
        "databases": {database: catalog, **{name: {"tables": shard_tables} for name in shards}},
    }


def table_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Row counts of every table, as ``datasette inspect`` records them. ``images_fts`` reads
    its rows from ``images``, so it has as many (and is not counted a second time)."""
    db = sqlite_utils.Database(conn, recursive_triggers=False)  # reads only
    names = db.table_names()
    counts = {name: db.table(name).count for name in names if name != "images_fts"}
    if "images_fts" in names:
        counts["images_fts"] = counts["images"]
    return counts


def inspect_data(db_path: Path, sha256: str, counts: dict[str, int]) -> dict[str, Any]:
    """The ``inspect.json`` that lets Datasette open the immutable file without counting rows."""
    return {
        db_path.stem: {
            "hash": sha256,
            "size": db_path.stat().st_size,
            "file": db_path.name,
            "tables": {name: {"count": count} for name, count in counts.items()},
        }
    }
