"""A second build publishes the same content; the bundled sample is what its generator makes."""

import sqlite3
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.synthetic import SAMPLE_ROWS, generate, sample_entity_names
from laion_pipeline.common.layout import REPORT_FILES, SAMPLE_DIR, DataLayout
from laion_pipeline.common.schema import LAION_ARROW_SCHEMA
from laion_pipeline_tests.conftest import build


def content(db: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(db)
    try:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        # Every row of every table with its rowid; a WITHOUT ROWID table's in its key order.
        keyed = {n for (n,) in conn.execute("SELECT name FROM pragma_table_list WHERE wr = 1")}
        return {
            t: conn.execute(
                f'SELECT * FROM "{t}"'
                if t in keyed or t.startswith("images_fts")
                else f'SELECT rowid, * FROM "{t}" ORDER BY rowid'
            ).fetchall()
            for t in tables
        }
    finally:
        conn.close()


def test_a_second_run_is_idempotent(tmp_path):
    assert build(tmp_path).success
    layout = DataLayout(tmp_path.resolve())
    first = content(layout.published_db)
    assert build(tmp_path).success
    assert content(layout.published_db) == first
    # current, and previous (the first run's release, for rollback): each a whole release
    assert sorted(p.name for p in layout.published_dir.iterdir()) == [
        "current",
        "previous",
        "releases",
    ]
    assert len(list(layout.releases_dir.iterdir())) == 2
    for release in (layout.current, layout.previous):
        assert sorted(p.name for p in release.folder.iterdir()) == [
            "inspect.json",
            "laion-aesthetic-6pls.db",
            "manifest.json",
            "metadata.json",
            "report",
        ]
        assert sorted(p.name for p in release.report_dir.iterdir()) == sorted(REPORT_FILES)


def test_bundled_sample_is_reproduced_by_its_generator(tmp_path):
    written = generate(tmp_path, SAMPLE_ROWS, names=sample_entity_names())
    bundled = sorted((SAMPLE_DIR / "data").glob("*.parquet"))
    assert [p.name for p in written] == [p.name for p in bundled]
    assert bundled[2].name == "train-00002-of-00007-709151a2715d894d.parquet"
    for new, old in zip(written, bundled, strict=True):
        # repr() compares NaN equal to NaN, as Table.equals does not.
        assert repr(pq.read_table(new).to_pylist()) == repr(pq.read_table(old).to_pylist())
        assert pq.read_schema(old).remove_metadata().equals(LAION_ARROW_SCHEMA)
    assert sum(p.stat().st_size for p in bundled) < 2 * 1024 * 1024
