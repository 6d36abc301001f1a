"""The domain of a URL is exactly urllib.parse.urlparse(url).netloc, computed in DuckDB."""

from urllib.parse import urlparse

import duckdb
import pyarrow as pa
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from laion_pipeline.sources.ingest import domain_sql

ODD_URLS = [
    "https://i.pinimg.com/originals/ab.jpg",
    "HTTPS://User:Secret@Photos.Example.COM:8443/x.png",
    "http://example.com:8080",
    "http://[2001:db8::1]/img.jpg",
    "http://[2001:db8::1]:8443/img.jpg",
    "http://[v1.fe80::a+en1]/",
    "//cdn.schemeless.net/a/b.jpg",
    "www.noscheme.com/picture.jpg",
    "cdn.example.com:80/path",
    "  \t https://leading-space.example.com/y.jpg",
    "\x00\x1fhttp://control.example/",
    "ht\ttp://tab.example/",
    "http://new\nline.example/",
    "https://host.example.com?query=only",
    "https://host.example.com#fragment",
    "https://host.example.com;params",
    "http:/one-slash.example/",
    "http:relative/path",
    "1http://digit-first.example/",
    "a+b.c-d://odd-scheme.example/",
    "ht tp://space-in-scheme.example/",
    "mailto:someone@example.com",
    "data:image/png;base64,iVBORw0KGgo=",
    "file:///etc/passwd",
    "http://ünïcödé.example/bild.jpg",
    "http://xn--nxasmq6b.example/",
    "http://trailing.example ",
    "https://",
    "//",
    ":",
    "",
]


pytestmark = pytest.mark.fast


def duckdb_domains(urls: list[str | None]) -> list[str]:
    conn = duckdb.connect()
    conn.register("url_table", pa.table({"URL": pa.array(urls, pa.string())}))
    sql = domain_sql('"URL"')
    return [row[0] for row in conn.execute(f"SELECT {sql} FROM url_table").fetchall()]


@pytest.mark.parametrize("url", ODD_URLS)
def test_domain_matches_urlparse_on_odd_urls(url):
    assert duckdb_domains([url]) == [urlparse(url).netloc]


def test_null_url_has_empty_domain():
    assert duckdb_domains([None]) == [""]


def test_urls_that_urlparse_rejects_keep_their_raw_host():
    # urlparse raises ValueError for unbalanced IPv6 brackets; the build must not crash, and
    # keeps the host text as written.
    url = "http://[2001:db8::1/x"
    with pytest.raises(ValueError):
        urlparse(url)
    assert duckdb_domains([url]) == ["[2001:db8::1"]


URL_ALPHABET = st.sampled_from(list("aZ09+-.:/?#@[]% \t\n\x00\x1fé"))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(URL_ALPHABET, max_size=24), min_size=1, max_size=30))
def test_domain_matches_urlparse_on_random_strings(urls):
    expected = []
    for url in urls:
        try:
            expected.append(urlparse(url).netloc)
        except ValueError:
            assume(False)
    assert duckdb_domains(urls) == expected
