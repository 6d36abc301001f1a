"""`python -m laion_pipeline serve` (what `make serve` runs) on 127.0.0.1 for the tests."""

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from datasette.app import Datasette

from laion_pipeline.common.layout import DataLayout
from laion_pipeline.releases.datasette_files import SEARCH_PAGE_ROWS
from laion_pipeline.serve.compat import DATASETTE_1
from laion_pipeline_tests.dagster_dev import REPO_ROOT, free_port

DB = "laion-aesthetic-6pls"
# Where a client sends SQL (the 0.65 line's address redirects there on the 1.0 line).
SQL_PATH = f"/{DB}/-/query.json" if DATASETTE_1 else f"/{DB}.json"
# A query that runs until the time limit stops it (the benchmarks' slow SQL).
SLOW_SQL = "with recursive c(x) as (select 1 union all select x + 1 from c) select count(*) from c"


class Site:
    """A served published database and a small client for its pages and JSON."""

    def __init__(self, base: str, pid: int = 0) -> None:
        self.base = base
        self.pid = pid  # the serving process (Datasette, exec'd by `serve`)

    def get(self, path: str, **params: str) -> str:
        url = f"{self.base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read().decode()

    def ask(self, path: str, client: str = "127.0.0.1", timeout: float = 120) -> tuple:
        """Status, ``X-Laion-Release`` and body of ``path``, asked from the address ``client``
        (every 127.0.0.0/8 address is this machine's: a client of its own to the server). A
        redirect is followed (the 1.0 line sends ``sql=`` on to ``/-/query``)."""
        port = urllib.parse.urlsplit(self.base).port
        for _ in range(3):
            conn = http.client.HTTPConnection(
                "127.0.0.1", port, timeout=timeout, source_address=(client, 0)
            )
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
            finally:
                conn.close()
            if response.status not in (301, 302) or not response.getheader("location"):
                return response.status, response.getheader("x-laion-release"), body
            path = response.getheader("location")
        return response.status, response.getheader("x-laion-release"), body

    def json(self, path: str, **params: str):
        return json.loads(self.get(path, **params))

    def search(self, q: str) -> list[dict]:
        """Every row of the fast search for ``q``, page after page (keyset paging)."""
        rows, after = [], ""
        while True:
            page = self.json(f"/{DB}/search.json", q=q, after=after, _shape="array")
            rows += page
            if len(page) < SEARCH_PAGE_ROWS:
                return rows
            after = str(page[-1]["rowid"])


@contextmanager
def served(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[Site]:
    """Datasette on the published database of ``data_dir`` (with ``env`` added to the
    environment), stopped with its process group."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "laion_pipeline", "serve", "--port", str(port)],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "LAION_DATA_DIR": str(data_dir),
            "NO_PROXY": "127.0.0.1",
            **(env or {}),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        site = Site(f"http://127.0.0.1:{port}", server.pid)
        deadline = time.monotonic() + 30
        while True:
            try:
                site.get("/-/versions.json")
                break
            except (ConnectionError, urllib.error.URLError):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield site
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)


def in_process(layout: DataLayout) -> Datasette:
    """In process, what `make serve` starts: the database, inspect data and metadata through
    `current`."""
    current = layout.current
    return Datasette(
        immutables=[str(current.db)],
        inspect_data=json.loads(current.inspect_json.read_text()),
        metadata=json.loads(current.metadata_json.read_text()),
    )
