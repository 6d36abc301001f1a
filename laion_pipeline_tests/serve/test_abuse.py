"""A hostile visitor through a real Datasette (`python -m laion_pipeline serve`): every URL
answers 4xx or the page, never 500; no request makes the server allocate past the limits of
`laion_pipeline.serve.limits`; a NUL is text like any other; the report is served without following
a link planted in its folder, and every response says `nosniff`."""

import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from laion_pipeline.common.layout import REPORT_URL, DataLayout
from laion_pipeline.common.phrases import MAX_QUERY_CHARS
from laion_pipeline.releases.datasette_files import SERVE_SETTINGS
from laion_pipeline.serve.compat import DATASETTE_1
from laion_pipeline_tests.datasette_site import DB, SLOW_SQL, served


@pytest.fixture(scope="module")
def site(sample_build):
    with served(sample_build.root) as site:
        yield site


def status(site, path: str, **params: str) -> tuple[int, str]:
    url = f"{site.base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def query_error(site, sql: str) -> str | None:
    code, body = status(site, f"/{DB}.json", sql=sql)
    assert code in (200, 400), (code, body[:300])
    return json.loads(body).get("error")


def peak_rss_mb(site) -> float:
    """The serving process's peak resident memory (VmHWM), from /proc."""
    for line in Path(f"/proc/{site.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize(
    "table", ["images", "domain", "artists", "celebrities", "characters", "images_fts"]
)
def test_sorting_by_any_column_of_any_table_answers_the_page(site, published, table):
    columns = [r[1] for r in published.execute(f"PRAGMA table_info({table})")] or ["text"]
    for column in ["rowid", *columns]:
        for key in ("_sort", "_sort_desc"):
            code, body = status(site, f"/{DB}/{table}", **{key: column})
            assert code == 200, (table, key, column, body[:300])
            code, _ = status(site, f"/{DB}/{table}.json", **{key: column})
            assert code == 200, (table, key, column)


def test_a_page_sorted_by_a_hidden_column_shows_that_column(site):
    rows = json.loads(status(site, f"/{DB}/images.json", _sort="hash", _shape="array")[1])
    assert "hash" in rows[0] and "__index_level_0__" not in rows[0]


@pytest.mark.parametrize(
    ("params", "said"),
    [
        ({"_sort": "no_such_column"}, "images has no such column"),
        ({"_sort_desc": "no_such_column"}, "images has no such column"),
        ({"_sort": "url", "_sort_desc": "text"}, "give _sort or _sort_desc once"),
    ],
)
def test_a_sort_that_cannot_be_done_is_a_400_that_says_why(site, params, said):
    for suffix in ("", ".json"):
        code, body = status(site, f"/{DB}/images{suffix}", **params)
        assert code == 400 and said in body


@pytest.mark.parametrize("q", ["\x00", "a\x00", "\x00painting", '"a\x00b"'])
def test_a_nul_in_the_search_is_text_like_any_other(site, q):
    code, _ = status(site, "/-/search", q=q)
    assert code == 200
    code, body = status(site, "/-/search.json", q=q)
    spaced = json.loads(status(site, "/-/search.json", q=q.replace("\x00", " "))[1])
    assert code == 200 and json.loads(body)["count"] == spaced["count"]
    code, _ = status(site, f"/{DB}/search", q=q)
    assert code == 200


def test_a_search_text_over_the_cap_is_a_400_not_seconds_of_work(site):
    code, body = status(site, "/-/search.json", q="a " * MAX_QUERY_CHARS)
    assert code == 400 and f"at most {MAX_QUERY_CHARS:,}" in body
    # Through SQL too: laion_match refuses it before any work.
    sql = f"select laion_match(printf('%.*c', {MAX_QUERY_CHARS + 1}, 'a'))"
    assert query_error(site, sql) == "user-defined function raised exception"
    assert query_error(site, f"select laion_match(printf('%.*c', {MAX_QUERY_CHARS}, 'a'))") is None


def test_no_query_makes_the_server_allocate_past_its_limits(site):
    hostile = {
        # One value of 100 MB: past SQLite's length limit.
        "select zeroblob(100000000)": "string or blob too big",
        "select replace(printf('%.*c', 10000000, 'x'), 'x', 'abcdefgh')": "string or blob too big",
        # Many values just under it: past the result's budget, counted as rows are fetched.
        "select zeroblob(15000000) from images limit 50": "the result is over 64 MB",
        "select zeroblob(1000000) a, zeroblob(1000000) b from images limit 1000": (
            "the result is over 64 MB"
        ),
        # A sort of 200 MB of rows in SQLite's memory: past the heap limit, or spilled.
        "select group_concat(x) from (select zeroblob(10000000) x from images limit 20)": (
            "string or blob too big"
        ),
    }
    for sql, said in hostile.items():
        error = query_error(site, sql)
        assert error is not None and said in error, (sql, error)
    assert peak_rss_mb(site) < 512
    # The site still answers, and arbitrary SQL stays open to everyone.
    assert query_error(site, "select count(*) from images") is None
    assert status(site, "/-/search.json", q="painting")[0] == 200


def test_an_overlong_query_string_is_refused(site):
    code, _ = status(site, "/-/search", q="a" * 70_000)
    assert code in (400, 414)


def test_every_response_says_nosniff(site):
    for path in ("/", f"/{DB}/images", "/-/search?q=a", REPORT_URL, "/no/such/page"):
        try:
            with urllib.request.urlopen(f"{site.base}{path}", timeout=30) as response:
                headers = response.headers
        except urllib.error.HTTPError as error:
            headers = error.headers
        assert headers["x-content-type-options"] == "nosniff", path


def test_the_report_follows_no_link_planted_in_its_folder(sample_build, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(sample_build.root, data, symlinks=True)
    layout = DataLayout(data)
    release = layout.current.folder.resolve()
    report = release / "report"
    # A chart replaced by a link to a secret, and a whole report folder that is a link.
    (report / "top_domains.png").unlink()
    os.symlink("/etc/passwd", report / "top_domains.png")
    other = layout.releases_dir / "20990101T000000Z-000000000000"
    other.mkdir()
    os.symlink("/etc", other / "report")
    with served(data) as site:
        for path in (
            f"{REPORT_URL}{release.name}/top_domains.png",
            f"{REPORT_URL}{other.name}/index.html",
            f"{REPORT_URL}{other.name}/analysis.json",
        ):
            code, body = status(site, path)
            assert code == 404 and "root:" not in body, path
        code, _ = status(site, f"{REPORT_URL}{release.name}/index.html")
        assert code == 200


def test_the_search_never_waits_behind_arbitrary_sql(site):
    """Three clients run queries until the 10 s time limit stops them, which takes every one
    of Datasette's SQL threads; the site's search answers meanwhile (on its own threads), as
    it would not if it queued behind them."""
    limit = SERVE_SETTINGS["sql_time_limit_ms"] / 1000

    def slow(client: str) -> tuple[float, str | None]:
        started = time.monotonic()
        code, _, body = site.ask(f"/{DB}.json?" + urllib.parse.urlencode({"sql": SLOW_SQL}), client)
        assert code in (200, 400), (code, body[:300])
        return time.monotonic() - started, json.loads(body).get("error")

    with ThreadPoolExecutor(3) as pool:  # three clients: each may run two at most
        running = [pool.submit(slow, f"127.0.0.{n + 30}") for n in range(3)]
        time.sleep(1)  # the three are running
        waits = []
        for q in ["painting", '"Alphonse Mucha"', "the", "zorakalo"] * 3:
            started = time.monotonic()
            assert status(site, "/-/search.json", q=q)[0] == 200
            waits.append(time.monotonic() - started)
        still_running = sum(not f.done() for f in running)
        slowest = [f.result() for f in running]
    assert still_running == 3  # the searches all ran while the three held every thread
    assert max(waits) < limit / 3, waits
    for took, error in slowest:
        assert "too long" in (error or "") and took < limit + 5


LAST_ROWID = 2**63 - 1


@pytest.mark.parametrize(
    ("params", "code", "said"),
    [
        ({"q": "painting", "after": str(LAST_ROWID)}, 200, None),
        ({"q": "painting", "before": str(LAST_ROWID)}, 200, None),
        ({"q": "painting", "after": str(LAST_ROWID + 1)}, 400, "digits 0-9"),
        ({"q": "painting", "before": str(2**64)}, 400, "digits 0-9"),
        ({"q": "painting", "after": "\uff11\uff12"}, 400, "digits 0-9"),  # full-width 12
        ({"q": "painting", "after": "\u0661\u0662"}, 400, "digits 0-9"),  # Arabic-Indic 12
        ({"q": "painting", "after": "-5"}, 400, "digits 0-9"),
        ({"q": "painting", "after": "3", "before": "9"}, 400, "not both"),
    ],
)
def test_a_page_key_is_a_rowid_in_ascii_digits_or_a_400_saying_so(site, params, code, said):
    for path in ("/-/search", "/-/search.json"):
        got, body = status(site, path, **params)
        assert got == code, (path, params, body[:200])
        assert said is None or said in body


@pytest.mark.parametrize(
    "params",
    [
        {"_where": "randomblob(100000000)"},
        {"_where": "no_such_column = 1"},
        {"_size": "abc"},
        {"_size": "-1"},
        {"_size": "99999999999999999999"},
        {"_sort": "nope"},
        {"width__gt": "99999999999999999999999"},
    ],
)
def test_a_table_pages_bad_parameter_is_a_400_never_a_500(site, params):
    for path in (f"/{DB}/images", f"/{DB}/images.json"):
        code, body = status(site, path, **params)
        assert code == 400, (path, params, code, body[:300])


def test_a_report_address_without_its_slash_or_of_a_release_gone_says_where_to_go(
    site, sample_build
):
    release = sample_build.current.folder.resolve().name
    with urllib.request.urlopen(f"{site.base}{REPORT_URL}{release}", timeout=30) as response:
        assert response.url == f"{site.base}{REPORT_URL}{release}/" and response.status == 200
    code, body = status(site, f"{REPORT_URL}20200101T000000Z-0123456789ab/")
    assert code == 404 and "no longer served" in body
    assert f'href="{REPORT_URL}"' in body


@pytest.mark.parametrize("q", ["a", "ab", " x "])
def test_a_lookup_of_a_host_too_short_to_find_says_so(site, q):
    code, body = status(site, "/-/lookup.json", q=q)
    answer = json.loads(body)
    assert code == 200 and answer["hosts_count"] == 0
    assert "at least 3 characters" in answer["problem"]


def test_no_page_and_no_query_shows_where_the_server_keeps_its_files(site, sample_build):
    where = str(sample_build.root.resolve())
    release = sample_build.current.folder.resolve().name
    pages = [
        "/",
        f"/{DB}",
        f"/{DB}/images?_size=3",
        "/-/databases.json",
        "/-/databases",
        *(() if DATASETTE_1 else ("/-/metadata.json",)),  # the 1.0 line has no such page
        "/-/settings.json",
        "/-/plugins.json",
        "/-/versions.json",
        "/-/search?q=painting",
        f"{REPORT_URL}{release}/",
    ]
    for path in pages:
        code, body = status(site, path)
        assert code == 200 and where not in body, path
    for sql in ("select * from pragma_database_list", "select file from pragma_database_list()"):
        code, body = status(site, f"/{DB}.json", sql=sql, _shape="array")
        assert code == 200 and where not in body, sql
        assert all(row["file"] is None for row in json.loads(body)), body
