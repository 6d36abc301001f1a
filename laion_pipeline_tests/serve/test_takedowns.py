"""Takedowns at serving (``LAION_BLOCKLIST``), on a real server: a listed image (by its URL,
its hash or its website) is on no page and in no export, open SQL included; a list changed
while the server runs is in force at the next request; ``LAION_THUMBNAILS=no`` links the
images without loading them."""

import json
import sqlite3
import time
import urllib.parse

from laion_pipeline.common.layout import DataLayout
from laion_pipeline_tests.datasette_site import DB, SQL_PATH, served


def sql(query: str) -> str:
    return f"{SQL_PATH}?" + urllib.parse.urlencode({"sql": query, "_size": "max"})


def a_word_of(caption: str) -> str:
    return max(caption.split(), key=len).strip(".,;:!?()\"'")


def test_a_taken_down_image_is_on_no_page_and_in_no_export(tmp_path, sample_build: DataLayout):
    conn = sqlite3.connect(f"{sample_build.published_db.as_uri()}?mode=ro", uri=True)
    by_url, by_hash, later = conn.execute(
        "SELECT rowid, url, hash, text FROM images WHERE text LIKE '% %' ORDER BY rowid "
        "LIMIT 3 OFFSET 100"
    ).fetchall()
    hashed_later = conn.execute(
        "SELECT rowid, url, hash FROM images ORDER BY rowid LIMIT 1 OFFSET 200"
    ).fetchone()
    # A website of a few images, listed by its parent domain (its subdomains go with it).
    host, host_images = conn.execute(
        "SELECT domain, image_counts FROM domain WHERE domain LIKE 'www.%' "
        "AND image_counts BETWEEN 2 AND 20 ORDER BY id LIMIT 1"
    ).fetchone()
    of_host = [
        r[0]
        for r in conn.execute(
            "SELECT url FROM images JOIN domain ON domain.id = images.domain_id WHERE domain = ?",
            (host,),
        )
    ]
    conn.close()
    assert len(of_host) == host_images
    website = host.removeprefix("www.")
    listed = tmp_path / "takedowns.txt"
    listed.write_text(
        f"# asked by email, 2026-12-08\n{by_url[1]}\nhash {by_hash[2]}\nhost {website}\n"
    )
    gone = [by_url[1], by_hash[1], *of_host]

    # Without the list, the export holds every one of them and their pages are there.
    with served(sample_build.root) as site:
        _, _, body = site.ask(f"/{DB}/images.csv?_stream=on&_size=max")
        assert all(url in body.decode() for url in gone)
        assert site.ask(f"/{DB}/images/{by_url[0]}.json")[0] == 200

    env = {"LAION_BLOCKLIST": str(listed), "LAION_THUMBNAILS": "no"}
    with served(sample_build.root, env) as site:
        pages = [
            f"/-/search.json?q={urllib.parse.quote(a_word_of(by_url[3]))}",
            f"/-/search?q={urllib.parse.quote(a_word_of(by_hash[3]))}",
            f"/-/search.json?domain={host}",
            f"/-/lookup?q={urllib.parse.quote(website)}",
            f"/-/lookup.json?q={urllib.parse.quote(website)}",
            f"/{DB}/images.csv?_stream=on&_size=max",
            f"/{DB}/images.json?_size=max&_shape=array",
            f"/{DB}/images?_size=max",
            f"/{DB}/images.json?_facet=url&_size=0",
            f"/{DB}/domain.json?_size=max&_shape=array",
            f"/{DB}/images/{by_url[0]}",
            f"/{DB}/images/{by_hash[0]}.json",
            sql(f"select url, hash from images where rowid in ({by_url[0]}, {by_hash[0]})"),
            sql("select url from images"),
        ]
        for path in pages:
            status, _, body = site.ask(path)
            text = body.decode()
            assert status in (200, 404), (path, status, text[:300])
            for url in gone:
                shown = (url, json.dumps(url)[1:-1], urllib.parse.quote(url, safe=""))
                assert not any(s in text for s in shown), (path, url)
            assert f"{by_hash[2]}" not in text, path
        # Looked up by its URL (which the answer repeats as the question): not found.
        _, _, body = site.ask(f"/-/lookup.json?q={urllib.parse.quote(by_url[1])}")
        assert json.loads(body)["images"] == []
        # Each listed row's own page says it is not there.
        assert site.ask(f"/{DB}/images/{by_url[0]}")[0] == 404
        # The rest of the release is served as it was.
        status, _, body = site.ask(sql(f"select url from images where rowid = {later[0]}"))
        assert status == 200 and later[1] in body.decode()
        # Without thumbnails: the images are links, never loaded by the visitor's browser.
        _, _, body = site.ask(f"/-/search?q={urllib.parse.quote(a_word_of(later[3]))}")
        assert later[1].split("/")[2] in body.decode() and "<img" not in body.decode()
        _, _, body = site.ask(f"/{DB}/images?_size=20")
        assert "<img" not in body.decode()

        # A takedown added while the server runs is in force at the next request.
        row_page = f"/{DB}/images/{later[0]}.json"
        assert site.ask(row_page)[0] == 200
        time.sleep(1.1)  # the file is looked at once a second
        listed.write_text(listed.read_text() + f"{later[1]}\n")
        status, _, body = site.ask(row_page)
        assert status == 404, body[:300]
        status, _, body = site.ask(sql(f"select url from images where rowid = {later[0]}"))
        assert later[1] not in body.decode()

        # A hash added while it runs: its image is found in the release in the background
        # (a scan: seconds at 12M rows), then left out of pages that do not show the hash.
        by_url_only = sql(f"select url from images where rowid = {hashed_later[0]}")
        assert hashed_later[1] in site.ask(by_url_only)[2].decode()
        time.sleep(1.1)
        listed.write_text(listed.read_text() + f"hash {hashed_later[2]}\n")
        deadline = time.monotonic() + 30
        while hashed_later[1] in site.ask(by_url_only)[2].decode():
            assert time.monotonic() < deadline, "the hash's image was never found"
            time.sleep(0.2)
