"""Benchmark: our build against the 2022 recipe, on the same synthetic LAION-shaped files.

    python -m benchmarks.bench --rows 1000000 --seed-recipe --report docs/benchmarks.md

Generates ``--rows`` rows of parquet (deterministic, cached under ``--work``), materializes
every asset of the real definitions on them (``LAION_SOURCE=local``) in a child process, and
prints per stage: seconds, rows/s, peak RSS and file sizes. With ``--seed-recipe`` it also runs
the seed's shell recipe (parquet-tools csv | sqlite3 .import, sqlite-utils enable-fts, the
domain UDF, sqlite-utils extract, the counts) on the same files and prints the ratio.
"""

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from benchmarks.synthetic import (
    FILE_COUNT,
    generate,
    generate_release,
    sample_entity_names,
)
from laion_pipeline.common.layout import ENTITY_KINDS, DataLayout

NAME_LIST_SIZES = {"artists": 2_000, "celebrities": 2_000, "characters": 1_000}


@dataclass
class Stage:
    name: str
    seconds: float
    peak_rss_mb: float


def rss_mb() -> float:
    """Resident memory of this process and its children (the caption index's process)."""
    this = psutil.Process()
    total = 0
    for process in (this, *this.children(recursive=True)):
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:  # a child that has just ended
            continue
    return total / 2**20


def prepare_inputs(work: Path, rows: int, files: int = FILE_COUNT) -> tuple[Path, Path]:
    """The parquet folder and the name lists for ``rows`` rows in ``files`` files, generated
    once and reused."""
    parquet = work / (f"parquet-{rows}" if files == FILE_COUNT else f"parquet-{rows}-{files}")
    marker = parquet / ".complete"
    if not marker.exists():
        shutil.rmtree(parquet, ignore_errors=True)
        started = time.monotonic()
        generate(
            parquet, rows, names=sample_entity_names(), files=files, workers=os.cpu_count() or 1
        )
        marker.write_text(f"generated in {time.monotonic() - started:.1f} s\n")
    lists = work / "names"
    lists.mkdir(parents=True, exist_ok=True)
    known = sample_entity_names()
    for kind, size in NAME_LIST_SIZES.items():
        names = [*known, *(f"{a} {b}" for a in _FIRST for b in _LAST)][:size]
        with (lists / f"{kind}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["name"])
            writer.writerows([n] for n in names)
    return parquet, lists


# Made-up names to fill the lists to their sizes: 20 x 120 of them.
_FIRST = ["Anna", "Boris", "Chen", "Dana", "Emil", "Fatima", "Goro", "Hana", "Ivan", "Jonas"]
_FIRST += ["Kemal", "Lena", "Mira", "Nils", "Omar", "Pia", "Quentin", "Rosa", "Sven", "Tomas"]
_LAST = [
    f"{a}{b}{c}" for a in ("Ko", "Sa", "Vel", "Mar", "Tor", "Lin") for b in "aeiou" for c in "nrst"
]


def run_ours(parquet: Path, lists: Path, data: Path) -> dict[str, Any]:
    """Build in this process as `make run` does (observe, one run per source file, then the
    full_build assets and checks in one run), the files staged one after another with both
    cores each; per Dagster step: seconds and peak RSS (the source files' partitions as one
    stage)."""
    from dagster import AssetSelection, DagsterEventType, DagsterInstance, materialize

    from laion_pipeline.orchestration.definitions import (
        all_asset_checks,
        all_assets,
        make_definitions,
    )
    from laion_pipeline.orchestration.jobs import shard_run_tags
    from laion_pipeline.orchestration.resources import build_resources

    env = {
        "LAION_SOURCE": "local",
        "LAION_LOCAL_DIR": str(parquet),
        "LAION_DATA_DIR": str(data),
        # One file at a time with both cores; LAION_WORKERS and LAION_SHARD_ROWS, when set,
        # build the release as shards, that many at once.
        "LAION_WORKERS": os.environ.get("LAION_WORKERS", "1"),
        **{k: os.environ[k] for k in ("LAION_SHARD_ROWS",) if os.environ.get(k)},
        **{f"LAION_{k.upper()}_CSV_URL": str(lists / f"{k}.csv") for k in ENTITY_KINDS},
    }
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.time(), rss_mb()))
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    instance = DagsterInstance.ephemeral()
    resources = build_resources(env)
    # The files are staged one after another here, so each with every core (`make run`
    # stages LAION_WORKERS files at once, the cores shared between them).
    staging = build_resources({**env, "LAION_WORKERS": "1"})
    definitions = [*all_assets, *all_asset_checks]
    started = time.time()
    observe = make_definitions(resources).resolve_job_def("observe_sources")
    runs = [observe.execute_in_process(instance=instance)]
    for key in instance.get_dynamic_partitions("source_files"):
        runs.append(
            materialize(
                definitions,
                resources=staging,
                instance=instance,
                selection=["source_files"],
                partition_key=key,
            )
        )
    build = AssetSelection.all() - AssetSelection.assets("source_files")
    tags = shard_run_tags(instance, resources["laion_data"])
    runs.append(
        materialize(definitions, resources=resources, instance=instance, selection=build, tags=tags)
    )
    total = time.time() - started
    stop.set()
    sampler.join()
    steps: dict[str, list[float]] = {}
    for run in runs:
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is None:
                continue
            if event.event_type == DagsterEventType.STEP_START:
                span = steps.setdefault(event.step_key, [entry.timestamp, entry.timestamp])
                span[0] = min(span[0], entry.timestamp)
            if event.event_type == DagsterEventType.STEP_SUCCESS:
                steps[event.step_key][1] = entry.timestamp
    stages = [
        Stage(key, end - start, max((r for t, r in samples if start <= t <= end), default=0.0))
        for key, (start, end) in sorted(steps.items(), key=lambda item: item[1][0])
    ]
    layout = DataLayout(data)
    staged = sum(p.stat().st_size for p in layout.staged_dir.glob("*.parquet"))
    shards = layout.current.shard_keys
    built = [layout.shard_db(key) for key in shards] or [layout.build_db]
    return {
        "total_seconds": total,
        # When readers have the new database: the end of the publish step (the checks of the
        # published file run after it).
        "published_seconds": steps["published_database"][1] - started,
        "peak_rss_mb": max(r for _, r in samples),
        "stages": [stage.__dict__ for stage in stages],
        "shards": len(shards),
        "sizes": {
            "staged parquet": staged,
            # A build of several shards: every shard's database; the catalog is published.
            "build db" if not shards else f"{len(shards)} shard dbs": sum(
                p.stat().st_size for p in built
            ),
            "published db" if not shards else "published dbs": sum(
                p.stat().st_size for p in layout.current.databases
            ),
        },
    }


def bench_staging(work: Path, rows: int, files: int = 4) -> str:
    """The filter and staging step alone (`stage_file`, one DuckDB thread: one core) on files
    shaped like today's datasets: rows read per second per core, rows kept, bytes per row."""
    from laion_pipeline.sources.ingest import stage_file
    from laion_pipeline.sources.profiles import load_profiles

    profiles = load_profiles()
    lines = [
        f"### {rows:,} rows of today's datasets: the filter and staging step, one core",
        "",
        f"Machine: {machine()}",
        "",
        "| release shape (profile) | files | rows read | rows kept | seconds | rows read/s per "
        "core | source bytes/row | staged bytes/row |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for shape, profile in (
        ("aesthetics-v2", "aesthetics-v2-6plus"),
        ("relaion2b-en", "relaion2b-en"),
    ):
        folder = work / f"release-{shape}-{rows}"
        marker = folder / ".complete"
        if not marker.exists():
            shutil.rmtree(folder, ignore_errors=True)
            names = sample_entity_names()
            generate_release(
                folder, shape, rows, files=files, names=names, workers=os.cpu_count() or 1
            )
            marker.write_text("complete\n")
        parts = sorted(folder.glob("*.parquet"))
        out = work / f"staged-{shape}"
        read = kept = 0
        started = time.monotonic()
        for part in parts:
            staged = stage_file(part, part.name, profiles[profile], out / part.name, threads=1)
            read, kept = read + staged.rows_read, kept + staged.rows_kept
        seconds = time.monotonic() - started
        source = sum(p.stat().st_size for p in parts)
        target = sum(p.stat().st_size for p in out.glob("*.parquet"))
        shutil.rmtree(out, ignore_errors=True)
        lines.append(
            f"| {shape} ({profile}) | {len(parts)} | {read:,} | {kept:,} | {seconds:.2f} | "
            f"{read / seconds:,.0f} | {source / read:,.0f} | {target / max(kept, 1):,.0f} |"
        )
    lines.extend(
        [
            "",
            "The scan reads and decodes every row and keeps those the profile's filter keeps "
            "(about 1% for aesthetics v2 at 6 or more; all of Re-LAION). `make run` stages "
            "`LAION_WORKERS` files at once (default: one per core).",
            "",
        ]
    )
    return "\n".join(lines)


SEED_SCHEMA = """CREATE TABLE IF NOT EXISTS images (
[url] TEXT, [text] TEXT, [width] INTEGER, [height] INTEGER, [similarity] FLOAT,
[punsafe] FLOAT, [pwatermark] FLOAT, [aesthetic] FLOAT, [hash] TEXT, [__index_level_0__] INTEGER
);"""
SEED_IMPORT = "sqlite3 -csv {db} \".import --skip 1 '|cat -' images\""
SEED_DOMAIN_UDF = (
    "from urllib.parse import urlparse\ndef domain(url):\n    return urlparse(url).netloc\n"
)
SEED_COUNTS = """with counts as (
  select name, (select count(*) from images_fts where images_fts match '"' || name || '"')
    as search_count from {table}
) update {table} set image_counts = counts.search_count from counts
where {table}.name = counts.name"""


def _timed_shell(command: list[str] | str, **kwargs: Any) -> Stage:
    """Run a command (a list, or a shell string); its wall seconds and peak RSS with children."""
    started = time.monotonic()
    process = subprocess.Popen(command, shell=isinstance(command, str), **kwargs)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"seed recipe step failed ({process.returncode}): {command}")
    return Stage("", time.monotonic() - started, usage.ru_maxrss / 1024)


def run_seed_recipe(parquet: Path, lists: Path, work: Path, tools: Path) -> dict[str, Any]:
    """The 2022 recipe, step by step, with the tools it used (``tools`` holds parquet-tools
    and sqlite-utils; the sqlite3 command line comes from the system)."""
    db = work / "seed.db"
    db.unlink(missing_ok=True)
    sqlite_utils = str(tools / "sqlite-utils")
    files = sorted(parquet.rglob("*.parquet"))
    stages: list[Stage] = []

    def step(name: str, *commands: list[str] | str) -> None:
        parts = [_timed_shell(c) for c in commands]
        stages.append(Stage(name, sum(p.seconds for p in parts), max(p.peak_rss_mb for p in parts)))

    subprocess.run(["sqlite3", str(db), SEED_SCHEMA], check=True)
    step(
        "import (parquet-tools csv \\| sqlite3 .import)",
        *[f"{tools / 'parquet-tools'} csv {f} | {SEED_IMPORT.format(db=db)}" for f in files],
    )
    step("enable-fts", [sqlite_utils, "enable-fts", str(db), "images", "text"])
    step(
        "domain column + UDF",
        [sqlite_utils, "add-column", str(db), "images", "domain"],
        [
            sqlite_utils,
            str(db),
            "update images set domain = domain(url)",
            "--functions",
            SEED_DOMAIN_UDF,
        ],
    )
    step("extract domain", [sqlite_utils, "extract", str(db), "images", "domain"])
    step(
        "domain counts",
        [sqlite_utils, "add-column", str(db), "domain", "image_counts", "integer"],
        [
            sqlite_utils,
            str(db),
            "with counts as (select domain_id, count(*) as c from images group by domain_id) "
            "update domain set image_counts = counts.c from counts where id = counts.domain_id",
        ],
    )
    commands: list[list[str] | str] = []
    for kind in ENTITY_KINDS:
        commands += [
            [sqlite_utils, "insert", str(db), kind, str(lists / f"{kind}.csv"), "--csv"],
            [sqlite_utils, "add-column", str(db), kind, "image_counts", "integer"],
            [sqlite_utils, str(db), SEED_COUNTS.format(table=kind)],
        ]
    step("entity counts", *commands)
    return {
        "total_seconds": sum(s.seconds for s in stages),
        "peak_rss_mb": max(s.peak_rss_mb for s in stages),
        "stages": [s.__dict__ for s in stages],
        "sizes": {"seed db (before VACUUM)": db.stat().st_size},
    }


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores, {memory:.0f} GiB RAM, {platform.machine()}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def format_report(rows: int, ours: dict[str, Any], seed: dict[str, Any] | None) -> str:
    shards = ours.get("shards", 0)
    heading = f"### {rows:,} rows" + (f" as {shards} shards" if shards else "")
    lines = [heading, "", f"Machine: {machine()}", ""]
    if shards:
        lines += [
            f"`LAION_SHARD_ROWS={os.environ.get('LAION_SHARD_ROWS')}`, "
            f"`LAION_WORKERS={os.environ.get('LAION_WORKERS', '1')}`: the build_shards stage is "
            "the shards' partitions, from the first start to the last end.",
            "",
        ]

    def table(title: str, run: dict[str, Any]) -> None:
        lines.extend(
            [
                f"{title}:",
                "",
                "| stage | seconds | rows/s | peak RSS (MB) |",
                "|---|---:|---:|---:|",
            ]
        )
        for stage in run["stages"]:
            rate = rows / stage["seconds"] if stage["seconds"] > 0.05 else float("nan")
            rate_text = f"{rate:,.0f}" if rate == rate else ""
            lines.append(
                f"| {stage['name']} | {stage['seconds']:.2f} | {rate_text} | "
                f"{stage['peak_rss_mb']:,.0f} |"
            )
        lines.append(
            f"| **total (wall)** | **{run['total_seconds']:.2f}** | "
            f"{rows / run['total_seconds']:,.0f} | {run['peak_rss_mb']:,.0f} |"
        )
        sizes = ", ".join(f"{name} {size / 1e6:,.0f} MB" for name, size in run["sizes"].items())
        lines.extend(["", f"Files: {sizes}.", ""])
        if "published_seconds" in run:
            lines.extend(
                [
                    f"Published (the new database served) after {run['published_seconds']:.2f} s;"
                    " the rest is the check of the published release (every file read again "
                    "unless its seal holds) and the analysis.",
                    "",
                ]
            )

    table("laion-pipeline (every asset, one Dagster run)", ours)
    if seed:
        table("The 2022 recipe", seed)
        published = seed["total_seconds"] / ours["published_seconds"]
        everything = seed["total_seconds"] / ours["total_seconds"]
        lines.extend(
            [
                f"**Ratio: laion-pipeline publishes the database {published:.1f}x faster than "
                "the 2022 recipe builds it**; with the check of the published file and the "
                f"analysis, which the recipe does not do, {everything:.1f}x.",
                "",
            ]
        )
    return "\n".join(lines)


# Where the search benchmark's section (python -m benchmarks.bench_search) starts and ends.
SEARCH_MARKER = "<!-- search benchmark -->"


def update_marked_section(path: Path, marker: str, section: str) -> None:
    """Put ``section`` between the two ``marker`` lines of the report at ``path`` (added at
    its end the first time), replacing the section of the same heading there: the search and
    load benchmarks keep a section per layout or size."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    before, found, rest = text.partition(marker)
    inside, _, after = rest.partition(marker)
    if not found:
        before, after = text.rstrip() + "\n\n", "\n"
    heading = section.splitlines()[0]
    sections = [s for s in ("\n" + inside).split("\n### ")[1:] if s.strip()]
    sections = ["### " + s.strip() for s in sections if not ("### " + s).startswith(heading)]
    body = "\n\n".join([*sections, section.strip()])
    path.write_text(f"{before}{marker}\n{body}\n\n{marker}{after}")


def print_and_record(section: str, path: Path | None, marker: str) -> None:
    """A benchmark's section on the terminal, and into the report at ``path`` if given."""
    print(section)
    if path:
        update_marked_section(path, marker, section)


def update_report(path: Path, rows: int, section: str) -> None:
    """Replace (or add) the section with ``section``'s heading (for ``rows``) in the markdown
    report at ``path``, the sections in order of size, before the search benchmark's
    section."""
    heading = section.splitlines()[0]
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    text, marker, search = text.partition(SEARCH_MARKER)
    sections = text.split("\n### ")
    head, rest = sections[0], ["### " + s for s in sections[1:]]
    rest = [s for s in rest if not s.startswith(heading + "\n")] + [section]
    rest.sort(key=lambda s: int(s.split()[1].replace(",", "")))
    text = head.rstrip() + "\n\n" + "\n".join(s.rstrip() + "\n" for s in rest)
    path.write_text(text + (f"\n{marker}{search}" if marker else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to generate and build")
    parser.add_argument("--work", type=Path, default=Path("data/bench"), help="work folder")
    parser.add_argument("--seed-recipe", action="store_true", help="also run the 2022 recipe")
    parser.add_argument(
        "--tools",
        type=Path,
        default=Path(".venv-seed/bin"),
        help="folder with parquet-tools and sqlite-utils for --seed-recipe",
    )
    parser.add_argument(
        "--files", type=int, default=FILE_COUNT, help="parquet files the rows are split over"
    )
    parser.add_argument("--report", type=Path, help="markdown file to write the results into")
    parser.add_argument(
        "--staging",
        action="store_true",
        help="only the filter and staging step, on files shaped like today's datasets",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    work = args.work.resolve()
    if args.staging:
        report = bench_staging(work, args.rows)
        print(report)
        if args.report:
            update_report(args.report, args.rows, report)
        return 0
    parquet, lists = prepare_inputs(work, args.rows, args.files)
    if args.child:  # the build, alone in its process so its memory is measured alone
        result = run_ours(parquet, lists, args.child)
        print(json.dumps(result))
        return 0
    data = work / (
        f"data-{args.rows}" if args.files == FILE_COUNT else f"data-{args.rows}-{args.files}"
    )
    shutil.rmtree(data, ignore_errors=True)
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench",
            "--rows",
            str(args.rows),
            "--files",
            str(args.files),
            "--work",
            str(work),
            "--child",
            str(data),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    ours = json.loads(child.stdout.strip().splitlines()[-1])
    seed = None
    if args.seed_recipe:
        missing = [t for t in ("parquet-tools", "sqlite-utils") if not (args.tools / t).exists()]
        if missing or not shutil.which("sqlite3"):
            print(
                f"--seed-recipe needs {', '.join(missing) or 'the sqlite3 command'}: run "
                "`make bench-tools` (a separate venv for parquet-tools) and install sqlite3",
                file=sys.stderr,
            )
            return 2
        seed = run_seed_recipe(parquet, lists, work, args.tools.resolve())
    report = format_report(args.rows, ours, seed)
    print(report)
    if args.report:
        update_report(args.report, args.rows, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
