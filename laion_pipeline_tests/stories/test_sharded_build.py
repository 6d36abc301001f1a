"""The whole pipeline with several shards (`LAION_SHARD_ROWS`): each shard a partition of
images and images_fts, the catalog summed over them, one release of every file; the same
counts and the same search results as the one-database build of the same files."""

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import urllib.parse
from html import escape as html_escape
from pathlib import Path

import pytest
from dagster import DagsterInstance

from benchmarks.bench import SEARCH_MARKER
from laion_pipeline.build.publish import publish, release_problems
from laion_pipeline.build.seal import prepare, seal, valid_seal
from laion_pipeline.common.errors import PublishCheckError
from laion_pipeline.common.files import sha256_file
from laion_pipeline.common.layout import DataLayout, ReleaseFiles
from laion_pipeline.releases.lock import data_dir_lock
from laion_pipeline.releases.switch import current_release, pointed_release
from laion_pipeline_tests.conftest import build, connected_databases
from laion_pipeline_tests.datasette_site import in_process

NAME_TABLES = ("artists", "celebrities", "characters")

PROJECT = Path(__file__).resolve().parents[2]


def rows(db, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def seven_shards(tmp_path_factory) -> tuple[DataLayout, DagsterInstance, list]:
    """The sample (7 files of 1,000 rows) built with at most 2,500 rows a shard: 4 shards."""
    data_dir = tmp_path_factory.mktemp("sharded")
    instance = DagsterInstance.ephemeral()
    runs: list = []
    result = build(data_dir, {"LAION_SHARD_ROWS": "2500"}, instance=instance, runs=runs)
    assert result.success
    return DataLayout(data_dir.resolve()), instance, runs


def test_each_shard_is_a_partition_built_on_its_own(seven_shards):
    layout, instance, runs = seven_shards
    assert instance.get_dynamic_partitions("shards") == [f"shard-0000{n}" for n in range(4)]
    built = runs[-1]
    for asset in ("images", "images_fts"):
        partitions = {
            e.partition
            for e in built.get_asset_materialization_events()
            if e.asset_key.path == [asset]
        }
        assert partitions == {f"shard-0000{n}" for n in range(4)}, asset
    for n, (first, last) in enumerate([(1, 2000), (2001, 4000), (4001, 6000), (6001, 7000)]):
        db = layout.shard_db(f"shard-0000{n}")
        assert rows(db, "SELECT min(rowid), max(rowid), count(*) FROM images") == [
            (first, last, last - first + 1)
        ]
        (indexed,) = rows(db, "SELECT count(*) FROM images_fts_docsize")
        assert indexed == (last - first + 1,)
    # Every check of the run ran, and passed.
    evaluations = built.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} >= {
        "domain_ids_valid",
        "row_counts_match",
        "caption_index_matches_captions",
    }
    assert all(e.passed for e in evaluations), [e.check_name for e in evaluations if not e.passed]


def test_the_release_holds_the_catalog_and_every_shard_with_the_counts_of_one_database(
    seven_shards, sample_build
):
    layout, _, _ = seven_shards
    release = current_release(layout)
    whole = current_release(sample_build)
    manifest = json.loads(release.manifest_json.read_text())
    assert [s["key"] for s in manifest["shards"]] == [f"shard-0000{n}" for n in range(4)]
    assert [p.name for p in release.databases] == [
        "laion-aesthetic-6pls.db",
        *(f"laion-aesthetic-6pls-shard-0000{n}.db" for n in range(4)),
    ]
    assert manifest["row_counts"] == json.loads(whole.manifest_json.read_text())["row_counts"]
    assert release_problems(release) == []
    # The catalog: the domains and the names with exactly the one database's ids and counts.
    for table in ("domain", *NAME_TABLES):
        sql = f"SELECT * FROM {table} ORDER BY rowid"
        assert rows(release.db, sql) == rows(whole.db, sql), table
    assert rows(release.db, "SELECT key, first_rowid, last_rowid, images FROM shards") == [
        ("shard-00000", 1, 2000, 2000),
        ("shard-00001", 2001, 4000, 2000),
        ("shard-00002", 4001, 6000, 2000),
        ("shard-00003", 6001, 7000, 1000),
    ]
    # The images, shard after shard, are the one database's, each with its host's name.
    images = (
        "SELECT images.rowid, url, text, aesthetic, domain.domain FROM images "
        "JOIN domain ON domain.id = images.domain_id ORDER BY images.rowid"
    )
    assert [r for db in release.databases[1:] for r in rows(db, images)] == rows(whole.db, images)
    # The report: the same numbers as the one database's, but for the release's own id.
    analysis = json.loads((release.report_dir / "analysis.json").read_text())
    one = json.loads((whole.report_dir / "analysis.json").read_text())
    assert analysis["named_images"] == one["named_images"]
    assert analysis["top_domains"] == one["top_domains"]
    inspect = json.loads(release.inspect_json.read_text())
    assert sorted(inspect) == sorted(p.stem for p in release.databases)


async def every_page(ds, **asked) -> tuple[list[dict], set[tuple[int, bool]]]:
    """Every page of the fast search over the served release, following its next links."""
    rows, counts, url = [], set(), "/-/search.json?" + urllib.parse.urlencode(asked)
    while url:
        page = (await ds.client.get(url)).json()
        rows += page["rows"]
        counts.add((page["count"], page["more_than_count"]))
        url = page["next_url"] and page["next_url"].replace("/-/search?", "/-/search.json?")
    return rows, counts


def without_shard(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "shard"} for r in rows]


@pytest.mark.parametrize("q", ["the", '"Alphonse Mucha"', "painting", "zzzznothing"])
def test_the_site_searches_every_shard_as_one_database(seven_shards, sample_build, q):
    layout, _, _ = seven_shards

    async def search():
        sharded, whole = in_process(layout), in_process(sample_build)
        return await every_page(sharded, q=q), await every_page(whole, q=q)

    (rows, counts), (one_rows, one_counts) = asyncio.run(search())
    assert without_shard(rows) == without_shard(one_rows)
    assert counts == one_counts
    if q == "the":
        assert len(rows) > 2000 and len({r["shard"] for r in rows}) == 4  # every boundary
    assert {r["shard"] for r in one_rows} <= {"laion-aesthetic-6pls"}


def test_the_site_serves_the_catalog_and_every_shard(seven_shards):
    layout, _, _ = seven_shards

    async def pages():
        ds = in_process(layout)
        databases = connected_databases((await ds.client.get("/-/databases.json")).json())
        shard = await ds.client.get("/laion-aesthetic-6pls-shard-00001/images.json?_shape=objects")
        domain = await ds.client.get("/laion-aesthetic-6pls/domain?_sort_desc=image_counts")
        top = (
            await ds.client.get(
                "/laion-aesthetic-6pls/domain.json?_shape=objects&_size=1&_sort_desc=image_counts"
            )
        ).json()["rows"][0]
        host_rows, host_counts = await every_page(ds, domain=top["domain"])
        artists = await ds.client.get("/laion-aesthetic-6pls/artists")
        index = await ds.client.get("/")
        html = await ds.client.get("/-/search?q=painting")
        return databases, shard, domain, top, host_rows, host_counts, artists, index, html

    databases, shard, domain, top, host_rows, host_counts, artists, index, html = asyncio.run(
        pages()
    )
    assert [d["name"] for d in databases] == [
        "laion-aesthetic-6pls",
        *(f"laion-aesthetic-6pls-shard-0000{n}" for n in range(4)),
    ]
    first = shard.json()["rows"][0]
    assert first["rowid"] == 2001 and "hash" not in first  # the noise columns hidden there too
    # A host links to its images in every shard: all of them, in release order.
    link = "/-/search?" + urllib.parse.urlencode({"domain": top["domain"]})
    assert html_escape(link) in domain.text
    assert host_counts == {(top["image_counts"], False)}
    assert len(host_rows) == top["image_counts"]
    assert {r["domain"] for r in host_rows} == {top["domain"]}
    assert [r["rowid"] for r in host_rows] == sorted(r["rowid"] for r in host_rows)
    # A name links to its search over every shard; the index page to the search and images.
    assert "/-/search?q=%22" in artists.text
    assert 'href="/-/search"' in index.text
    assert 'href="/laion-aesthetic-6pls-shard-00000/images"' in index.text
    assert html.status_code == 200 and "712 images with these words in the caption" in html.text


class Lines:
    """A log that keeps what it is told (``info``), as the step's logger would show it."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)


def test_each_shard_is_sealed_by_its_own_build_and_the_release_takes_its_word(seven_shards):
    layout, _, _ = seven_shards
    release = current_release(layout)
    manifest = json.loads(release.manifest_json.read_text())
    for entry in manifest["shards"]:
        built = layout.shard_db(entry["key"])
        sealed = valid_seal(built)
        assert sealed is not None, entry["key"]
        assert sealed.integrity_check == "ok"
        assert sealed.sha256 == sha256_file(built) == entry["sha256"]
        assert entry["seal"] == sealed.as_dict()
        assert sealed.holds_for(release.shard_db(entry["key"]))  # the same file, linked
        # Analyzed by its build: the query planner's statistics are in the file.
        assert rows(built, "SELECT count(*) FROM sqlite_stat1") != [(0,)]
    log = Lines()
    assert release_problems(release, log) == []
    assert not any("integrity_check on" in line and "-shard-" in line for line in log.lines)
    assert any("4 shard files unchanged" in line for line in log.lines), log.lines
    full = Lines()
    assert release_problems(release, full, full=True) == []
    assert sum("integrity_check on" in line for line in full.lines) == 5


def flip_a_byte_in_a_caption(db) -> None:
    """Change one byte of a caption inside the file, in place (same size, new modification
    time): what a stray write does."""
    data = db.read_bytes()
    at = data.index(b"painting")
    with db.open("r+b") as f:
        f.seek(at)
        f.write(b"P")


def test_a_shard_file_changed_since_its_seal_is_read_in_full(seven_shards, tmp_path):
    layout, _, _ = seven_shards
    release = current_release(layout)
    copy = tmp_path / release.folder.name
    shutil.copytree(release.folder, copy)  # new files: no seal holds for them
    copied = ReleaseFiles(copy)
    log = Lines()
    assert release_problems(copied, log) == []
    assert sum("integrity_check on" in line for line in log.lines) == 5
    flip_a_byte_in_a_caption(copied.shard_db("shard-00002"))
    problems = release_problems(copied)
    assert any("shard-00002.db: sha256 is" in p for p in problems), problems


def test_a_shard_changed_after_its_build_is_checked_again_by_the_publish(seven_shards, tmp_path):
    layout = DataLayout(tmp_path / "data")
    shutil.copytree(seven_shards[0].root, layout.root, symlinks=True)
    shard = layout.shard_db("shard-00001")
    # The copy's files are not the ones sealed: the publish reads each (quick_check, sha256),
    # and the manifest records no seal for them.
    with data_dir_lock(layout):
        manifest = publish(layout)
    assert not any("seal" in entry for entry in manifest["shards"])
    assert manifest["shards"][1]["sha256"] == sha256_file(shard)
    # A shard sealed again, then damaged in place: its seal no longer holds, and the publish
    # refuses it instead of taking its word.
    seal(shard, *prepare(shard, "shard-00001"))
    conn = sqlite3.connect(shard)
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    with shard.open("r+b") as f:
        f.seek(page_size * 3)
        f.write(b"\xff" * page_size)
    served = pointed_release(layout, "current")
    with data_dir_lock(layout), pytest.raises(PublishCheckError, match="shard-00001"):
        publish(layout)
    assert pointed_release(layout, "current") == served


def test_a_shard_changed_behind_its_seal_is_refused_by_the_publish(seven_shards, tmp_path):
    """Bytes changed in place with the size and time put back: the seal's identity still
    holds, but the publish hashes what it publishes and refuses it."""
    layout = DataLayout(tmp_path / "data")
    shutil.copytree(seven_shards[0].root, layout.root, symlinks=True)
    shard = layout.shard_db("shard-00003")
    seal(shard, *prepare(shard, "shard-00003"))
    before = shard.stat()
    flip_a_byte_in_a_caption(shard)  # still a whole database: only its hash tells
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert valid_seal(shard) is not None  # the seal still holds by identity
    served = pointed_release(layout, "current")
    with data_dir_lock(layout), pytest.raises(PublishCheckError, match=r"shard-00003.*sha256"):
        publish(layout)
    assert pointed_release(layout, "current") == served


def test_the_search_bench_times_the_site_search_over_every_shard(seven_shards, tmp_path):
    layout, _, _ = seven_shards
    report = tmp_path / "bench.md"
    one = "### Search, 7,000 rows in one database (first page)\n\nkept"
    report.write_text(f"# Benchmarks\n\n{SEARCH_MARKER}\n{one}\n\n{SEARCH_MARKER}\n")
    command = [sys.executable, "-m", "benchmarks.bench_search", "--data", str(layout.root)]
    done = subprocess.run(
        [*command, "--repeats", "2", "--report", str(report)],
        cwd=PROJECT,  # the benchmarks run from a checkout
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = report.read_text()
    # Beside the one database's section; the matches summed over the 4 shards.
    assert one in text
    assert text.count("### Search, 7,000 rows in 4 shards") == 1
    assert "| a rare word | `zorakalo` | 3 | site search |" in text
    assert "| 3,957 | site search |" in text
    assert "Datasette table search" not in text and "| fast search |" not in text


def test_the_lookups_answer_over_shards_as_over_one_database(seven_shards, sample_build):
    layout, _, _ = seven_shards
    # An image in the third shard, by its URL; and a website by part of its name.
    (url,) = rows(layout.shard_db("shard-00002"), "SELECT url FROM images WHERE rowid = 4500")[0]

    async def lookups():
        sharded, whole = in_process(layout), in_process(sample_build)
        answers = []
        for ds in (sharded, whole):
            by_url = await ds.client.get("/-/lookup.json?" + urllib.parse.urlencode({"q": url}))
            by_host = await ds.client.get("/-/lookup.json?q=123rf")
            answers.append((by_url.json(), by_host.json()))
        return answers

    (url_found, host_found), (one_url, one_host) = asyncio.run(lookups())
    assert [r["rowid"] for r in url_found["images"]] == [4500]
    assert url_found["images"][0]["shard"] == "laion-aesthetic-6pls-shard-00002"
    assert without_shard(url_found["images"]) == without_shard(one_url["images"])
    assert host_found["hosts"] == one_host["hosts"] and host_found["hosts"]
