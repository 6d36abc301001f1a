"""Shards: the staged files grouped into parts of at most LAION_SHARD_ROWS rows, each built on
its own, and the catalog's totals summed over them, exactly what one database of the whole
release holds (the bundled sample, staged for real, built as 1 shard and as several)."""

import asyncio
import itertools
import shutil
import sqlite3
import threading

import pytest

from benchmarks.synthetic import sample_entity_names
from laion_pipeline.build.plan import BuildPlan, plan_shards
from laion_pipeline.build.shards import (
    build_shard,
    catalog_domains,
    count_phrase_in_shards,
    make_shards,
)
from laion_pipeline.build.tables import count_phrase
from laion_pipeline.common.layout import SAMPLE_DIR, DataLayout
from laion_pipeline.common.phrases import laion_match
from laion_pipeline.releases.lock import data_dir_lock
from laion_pipeline.search.shard_search import SearchedShard, search_page
from laion_pipeline.sources.ingest import stage_file
from laion_pipeline.sources.inputs import StagedFile
from laion_pipeline.sources.profiles import choose_profile

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> list[StagedFile]:
    """The sample's 7 files staged with the 6plus profile, in listing order."""
    folder = tmp_path_factory.mktemp("staged")
    profile = choose_profile(None, "sample", None, {})
    files = []
    for raw in sorted((SAMPLE_DIR / "data").glob("*.parquet")):
        target = folder / raw.name
        rows = stage_file(raw, raw.name, profile, target)
        stat = target.stat()
        files.append(
            StagedFile(
                raw.name, str(target), stat.st_size, stat.st_mtime_ns, rows.rows_kept,
                rows.rows_read, "0" * 64, "v1", profile.digest,
            )
        )  # fmt: skip
    return files


@pytest.fixture(scope="module")
def shard_databases(staged, tmp_path_factory):
    """The sample built as shards of at most ``max_rows`` rows, once per module."""
    folder, built = tmp_path_factory.mktemp("shards"), {}

    def databases(max_rows: int) -> list[sqlite3.Connection]:
        if max_rows not in built:
            built[max_rows] = []
            for shard in plan_shards(staged, max_rows):
                db = folder / f"{max_rows}-{shard.key}.db"
                assert build_shard(shard, db).rows == shard.rows
                built[max_rows].append(sqlite3.connect(db))
        return built[max_rows]

    return databases


def test_files_are_grouped_in_order_up_to_the_row_limit(staged):
    assert [f.rows for f in staged] == [1000] * 7
    assert [len(s.files) for s in plan_shards(staged, 20_000_000)] == [7]
    assert [len(s.files) for s in plan_shards(staged, 2500)] == [2, 2, 2, 1]
    assert [len(s.files) for s in plan_shards(staged, 10)] == [1] * 7  # a big file alone
    shards = plan_shards(staged, 2500)
    assert [s.key for s in shards] == ["shard-00000", "shard-00001", "shard-00002", "shard-00003"]
    assert [(s.first_rowid, s.last_rowid) for s in shards] == [
        (1, 2000),
        (2001, 4000),
        (4001, 6000),
        (6001, 7000),
    ]
    assert [f for s in shards for f in s.files] == staged
    (empty,) = plan_shards([], 2500)
    assert (empty.files, empty.rows) == ((), 0)
    with pytest.raises(ValueError, match="at least 1"):
        plan_shards(staged, 0)


def test_a_shard_changes_version_only_when_its_files_or_its_start_change(staged):
    before = plan_shards(staged, 2500)
    changed = [*staged[:4], StagedFile(**{**staged[4].__dict__, "sha256": "1" * 64}), *staged[5:]]
    after = plan_shards(changed, 2500)
    assert [a.data_version == b.data_version for a, b in zip(before, after, strict=True)] == [
        True,
        True,
        False,
        True,
    ]


@pytest.mark.parametrize("max_rows, count", [(2500, 4), (1000, 7)])
def test_the_catalog_of_several_shards_is_the_one_database_of_the_whole_release(
    shard_databases, max_rows, count
):
    (whole,) = shard_databases(20_000_000)
    shards = shard_databases(max_rows)
    assert len(shards) == count

    # Domains: the same ids, names and counts as one database gives them.
    assert catalog_domains(shards) == whole.execute("SELECT * FROM domain ORDER BY id").fetchall()
    # Every name's count, summed over the shards.
    for name in sample_entity_names():
        assert count_phrase_in_shards(shards, name) == count_phrase(whole, name), name
    # The images, shard after shard, are the release's rows in its order, each with its host.
    rows_sql = (
        "SELECT images.rowid, url, text, aesthetic, domain.domain FROM images "
        "JOIN domain ON domain.id = images.domain_id ORDER BY images.rowid"
    )
    assert [r for conn in shards for r in conn.execute(rows_sql)] == whole.execute(
        rows_sql
    ).fetchall()
    # A search asked of the shards in order finds the rows the one index finds, in order.
    search = "SELECT rowid FROM images_fts WHERE images_fts MATCH ? ORDER BY rowid"
    for q in ("the", '"Alphonse Mucha"', "painting"):
        found = [r for conn in shards for (r,) in conn.execute(search, (laion_match(q),))]
        assert found == [r for (r,) in whole.execute(search, (laion_match(q),))], q
        assert found, q


def searched(connections: list[sqlite3.Connection]) -> list[SearchedShard]:
    """The shards as the search walks them, each query run on its plain connection."""
    shards = []
    for number, conn in enumerate(connections):

        async def run(fn, conn=conn):
            return fn(conn)

        (last,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM images").fetchone()
        shards.append(SearchedShard(f"shard-{number:05d}", last, run))
    return shards


def every_page(shards: list[SearchedShard], q: str, cap: int) -> tuple[list[dict], list[int]]:
    rows, counts, after = [], [], 0
    while True:
        page = asyncio.run(search_page(shards, q, after, limit=50, cap=cap))
        rows += page.rows
        counts.append((page.count, page.more_than_count))
        if page.next_after is None:
            return rows, counts
        after = page.next_after


@pytest.mark.parametrize("q", ["the", '"Alphonse Mucha"', "painting", "zzzznothing"])
def test_a_search_pages_across_shards_as_through_one_database(shard_databases, q):
    whole = searched(shard_databases(20_000_000))
    shards = searched(shard_databases(1000))
    one_rows, one_counts = every_page(whole, q, cap=100_000)
    rows, counts = every_page(shards, q, cap=100_000)
    assert [{k: v for k, v in r.items() if k != "shard"} for r in rows] == [
        {k: v for k, v in r.items() if k != "shard"} for r in one_rows
    ]
    assert [r["rowid"] for r in rows] == sorted(r["rowid"] for r in rows)
    # Each row is said to come from the shard that holds its rowid.
    assert all(int(r["shard"][-5:]) == (r["rowid"] - 1) // 1000 for r in rows)
    assert set(counts) == set(one_counts) == {(len(one_rows), False)}
    if q == "the":
        assert len(rows) > 1000  # many pages, over every shard boundary
        # Counted no further than the cap: the same answer for one database and for shards.
        capped = asyncio.run(search_page(shards, q, cap=100))
        assert (capped.count, capped.more_than_count) == (100, True)
        assert capped.rows == asyncio.run(search_page(shards, q, cap=100_000)).rows
    if q == "zzzznothing":
        assert rows == [] and counts == [(0, False)]


def pages_forward(shards: list[SearchedShard], q: str, host: str | None = None) -> list:
    pages, after = [], 0
    while True:
        page = asyncio.run(search_page(shards, q, after, limit=50, host=host))
        pages.append(page)
        if page.next_after is None:
            return pages
        after = page.next_after


@pytest.mark.parametrize("host", [None, "i.pinimg.com"])
@pytest.mark.parametrize("max_rows", [20_000_000, 1000])
def test_the_previous_page_is_the_page_before_over_shards_and_one_database(
    shard_databases, max_rows, host
):
    shards = searched(shard_databases(max_rows))
    forward = pages_forward(shards, "the", host=host)
    assert len(forward) > 3
    assert forward[0].previous_before is None  # the first page has none
    for earlier, later in itertools.pairwise(forward):
        # Each page's previous link leads to the page before it, with the same links.
        assert later.previous_before == later.rows[0]["rowid"]
        back = asyncio.run(
            search_page(shards, "the", before=later.previous_before, limit=50, host=host)
        )
        assert back.rows == earlier.rows
        assert (back.next_after, back.previous_before) == (
            earlier.next_after,
            earlier.previous_before,
        )
        assert (back.count, back.more_than_count) == (earlier.count, earlier.more_than_count)
    # Paging forward from a page reached backwards goes on as before.
    again = asyncio.run(search_page(shards, "the", forward[1].next_after, limit=50, host=host))
    assert again.rows == forward[2].rows


def test_a_page_past_every_match_links_back_to_the_last_matches(shard_databases):
    shards = searched(shard_databases(1000))
    last = pages_forward(shards, '"Alphonse Mucha"')[-1]
    beyond = asyncio.run(search_page(shards, '"Alphonse Mucha"', after=10**9))
    assert beyond.rows == [] and beyond.next_after is None
    back = asyncio.run(search_page(shards, '"Alphonse Mucha"', before=beyond.previous_before))
    assert back.rows[-1] == last.rows[-1]


def test_the_one_shard_is_built_under_the_data_folders_lock(tmp_path, sample_build):
    """The one shard's temporaries are the build database's (``<db>.new``, the side index),
    which any holder of the data folder's lock deletes as an interrupted run's: its build
    waits for that lock rather than have them deleted under it."""
    data = tmp_path / "data"
    shutil.copytree(sample_build.root, data, symlinks=True)
    layout = DataLayout(data)
    plan = BuildPlan.of_staged(layout)
    assert plan.catalog_in_shard
    done: list = []
    with data_dir_lock(layout):
        builder = threading.Thread(
            target=lambda: done.append(
                make_shards(plan, plan.shards, images=True, index=True, workers=1, log=None)
            )
        )
        builder.start()
        builder.join(2)
        assert builder.is_alive() and not done  # waiting for the lock
        assert not list(layout.build_db.parent.glob("*.new*"))
    builder.join(120)
    assert done and done[0][0].loaded
