"""LAION_SOURCE=local: any folder of LAION parquet files, with name lists from paths or
file:// URLs; hard names, odd values and nulls counted and stored correctly."""

import csv
import json
import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laion_pipeline.common.layout import DataLayout
from laion_pipeline.common.schema import LAION_ARROW_SCHEMA
from laion_pipeline_tests.conftest import build, phrase_count

CAPTIONS = [
    "Dwayne 'The Rock' Johnson at the premiere",
    "dwayne the rock johnson flexing",
    'Poster of Name "X" Y on a wall',
    "name x y, again",
    "Jean-Michel Basquiat crown painting",
    "jean michel basquiat",
    "Salvador Dalí melting clocks",
    "salvador dali style",
    "Beyoncé live",
    "Tom AND Jerry cartoon",
    "tom and jerry",
    "this is NOT Found anywhere else",
    "the NEAR future",
    "black OR white",
    "Star Wars: Episode IV poster",
    "a * b",
    "AC/DC band t-shirt",
    "Ōkami character art",
    "東京 night view",
    "漫画 東京",
    None,
    "",
    "no names here",
]

NAMES = [
    "Dwayne 'The Rock' Johnson",
    'Name "X" Y',
    "Jean-Michel Basquiat",
    "Salvador Dalí",
    "Beyonce",
    "Tom AND Jerry",
    "NOT Found",
    "NEAR",
    "OR",
    "AND",
    "Star Wars: Episode IV",
    "*",
    "a * b",
    "AC/DC",
    "Ōkami",
    "東京",
    "  Salvador Dalí  ",
    "",
    "Nobody In Particular",
    "Beyonce",
]


def write_parquet(folder: Path) -> list[dict]:
    rows = []
    for i, caption in enumerate(CAPTIONS):
        rows.append(
            {
                "URL": None if i == 3 else f"https://Host{i % 3}.Example.com:80{i}/img{i}.jpg",
                "TEXT": caption,
                "WIDTH": float("nan") if i % 4 == 0 else (None if i % 4 == 1 else 640.0),
                "HEIGHT": 480.0,
                "similarity": None if i == 5 else 0.3,
                "punsafe": None if i == 6 else 0.125,
                "pwatermark": 0.5,
                "AESTHETIC_SCORE": 6.5,
                "hash": None if i == 7 else -(2**63) + i,
                "__index_level_0__": None if i == 8 else i,
            }
        )
    half = len(rows) // 2
    (folder / "data").mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist(rows[:half], LAION_ARROW_SCHEMA), folder / "data" / "a.parquet"
    )
    pq.write_table(
        pa.Table.from_pylist(rows[half:], LAION_ARROW_SCHEMA), folder / "data" / "b.parquet"
    )
    return rows


def write_csv(path: Path, names: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "note"])
        writer.writerows([name, f"row {i}"] for i, name in enumerate(names))


@pytest.fixture(scope="module")
def local_build(tmp_path_factory) -> tuple[DataLayout, list[dict]]:
    root = tmp_path_factory.mktemp("local")
    rows = write_parquet(root / "parquet")
    for kind in ("artists", "celebrities", "characters"):
        write_csv(root / f"{kind}.csv", NAMES)
    env = {
        "LAION_SOURCE": "local",
        "LAION_LOCAL_DIR": str(root / "parquet"),
        "LAION_ARTISTS_CSV_URL": str(root / "artists.csv"),
        "LAION_CELEBRITIES_CSV_URL": (root / "celebrities.csv").as_uri(),
        "LAION_CHARACTERS_CSV_URL": (root / "characters.csv").as_uri(),
    }
    assert build(root / "data", env).success
    return DataLayout((root / "data").resolve()), rows


def test_hard_names_count_as_phrases(local_build):
    layout, _ = local_build
    conn = sqlite3.connect(layout.published_db)
    for kind in ("artists", "celebrities", "characters"):
        found = conn.execute(
            f"SELECT name, note, image_counts FROM {kind} ORDER BY rowid"
        ).fetchall()
        assert [(name, note) for name, note, _ in found] == [
            (name, f"row {i}") for i, name in enumerate(NAMES)
        ]
        for name, _, count in found:
            assert count == phrase_count(CAPTIONS, name), name
    counts = dict(conn.execute("SELECT name, image_counts FROM artists").fetchall())
    assert counts["Dwayne 'The Rock' Johnson"] == 2
    assert counts['Name "X" Y'] == 2
    assert counts["Salvador Dalí"] == 2  # accents folded: "dali" matches too
    assert counts["Beyonce"] == 1
    assert counts["Tom AND Jerry"] == 2
    assert counts["AND"] == 2 and counts["OR"] == 1 and counts["NEAR"] == 1
    assert counts["*"] == 0 and counts[""] == 0
    assert counts["東京"] == 2


def test_nulls_and_odd_values_are_stored_not_fatal(local_build):
    layout, rows = local_build
    conn = sqlite3.connect(layout.published_db)
    stored = conn.execute(
        "SELECT url, text, width, similarity, punsafe, hash, __index_level_0__ FROM images "
        "ORDER BY rowid"
    ).fetchall()
    assert len(stored) == len(rows)
    assert stored[0][2] is None  # NaN width
    assert stored[1][2] is None  # null width
    assert stored[2][2] == 640
    assert stored[3][0] is None  # null URL
    assert stored[5][3] is None and stored[6][4] is None
    assert stored[7][5] is None and stored[8][6] is None
    assert stored[0][5] == str(-(2**63))
    domains = dict(conn.execute("SELECT domain, image_counts FROM domain").fetchall())
    assert domains[""] == 1  # the null URL
    assert domains["Host1.Example.com:801"] == 1  # case and port kept


def test_manifest_records_the_local_source(local_build):
    layout, rows = local_build
    manifest = json.loads(layout.manifest_json.read_text())
    assert manifest["source"]["kind"] == "local"
    assert manifest["source"]["location"].endswith("parquet")
    assert [f["name"] for f in manifest["parquet_files"]] == ["data/a.parquet", "data/b.parquet"]
    assert manifest["row_counts"]["images"] == len(rows)
