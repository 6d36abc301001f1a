"""The build database's life: a fresh file per full build, published by hard link, and never
written again once published; the caption index rebuilt alone when asked."""

import sqlite3

from laion_pipeline.common.layout import DataLayout
from laion_pipeline_tests.conftest import build


def test_publishing_links_and_later_writes_leave_the_published_file_alone(tmp_path):
    assert build(tmp_path).success
    layout = DataLayout(tmp_path.resolve())
    published = layout.published_db.stat()
    assert published.st_ino == layout.build_db.stat().st_ino  # published by hard link
    before = layout.published_db.read_bytes()

    edited = tmp_path / "artists.csv"
    edited.write_text("name\nAlphonse Mucha\nNobody Here\n")
    refresh = build(
        tmp_path, {"LAION_ARTISTS_CSV_URL": str(edited)}, selection=["entity_csvs", "artists"]
    )
    assert refresh.success
    assert layout.published_db.read_bytes() == before
    assert layout.build_db.stat().st_ino != published.st_ino
    conn = sqlite3.connect(layout.build_db)
    assert conn.execute("SELECT name FROM artists").fetchall() == [
        ("Alphonse Mucha",),
        ("Nobody Here",),
    ]
    assert not list(layout.build_db.parent.glob("*.copy"))


def test_publishing_again_without_changes_copies_nothing(tmp_path):
    assert build(tmp_path).success
    layout = DataLayout(tmp_path.resolve())
    inode = layout.published_db.stat().st_ino
    assert build(tmp_path, selection=["published_database"]).success
    assert layout.build_db.stat().st_ino == layout.published_db.stat().st_ino == inode


def test_the_caption_index_alone_is_rebuilt_in_place(tmp_path):
    assert build(tmp_path).success
    layout = DataLayout(tmp_path.resolve())
    conn = sqlite3.connect(layout.build_db)
    query = "SELECT count(*) FROM images_fts WHERE images_fts MATCH 'painting'"
    (before,) = conn.execute(query).fetchone()
    conn.close()
    assert build(tmp_path, selection=["images_fts"]).success
    conn = sqlite3.connect(layout.build_db)
    conn.execute("INSERT INTO images_fts (images_fts, rank) VALUES ('integrity-check', 1)")
    assert conn.execute(query).fetchone() == (before,)
    assert not layout.build_db.with_name("images_fts.side.db").exists()


def test_a_full_build_starts_a_fresh_file_without_leftovers(tmp_path):
    assert build(tmp_path).success
    layout = DataLayout(tmp_path.resolve())
    stale_wal = layout.build_db.with_name(layout.build_db.name + "-wal")
    stale_wal.write_bytes(b"left by a crash")
    assert build(tmp_path).success
    assert not stale_wal.exists()
    names = sorted(p.name for p in layout.build_db.parent.iterdir() if p.suffix != ".lock")
    assert names == [layout.build_db.name]  # the shard's lock file stays, as every lock


def test_a_failing_index_process_fails_the_step_with_its_error(tmp_path):
    import pytest

    from laion_pipeline.build.fts import SideIndex

    side = SideIndex(tmp_path / "side.db", "CREATE VIEW staging_images AS SELECT nonsense")
    with pytest.raises(RuntimeError, match=r"building the caption index failed: .*nonsense"):
        side.finish()
    assert not (tmp_path / "side.db.sql").exists()
