"""Takedowns at staging: the rows a list of takedowns names (by URL, website or hash) are left
out of the staged file, counted in its record, the partition's metadata and the release's
manifest, and a changed list stages the files again."""

import dataclasses
import json
import sqlite3

import duckdb
import pytest

from laion_pipeline.build.state import check_staged
from laion_pipeline.common.blocklist import parse_blocklist
from laion_pipeline.common.layout import DataLayout
from laion_pipeline.sources.ingest import stage_file
from laion_pipeline.sources.inputs import SourceListing
from laion_pipeline.sources.profiles import load_profiles
from laion_pipeline_tests.conftest import build, local, row, write

# Rows 0-8: hosts host0, host1, host2 in turn; hash i. Left out: row 0 (its URL), row 4 (its
# hash), rows 2, 5 and 8 (cdn.host2.example is of the listed website host2.example).
TAKEDOWNS = "https://host0.example/0.jpg\nhash 4\nhost host2.example\n"
KEPT = [1, 3, 6, 7]


def rows() -> list[dict]:
    return [
        row(i, URL=f"https://{'cdn.' if i % 3 == 2 else ''}host{i % 3}.example/{i}.jpg")
        for i in range(9)
    ]


@pytest.mark.fast
def test_staging_leaves_out_the_rows_taken_down_and_counts_them(tmp_path):
    raw = tmp_path / "raw.parquet"
    write(raw, rows())
    profile = load_profiles(environ={})["aesthetics-v2-6plus"]
    listed = dataclasses.replace(profile, takedowns=parse_blocklist(TAKEDOWNS, "t.txt"))
    staged = stage_file(raw, "raw.parquet", listed, tmp_path / "staged.parquet")
    assert (staged.rows_read, staged.rows_kept, staged.blocked) == (9, 4, 5)
    conn = duckdb.connect()
    hashes = [
        int(h)
        for (h,) in conn.execute(
            f"SELECT hash FROM read_parquet('{tmp_path / 'staged.parquet'}') ORDER BY source_row"
        ).fetchall()
    ]
    conn.close()
    assert hashes == KEPT
    assert listed.digest != profile.digest  # what the profile makes of a file changed


def test_a_build_with_takedowns_publishes_without_them_and_a_new_list_stages_again(tmp_path):
    folder = tmp_path / "source"
    write(folder / "part-0.parquet", rows())
    listed = tmp_path / "takedowns.txt"
    listed.write_text(TAKEDOWNS)
    data = tmp_path / "data"
    env = {**local(folder), "LAION_BLOCKLIST": str(listed)}
    assert build(data, env).success
    layout = DataLayout(data.resolve())
    record = json.loads(next(layout.staged_dir.glob("*.json")).read_text())
    digest = parse_blocklist(TAKEDOWNS, "").digest
    assert (record["rows"], record["rows_blocked"], record["takedowns"]) == (4, 5, digest)
    conn = sqlite3.connect(layout.published_db)
    assert [int(h) for (h,) in conn.execute("SELECT hash FROM images ORDER BY rowid")] == KEPT
    conn.close()
    manifest = layout.current.manifest
    assert json.dumps(manifest).count('"rows_blocked": 5') == 1

    # The list changes: the staged file is no longer what a build would stage.
    listed.write_text("hash 4\n")
    profile = dataclasses.replace(
        load_profiles(environ={})["aesthetics-v2-6plus"],
        takedowns=parse_blocklist(listed.read_text(), str(listed)),
    )
    entry = SourceListing.read(layout).entries[0]
    assert "list of takedowns" in check_staged(layout, entry, profile).reason
    assert build(data, env).success
    conn = sqlite3.connect(layout.published_db)
    assert conn.execute("SELECT count(*) FROM images").fetchone() == (8,)
    conn.close()
