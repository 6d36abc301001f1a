"""Search benchmark: first-page latency of searches through Datasette, as `make serve` runs it.

    python -m benchmarks.bench_search --data data/bench/data-12000000 \
        --report docs/benchmarks.md

Serves the published database of ``--data`` with ``python -m laion_pipeline serve`` on a free
port on 127.0.0.1, then times the first page of a rare word, a word in over half the captions
and a phrase, through the fast search (the ``search`` query) and through Datasette's own table
search (``images?_search=``), ``--repeats`` times each after one warm-up; prints p50 and p95.
"""

import argparse
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from benchmarks.bench import SEARCH_MARKER, print_and_record
from laion_pipeline.common.layout import DataLayout
from laion_pipeline.common.phrases import laion_match
from laion_pipeline.releases.datasette_files import SHARD_SEARCH_URL
from laion_pipeline.search.shard_search import COUNT_CAP

# What is searched: the generator's captions use "the" in over half of them, rare made-up
# words, and the names of the sample lists.
QUERIES = {"a rare word": "zorakalo", "a word in over half the captions": "the"}
PHRASE = ("a phrase", '"Alphonse Mucha"')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timed_get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        response.read()
    return (time.perf_counter() - started) * 1000


@contextmanager
def serving(
    layout: DataLayout, env: dict[str, str] | None = None
) -> Iterator[tuple[int, subprocess.Popen]]:
    """`python -m laion_pipeline serve` on the release of ``layout``, on a free port of
    127.0.0.1 (with the variables ``env`` besides this process's), once it answers; stopped
    with its process group after."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "laion_pipeline", "serve", "--port", str(port)],
        env={
            **os.environ,
            **(env or {}),
            "LAION_DATA_DIR": str(layout.root),
            "NO_PROXY": "127.0.0.1",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _timed_get(f"http://127.0.0.1:{port}/-/versions.json")
                break
            except (ConnectionError, urllib.error.URLError):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield port, server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)


def matches(databases: Sequence[Path], q: str) -> int:
    """The captions matching ``q`` in every database holding images (the one database, or
    every shard)."""
    total = 0
    for db in databases:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            total += conn.execute(
                "SELECT count(*) FROM images_fts WHERE images_fts MATCH ?", (laion_match(q),)
            ).fetchone()[0]
        finally:
            conn.close()
    return total


def measure(data: Path, repeats: int) -> tuple[int, list[dict]]:
    layout = DataLayout(data.resolve())
    rows = json.loads(layout.manifest_json.read_text())["row_counts"]["images"]
    release = layout.current
    shards = [release.shard_db(key) for key in release.shard_keys]
    with serving(layout) as (port, _):
        site = f"http://127.0.0.1:{port}"
        base = f"{site}/{release.database_name}"
        results = []
        for label, q in [*QUERIES.items(), PHRASE]:
            # The site's search (every shard, with the count); with one database also the
            # database's own canned query and Datasette's table search, which a release of
            # shards has no single table for.
            ways = {
                "site search": f"{site}{SHARD_SEARCH_URL}.json?" + urllib.parse.urlencode({"q": q})
            }
            if not shards:
                ways["fast search"] = f"{base}/search.json?" + urllib.parse.urlencode({"q": q})
                ways["Datasette table search"] = f"{base}/images.json?" + urllib.parse.urlencode(
                    {"_search": q, "_searchmode": "raw"}
                )
            for way, url in ways.items():
                try:
                    _timed_get(url)  # warm-up
                    # Each request its own address: the site's response cache would answer
                    # the same one from memory (bench-load measures that).
                    times = sorted(_timed_get(f"{url}&_bench={n}") for n in range(repeats))
                    p50 = statistics.median(times)
                    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
                    note = ""
                except urllib.error.HTTPError as error:  # e.g. past the 10 s time limit
                    p50 = p95 = float("nan")
                    note = f"HTTP {error.code}"
                results.append(
                    {
                        "search": label,
                        "q": q,
                        "way": way,
                        "p50_ms": p50,
                        "p95_ms": p95,
                        "note": note,
                    }
                )
        for result in results:
            result["matches"] = matches(shards or [release.db], result["q"])
        return rows, len(shards), results


def format_report(rows: int, shards: int, results: list[dict], repeats: int) -> str:
    held = f"{shards} shards" if shards else "one database"
    lines = [
        f"### Search, {rows:,} rows in {held} (first page through `make serve`)",
        "",
        f"Each search {repeats} times after a warm-up, one request at a time, on this machine; "
        "`python -m benchmarks.bench_search`. The site search (`/-/search`) also counts "
        f"the matches (exactly up to {COUNT_CAP:,}); the fast search is the database's "
        "`search` query (one database only).",
        "",
        "| search | q | captions matching | way | p50 ms | p95 ms |",
        "|---|---|---:|---|---:|---:|",
    ]
    for r in results:
        p50 = r["note"] or f"{r['p50_ms']:,.1f}"
        p95 = r["note"] or f"{r['p95_ms']:,.1f}"
        lines.append(
            f"| {r['search']} | `{r['q']}` | {r['matches']:,} | {r['way']} | {p50} | {p95} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_search",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="a LAION_DATA_DIR with a published database"
    )
    parser.add_argument("--repeats", type=int, default=30, help="timed requests per search")
    parser.add_argument("--report", type=Path, help="markdown file to write the table into")
    args = parser.parse_args(argv)
    rows, shards, results = measure(args.data, args.repeats)
    print_and_record(format_report(rows, shards, results, args.repeats), args.report, SEARCH_MARKER)
    return 0


if __name__ == "__main__":
    sys.exit(main())
