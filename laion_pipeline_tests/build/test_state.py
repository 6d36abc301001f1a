"""The decision of what to stage and whether to build, from a data folder's files alone: each
staged file's record against the listing, a release's manifest against the inputs."""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from laion_pipeline.build.plan import plan_shards
from laion_pipeline.build.staging import stage_source_file
from laion_pipeline.build.state import (
    FIRST_FORMAT_STAGING_CODE,
    ReleaseInputs,
    assess,
    check_staged,
)
from laion_pipeline.common.errors import ConfigurationError
from laion_pipeline.common.layout import DataLayout
from laion_pipeline.common.versions import STAGING_CODE_VERSION
from laion_pipeline.releases.switch import held_release, new_release, rollback, switch
from laion_pipeline.sources.inputs import SourceEntry, SourceListing, SourceRevision
from laion_pipeline.sources.profiles import choose_profile
from laion_pipeline_tests.conftest import row, write

pytestmark = pytest.mark.fast
LISTS = {"artists": "a" * 64, "celebrities": "c" * 64, "characters": "h" * 64}


@pytest.fixture
def staged(tmp_path: Path):
    """A data folder with one source file staged: its layout, listing, entry and profile."""
    raw = tmp_path / "raw.parquet"
    write(raw, [row(i) for i in range(10)])
    profile = choose_profile(None, "local", None, {})
    entry = SourceEntry("part-0.parquet", raw.stat().st_size, "v1")
    listing = SourceListing(SourceRevision("local", str(tmp_path), "r1"), (entry,))
    layout = DataLayout(tmp_path / "data")
    stage_source_file(layout, profile, listing, entry, raw, "s" * 64)
    return layout, listing, entry, profile


def test_a_staged_file_as_recorded_is_used(staged):
    layout, _, entry, profile = staged
    check = check_staged(layout, entry, profile)
    assert check.staged is not None and check.reason == "" and check.repaired == ""


def test_a_changed_source_or_profile_is_staged_again(staged):
    layout, _, entry, profile = staged
    changed = check_staged(layout, dataclasses.replace(entry, version="v2"), profile)
    assert changed.staged is None and "the source file changed" in changed.reason
    other = choose_profile("aesthetics-v2-6plus", "local", None, {"LAION_MIN_AESTHETIC": "7"})
    reason = check_staged(layout, entry, other).reason
    assert "another profile, filter or list of takedowns" in reason


def test_a_staged_file_of_the_same_size_with_other_bytes_is_staged_again(staged):
    layout, _, entry, profile = staged
    parquet = layout.staged_parquet(entry.key)
    data = bytearray(parquet.read_bytes())
    data[len(data) // 2] ^= 0xFF
    parquet.write_bytes(bytes(data))  # same size, a new time: read again, found changed
    check = check_staged(layout, entry, profile)
    assert check.staged is None and "its record says" in check.reason


def test_a_moved_data_folder_is_checked_by_hash_and_its_records_follow(staged, tmp_path):
    layout, _, entry, profile = staged
    moved = DataLayout(tmp_path / "moved")
    shutil.copytree(layout.root, moved.root)
    copied = moved.staged_parquet(entry.key)
    os.utime(copied, ns=(copied.stat().st_atime_ns, copied.stat().st_mtime_ns + 1))  # `cp -r`
    check = check_staged(moved, entry, profile)
    assert check.staged is not None and "moved or copied" in check.repaired
    assert check.staged.path == str(moved.staged_parquet(entry.key))
    assert check_staged(moved, entry, profile).repaired == ""  # the record now says so


def test_a_record_of_the_first_format_is_upgraded_in_place(staged, monkeypatch):
    """A record of the first format, written by the staging code of its day, is upgraded in
    place while that code is current (it is not now: such files are staged again)."""
    layout, _, entry, profile = staged
    monkeypatch.setattr(
        "laion_pipeline.build.state.STAGING_CODE_VERSION", FIRST_FORMAT_STAGING_CODE
    )
    record = layout.staged_record(entry.key)
    current = json.loads(record.read_text())
    record.write_text(json.dumps({**current, "staging_code_version": FIRST_FORMAT_STAGING_CODE}))
    record = layout.staged_record(entry.key)
    old = json.loads(record.read_text())
    for field in ("format", "staged_sha256", "staging_code_version", "source", "profile"):
        old.pop(field)
    record.write_text(json.dumps(old))
    check = check_staged(layout, entry, profile)
    assert check.staged is not None and "upgraded" in check.repaired
    upgraded = json.loads(record.read_text())
    assert upgraded["format"] == 2 and len(upgraded["staged_sha256"]) == 64


def test_a_record_of_a_newer_version_is_refused_naming_the_file(staged):
    layout, _, entry, profile = staged
    record = layout.staged_record(entry.key)
    record.write_text(json.dumps({**json.loads(record.read_text()), "format": 99}))
    with pytest.raises(ConfigurationError, match=f"{record}.*newer laion-pipeline"):
        check_staged(layout, entry, profile)


def test_a_missing_or_unreadable_record_restages(staged):
    layout, _, entry, profile = staged
    layout.staged_record(entry.key).write_text("{not json")
    assert "unreadable" in check_staged(layout, entry, profile).reason
    layout.staged_record(entry.key).unlink()
    assert "has no record beside it" in check_staged(layout, entry, profile).reason


def test_a_release_is_needed_until_one_holds_exactly_the_inputs(staged):
    layout, listing, _, profile = staged
    state = assess(layout, listing, profile, LISTS, 100)
    assert not state.up_to_date and state.why == "nothing is published"
    inputs = state.inputs
    assert inputs == ReleaseInputs.of(
        state.staged, plan_shards(state.staged, 100), profile.summary, LISTS
    )
    other = dataclasses.replace(inputs, lists={**LISTS, "artists": "b" * 64})
    assert other.changed(inputs.as_dict()) == ("lists",)
    assert inputs.changed(None) == ("files", "shards", "profile", "lists", "code_version")
    # Another shard size that plans the same shards is no change; another database name is.
    assert (
        ReleaseInputs.of(state.staged, plan_shards(state.staged, 1000), profile.summary, LISTS)
        == inputs
    )
    renamed = {**profile.summary, "database": "another"}
    assert ReleaseInputs.of(state.staged, plan_shards(state.staged, 100), renamed, LISTS).changed(
        inputs.as_dict()
    ) == ("profile",)
    assert "could not" in assess(layout, listing, profile, "could not read", 100).why


def test_a_new_staging_code_version_stages_every_file_again(staged, monkeypatch):
    layout, _, entry, profile = staged
    monkeypatch.setattr("laion_pipeline.build.state.STAGING_CODE_VERSION", "99")
    check = check_staged(layout, entry, profile)
    now = f"staged by staging code version {STAGING_CODE_VERSION}, now 99"
    assert check.staged is None and now in check.reason
    # A record of the first format was written by staging code version 2: not upgraded to 99.
    record = layout.staged_record(entry.key)
    old = json.loads(record.read_text())
    old.pop("format")
    record.write_text(json.dumps(old))
    assert "staged by staging code version 2, now 99" in check_staged(layout, entry, profile).reason


def test_a_rollback_holds_and_undoing_it_ends_the_hold(tmp_path):
    layout = DataLayout(tmp_path)
    ids = []
    for n, digest in enumerate(("a" * 64, "b" * 64)):
        release_id, release = new_release(layout, f"{n}" * 64, "db")
        release.manifest_json.write_text(json.dumps({"inputs_digest": digest}))
        ids.append(release_id)
    switch(layout, ids[1], ids[0])
    assert rollback(layout) == ids[0]
    assert held_release(layout) == {"release": ids[0], "rolled_back_inputs": "b" * 64}
    assert rollback(layout) == ids[1]  # undone: the release built last stands for itself
    assert held_release(layout) == {}
