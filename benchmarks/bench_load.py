"""`make bench-load`: the site under press traffic and abuse, as `make serve` runs it.

    python -m benchmarks.bench_load --data data/bench/data-12000000 \
        --clients 50 --seconds 60 --report docs/benchmarks.md

Serves the release of ``--data`` with ``python -m laion_pipeline serve`` on 127.0.0.1, then
drives it from this process (one core: asyncio on keep-alive HTTP/1.1 connections) with
``--clients`` clients, each sending its next request as soon as the last one is answered, for
``--seconds`` seconds per mix:

- **press**: 1,000 distinct requests (searches for the lists' names and the top hosts, their
  pages of images, lookups of image URLs and of websites), chosen Zipf-distributed (s = 1.1),
  so a few popular names take most of the traffic, as when a story goes viral;
- **distinct**: every request new: a common word, a rare word, a two-word phrase from a
  caption, an image URL lookup, in turn, none asked twice;
- the distinct mix again (other requests) against a server started with
  ``LAION_SEARCH_COUNT_CAP=1000`` (``LOWER_CAP``): what counting less buys.

Then the abuse: three clients running SQL until the 10 s time limit stops it, while one client
searches (distinct), and the hostile requests of the tests (large values and results).
Reports requests/s, p50/p95/p99 latency, errors (any status but 200, or a failed connection)
and the server's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import random
import sqlite3
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchmarks.bench import machine, print_and_record
from benchmarks.bench_search import _timed_get, serving
from laion_pipeline.common.layout import ENTITY_KINDS, DataLayout
from laion_pipeline.search.shard_search import COUNT_CAP, COUNT_CAP_VARIABLE

LOAD_MARKER = "<!-- load benchmark -->"
PRESS_REQUESTS = 1_000
ZIPF_S = 1.1
LOWER_CAP = 1_000
SLOW_SQL = "with recursive c(x) as (select 1 union all select x + 1 from c) select count(*) from c"


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def summary(self, seconds: float) -> dict[str, float]:
        times = sorted(self.latencies)

        def pct(p: float) -> float:
            return times[min(len(times) - 1, int(p * len(times)))] * 1000 if times else 0.0

        return {
            "requests": len(times),
            "per_second": len(times) / seconds,
            "p50_ms": pct(0.50),
            "p95_ms": pct(0.95),
            "p99_ms": pct(0.99),
            "errors": self.errors,
        }


def _open(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)


def press_requests(layout: DataLayout, rng: random.Random) -> list[str]:
    """1,000 distinct requests people send when a story names a few artists and hosts."""
    release = layout.current
    catalog = _open(release.db)
    shards = [release.shard_db(k) for k in release.shard_keys] or [release.db]
    try:
        # The most named first, each name once (the lists share names).
        names = list(
            dict.fromkeys(
                name
                for kind in ENTITY_KINDS
                for (name,) in catalog.execute(
                    f"SELECT name FROM {kind} ORDER BY image_counts DESC LIMIT 600"
                )
            )
        )[:600]
        hosts = [d for (d,) in catalog.execute(
            "SELECT domain FROM domain ORDER BY image_counts DESC LIMIT 150")]  # fmt: skip
    finally:
        catalog.close()
    urls = []
    for db in shards:
        conn = _open(db)
        try:
            low, top = conn.execute("SELECT min(rowid), max(rowid) FROM images").fetchone()
            picked = ",".join(str(rng.randint(low, top)) for _ in range(200 // len(shards) + 1))
            urls += [
                u for (u,) in conn.execute(f"SELECT url FROM images WHERE rowid IN ({picked})")
            ]
        finally:
            conn.close()
    requests = [f"/-/search?q={urllib.parse.quote_plus(chr(34) + n + chr(34))}" for n in names]
    requests += [f"/-/search?domain={urllib.parse.quote_plus(h)}" for h in hosts]
    requests += [f"/-/lookup?q={urllib.parse.quote_plus(u)}" for u in urls if u]
    requests += [f"/-/lookup?q={urllib.parse.quote_plus(h.split('.')[-2])}" for h in hosts
                 if h.count(".") >= 1 and len(h.split(".")[-2]) >= 3]  # fmt: skip
    distinct = list(dict.fromkeys(requests))
    rng.shuffle(distinct)
    return distinct[:PRESS_REQUESTS]


def distinct_requests(layout: DataLayout, rng: random.Random, count: int) -> list[str]:
    """``count`` requests, none twice: common words, rare words, phrases, URL lookups."""
    release = layout.current
    shards = [release.shard_db(k) for k in release.shard_keys] or [release.db]
    captions: list[tuple[str | None, str | None]] = []
    per_shard = count // len(shards) + 1
    for db in shards:
        conn = _open(db)
        try:
            (top,) = conn.execute("SELECT max(rowid) FROM images").fetchone()
            (low,) = conn.execute("SELECT min(rowid) FROM images").fetchone()
            picked = ",".join(str(rng.randint(low, top)) for _ in range(per_shard))
            captions += conn.execute(f"SELECT text, url FROM images WHERE rowid IN ({picked})")
        finally:
            conn.close()
    counts = collections.Counter(
        w for text, _ in captions for w in (text or "").lower().split() if w.isalpha()
    )
    common = [w for w, _ in counts.most_common(50)]
    seen: set[str] = set()
    out: list[str] = []
    kinds = itertools.cycle(("common", "rare", "phrase", "url"))
    attempts = 0
    while len(out) < count and attempts < count * 20:
        attempts += 1
        text, url = rng.choice(captions)
        caption = [w for w in (text or "").lower().split() if w.isalpha()]
        kind = next(kinds)
        if kind == "common" and caption:
            q = f"{rng.choice(common)} {rng.choice(caption)}"
            request = f"/-/search?q={urllib.parse.quote_plus(q)}"
        elif kind == "rare" and caption:
            rare = min(caption, key=counts.__getitem__)
            request = f"/-/search?q={urllib.parse.quote_plus(rare)}"
        elif kind == "phrase" and len(caption) >= 2:
            i = rng.randrange(len(caption) - 1)
            q = f'"{caption[i]} {caption[i + 1]}"'
            request = f"/-/search?q={urllib.parse.quote_plus(q)}"
        elif kind == "url" and url:
            request = f"/-/lookup?q={urllib.parse.quote_plus(url)}"
        else:
            continue
        if request not in seen:
            seen.add(request)
            out.append(request)
    return out


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> int:
    """One GET on a keep-alive connection; the status (the body read and dropped)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readline()).strip() or b"0", 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def keep_asking(port: int, deadline: float, pick) -> None:
    """One client on a keep-alive connection until ``deadline``: ``pick()`` gives the next
    path and the ``Tally`` it counts in."""
    reader = writer = None
    while time.perf_counter() < deadline:
        path, tally = pick()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.perf_counter()
            status = await asyncio.wait_for(_get(reader, writer, path), 60)
            tally.latencies.append(time.perf_counter() - started)
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
            if status != 200:
                tally.errors += 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            tally.errors += 1
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def slow_sql(port: int, path: str, seconds: float, clients: int) -> Tally:
    """``clients`` clients, each from its own address (the server admits a few SQL requests
    per address), sending ``path`` until ``seconds`` are over, each on a new connection and
    after a refusal half a second later, as a client told to wait would."""
    tally = Tally()
    deadline = time.perf_counter() + seconds

    async def client(n: int) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(f"127.0.0.{n + 2}", 0)
                )
                try:
                    status = await asyncio.wait_for(_get(reader, writer, path), 120)
                finally:
                    writer.close()
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                status = "failed"
            tally.latencies.append(time.perf_counter() - started)
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
            if status in (429, 503, "failed"):
                await asyncio.sleep(0.5)

    await asyncio.gather(*(client(n) for n in range(clients)))
    return tally


async def drive(port: int, clients: int, seconds: float, pick) -> Tally:
    """``clients`` clients for ``seconds``, each sending ``pick()``'s next path."""
    tally = Tally()
    deadline = time.perf_counter() + seconds
    await asyncio.gather(
        *(keep_asking(port, deadline, lambda: (pick(), tally)) for _ in range(clients))
    )
    return tally


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def peak_rss_mb(pid: int) -> float:
    """The most memory the process has held (the kernel's VmHWM: psutil has no peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(data: Path, clients: int, seconds: float) -> dict:
    layout = DataLayout(data.resolve())
    rows = json.loads(layout.manifest_json.read_text())["row_counts"]["images"]
    rng = random.Random(20221201)
    press = press_requests(layout, rng)
    distinct = distinct_requests(layout, rng, 2 * int(seconds * 1_500) + 1_000)
    weights = [1 / (rank**ZIPF_S) for rank in range(1, len(press) + 1)]
    with serving(layout) as (port, server):
        loop = asyncio.new_event_loop()
        results: dict = {"rows": rows, "clients": clients, "seconds": seconds, "mixes": {}}
        press_pick = lambda: rng.choices(press, weights)[0]  # noqa: E731
        queue = iter(distinct)
        distinct_pick = lambda: next(queue, distinct[0])  # noqa: E731
        for mix, pick in (("press", press_pick), ("distinct", distinct_pick)):
            tally = loop.run_until_complete(drive(port, clients, seconds, pick))
            results["mixes"][mix] = tally.summary(seconds)
            results["mixes"][mix]["rss_mb"] = rss_mb(server.pid)
        results["distinct_requests"] = len(distinct)
        results["press_requests"] = len(press)

        # Abuse: three clients hold every SQL thread of Datasette's with 10 s queries while
        # one searches, each request new.
        slow_path = f"/{layout.current.database_name}.json?" + urllib.parse.urlencode(
            {"sql": SLOW_SQL}
        )
        abuse_seconds = min(seconds, 30)

        async def abuse() -> tuple[Tally, Tally]:
            slow, fast = await asyncio.gather(
                slow_sql(port, slow_path, abuse_seconds, 3),
                drive(port, 1, abuse_seconds, distinct_pick),
            )
            return slow, fast

        slow, fast = loop.run_until_complete(abuse())
        results["abuse"] = {
            "search": fast.summary(abuse_seconds),
            "slow_queries": slow.statuses.get(400, 0),  # each stopped at the time limit
            "slow_max_s": max(slow.latencies, default=0.0),
        }
        hostile = [
            "select zeroblob(100000000)",
            "select replace(printf('%.*c', 10000000, 'x'), 'x', 'abcdefgh')",
            "select zeroblob(15000000) from images limit 50",
            "select zeroblob(1000000) a, zeroblob(1000000) b from images limit 1000",
        ]
        base = f"http://127.0.0.1:{port}/{layout.current.database_name}.json?"
        took = []
        for sql in hostile:
            started = time.perf_counter()
            with contextlib.suppress(OSError):  # a 400, as it should be
                _timed_get(base + urllib.parse.urlencode({"sql": sql}))
            took.append(time.perf_counter() - started)
        results["hostile"] = {"requests": len(hostile), "max_s": max(took)}
        results["peak_rss_mb"] = peak_rss_mb(server.pid)
    with serving(layout, {COUNT_CAP_VARIABLE: str(LOWER_CAP)}) as (port, server):
        tally = loop.run_until_complete(drive(port, clients, seconds, distinct_pick))
        mix = f"distinct, {COUNT_CAP_VARIABLE}={LOWER_CAP}"
        results["mixes"][mix] = {**tally.summary(seconds), "rss_mb": rss_mb(server.pid)}
    loop.close()
    return results


def format_report(r: dict) -> str:
    lines = [
        f"### Load, {r['rows']:,} rows (`make bench-load`)",
        "",
        f"{machine()}; {time.strftime('%Y-%m-%d')}. The site as `make serve` runs it; "
        f"{r['clients']} clients on keep-alive connections from one process on the same "
        f"machine, {r['seconds']:.0f} s a mix. Press: {r['press_requests']:,} distinct "
        f"requests, Zipf-distributed (s = {ZIPF_S}); distinct: every request new "
        f"({r['distinct_requests']:,} prepared: common and rare words, phrases, URL lookups), "
        f"the search counting to {COUNT_CAP:,} (the default) or to {LOWER_CAP:,}.",
        "",
        "| mix | requests | requests/s | p50 ms | p95 ms | p99 ms | errors | server RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mix, m in r["mixes"].items():
        lines.append(
            f"| {mix} | {m['requests']:,} | {m['per_second']:,.0f} | {m['p50_ms']:.1f} | "
            f"{m['p95_ms']:.1f} | {m['p99_ms']:.1f} | {m['errors']} | {m['rss_mb']:,.0f} |"
        )
    a = r["abuse"]
    lines += [
        "",
        f"Abuse: while three clients ran SQL until the time limit ({a['slow_queries']} queries, "
        f"the longest {a['slow_max_s']:.1f} s), one client's distinct searches: "
        f"{a['search']['requests']:,} requests, p95 {a['search']['p95_ms']:.1f} ms, "
        f"{a['search']['errors']} errors. {r['hostile']['requests']} hostile queries (100 MB "
        f"values, 750 MB results) refused, the slowest in {r['hostile']['max_s']:.2f} s. "
        f"Server peak RSS over the whole run: {r['peak_rss_mb']:,.0f} MB.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, required=True, help="a LAION_DATA_DIR with a release")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=60, help="seconds per mix")
    parser.add_argument("--report", type=Path, help="markdown file to write the table into")
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results = measure(args.data, args.clients, args.seconds)
    print_and_record(format_report(results), args.report, LOAD_MARKER)
    return 0


if __name__ == "__main__":
    sys.exit(main())
