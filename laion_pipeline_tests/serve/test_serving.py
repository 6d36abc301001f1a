"""What a person sees in Datasette: the fast search, thumbnails, readable floats, domains that
link to their images, names that link to their search, noise columns hidden. A real Datasette
(`python -m laion_pipeline serve`) on the published sample, read through its JSON API and
pages."""

import asyncio
import collections
import json
import os
import re
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest
from datasette.app import Datasette

from laion_pipeline.common.layout import REPORT_FILES, REPORT_URL
from laion_pipeline.common.phrases import laion_match
from laion_pipeline.releases.datasette_files import SEARCH_PAGE_ROWS
from laion_pipeline.search.shard_search import COUNT_CAP, COUNT_CAP_VARIABLE, count_cap
from laion_pipeline.serve.plugin import render_cell
from laion_pipeline.serve.render import marked_caption, readable_float, result_rows
from laion_pipeline_tests.conftest import phrase_count, tokens
from laion_pipeline_tests.datasette_site import DB, served


@pytest.fixture(scope="module")
def site(sample_build):
    with served(sample_build.root) as site:
        yield site


@pytest.fixture(scope="module")
def captions(sample_build) -> dict[int, str | None]:
    conn = sqlite3.connect(f"{sample_build.published_db.as_uri()}?mode=ro", uri=True)
    rows = dict(conn.execute("SELECT rowid, text FROM images"))
    conn.close()
    return rows


def test_a_name_as_a_phrase_finds_what_its_count_says(site, published, captions):
    name, count = published.execute(
        "SELECT name, image_counts FROM artists ORDER BY image_counts DESC LIMIT 1"
    ).fetchone()
    found = site.search(f'"{name}"')
    assert len(found) == count == phrase_count(list(captions.values()), name) > 0
    assert [r["rowid"] for r in found] == sorted(r["rowid"] for r in found)


def test_a_common_word_pages_in_rowid_order_with_every_match(site, captions):
    counts = collections.Counter(w for text in captions.values() for w in set(tokens(text)))
    word, expected = counts.most_common(1)[0]
    assert expected > 2 * SEARCH_PAGE_ROWS  # several pages
    first = site.json(f"/{DB}/search.json", q=word, _shape="array")
    assert len(first) == SEARCH_PAGE_ROWS
    found = site.search(word)
    assert [r["rowid"] for r in found] == sorted(
        rowid for rowid, text in captions.items() if word in tokens(text)
    )
    assert set(found[0]) >= {"rowid", "url", "text", "domain", "aesthetic"}


@pytest.mark.parametrize("q", ["AC/DC", "NOT", "NEAR", '"unbalanced', "a * b", "", "東京", "-"])
def test_any_text_typed_into_the_search_is_a_valid_query(site, q):
    assert isinstance(site.json(f"/{DB}/search.json", q=q, _shape="array"), list)


@pytest.mark.fast
def test_the_search_query_language():
    assert laion_match("Thomas Kinkade") == '"Thomas" "Kinkade"'
    assert laion_match('"Name "X" Y"') == '"Name ""X"" Y"'
    assert laion_match("AC/DC") == '"AC" "DC"'
    assert laion_match("") == '""'


def test_the_index_page_links_to_the_search_page(site):
    assert 'href="/-/search"' in site.get("/")


def test_images_show_thumbnails_and_hide_the_noise_columns(site):
    page = site.json(f"/{DB}/images.json", _shape="objects", _size=5)
    assert "hash" not in page["rows"][0] and "__index_level_0__" not in page["rows"][0]
    shown = site.json(f"/{DB}/images.json", _shape="objects", _size=5, _col="hash")
    assert "hash" in shown["rows"][0]
    html = site.get(f"/{DB}/images")
    assert '<img src="http' in html and 'loading="lazy"' in html
    assert "e-0" not in html  # no float written with an exponent


def test_domains_are_labelled_and_link_to_their_images(site, published):
    row = site.json(f"/{DB}/images.json", _shape="objects", _size=1, _labels="on")["rows"][0]
    domain_id = row["domain_id"]["value"]
    (domain,) = published.execute("SELECT domain FROM domain WHERE id = ?", (domain_id,)).fetchone()
    assert row["domain_id"]["label"] == domain
    html = site.get(f"/{DB}/domain")
    (top_id, top) = published.execute(
        "SELECT id, domain FROM domain ORDER BY image_counts DESC LIMIT 1"
    ).fetchone()
    assert f'<a href="/{DB}/images?domain_id={top_id}"><bdi>{top}</bdi></a>' in html
    assert html.index(top) < html.index("</table>")  # sorted by image_counts, biggest first


def test_each_name_links_to_the_search_that_counts_it(site, published):
    html = site.get(f"/{DB}/celebrities")
    for name, count in published.execute("SELECT name, image_counts FROM celebrities LIMIT 5"):
        link = "/-/search?" + urllib.parse.urlencode({"q": f'"{name}"'})
        assert f'href="{link.replace("&", "&amp;")}"' in html
        assert len(site.search(f'"{name}"')) == count


@pytest.mark.fast
def test_cells_render_safely(tmp_path):
    sqlite3.connect(tmp_path / f"{DB}.db").close()
    ds = Datasette([str(tmp_path / f"{DB}.db")])
    asyncio.run(ds.invoke_startup())
    js = render_cell({}, "javascript:alert(1)", "url", "images", DB, ds)
    assert js is None  # plain text, not a link
    quoted = render_cell({}, 'https://x.example/"><script>', "url", "images", DB, ds)
    assert "<script>" not in str(quoted)
    assert readable_float(1.3e-07) == "0.00000013"
    assert readable_float(6.5) == "6.5"
    assert readable_float(0.0) == "0"


@pytest.mark.fast
def test_a_database_built_before_url_key_is_served_and_its_lookup_says_why_not(tmp_path):
    conn = sqlite3.connect(tmp_path / f"{DB}.db")
    conn.executescript(
        "CREATE TABLE domain (id INTEGER PRIMARY KEY, domain TEXT UNIQUE, image_counts INT);"
        "CREATE TABLE images (url TEXT, text TEXT, hash TEXT, domain_id INTEGER);"
        "INSERT INTO domain VALUES (1, 'x.example', 1);"
        "INSERT INTO images VALUES ('https://x.example/a.jpg', 'a cat', '12', 1);"
    )
    conn.commit()
    conn.close()
    ds = Datasette([str(tmp_path / f"{DB}.db")])

    async def pages():
        await ds.invoke_startup()
        return [
            await ds.client.get(f"/{DB}/images.json?_shape=objects"),
            await ds.client.get("/-/lookup.json?q=https://x.example/a.jpg"),
        ]

    table, lookup = asyncio.run(pages())
    assert table.status_code == 200
    assert list(table.json()["rows"][0]) == ["rowid", "url", "text", "domain_id"]  # no hash
    assert lookup.status_code == 200 and "built before lookups" in lookup.json()["problem"]


@pytest.mark.fast
def test_the_table_of_images_shows_hostile_rows_as_text(tmp_path):
    sqlite3.connect(tmp_path / f"{DB}.db").close()
    ds = Datasette([str(tmp_path / f"{DB}.db")], settings={"base_url": "/site/"})
    row = {
        "rowid": 7,
        "shard": DB,
        "width": 640,
        "height": 480,
        "aesthetic": 6.4567,
        "punsafe": None,
        "pwatermark": 0.1,
    }
    hostile = {
        **row,
        "url": 'https://x.example/a.jpg?"><script>alert(1)</script>',
        "caption": marked_caption("<b>oil</b> & paint", "<b>\x01oil\x02</b> & paint"),
        "domain": "<i>x.example</i>",
    }
    prefix = ds.urls.path("/")[:-1]
    rows = result_rows(prefix, [hostile, {**row, "url": "javascript:alert(1)", "caption": "",
                                          "domain": None}])  # fmt: skip

    async def render() -> str:
        await ds.invoke_startup()
        return await ds.render_template(
            "laion_images.html", {"result_rows": rows, "thumbnail_px": 120}
        )

    html = asyncio.run(render())
    assert "<script>" not in html and "<b>" not in html and "<i>" not in html
    assert "&lt;b&gt;<mark>oil</mark>&lt;/b&gt; &amp; paint" in html  # the words found marked
    assert 'href="/site/-/search?domain=%3Ci%3Ex.example%3C%2Fi%3E"' in html
    assert 'href="/site/laion-aesthetic-6pls/images/7"' in html  # under Datasette's base_url
    assert "aesthetic 6.46<br>unsafe -<br>watermark 0.10" in html
    assert "640 &times; 480" in html
    assert 'href="javascript' not in html and 'src="javascript' not in html
    assert '<td class="laion-url"><bdi>javascript:alert(1)</bdi></td>' in html  # not linked
    assert "(no host)" in html


def test_the_index_page_links_the_report_served_with_its_charts(site, sample_build):
    assert f'href="{REPORT_URL}"' in site.get("/")
    release = sample_build.current.folder.resolve().name
    with urllib.request.urlopen(f"{site.base}{REPORT_URL}", timeout=30) as response:
        # at the release's own address, so the page's charts come from the same release
        assert response.url == f"{site.base}{REPORT_URL}{release}/"
        assert response.headers["x-laion-release"] == release
    for name in ("", *REPORT_FILES):
        url = f"{site.base}{REPORT_URL}{release}/{name}"
        with urllib.request.urlopen(url, timeout=30) as response:
            body, kind = response.read(), response.headers["content-type"]
        assert body == (sample_build.report_dir / (name or "index.html")).read_bytes()
        expected = {"png": "image/png", "json": "application/json"}.get(name[-4:].strip("."))
        assert kind.startswith(expected or "text/html"), name


@pytest.mark.parametrize(
    "path",
    [
        "manifest.json",
        "..%2Fmanifest.json",
        "../laion-aesthetic-6pls.db",
        "x/index.html",
        "a.png",
        "..%2F..%2Fcurrent/index.html",
        "20991231T000000Z-000000000000/index.html",
    ],
)
def test_the_report_route_serves_nothing_but_the_report(site, path):
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{site.base}{REPORT_URL}{path}", timeout=30)
    assert refused.value.code == 404


@pytest.mark.parametrize("path", ["/no/such/page", f"/{DB}/images/1/2/3"])
def test_an_address_that_matches_no_page_is_a_404(site, path):
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{site.base}{path}", timeout=30)
    assert refused.value.code == 404
    assert "<h1>Error 404</h1>" in refused.value.read().decode()  # Datasette's own error page


def test_the_search_page_counts_and_links_the_next_and_previous_pages(site, captions):
    first = site.json("/-/search.json", q="painting")
    expected = sum("painting" in tokens(text) for text in captions.values())
    assert (first["count"], first["more_than_count"]) == (expected, False)
    assert first["previous_url"] is None and len(first["rows"]) == SEARCH_PAGE_ROWS
    second = site.json(first["next_url"].replace("/-/search?", "/-/search.json?"))
    assert second["rows"][0]["rowid"] > first["rows"][-1]["rowid"]
    back = site.json(second["previous_url"].replace("/-/search?", "/-/search.json?"))
    assert back["rows"] == first["rows"] and back["next_url"] == first["next_url"]
    html = site.get("/-/search", q="painting")
    assert f"<title>painting: {expected:,} images |" in html
    assert "<mark>painting</mark>" in html.lower()
    # No words: what to type, and examples, not "0 results".
    empty = site.get("/-/search")
    assert "Only the captions are searched" in empty and "0 results" not in empty
    assert "The most named artists: <a href=" in empty


def test_the_server_counts_to_the_cap_it_is_given(sample_build, captions, monkeypatch):
    expected = sum("painting" in tokens(text) for text in captions.values())
    assert expected > 100
    monkeypatch.setenv(COUNT_CAP_VARIABLE, "100")
    with served(sample_build.root) as site:
        page = site.json("/-/search.json", q="painting")
        assert (page["count"], page["more_than_count"]) == (100, True)
        assert "More than 100 images" in site.get("/-/search", q="painting")


@pytest.mark.fast
def test_a_count_cap_that_is_not_a_number_of_rows_is_refused_by_name(tmp_path):
    assert count_cap({}) == COUNT_CAP and count_cap({COUNT_CAP_VARIABLE: "2,000"}) == 2_000
    for bad in ("ten", "10", "-5"):
        with pytest.raises(ValueError, match=f"{COUNT_CAP_VARIABLE}='{bad}'.*at least 50"):
            count_cap({COUNT_CAP_VARIABLE: bad})
    refused = subprocess.run(
        [sys.executable, "-m", "laion_pipeline", "serve"],
        env={**os.environ, COUNT_CAP_VARIABLE: "ten", "LAION_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and COUNT_CAP_VARIABLE in refused.stderr


def test_is_my_work_in_it_finds_an_image_by_its_exact_url(site, published):
    rowid, url, domain = published.execute(
        "SELECT images.rowid, url, domain.domain FROM images JOIN domain "
        "ON domain.id = images.domain_id WHERE url LIKE 'http%' ORDER BY images.rowid LIMIT 1 "
        "OFFSET 4321"
    ).fetchone()
    found = site.json("/-/lookup.json", q=url)
    assert found["url"] is True and [r["rowid"] for r in found["images"]] == [rowid]
    assert found["images"][0]["url"] == url and found["host"] == domain
    html = site.get("/-/lookup", q=url)
    assert "1 image with exactly this URL" in html and f"#{rowid}<" in html
    # One character off: no image, and the website's images are one click away.
    missing = site.json("/-/lookup.json", q=url + "x")
    assert missing["images"] == [] and domain in [h["domain"] for h in missing["hosts"]]
    assert "No image has exactly this URL" in site.get("/-/lookup", q=url + "x")


def test_is_my_work_in_it_finds_websites_by_any_part_of_their_name(site, published):
    expected = published.execute(
        "SELECT domain, image_counts FROM domain WHERE lower(domain) LIKE '%pinimg%' "
        "ORDER BY image_counts DESC, id"
    ).fetchall()
    found = site.json("/-/lookup.json", q="PinImg")
    assert [(h["domain"], h["image_counts"]) for h in found["hosts"]] == expected
    assert found["hosts_count"] == len(expected) > 0 and found["images"] == []
    html = site.get("/-/lookup", q="pinimg")
    assert "/-/search?domain=" + urllib.parse.quote(expected[0][0]) in html
    assert "at least 3 characters" in site.get("/-/lookup", q="pi")


def test_a_search_for_an_address_points_to_the_lookup(site):
    assert 'href="/-/lookup"' in site.get("/")
    html = site.get("/-/search", q="https://i.pinimg.com/originals/a.jpg")
    assert "This looks like an address" in html
    assert "/-/lookup?q=https%3A%2F%2Fi.pinimg.com%2Foriginals%2Fa.jpg" in html


def test_an_image_row_page_names_its_domain_and_hides_the_noise_columns(site, published):
    rowid, url, domain = published.execute(
        "SELECT images.rowid, url, domain.domain FROM images JOIN domain "
        "ON domain.id = images.domain_id WHERE url LIKE 'http%' LIMIT 1 OFFSET 99"
    ).fetchone()
    html = site.get(f"/{DB}/images/{rowid}")
    link = "/-/search?" + urllib.parse.urlencode({"domain": domain})
    assert f'<a href="{link}"><bdi>{domain}</bdi></a>' in html
    assert (
        '<div class="laion-url" style="word-break: break-all; font-size: 0.8em">'
        f"<bdi>{url}</bdi></div>" in (html.replace("&amp;", "&"))
    )
    # The noise columns: hidden by the style sheet the page links, by their cells' classes.
    assert '<link rel="stylesheet" href="/-/laion-row.css">' in html
    css = site.get("/-/laion-row.css")
    for column in ("hash", "__index_level_0__"):
        (cls,) = re.findall(rf'class="(col-[^"]+)" scope="col" data-column="{column}"', html)
        assert f".{cls}" in css and "display: none" in css


@pytest.mark.parametrize(
    "first",
    [
        "laion_pipeline.serve.plugin",
        "laion_pipeline.serve.views",
        "datasette.app",
        "datasette.plugins",
        "datasette.views.table",
    ],
)
def test_the_plugin_has_every_hook_whatever_is_imported_first(first):
    """Datasette loads its plugins as it is imported: whichever module a script imports
    first (the plugin, a module of the site, or Datasette), the plugin is registered whole."""
    code = (
        f"import {first}\n"
        "import laion_pipeline.serve.plugin as plugin\n"
        "from datasette.plugins import pm\n"
        "print(sorted(h.name for h in pm.get_hookcallers(plugin)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    for hook in ("asgi_wrapper", "register_routes", "render_cell", "startup", "prepare_connection"):
        assert hook in done.stdout, (hook, done.stdout)


@pytest.mark.fast
def test_a_template_dir_overrides_the_sites_pages(tmp_path):
    """The site's pages are templates Datasette's loader finds: `datasette --template-dir`
    with a file of the same name replaces one, as it does Datasette's own pages."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "laion_lookup.html").write_text(
        "<p>Our own lookup page: at least {{ min_chars }} characters of a host.</p>"
    )
    plain = asyncio.run(Datasette([]).client.get("/-/lookup"))
    assert plain.status_code == 200 and "Is your work in it" in plain.text
    ours = Datasette([], template_dir=str(tmp_path / "templates"))
    page = asyncio.run(ours.client.get("/-/lookup"))
    assert page.status_code == 200
    assert page.text.startswith("<p>Our own lookup page: at least 3 characters of a host.</p>")


@pytest.mark.fast
def test_controls_are_shown_and_a_host_that_reorders_itself_is_isolated_and_flagged():
    from laion_pipeline.serve.render import shown, url_cell, visible

    assert visible("plain caption") == "plain caption"
    assert visible("a\tb\x00c\x7f") == "a\u2409b\u2400c\u2421"
    host = "evil\u202eelpmaxe.com"  # shows as "evilexample.com" reversed in a browser
    html = str(shown(host))
    assert "\u202e" not in html and "&lt;U+202E&gt;" in html
    assert html.startswith("<bdi>") and "reorder" in html
    assert str(shown("example.com")) == "<bdi>example.com</bdi>"
    cell = str(url_cell("https://x.example/\u202egpj.exe"))
    assert 'href="https://x.example/\u202egpj.exe"' in cell  # the link is the URL itself
    assert "&lt;U+202E&gt;gpj.exe</bdi>" in cell  # the text shows the override
    caption = str(marked_caption("oil\x1b[31m painting", "\x01oil\x02\x1b[31m painting"))
    assert "\x1b" not in caption and caption == "<mark>oil</mark>\u241b[31m painting"


def test_the_search_pages_examples_come_from_the_release_and_each_finds_images(site, sample_build):
    examples = json.loads(sample_build.manifest_json.read_text())["search_examples"]
    assert len(examples) == 4 and examples[-1].startswith('"')  # three words and a phrase
    page = site.get("/-/search")
    for example in examples:
        assert f"?{urllib.parse.urlencode({'q': example})}" in page.replace("&amp;", "&")
        assert site.json("/-/search.json", q=example)["count"] > 0, example
    assert "oil on canvas" not in page  # no example the release may not hold
