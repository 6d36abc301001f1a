"""The bundled sample built through every asset: each table and count checked independently."""

import hashlib
import json
import sqlite3
import struct
from collections import Counter
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasette.utils import detect_fts

from benchmarks.synthetic import read_names
from laion_pipeline.common.layout import ENTITY_KINDS, SAMPLE_DIR
from laion_pipeline.common.schema import IMAGE_COLUMNS
from laion_pipeline_tests.conftest import phrase_count


@pytest.fixture(scope="module")
def source_rows() -> list[dict]:
    files = sorted((SAMPLE_DIR / "data").glob("*.parquet"))
    return pa.concat_tables(pq.read_table(f) for f in files).to_pylist()


def as_float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def test_images_hold_every_parquet_row_in_file_order(published, source_rows):
    rows = published.execute(
        "SELECT rowid, url, text, width, height, similarity, punsafe, pwatermark, aesthetic, "
        "hash, __index_level_0__ FROM images ORDER BY rowid"
    ).fetchall()
    assert len(rows) == len(source_rows) == 7_000
    for (rowid, url, text, width, height, sim, unsafe, mark, aes, hash_, index), src in zip(
        rows, source_rows, strict=True
    ):
        assert url == src["URL"] and text == src["TEXT"], rowid
        for stored, original in ((width, src["WIDTH"]), (height, src["HEIGHT"])):
            if original is None or original != original:  # null or NaN
                assert stored is None
            else:
                assert stored == int(original)
        assert sim == src["similarity"]
        for stored, original in (
            (unsafe, src["punsafe"]),
            (mark, src["pwatermark"]),
            (aes, src["AESTHETIC_SCORE"]),
        ):
            assert (stored is None) == (original is None)
            if stored is not None:
                assert as_float32(stored) == original
                assert len(repr(stored)) <= 14, "float32 values are stored as their short decimal"
        assert hash_ == str(src["hash"])
        assert index == src["__index_level_0__"]


def test_images_schema_matches_the_contract(published):
    columns = published.execute("SELECT name, type FROM pragma_table_info('images')").fetchall()
    assert columns == [(name, sql_type) for name, (sql_type, _) in IMAGE_COLUMNS.items()]
    assert published.execute("SELECT DISTINCT typeof(hash) FROM images").fetchall() == [("text",)]
    foreign_keys = published.execute(
        'SELECT "table", "from", "to" FROM pragma_foreign_key_list(\'images\')'
    ).fetchall()
    assert foreign_keys == [("domain", "domain_id", "id")]
    indexed = published.execute("SELECT il.name FROM pragma_index_list('images') il").fetchall()
    assert ("idx_images_domain_id",) in indexed


def test_domain_counts_match_python_urlparse(published, source_rows):
    expected = Counter(
        urlparse(r["URL"]).netloc if r["URL"] is not None else "" for r in source_rows
    )
    found = dict(published.execute("SELECT domain, image_counts FROM domain").fetchall())
    assert found == dict(expected)
    top = published.execute(
        "SELECT domain FROM domain ORDER BY image_counts DESC LIMIT 1"
    ).fetchone()
    assert top == ("i.pinimg.com",)
    per_row = published.execute(
        "SELECT d.domain FROM images i JOIN domain d ON d.id = i.domain_id ORDER BY i.rowid"
    ).fetchall()
    assert [d for (d,) in per_row] == [
        urlparse(r["URL"]).netloc if r["URL"] is not None else "" for r in source_rows
    ]


def test_domain_table_schema(published):
    columns = published.execute("SELECT name, type, pk FROM pragma_table_info('domain')").fetchall()
    assert columns == [("id", "INTEGER", 1), ("domain", "TEXT", 0), ("image_counts", "INTEGER", 0)]


def test_full_text_search_is_an_external_content_fts5_index_datasette_detects(
    published, source_rows
):
    (sql,) = published.execute("SELECT sql FROM sqlite_master WHERE name = 'images_fts'").fetchone()
    assert 'content="images"' in sql and "fts5" in sql.lower() and "detail" not in sql
    assert detect_fts(published, "images") == "images_fts"
    captions = [r["TEXT"] for r in source_rows]
    for word in ("painting", "Mucha", "portrait of", "the"):
        (count,) = published.execute(
            "SELECT count(*) FROM images_fts WHERE images_fts MATCH ?", (f'"{word}"',)
        ).fetchone()
        assert count == phrase_count(captions, word) > 0, word


@pytest.mark.parametrize("kind", ENTITY_KINDS)
def test_entity_counts_match_an_independent_phrase_count(published, source_rows, kind):
    captions = [r["TEXT"] for r in source_rows]
    rows = published.execute(f"SELECT name, image_counts FROM {kind}").fetchall()
    assert [name for name, _ in rows] == read_names(SAMPLE_DIR / f"{kind}.csv")
    for name, count in rows:
        assert count == phrase_count(captions, name), name
    assert sum(count for _, count in rows) > 0
    columns = [c for (c,) in published.execute(f"SELECT name FROM pragma_table_info('{kind}')")]
    assert columns[0] == "name" and columns[-1] == "image_counts" and len(columns) == 3


def test_published_files_describe_the_database(sample_build, published):
    manifest = json.loads(sample_build.manifest_json.read_text())
    data = sample_build.published_db.read_bytes()
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["row_counts"]["images"] == 7_000
    for table, count in manifest["row_counts"].items():
        assert published.execute(f"SELECT count(*) FROM {table}").fetchone() == (count,)
    assert manifest["source"]["kind"] == "sample"
    assert set(manifest["entity_csvs"]) == set(ENTITY_KINDS)

    inspect = json.loads(sample_build.inspect_json.read_text())["laion-aesthetic-6pls"]
    assert inspect["hash"] == manifest["sha256"]
    assert inspect["tables"]["images"]["count"] == 7_000
    assert inspect["tables"]["domain"]["count"] == manifest["row_counts"]["domain"]

    metadata = json.loads(sample_build.metadata_json.read_text())
    tables = metadata["databases"]["laion-aesthetic-6pls"]["tables"]
    assert tables["domain"]["label_column"] == "domain"
    assert metadata["license"] and metadata["source"]


def test_published_database_passes_integrity_check_and_nothing_is_left_over(
    sample_build, published
):
    assert published.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    leftovers = [p.name for p in sample_build.published_dir.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_fts_index_agrees_with_its_content(sample_build):
    conn = sqlite3.connect(sample_build.published_db)
    try:
        # FTS5's own check that the index matches the external content table.
        conn.execute("INSERT INTO images_fts (images_fts, rank) VALUES ('integrity-check', 1)")
    finally:
        conn.close()
