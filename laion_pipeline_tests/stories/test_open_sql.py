"""Open SQL cannot starve the site: on a real server that keeps the 10 s SQL time limit,
while a dozen clients run queries that take all of it, the pages people browse answer, a
rollback is served to the next request at once, and the slow queries finish on the release
they started on; one client cannot hold more than its share."""

import json
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from laion_pipeline.common.layout import DataLayout
from laion_pipeline.releases.lock import data_dir_lock
from laion_pipeline.releases.switch import pointed_release, rollback
from laion_pipeline.serve.pools import SQL_PER_CLIENT, SQL_PER_CLIENT_VARIABLE
from laion_pipeline_tests.conftest import build
from laion_pipeline_tests.datasette_site import DB, SLOW_SQL, SQL_PATH, served

SLOW_CLIENTS = 12


def slow_sql_path() -> str:
    return f"{SQL_PATH}?" + urllib.parse.urlencode({"sql": SLOW_SQL})


def test_pages_and_a_rollback_never_wait_behind_slow_open_sql(tmp_path):
    data = tmp_path / "data"
    assert build(data).success
    layout = DataLayout(data.resolve())
    first = pointed_release(layout, "current")
    names = tmp_path / "artists.csv"
    artists = (data / "raw/entities/artists.csv").read_text().splitlines()
    names.write_text("\n".join(artists[:-1]) + "\n")
    second_build = build(
        data,
        {"LAION_ARTISTS_CSV_URL": str(names)},
        selection=["entity_csvs", "artists", "published_database"],
    )
    assert second_build.success
    second = pointed_release(layout, "current")
    assert second != first

    with served(data) as site, ThreadPoolExecutor(SLOW_CLIENTS) as pool:
        slow = [
            pool.submit(site.ask, slow_sql_path(), f"127.0.0.{n + 2}") for n in range(SLOW_CLIENTS)
        ]
        time.sleep(1.5)  # all twelve are in the server: three running, nine waiting
        pages = [
            "/",
            f"/{DB}",
            f"/{DB}/images?_size=5",
            f"/{DB}/images/1",
            f"/{DB}/artists",
            "/-/search?q=painting",
            "/-/lookup?q=example",
        ]
        for path in pages:
            status, release, _ = site.ask(path, timeout=60)
            assert (status, release) == (200, second), path
        answered_during = not any(f.done() for f in slow)
        _, _, body = site.ask("/-/search.json?q=painting")
        next_page = json.loads(body)["next_url"].replace("/-/search?", "/-/search.json?")
        assert f"release={second}" in next_page  # a page link names its release

        with data_dir_lock(layout):
            assert rollback(layout) == first
        status, release, body = site.ask("/-/search.json?q=painting", timeout=60)
        assert (status, release) == (200, first)
        assert json.loads(body)["rows"]
        switched_during = not any(f.done() for f in slow)
        # The page after it, of the release no longer served: start again.
        status, _, body = site.ask(next_page)
        assert status == 410 and "start again" in json.loads(body)["error"]

        # The first three reach the time limit and the next three take their threads: the
        # pages still answer (a stopped query's cursor was once freed on the event loop,
        # which then waited for the next query on that connection, and every page with it).
        while sum(f.done() for f in slow) < 3:
            time.sleep(0.2)
        for path in pages:
            status, release, _ = site.ask(path, timeout=60)
            assert (status, release) == (200, first), path
        answered_after_the_limit = not all(f.done() for f in slow)

        finished = [f.result() for f in slow]
    assert answered_during, "a page waited for the slow queries"
    assert switched_during, "the rollback waited for the slow queries"
    assert answered_after_the_limit, "the pages waited once the first slow queries were stopped"
    # Each slow query ran until the time limit stopped it, on the release it started on.
    for status, release, body in finished:
        assert (status, release) == (400, second), body[:200]
        assert "too long" in json.loads(body)["error"]


def test_one_client_holds_at_most_its_share_of_open_sql(tmp_path, sample_build):
    limit = {SQL_PER_CLIENT_VARIABLE: "1"}
    with served(sample_build.root, limit) as site, ThreadPoolExecutor(1) as pool:
        held = pool.submit(site.ask, slow_sql_path(), "127.0.0.20")
        time.sleep(1)
        status, _, body = site.ask(slow_sql_path(), "127.0.0.20")
        assert status == 429 and SQL_PER_CLIENT_VARIABLE in body.decode()
        # Another client, and the same client's pages, are answered.
        status, _, _ = site.ask(f"{SQL_PATH}?sql=select+1", "127.0.0.21")
        assert status == 200
        status, _, _ = site.ask(f"/{DB}/images?_size=3", "127.0.0.20")
        assert status == 200
        assert held.result()[0] == 400
    assert SQL_PER_CLIENT >= 1
