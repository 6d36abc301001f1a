"""Press traffic: the pages of a release are answered again from memory, carry an ETag naming
the release and a Cache-Control a CDN can use, and a client holding the page gets a 304; the
server's own pages and errors are never kept; the cache stays within its bytes."""

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from email.message import Message

import pytest

from laion_pipeline.serve.cache import MAX_AGE_SECONDS, CachedResponse, ResponseCache
from laion_pipeline_tests.datasette_site import DB, served


@pytest.fixture(scope="module")
def site(sample_build):
    with served(sample_build.root) as site:
        yield site


def get(site, path: str, **headers: str) -> tuple[int, Message, bytes]:
    """Status, headers (any case) and body."""
    request = urllib.request.Request(f"{site.base}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.mark.parametrize(
    "path",
    [
        "/-/search?q=painting",
        "/-/search.json?q=%22Alphonse+Mucha%22",
        "/-/lookup?q=pinimg",
        f"/{DB}/artists?_sort_desc=image_counts",
        f"/{DB}.json?sql=select+count(*)+from+images",
        "/",
    ],
)
def test_a_page_is_answered_again_from_memory_with_the_release_etag(site, sample_build, path):
    release = json.loads(sample_build.manifest_json.read_text())["release"]
    status, first_headers, first = get(site, path)
    assert status == 200 and first_headers["x-laion-cache"] == "miss"
    status, headers, again = get(site, path)
    assert status == 200 and headers["x-laion-cache"] == "hit" and again == first
    assert headers["ETag"] == first_headers["ETag"] == f'W/"{release}"'
    assert headers["Cache-Control"] == f"public, max-age={MAX_AGE_SECONDS}"
    assert headers["x-laion-release"] == release
    assert headers["X-Content-Type-Options"] == "nosniff"
    # A browser or a CDN that holds the release's page is told it is still good.
    status, headers, body = get(site, path, **{"If-None-Match": f'W/"{release}"'})
    assert (status, body) == (304, b"") and headers["ETag"] == f'W/"{release}"'
    status, _, body = get(site, path, **{"If-None-Match": 'W/"another-release"'})
    assert status == 200 and body


def test_errors_and_the_servers_own_pages_are_not_kept(site):
    for path in ("/no/such/page", f"/{DB}/images?_sort=nope", "/-/threads.json"):
        get(site, path)
        _, headers, _ = get(site, path)
        assert headers.get("x-laion-cache") != "hit", path
    _, headers, _ = get(site, "/-/threads.json")
    assert headers["ETag"] is None


def response(size: int) -> CachedResponse:
    return CachedResponse(200, ((b"content-type", b"text/plain"),), b"x" * size)


def scope(path: str) -> dict:
    return {"path": path, "query_string": b"", "method": "GET"}


def key(path: str) -> tuple[bytes, ...]:
    return ResponseCache.key(scope(path))


def test_the_cache_stays_within_its_bytes_dropping_the_least_recently_used():
    cache = ResponseCache(max_bytes=1000, max_entry=400)
    cache.follow("r1")
    for n in range(5):
        cache.put("r1", key(f"/{n}"), response(300))
    assert cache.bytes <= 1000 and len(cache) == 3
    assert cache.get("r1", key("/0")) is None and cache.get("r1", key("/4")) is not None
    cache.get("r1", key("/2"))  # used: kept over /3 when the next one comes
    cache.put("r1", key("/5"), response(300))
    assert cache.get("r1", key("/2")) is not None and cache.get("r1", key("/3")) is None
    cache.put("r1", key("/big"), response(401))  # over one entry's bound: not kept
    assert cache.get("r1", key("/big")) is None
    cache.put("r1", key("/error"), CachedResponse(500, (), b"no"))
    assert cache.get("r1", key("/error")) is None
    # A request of a release a switch replaced is neither answered nor kept.
    assert cache.get("r0", key("/5")) is None and len(cache) == 3
    cache.put("r0", key("/old"), response(10))
    assert cache.get("r1", key("/old")) is None
    # The next release serves nothing of the last one.
    cache.follow("r2")
    assert cache.get("r2", key("/5")) is None and len(cache) == 0 and cache.bytes == 0


def test_many_readers_of_one_new_page_wait_for_one_computation(site):
    """Twenty readers ask for the same page at once: one computes it (a miss), the others
    are answered from the cache when it is done."""
    path = "/-/search?q=%22Alphonse+Mucha%22+painting"
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: get(site, path), range(20)))
    assert {status for status, _, _ in answers} == {200}
    assert len({body for _, _, body in answers}) == 1
    assert [h["x-laion-cache"] for _, h, _ in answers].count("miss") == 1


# Every header Datasette or uvicorn reads to build a page's links, and those a proxy may send:
# each with what a poisoned page would show.
FORGED = [
    ("Host", "evil.attacker.example", "evil.attacker.example"),
    ("X-Forwarded-Host", "evil.attacker.example", "evil.attacker.example"),
    ("X-Forwarded-Proto", "https", "https://127.0.0.1"),
    ("X-Forwarded-For", "203.0.113.9", "203.0.113.9"),
    ("X-Forwarded-Port", "6666", ":6666"),
    ("Forwarded", "host=evil.attacker.example;proto=https", "evil.attacker.example"),
    ("X-Original-URL", "/evil-path", "evil-path"),
]


@pytest.mark.parametrize(("header", "value", "shows"), FORGED)
def test_a_forged_header_never_reaches_another_visitor(site, header, value, shows):
    """A page first asked for with a forged header (what an attacker does to prime the
    cache) is answered to the next visitor as if it had never been asked."""
    for path in ("/", f"/{DB}/images?_size=3", f"/{DB}/images/2", f"/{DB}/domain.json"):
        primed = f"{path}{'&' if '?' in path else '?'}_primed={header}"
        get(site, primed, **{header: value})
        status, headers, body = get(site, primed)
        assert status == 200, (path, status)
        seen = body.decode() + "".join(f"{k}: {v}\n" for k, v in headers.items())
        assert shows not in seen, (header, path)


def test_a_signed_in_visitors_page_is_never_kept(site):
    path = f"/{DB}/artists?_signed_in=1"
    get(site, path, Cookie="ds_actor=anything")
    _, headers, _ = get(site, path, Cookie="ds_actor=anything")
    assert headers["x-laion-cache"] != "hit"
    _, headers, _ = get(site, path, Authorization="Bearer dstok_x")
    assert headers["x-laion-cache"] != "hit"


def test_if_none_match_any_is_not_modified_only_for_a_page_that_exists(site):
    status, _, body = get(site, f"/{DB}/artists?_star=1", **{"If-None-Match": "*"})
    assert (status, body) == (304, b"")
    status, _, _ = get(site, "/no/such/page", **{"If-None-Match": "*"})
    assert status == 404
