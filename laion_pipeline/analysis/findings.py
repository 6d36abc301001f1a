"""Analysis layer: what the 2022 write-up looked at, computed for each published database: where
the images come from, which listed names their captions mention, and how their aesthetic
scores, sizes and unsafe and watermark probabilities are spread. Numbers, charts and an HTML
report, published in the release they describe (`published/current/report/`)."""

import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any, NamedTuple

import duckdb
from matplotlib.figure import Figure

from laion_pipeline.analysis.charts import distribution_figure, png, ranking_figure, undrawable
from laion_pipeline.analysis.report import percent, report_html
from laion_pipeline.build.staging import create_staging
from laion_pipeline.common.db import quote_identifier, sqlite_connect
from laion_pipeline.common.errors import StaleInputError
from laion_pipeline.common.files import json_bytes, read_json, write_atomic
from laion_pipeline.common.layout import (
    ENTITY_KINDS,
    REPORT_CHARTS,
    DataLayout,
    ReleaseFiles,
    candidate,
)
from laion_pipeline.common.phrases import fts_phrase
from laion_pipeline.common.progress import Progress
from laion_pipeline.sources.inputs import StagedFile, StagingManifest, shown_location

TOP = 20


# Histogram bins: aesthetic scores in quarters from 0 to 10, probabilities in twentieths from 0
# to 1, sizes in 256-pixel steps with one bin for 4096 and more. Values beyond either end count
# in the end bins; NaN and infinities (NULL in SQLite) count as no value.
AESTHETIC_BINS_PER_UNIT = 4


AESTHETIC_BINS = 40


PROBABILITY_BINS = 20


PIXEL_BIN = 256


PIXEL_BINS = 17


# An image counts as unsafe, or watermarked, when its probability is above this.
FLAG_THRESHOLD = 0.5


def _clamped(value: str, bins: int) -> str:
    # DuckDB's least/greatest skip NULLs: a missing value must stay NULL, not land in bin 0.
    clamped = f"CAST(least(greatest({value}, 0), {bins - 1}) AS BIGINT)"
    return f"CASE WHEN {value} IS NOT NULL THEN {clamped} END"


def _finite(column: str) -> str:
    return f"CASE WHEN isfinite({column}) THEN {column} END"


# One scan of the staged rows: every histogram (one grouping set each) and the totals (the
# empty grouping set). Bins are computed on the same doubles the SQLite images table holds.
DISTRIBUTIONS_SQL = f"""
WITH finite AS (
    SELECT
        {_finite("aesthetic")} AS score,
        {_finite("punsafe")} AS unsafe,
        {_finite("pwatermark")} AS watermark,
        width AS w, height AS h
    FROM staging_images
), binned AS (
    SELECT
        score, unsafe, watermark,
        -- Summed as a decimal: exact in any order, so byte-identical builds have the same
        -- mean (a parallel sum of doubles differs in its last digits from run to run); NULL
        -- past what a decimal holds (1e26, no real score).
        TRY_CAST(score AS DECIMAL(38, 12)) AS exact_score,
        {_clamped(f"floor(score * {AESTHETIC_BINS_PER_UNIT})", AESTHETIC_BINS)} AS aesthetic,
        {_clamped(f"w // {PIXEL_BIN}", PIXEL_BINS)} AS width,
        {_clamped(f"h // {PIXEL_BIN}", PIXEL_BINS)} AS height,
        {_clamped(f"floor(unsafe * {PROBABILITY_BINS})", PROBABILITY_BINS)} AS punsafe,
        {_clamped(f"floor(watermark * {PROBABILITY_BINS})", PROBABILITY_BINS)} AS pwatermark
    FROM finite
)
SELECT
    grouping(aesthetic), grouping(width), grouping(height), grouping(punsafe),
    grouping(pwatermark),
    aesthetic, width, height, punsafe, pwatermark,
    count(*),
    CASE WHEN count(exact_score) = count(score)
        THEN CAST(sum(exact_score) / nullif(count(score), 0) AS DOUBLE)
        ELSE avg(score) END,
    coalesce(count_if(unsafe > {FLAG_THRESHOLD}), 0),
    coalesce(count_if(watermark > {FLAG_THRESHOLD}), 0)
FROM binned
GROUP BY GROUPING SETS ((aesthetic), (width), (height), (punsafe), (pwatermark), ())
"""


DISTRIBUTIONS = ("aesthetic", "width", "height", "punsafe", "pwatermark")


# The numbers recorded on each materialization (the UI plots them across builds).
NUMBERS: dict[str, tuple[str, str]] = {
    "images": ("INTEGER", "Images in the published database"),
    "domains": ("INTEGER", "Hosts the images come from"),
    "top_domain_share": ("FLOAT", "Share of all images from the host with the most"),
    "top_20_domains_share": ("FLOAT", f"Share of all images from the {TOP} hosts with the most"),
    "named_share": ("FLOAT", "Share of images whose caption names someone of the three lists"),
    "unsafe_share": ("FLOAT", f"Share of images with punsafe above {FLAG_THRESHOLD}"),
    "watermarked_share": ("FLOAT", f"Share of images with pwatermark above {FLAG_THRESHOLD}"),
    "aesthetic_mean": ("FLOAT", "Mean aesthetic score"),
}


TOP_DOMAINS_SQL = f"""
SELECT domain, image_counts FROM domain ORDER BY image_counts DESC, id LIMIT {TOP}
"""


def _share(count: int, total: int) -> float:
    return count / total if total else 0.0


def _bin(column: str, index: int) -> dict[str, Any]:
    """The edges and label of bin ``index`` of ``column``'s histogram."""
    if column == "aesthetic":
        low = index / AESTHETIC_BINS_PER_UNIT
        return {"from": low, "to": low + 1 / AESTHETIC_BINS_PER_UNIT, "label": f"{low:.2f}"}
    if column in ("width", "height"):
        low = index * PIXEL_BIN
        if index == PIXEL_BINS - 1:
            return {"from": low, "to": None, "label": f"{low}+"}
        return {"from": low, "to": low + PIXEL_BIN, "label": str(low)}
    low = index / PROBABILITY_BINS
    return {"from": low, "to": (index + 1) / PROBABILITY_BINS, "label": f"{low:.2f}"}


def _histogram(column: str, counts: dict[int | None, int]) -> dict[str, Any]:
    """Every bin from the first to the last (empty ones too), and the rows with no value."""
    present = [index for index in counts if index is not None]
    if column == "aesthetic":
        indexes = range(min(present), max(present) + 1) if present else range(0)
    else:
        indexes = range(PIXEL_BINS if column in ("width", "height") else PROBABILITY_BINS)
    return {
        "bins": [{**_bin(column, i), "images": counts.get(i, 0)} for i in indexes],
        "null": counts.get(None, 0),
    }


def distributions(duck: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Histograms of the scores and sizes, the mean aesthetic score, and the images flagged
    unsafe or watermarked (probability above ``FLAG_THRESHOLD``)."""
    counts: dict[str, dict[int | None, int]] = {column: {} for column in DISTRIBUTIONS}
    totals = None
    for row in duck.sql(DISTRIBUTIONS_SQL).fetchall():
        grouped, values, aggregates = row[:5], row[5:10], row[10:]
        if all(grouped):
            totals = aggregates
            continue
        position = grouped.index(0)
        counts[DISTRIBUTIONS[position]][values[position]] = aggregates[0]
    images, mean, unsafe, watermarked = totals or (0, None, 0, 0)
    return {
        "images": images,
        "aesthetic_mean": mean,
        "unsafe_images": unsafe,
        "watermarked_images": watermarked,
        **{column: _histogram(column, counts[column]) for column in DISTRIBUTIONS},
    }


def top_domains(conn: sqlite3.Connection, images: int) -> dict[str, Any]:
    """The hosts with the most images, each with its share of all images."""
    top = [
        {"domain": domain, "images": count, "share": _share(count, images)}
        for domain, count in conn.execute(TOP_DOMAINS_SQL)
    ]
    return {
        "top_domains": top,
        "top_domain_share": top[0]["share"] if top else 0.0,
        "top_20_domains_share": sum(d["share"] for d in top),
    }


def top_names(conn: sqlite3.Connection, kind: str) -> dict[str, Any]:
    """The names of one list with the most images (a name listed twice counts once)."""
    table = quote_identifier(kind)
    rows = conn.execute(
        f"SELECT name, max(image_counts) AS n FROM {table} WHERE trim(name) != '' "
        f"GROUP BY name ORDER BY n DESC, name LIMIT {TOP}"
    ).fetchall()
    (names, found) = conn.execute(
        f"SELECT count(DISTINCT name), count(DISTINCT name) FILTER (WHERE image_counts > 0) "
        f"FROM {table} WHERE trim(name) != ''"
    ).fetchone()
    return {
        "names": names,
        "names_found": found,
        "top": [{"name": name, "images": count} for name, count in rows],
    }


# Names matched in one FTS5 query (``"a" OR "b" OR ...``), so that no query grows without bound.
NAMES_PER_QUERY = 1_000


def named_images(
    conn: sqlite3.Connection,
    log: Any = None,
    shards: Sequence[sqlite3.Connection] = (),
) -> int:
    """How many images have a caption that contains at least one listed name as a phrase: the
    matches of every name, each image counted once; in ``conn``'s caption index, or with
    ``shards`` (of a release of several, ``conn`` its catalog) in theirs, summed (their
    images are disjoint)."""
    names = sorted(
        {
            name
            for kind in ENTITY_KINDS
            for (name,) in conn.execute(
                f"SELECT name FROM {quote_identifier(kind)} WHERE image_counts > 0"
            )
        }
    )
    indexes = list(shards) or [conn]
    groups = [names[i : i + NAMES_PER_QUERY] for i in range(0, len(names), NAMES_PER_QUERY)]
    progress = Progress(
        log, "names matched for the share of named images", len(names) * len(indexes), unit="names"
    )
    count = 0
    for number, index in enumerate(indexes):
        index.execute("CREATE TEMP TABLE named (rowid INTEGER PRIMARY KEY)")
        try:
            done = 0
            for group in groups:
                # One query for many names: FTS5 merges their matches in one pass, in rowid
                # order, each image once.
                index.execute(
                    "INSERT OR IGNORE INTO temp.named SELECT rowid FROM images_fts "
                    "WHERE images_fts MATCH ? ORDER BY rowid",
                    (" OR ".join(fts_phrase(name) for name in group),),
                )
                done += len(group)
                progress.update(number * len(names) + done)
            count += index.execute("SELECT count(*) FROM temp.named").fetchone()[0]
        finally:
            index.execute("DROP TABLE temp.named")
    return count


def _staged_files_are_published(
    layout: DataLayout, manifest: dict[str, Any]
) -> tuple[StagedFile, ...]:
    """The staged parquet files, if they are those the published database was built from."""
    files = StagingManifest.read(layout).files
    if [f.published for f in files] != manifest["parquet_files"]:
        raise StaleInputError(
            "the staged parquet files are not those of the published database: materialize "
            "published_database (and what it needs), then analysis"
        )
    return files


def analyze(
    layout: DataLayout,
    release: ReleaseFiles,
    duck: duckdb.DuckDBPyConnection,
    log: Any = None,
) -> dict[str, Any]:
    """Every number of the report, for the database of ``release`` and the staged rows it was
    built from. The scans of DuckDB and SQLite run at once, one core each."""
    manifest = read_json(release.manifest_json, "materialize published_database")
    create_staging(duck, _staged_files_are_published(layout, manifest))
    with ExitStack() as stack:
        opened = []
        for db in release.databases:  # the catalog (or the one database), then the shards
            opened.append(sqlite_connect(db, read_only=True))
            stack.callback(opened[-1].close)
        conn, *shards = opened
        with ThreadPoolExecutor(max_workers=1) as pool:
            scanning = pool.submit(distributions, duck)
            named = named_images(conn, log, shards)
            spread = scanning.result()
        images = manifest["row_counts"]["images"]
        if spread["images"] != images:
            raise StaleInputError(
                f"staging_images has {spread['images']:,} rows but the published database "
                f"{images:,}: materialize published_database, then analysis"
            )
        return {
            "database": {
                **{k: manifest[k] for k in ("database", "sha256", "built_at", "row_counts")},
                # Served as analysis.json: a local source by its folder, never the server's path
                "source": {**manifest["source"], "location": shown_location(manifest["source"])},
                "title": manifest.get("profile", {}).get("title", "LAION"),
            },
            "domains": manifest["row_counts"]["domain"],
            **top_domains(conn, images),
            "names": {kind: top_names(conn, kind) for kind in ENTITY_KINDS},
            "named_images": named,
            "named_share": _share(named, images),
            "unsafe_share": _share(spread["unsafe_images"], images),
            "watermarked_share": _share(spread["watermarked_images"], images),
            **spread,
        }


class ChartError(RuntimeError):
    """A chart of the report could not be drawn: which, of which list, and the label."""


class Chart(NamedTuple):
    """A chart of the report: how to draw its figure, the labels it shows from the data (names,
    hosts), and where they come from."""

    draw: Callable[[], Figure]
    labels: list[str]
    source: str


def charts(analysis: dict[str, Any]) -> dict[str, bytes]:
    """Every chart of the report as PNG, by name (``REPORT_CHARTS``)."""
    pngs = {}
    for name, chart in chart_figures(analysis).items():
        try:
            pngs[name] = png(chart.draw())
        except Exception as error:
            index = undrawable(chart.labels)
            which = f" on the label {chart.labels[index]!r}" if index is not None else ""
            raise ChartError(
                f"the report's chart {name}.png ({chart.source}) could not be drawn{which}: {error}"
            ) from error
    return pngs


def chart_figures(analysis: dict[str, Any]) -> dict[str, Chart]:
    """Every chart of the report by name (``REPORT_CHARTS``)."""
    domains = analysis["top_domains"]
    hosts = [d["domain"] or "(no host)" for d in domains]
    pngs = {
        "top_domains": Chart(
            lambda: ranking_figure(
                "Domains with the most images",
                f"images (these {len(domains)} domains: "
                f"{percent(analysis['top_20_domains_share'])} of all {analysis['images']:,})",
                hosts,
                [d["images"] for d in domains],
                [f"{d['images']:,} ({percent(d['share'])})" for d in domains],
            ),
            hosts,
            "the top domains of the images table",
        ),
    }
    for kind in ENTITY_KINDS:
        names = analysis["names"][kind]
        top = [n["name"] for n in names["top"]]
        pngs[f"top_{kind}"] = Chart(
            lambda names=names, top=top, kind=kind: ranking_figure(
                f"{kind.capitalize()} named in the most captions",
                f"images whose caption names them ({names['names_found']:,} of the "
                f"{names['names']:,} listed {kind} are named at least once)",
                top,
                [n["images"] for n in names["top"]],
            ),
            top,
            f"the most named of the {kind} list",
        )

    def panel(column: str, label: str) -> tuple[str, list[str], list[int]]:
        bins = analysis[column]["bins"]
        return label, [b["label"] for b in bins], [b["images"] for b in bins]

    mean = analysis["aesthetic_mean"]
    pngs["aesthetic"] = Chart(
        lambda: distribution_figure(
            "Aesthetic score" + (f" (mean {mean:.2f})" if mean is not None else ""),
            [panel("aesthetic", f"aesthetic score (bins of {1 / AESTHETIC_BINS_PER_UNIT})")],
        ),
        [],
        "the aesthetic scores",
    )
    pngs["image_sizes"] = Chart(
        lambda: distribution_figure(
            "Image sizes in pixels",
            [
                panel("width", f"width (bins of {PIXEL_BIN} px)"),
                panel("height", f"height (bins of {PIXEL_BIN} px)"),
            ],
        ),
        [],
        "the image sizes",
    )
    pngs["unsafe_watermark"] = Chart(
        lambda: distribution_figure(
            f"Probability unsafe ({percent(analysis['unsafe_share'])} above {FLAG_THRESHOLD}) and "
            f"watermarked ({percent(analysis['watermarked_share'])} above {FLAG_THRESHOLD})",
            [
                panel("punsafe", f"punsafe (bins of {1 / PROBABILITY_BINS})"),
                panel("pwatermark", f"pwatermark (bins of {1 / PROBABILITY_BINS})"),
            ],
            mark=f"{FLAG_THRESHOLD:.2f}",
        ),
        [],
        "the unsafe and watermark probabilities",
    )
    return {name: pngs[name] for name in REPORT_CHARTS}


def publish_report(release: ReleaseFiles, analysis: dict[str, Any], pngs: dict[str, bytes]) -> None:
    """Write the report into the release it describes, each file replaced atomically, the page
    that links the others last."""
    contents = {
        **{f"{name}.png": png for name, png in pngs.items()},
        "analysis.json": json_bytes(analysis),
        "index.html": report_html(analysis).encode(),
    }
    for path in release.report_files:
        write_atomic(candidate(path), contents[path.name])
    for path in release.report_files:
        candidate(path).replace(path)
