"""Value rules: a number outside its column's rule becomes NULL at staging, never rounded or
clamped, and is counted per column; an infinite score passes no filter; the search's JSON is
then valid for a strict parser, and the UI's check warns."""

import asyncio
import json
import math

import duckdb
import pytest

from laion_pipeline.common.layout import DataLayout
from laion_pipeline.sources.ingest import stage_file
from laion_pipeline.sources.profiles import load_profiles
from laion_pipeline_tests.conftest import build, local, row, write
from laion_pipeline_tests.datasette_site import in_process

INF = math.inf
# (column, value, stored): each a row of its own.
CASES = [
    ("WIDTH", 1e30, None),
    ("WIDTH", INF, None),
    ("WIDTH", -INF, None),
    ("WIDTH", -1.0, None),
    ("WIDTH", 0.0, None),
    ("WIDTH", 2.0**31, None),
    ("WIDTH", 2.0**31 - 1, 2**31 - 1),
    ("HEIGHT", 1e19, None),
    ("HEIGHT", 2.5, None),  # not rounded to 2
    ("HEIGHT", 480.0, 480),
    ("punsafe", 2.0, None),  # not clamped to 1
    ("punsafe", -0.5, None),
    ("punsafe", INF, None),
    ("punsafe", 1.0, 1.0),
    ("pwatermark", 0.0, 0.0),
    ("similarity", -INF, None),
    ("AESTHETIC_SCORE", -INF, None),
]
STORED = {"WIDTH": "width", "HEIGHT": "height", "AESTHETIC_SCORE": "aesthetic"}


def staged_rows(path):
    conn = duckdb.connect()
    try:
        return conn.execute(
            f"SELECT width, height, similarity, punsafe, pwatermark, aesthetic "
            f"FROM read_parquet('{path}') ORDER BY source_row"
        ).fetchall()
    finally:
        conn.close()


@pytest.mark.fast
def test_a_value_outside_its_rule_becomes_null_and_is_counted(tmp_path):
    raw = tmp_path / "raw.parquet"
    rows = [row(i, **{column: value}) for i, (column, value, _) in enumerate(CASES)]
    rows.append(row(len(rows), WIDTH=math.nan))  # pandas' missing size: NULL, not counted
    write(raw, rows)
    profile = load_profiles()["6plus"]
    staged = stage_file(raw, "raw.parquet", profile, tmp_path / "staged.parquet")
    assert staged.rows_kept == len(rows)
    names = ["width", "height", "similarity", "punsafe", "pwatermark", "aesthetic"]
    stored = staged_rows(tmp_path / "staged.parquet")
    for (column, value, expected), got in zip(CASES, stored, strict=False):
        assert got[names.index(STORED.get(column, column))] == expected, (column, value)
    assert stored[-1][0] is None
    broken = [c for c, _, expected in CASES if expected is None]
    assert staged.nulled == {STORED.get(c, c): broken.count(c) for c in set(broken)}


@pytest.mark.fast
def test_an_infinite_score_passes_no_filter(tmp_path):
    raw = tmp_path / "raw.parquet"
    write(raw, [row(0, AESTHETIC_SCORE=INF), row(1, AESTHETIC_SCORE=6.5), row(2)])
    profile = load_profiles(environ={})["aesthetics-v2-6plus"]
    staged = stage_file(raw, "raw.parquet", profile, tmp_path / "staged.parquet")
    assert staged.rows_kept == 2 and staged.nulled == {}
    assert [r[5] for r in staged_rows(tmp_path / "staged.parquet")] == [6.5, 6.5]


def strict_json(text: str):
    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_infinities_in_a_source_give_valid_json_and_a_counted_warning(tmp_path):
    folder = tmp_path / "source"
    write(
        folder / "part-0.parquet",
        [
            row(0, AESTHETIC_SCORE=INF, TEXT="painting one"),
            row(1, punsafe=-INF, TEXT="painting two"),
            row(2, WIDTH=INF, TEXT="painting three"),
        ],
    )
    data = tmp_path / "data"
    result = build(data, local(folder))
    assert result.success
    layout = DataLayout(data.resolve())
    record = json.loads(next(layout.staged_dir.glob("*.json")).read_text())
    assert record["values_nulled"] == {"aesthetic": 1, "punsafe": 1, "width": 1}
    check = next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "values_within_rules"
    )
    assert not check.passed and "aesthetic 1, punsafe 1, width 1" in check.description

    async def pages() -> list[str]:
        ds = in_process(layout)
        await ds.invoke_startup()
        answers = []
        for path in (
            "/-/search.json?q=painting",
            "/-/lookup.json?q=https://host0.example/0.jpg",
            f"/{layout.published_db.stem}/images.json",
        ):
            response = await ds.client.get(path)
            assert response.status_code == 200, path
            answers.append(response.text)
        return answers

    for text in asyncio.run(pages()):
        strict_json(text)
