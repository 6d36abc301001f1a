"""Profiles are data: the bundled ones, a user's own file, and what one makes of a source file
(its columns found case-insensitively in any of the types releases use, a filter, NULL for
what a file lacks, and clear errors)."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laion_pipeline.common.errors import ConfigurationError, InvalidInputError
from laion_pipeline.orchestration.resources import build_resources
from laion_pipeline.sources.ingest import stage_file
from laion_pipeline.sources.profiles import choose_profile, load_profiles

pytestmark = pytest.mark.fast


def test_the_bundled_profiles_and_their_defaults():
    profiles = load_profiles()
    assert set(profiles) >= {
        "6plus",
        "aesthetics-v2-6plus",
        "relaion2b-en",
        "relaion2b-en-research",
        "laion2b-en-aesthetic",
    }
    assert profiles["aesthetics-v2-6plus"].repo == "laion/aesthetics_v2_4.5"
    assert profiles["aesthetics-v2-6plus"].row_filter.description == "aesthetic >= 6"
    assert profiles["relaion2b-en"].repo == "laion/relaion2B-en-research-safe"
    assert choose_profile(None, "huggingface", None, {}).name == "aesthetics-v2-6plus"
    assert choose_profile(None, "sample", None, {}).name == "6plus"
    assert not profiles["6plus"].wants("data/_SUCCESS")
    assert not profiles["6plus"].wants(".part-00000-x-c000.snappy.parquet.crc")
    # Each release is published under its own name; the seed's keeps the 2022 site's.
    databases = [p.database for p in profiles.values()]
    assert profiles["6plus"].database == "laion-aesthetic-6pls"
    assert len(set(databases)) == len(databases)


def test_a_profile_of_ones_own_in_a_file(tmp_path):
    own = tmp_path / "profiles.toml"
    own.write_text(
        """
[my-mirror]
title = "My mirror"
database = "my-mirror"
repo = "me/laion-copy"
files = "shards/*.parquet"
required = ["url", "text"]
filter = { column = "aesthetic", at_least = 5.0, variable = "MY_MIN" }
[my-mirror.columns]
url = ["link"]
text = ["alt"]
aesthetic = ["score"]
"""
    )
    env = {"LAION_PROFILE": "my-mirror", "LAION_PROFILES_FILE": str(own), "MY_MIN": "5.5"}
    profile = build_resources(env)["laion_data"].profile
    assert (profile.repo, profile.title, profile.database, profile.row_filter.at_least) == (
        "me/laion-copy",
        "My mirror",
        "my-mirror",
        5.5,
    )
    assert profile.wants("shards/a.parquet") and not profile.wants("other/a.parquet")
    raw = tmp_path / "a.parquet"
    table = pa.table({"Link": ["http://h/1.jpg", "http://h/2.jpg"], "ALT": ["a", "b"]})
    pq.write_table(table.append_column("score", pa.array([5.0, 6.0], pa.float32())), raw)
    staged = stage_file(raw, "a.parquet", profile, tmp_path / "out.parquet")
    assert (staged.rows_read, staged.rows_kept) == (2, 1)
    assert set(staged.columns.missing) == {
        "width",
        "height",
        "similarity",
        "punsafe",
        "pwatermark",
        "hash",
        "__index_level_0__",
    }
    assert pq.read_table(tmp_path / "out.parquet").to_pylist()[0]["url"] == "http://h/2.jpg"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"LAION_PROFILE": "nope"}, "LAION_PROFILE='nope' is not a profile: use one of 6plus"),
        (
            {"LAION_PROFILE": "aesthetics-v2-6plus", "LAION_MIN_AESTHETIC": "six"},
            "LAION_MIN_AESTHETIC='six' is not a number",
        ),
        ({"LAION_PROFILES_FILE": "/no/such/file.toml"}, "LAION_PROFILES_FILE=/no/such/file.toml"),
    ],
)
def test_a_wrong_profile_setting_names_the_variable(env, message):
    with pytest.raises(ConfigurationError, match=message):
        _ = build_resources(env)["laion_data"].profile


@pytest.mark.parametrize(
    "body, message",
    [
        ('columns = { caption = ["TEXT"] }', "columns names caption"),
        ('database = "../etc"', "database = '../etc': use lower-case letters"),
        ('database = "-"', "database = '-': use lower-case letters"),
    ],
)
def test_a_bad_profile_file_names_the_file_and_the_key(tmp_path, body, message):
    own = tmp_path / "bad.toml"
    own.write_text(f'[x]\nrepo = "a/b"\n{body}\n')
    with pytest.raises(ConfigurationError, match=rf"profile 'x' in .*bad.toml: {message}"):
        load_profiles(str(own))


@pytest.mark.parametrize(
    "text_type, size_type, score_type",
    [
        (pa.string(), pa.float64(), pa.float32()),
        (pa.large_string(), pa.int32(), pa.float64()),
        (pa.dictionary(pa.int32(), pa.string()), pa.int64(), pa.float32()),
    ],
)
def test_the_types_releases_use_are_all_read(tmp_path, text_type, size_type, score_type):
    profile = choose_profile("aesthetics-v2-6plus", "huggingface", None, {})
    raw = tmp_path / "part.parquet"
    captions = pa.array(["a cat", "a dog", "a bird"]).cast(text_type)
    pq.write_table(
        pa.table(
            {
                "url": pa.array(["http://A.example:80/1", "//b.example/2", "c.example/3"]),
                "caption": captions,
                "original_width": pa.array([640, 800, 1024]).cast(size_type),
                "AESTHETIC_SCORE": pa.array([6.0, 5.9, 7.25]).cast(score_type),
            }
        ),
        raw,
    )
    staged = stage_file(raw, "part.parquet", profile, tmp_path / "out.parquet")
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [
        (r["text"], r["width"], r["aesthetic"], r["domain"], r["source_row"]) for r in rows
    ] == [
        ("a cat", 640, 6.0, "A.example:80", 0),
        ("a bird", 1024, 7.25, "", 2),
    ]
    assert staged.columns.sources["text"] == "caption"


def test_a_file_without_a_required_column_names_it_and_its_columns(tmp_path):
    profile = choose_profile("relaion2b-en", "huggingface", None, {})
    raw = tmp_path / "part-00007.parquet"
    pq.write_table(pa.table({"url": ["http://a/"], "alt_text": ["x"]}), raw)
    with pytest.raises(InvalidInputError) as error:
        stage_file(raw, "part-00007.parquet", profile, tmp_path / "out.parquet")
    assert str(error.value).startswith(
        "part-00007.parquet lacks the LAION columns caption or TEXT of profile relaion2b-en "
        "(it has url, alt_text)"
    )
    assert not (tmp_path / "out.parquet").exists()


def test_text_of_the_wrong_type_is_refused(tmp_path):
    profile = choose_profile("relaion2b-en", "huggingface", None, {})
    raw = tmp_path / "p.parquet"
    pq.write_table(pa.table({"url": ["http://a/"], "caption": [17]}), raw)
    with pytest.raises(
        InvalidInputError, match=r"p.parquet: caption is BIGINT \(text needs text\)"
    ):
        stage_file(raw, "p.parquet", profile, tmp_path / "out.parquet")


def test_staged_files_keep_the_source_order_and_row_numbers(tmp_path):
    profile = choose_profile("aesthetics-v2-6plus", "huggingface", None, {})
    raw = tmp_path / "big.parquet"
    n = 250_000
    scores = pa.array([6.0 + (i % 7) / 10 if i % 3 else 1.0 for i in range(n)], pa.float32())
    urls = pa.array([f"http://h{i % 5}.example/{i}" for i in range(n)])
    table = pa.table({"URL": urls, "TEXT": urls, "AESTHETIC_SCORE": scores})
    pq.write_table(table, raw, row_group_size=30_000)
    staged = stage_file(raw, "big.parquet", profile, tmp_path / "out.parquet", threads=2)
    rows = pq.read_table(tmp_path / "out.parquet", columns=["url", "source_row"]).to_pylist()
    expected = [i for i in range(n) if i % 3]
    assert staged.rows_kept == len(expected)
    assert [r["source_row"] for r in rows] == expected
    assert [r["url"] for r in rows] == [f"http://h{i % 5}.example/{i}" for i in expected]


def test_a_missing_partition_file_is_not_left_half_written(tmp_path: Path):
    profile = choose_profile("6plus", "sample", None, {})
    raw = tmp_path / "broken.parquet"
    raw.write_bytes(b"PAR1 not really")
    with pytest.raises(InvalidInputError, match=r"broken\.parquet is not a readable parquet file"):
        stage_file(raw, "broken.parquet", profile, tmp_path / "out.parquet")
    assert list(tmp_path.iterdir()) == [raw]
