"""`make bench-abuse`: the site under press traffic while a dozen clients run slow SQL, with
a rollback in the middle.

    python -m benchmarks.bench_abuse --data data/bench/data-1000000 --report docs/benchmarks.md

Serves the release of ``--data`` as `make serve` does, then for ``--seconds`` drives it from
this process with ``--clients`` clients of the press mix (each page kind in turn: the index,
a table page (paged as Datasette's own links page it) and a row page of random images, a
name table, the search and the lookup of the
press requests of `make bench-load`) while ``SLOW_CLIENTS`` clients, each from an address of
its own (127.0.0.2, ...), run SQL until the 10 s time limit stops it, again and again. Halfway,
the data folder rolls back (to a copy of its release made for the purpose, so any data folder
will do) and the requests go on. Reports p50 / p99 and errors per page kind, and what became
of the slow queries (answered, refused 429/503, timed out).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import sys
import time
import urllib.parse
from pathlib import Path

from benchmarks.bench import machine, print_and_record
from benchmarks.bench_load import (
    SLOW_SQL,
    Tally,
    _open,
    keep_asking,
    press_requests,
    slow_sql,
)
from benchmarks.bench_search import serving
from laion_pipeline.common.layout import ENTITY_KINDS, DataLayout
from laion_pipeline.releases.lock import data_dir_lock
from laion_pipeline.releases.switch import new_release, pointed_release, rollback, switch

ABUSE_MARKER = "<!-- abuse benchmark -->"
SLOW_CLIENTS = 12
KINDS = ("index", "table", "row", "names", "search", "lookup")


def second_release(layout: DataLayout) -> str:
    """A copy of the current release (hard links, a manifest of its own id) made current, so
    the benchmark can roll back to the release it started from. Returns the copy's id."""
    with data_dir_lock(layout):  # taken first: it removes release folders no pointer names
        current_id = pointed_release(layout, "current")
        current = layout.release(current_id)
        manifest = json.loads(current.manifest_json.read_text())
        copy_id, copy = new_release(layout, manifest["sha256"], current.database_name)
        for path in current.folder.iterdir():
            if path.is_dir():
                shutil.copytree(path, copy.folder / path.name, copy_function=os.link)
            elif path.name != current.manifest_json.name:
                os.link(path, copy.folder / path.name)
        copy.manifest_json.write_text(json.dumps({**manifest, "release": copy_id}))
        switch(layout, copy_id, current_id)
    return copy_id


def page_requests(layout: DataLayout, rng: random.Random) -> dict[str, list[str]]:
    """Requests of each page kind: the index; table pages and row pages of random images
    (each new to the response cache); the name tables by prefix; the press mix's searches
    and lookups."""
    release = layout.current
    manifest = json.loads(release.manifest_json.read_text())
    catalog = release.database_name
    images = [(s["database"], s["first_rowid"], s["last_rowid"]) for s in manifest["shards"]]
    images = images or [(catalog, 1, manifest["row_counts"]["images"])]
    conn = _open(release.db)
    try:
        names = [
            (kind, name)
            for kind in ENTITY_KINDS
            for (name,) in conn.execute(f"SELECT name FROM {kind} LIMIT 200")
        ]
    finally:
        conn.close()
    press = press_requests(layout, rng)
    out: dict[str, list[str]] = {"index": ["/"] * 100}
    out["table"], out["row"] = [], []
    for _ in range(2_000):
        database, first, last = rng.choice(images)
        rowid = rng.randint(first, last)
        out["table"].append(f"/{database}/images?_next={rowid}")  # as its next links page
        out["row"].append(f"/{database}/images/{rowid}")
    out["names"] = [
        f"/{catalog}/{kind}?" + urllib.parse.urlencode({"name__startswith": name[:2]})
        for kind, name in names
        if name[:2].strip()
    ]
    out["search"] = [r for r in press if r.startswith("/-/search")]
    out["lookup"] = [r for r in press if r.startswith("/-/lookup")]
    return out


async def press(port: int, clients: int, seconds: float, requests, rng) -> dict[str, Tally]:
    """``clients`` clients for ``seconds``, each asking the page kinds in turn."""
    tallies = {kind: Tally() for kind in KINDS}
    deadline = time.perf_counter() + seconds

    def turns(start: int):
        kinds = itertools.cycle(KINDS[start % len(KINDS) :] + KINDS[: start % len(KINDS)])
        return lambda: (rng.choice(requests[kind := next(kinds)]), tallies[kind])

    await asyncio.gather(*(keep_asking(port, deadline, turns(n)) for n in range(clients)))
    return tallies


def measure(data: Path, clients: int, seconds: float) -> dict:
    layout = DataLayout(data.resolve())
    rng = random.Random(20221201)
    started_from = pointed_release(layout, "current")
    second_release(layout)
    requests = page_requests(layout, rng)
    rows = json.loads(layout.manifest_json.read_text())["row_counts"]["images"]
    sql = f"/{layout.current.database_name}.json?" + urllib.parse.urlencode({"sql": SLOW_SQL})
    with serving(layout) as (port, _):
        loop = asyncio.new_event_loop()

        async def run() -> tuple[dict[str, Tally], Tally, float]:
            slow = asyncio.ensure_future(slow_sql(port, sql, seconds, SLOW_CLIENTS))
            await asyncio.sleep(2)  # the slow queries take every SQL thread first
            pages = asyncio.ensure_future(press(port, clients, seconds, requests, rng))
            await asyncio.sleep(seconds / 2)
            with data_dir_lock(layout):
                rolled = await asyncio.get_running_loop().run_in_executor(None, rollback, layout)
            assert rolled == started_from, (rolled, started_from)
            return await pages, await slow, seconds / 2

        tallies, slow, at = loop.run_until_complete(run())
        loop.close()
    return {
        "rows": rows,
        "clients": clients,
        "seconds": seconds,
        "rollback_at": at,
        "pages": {kind: tallies[kind].summary(seconds) for kind in KINDS},
        "slow": slow.statuses,
    }


def format_report(r: dict) -> str:
    slow = ", ".join(f"{status}: {n}" for status, n in sorted(r["slow"].items(), key=str))
    lines = [
        f"### Abuse, {r['rows']:,} rows (`make bench-abuse`)",
        "",
        f"{machine()}; {time.strftime('%Y-%m-%d')}. The site as `make serve` runs it; "
        f"{r['clients']} clients of the press mix (each page kind in turn) for "
        f"{r['seconds']:.0f} s while {SLOW_CLIENTS} clients, each from its own address, ran "
        f"SQL until the 10 s time limit stopped it, again and again; a rollback after "
        f"{r['rollback_at']:.0f} s. The slow queries' answers: {slow}.",
        "",
        "| page | requests | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, m in r["pages"].items():
        lines.append(
            f"| {kind} | {m['requests']:,} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | "
            f"{m['errors']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_abuse",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, required=True, help="a LAION_DATA_DIR with a release")
    parser.add_argument("--clients", type=int, default=50, help="clients of the press mix")
    parser.add_argument("--seconds", type=float, default=60, help="how long the press lasts")
    parser.add_argument("--report", type=Path, help="markdown file to write the table into")
    args = parser.parse_args(argv)
    results = measure(args.data, args.clients, args.seconds)
    print_and_record(format_report(results), args.report, ABUSE_MARKER)
    return 0


if __name__ == "__main__":
    sys.exit(main())
