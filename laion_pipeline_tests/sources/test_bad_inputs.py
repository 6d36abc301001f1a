"""Inputs we do not control: broken or odd parquet files and hand-edited name lists. Each is
loaded correctly or fails with a message naming the file and the problem; a failed run never
changes what is published."""

import csv
import sqlite3
import urllib.parse
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laion_pipeline.common.layout import DataLayout
from laion_pipeline.common.schema import LAION_ARROW_SCHEMA
from laion_pipeline_tests.conftest import build, failure_text, local, phrase_count, row, write


def published_rows(data: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(DataLayout(data.resolve()).published_db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def truncated(path: Path) -> None:
    write(path, [row(i) for i in range(100)])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def not_parquet(path: Path) -> None:
    path.write_text("URL,TEXT\nhttp://a/,b\n")


def missing_column(path: Path) -> None:
    schema = pa.schema([f for f in LAION_ARROW_SCHEMA if f.name != "AESTHETIC_SCORE"])
    write(path, [{k: v for k, v in row(1).items() if k != "AESTHETIC_SCORE"}], schema)


def two_text_columns(path: Path) -> None:
    table = pa.Table.from_pylist([row(1)], LAION_ARROW_SCHEMA)
    pq.write_table(table.append_column("TEXT", pa.array(["another caption"])), path)


def url_and_lower_url(path: Path) -> None:
    table = pa.Table.from_pylist([row(1)], LAION_ARROW_SCHEMA)
    pq.write_table(table.append_column("url", pa.array(["https://other.example/x.jpg"])), path)


def link_to_a_file_of_the_folder(path: Path) -> None:
    path.symlink_to(path.with_name("a.parquet"))


@pytest.mark.parametrize(
    ("make_bad", "problem"),
    [
        (truncated, "is not a readable parquet file"),
        (not_parquet, "is not a readable parquet file"),
        (missing_column, "lacks the LAION columns AESTHETIC_SCORE"),
        (two_text_columns, "has columns of the same name (TEXT and TEXT;"),
        (url_and_lower_url, "has columns of the same name (URL and url;"),
        (link_to_a_file_of_the_folder, "is the same file as"),
    ],
)
def test_a_broken_file_fails_naming_it_and_the_published_database_stays(
    tmp_path, make_bad, problem
):
    folder, data = tmp_path / "parquet", tmp_path / "data"
    write(folder / "a.parquet", [row(i) for i in range(10)])
    assert build(data, local(folder)).success
    before = DataLayout(data.resolve()).published_db.read_bytes()
    make_bad(folder / "b.parquet")
    result = build(data, local(folder), raise_on_error=False)
    assert not result.success
    assert f"{folder / 'b.parquet'}" in failure_text(result)
    assert problem in failure_text(result)
    assert DataLayout(data.resolve()).published_db.read_bytes() == before


ODD_URLS = [
    "ftp://files.example/a.jpg",
    "javascript:alert(1)",
    "//no-scheme.example/a.jpg",
    "data:image/png;base64,AAAA",
    "http://user:pw@Host.Example:8080/x",
    "http://tab\there.example/x",
    "\x00\x01http://control.example/x",
    "not a url at all",
    "",
]


def test_odd_rows_are_loaded_as_they_are(tmp_path):
    folder, data = tmp_path / "parquet", tmp_path / "data"
    long_caption = "mucha " + "word " * 20_000  # about 100 KB
    rows = [row(i, URL=url) for i, url in enumerate(ODD_URLS)]
    rows += [
        row(100, TEXT=long_caption),
        row(101, TEXT="bell\x07 and\x00nul and\x1b escape"),
        {name: None for name in LAION_ARROW_SCHEMA.names},  # every column null
    ]
    write(folder / "a.parquet", rows)
    write(folder / "b.parquet", [])  # zero rows
    assert build(data, local(folder)).success
    images = published_rows(
        data,
        "SELECT i.url, i.text, d.domain FROM images i JOIN domain d "
        "ON d.id = i.domain_id ORDER BY i.rowid",
    )
    assert len(images) == len(rows)
    for (url, _, domain), source in zip(images, rows, strict=True):
        assert url == source["URL"]
        if source["URL"] is not None:
            assert domain == urllib.parse.urlparse(source["URL"]).netloc
    assert images[len(ODD_URLS)][1] == long_caption
    assert images[-1] == (None, None, "")
    (found,) = published_rows(
        data, "SELECT count(*) FROM images_fts WHERE images_fts MATCH 'mucha'"
    )
    assert found == (1,)


def test_hand_edited_name_lists_are_counted_or_reported(tmp_path):
    names = [
        "Alphonse Mucha",
        "Alphonse Mucha",  # listed twice
        "",  # blank
        "   ",
        "  Alphonse Mucha  ",
        "Dwayne 'The Rock' Johnson",
        'Name "X" Y',
        "AND",
        "NEAR(a b)",
        "mucha*",
        "x" * 10_000,
        "東京",
        "Ōkami",
    ]
    artists = tmp_path / "artists.csv"
    with artists.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["name", 'x"); DROP TABLE images; --'])
        writer.writerows([name, "note"] for name in names)
    data = tmp_path / "data"
    result = build(data, {"LAION_ARTISTS_CSV_URL": str(artists)})
    assert result.success
    captions = [t for (t,) in published_rows(data, "SELECT text FROM images")]
    assert len(captions) == 7000  # the images table is untouched by the odd column name
    counted = published_rows(data, "SELECT name, image_counts FROM artists ORDER BY rowid")
    assert [name for name, _ in counted] == names
    for name, count in counted:
        assert count == phrase_count(captions, name), name
    columns = [r[1] for r in published_rows(data, "PRAGMA table_info(artists)")]
    assert columns == ["name", 'x"); DROP TABLE images; --', "image_counts"]
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "artists"
    ]
    metadata = event.materialization.metadata
    assert metadata["blank_names"].value == 2
    assert metadata["duplicate_names"].value == 1
