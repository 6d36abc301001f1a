"""Bad settings and bad input fail with a message that says what to change, and never touch
what is already published."""

import re
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laion_pipeline.common.errors import InvalidInputError
from laion_pipeline.common.layout import DataLayout
from laion_pipeline.sources.inputs import parse_entity_csv
from laion_pipeline_tests.conftest import build, failure_text


def test_unknown_source_names_the_variable(tmp_path):
    result = build(tmp_path, {"LAION_SOURCE": "s3"}, raise_on_error=False)
    assert not result.success
    assert "LAION_SOURCE='s3' is not a source" in failure_text(result)


def test_local_source_without_folder_says_which_variable_to_set(tmp_path):
    result = build(tmp_path, {"LAION_SOURCE": "local"}, raise_on_error=False)
    assert "LAION_LOCAL_DIR" in failure_text(result)


def test_local_folder_without_parquet_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    env = {"LAION_SOURCE": "local", "LAION_LOCAL_DIR": str(tmp_path / "empty")}
    result = build(tmp_path / "data", env, raise_on_error=False)
    assert "holds no *.parquet files" in failure_text(result)


def test_parquet_without_laion_columns_names_the_missing_ones(tmp_path):
    folder = tmp_path / "parquet"
    folder.mkdir()
    pq.write_table(pa.table({"URL": ["http://a/"], "caption": ["x"]}), folder / "x.parquet")
    env = {"LAION_SOURCE": "local", "LAION_LOCAL_DIR": str(folder)}
    result = build(tmp_path / "data", env, raise_on_error=False)
    text = failure_text(result)
    assert "lacks the LAION columns TEXT, WIDTH, HEIGHT" in text
    assert "it has URL, caption" in text


def test_a_failed_build_leaves_the_published_database_untouched(tmp_path):
    assert build(tmp_path).success
    layout = DataLayout(tmp_path.resolve())
    before = layout.published_db.read_bytes(), layout.manifest_json.read_bytes()
    bad = tmp_path / "bad.csv"
    bad.write_text("title,year\nx,1\n")
    result = build(tmp_path, {"LAION_CHARACTERS_CSV_URL": str(bad)}, raise_on_error=False)
    assert not result.success
    assert "has no name column (its columns are: title, year)" in failure_text(result)
    assert (layout.published_db.read_bytes(), layout.manifest_json.read_bytes()) == before


def test_missing_csv_file_names_the_variable(tmp_path):
    env = {"LAION_ARTISTS_CSV_URL": str(tmp_path / "nope.csv")}
    result = build(tmp_path, env, raise_on_error=False)
    assert "LAION_ARTISTS_CSV_URL" in failure_text(result)


@pytest.mark.fast
def test_csv_with_bom_and_crlf_parses():
    columns, rows = parse_entity_csv(
        b"\xef\xbb\xbf Name ,Kind\r\nBanksy,street\r\n\r\nHokusai,ukiyo-e\r\n", "x"
    )
    assert columns == ["name", "Kind"]
    assert rows == [{"name": "Banksy", "Kind": "street"}, {"name": "Hokusai", "Kind": "ukiyo-e"}]


@pytest.mark.fast
def test_nul_characters_are_removed_from_a_name_list_and_said():
    notes: list[str] = []
    _, rows = parse_entity_csv(b"name,note\nHoku\x00sai,a\nBanksy,b\x00\n", "x", notes)
    assert rows == [{"name": "Hokusai", "note": "a"}, {"name": "Banksy", "note": "b"}]
    assert notes == ["x: NUL characters removed from line 2, 3"]


@pytest.mark.fast
def test_repeated_and_reserved_csv_columns_get_unique_names():
    columns, rows = parse_entity_csv(b"name,Note,note,image_counts,\nHokusai,a,b,7,c\n", "x")
    assert columns == ["name", "Note", "note_2", "image_counts_2", "column_5"]
    assert rows == [
        {"name": "Hokusai", "Note": "a", "note_2": "b", "image_counts_2": "7", "column_5": "c"}
    ]


@pytest.mark.fast
@pytest.mark.parametrize(
    "data, message",
    [
        (b"<!DOCTYPE html><html><head><title>Sign in</title>", "is an HTML page, not CSV"),
        (b"", "is empty"),
        (b"\xff\xfe\x00n", "is not UTF-8"),
        (b"title\nx\n", "has no name column (its columns are: title)"),
        (
            b"name\nHokusai\n" + b"x" * 200_000 + b"\n",
            "the list, line 3: field larger than field limit",
        ),
        (
            b"name," + b",".join(b"c%d" % i for i in range(2_000)) + b"\nHokusai\n",
            "the list has 2,001 columns: a name list keeps at most 1,999",
        ),
    ],
)
def test_bad_name_lists_are_refused_clearly(data, message):
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        parse_entity_csv(data, "the list")


def test_too_little_disk_is_refused_before_the_build_starts(tmp_path, monkeypatch):
    from laion_pipeline.build import shards

    assert build(tmp_path).success
    layout = DataLayout(tmp_path.resolve())
    before = layout.published_db.read_bytes()
    build_before = layout.build_db.stat().st_mtime_ns
    # As if the build needed a million million times its database.
    monkeypatch.setattr(shards, "BUILD_PEAK_PER_DATABASE_BYTE", 1e12)
    result = build(tmp_path, raise_on_error=False)
    text = failure_text(result)
    assert "building shard shard-00000 needs about" in text and "set LAION_DATA_DIR" in text
    assert layout.published_db.read_bytes() == before
    assert layout.build_db.stat().st_mtime_ns == build_before


@pytest.mark.fast
def test_check_free_disk_measures_the_real_file_system(tmp_path):
    from laion_pipeline.common.errors import NotEnoughDiskError
    from laion_pipeline.common.files import check_free_disk

    free = shutil.disk_usage(tmp_path).free
    check_free_disk(tmp_path, free // 2, "a small step")
    with pytest.raises(NotEnoughDiskError, match="a huge step needs about"):
        check_free_disk(tmp_path, free * 10, "a huge step")


@pytest.mark.fast
def test_small_sizes_are_said_in_megabytes():
    from laion_pipeline.common.files import disk_size

    assert [disk_size(n) for n in (1, 3_400_000, 999_000_000, 2_500_000_000)] == [
        "1 MB",
        "3 MB",
        "999 MB",
        "2.5 GB",
    ]


@pytest.mark.fast
def test_a_disk_that_fills_up_is_said_as_such_with_the_folder_and_the_space(tmp_path):
    from laion_pipeline.common.db import sqlite_connect, sqlite_transaction
    from laion_pipeline.common.errors import NotEnoughDiskError
    from laion_pipeline.common.files import disk_for

    conn = sqlite_connect(tmp_path / "full.db")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("PRAGMA max_page_count = 20")  # as full as a disk, to SQLite
    with (
        pytest.raises(NotEnoughDiskError) as refused,
        disk_for(tmp_path, 5_000_000, "building the database"),
        sqlite_transaction(conn),
    ):
        conn.executemany("INSERT INTO t VALUES (?)", [("x" * 1000,)] * 1000)
    said = str(refused.value)
    assert f"the disk filled up while building the database in {tmp_path}" in said
    assert "database or disk is full" in said and "needs about 5 MB free there" in said
    assert "no transaction is active" not in said
    conn.close()


@pytest.mark.fast
def test_the_disk_a_build_needs_is_estimated_from_its_rows_not_its_compression(tmp_path):
    import sqlite3

    import pyarrow as pa
    import pyarrow.parquet as pq

    from laion_pipeline.build.fts import FTS_DDL
    from laion_pipeline.build.tables import estimated_database_bytes
    from laion_pipeline.sources.inputs import StagedFile

    rows = 20_000
    caption = "an oil painting of a lighthouse by the sea at dusk, " * 6  # compresses away
    table = pa.table(
        {
            "url": [f"https://cdn.example/{i}.jpg" for i in range(rows)],
            "text": [caption] * rows,
            "domain": ["cdn.example"] * rows,
        }
    )
    staged = tmp_path / "staged.parquet"
    pq.write_table(table, staged, compression="zstd")
    conn = sqlite3.connect(tmp_path / "real.db")
    conn.execute("CREATE TABLE images (url TEXT, text TEXT, domain_id INTEGER, url_key INTEGER)")
    conn.executemany(
        "INSERT INTO images VALUES (?, ?, 1, ?)",
        [(url, caption, i) for i, url in enumerate(table["url"].to_pylist())],
    )
    conn.execute(FTS_DDL)
    conn.execute("INSERT INTO images_fts (images_fts) VALUES ('rebuild')")
    conn.execute("CREATE INDEX a ON images (domain_id)")
    conn.execute("CREATE INDEX b ON images (url_key)")
    conn.commit()
    conn.close()
    real = (tmp_path / "real.db").stat().st_size
    file = StagedFile("a", str(staged), staged.stat().st_size, 0, rows, rows, "", "", "")
    assert real > 10 * staged.stat().st_size  # the parquet says little about the database
    assert real <= estimated_database_bytes([file]) <= 3 * real


@pytest.mark.fast
def test_a_rollback_in_a_mistyped_data_folder_creates_nothing(tmp_path, monkeypatch, capsys):
    from laion_pipeline.orchestration.commands import main

    typo = tmp_path / "dta"
    monkeypatch.setenv("LAION_DATA_DIR", str(typo))
    assert main(["rollback"]) == 1
    assert not typo.exists()
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.fast
@pytest.mark.parametrize(
    ("command", "setting", "said"),
    [
        (["run"], {"LAION_PROFILE": "nope"}, "LAION_PROFILE='nope' is not a profile"),
        (["serve"], {"LAION_SQL_PER_CLIENT": "many"}, "LAION_SQL_PER_CLIENT='many'"),
        (["serve"], {"LAION_SEARCH_COUNT_CAP": "\uff15\uff10"}, "LAION_SEARCH_COUNT_CAP="),
        (["serve"], {"LAION_THUMBNAILS": "maybe"}, "LAION_THUMBNAILS='maybe'"),
        # A list of takedowns that cannot be read stops the server before it starts.
        (["serve"], {"LAION_BLOCKLIST": "/nowhere/t.txt"}, "LAION_BLOCKLIST=/nowhere/t.txt"),
        (["run"], {"LAION_BLOCKLIST": "/nowhere/t.txt"}, "LAION_BLOCKLIST=/nowhere/t.txt"),
    ],
)
def test_a_setting_to_change_is_one_line_and_exit_status_2(
    command, setting, said, tmp_path, monkeypatch, capsys
):
    from laion_pipeline.orchestration.commands import main

    monkeypatch.setenv("LAION_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    for name, value in setting.items():
        monkeypatch.setenv(name, value)
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said in err
