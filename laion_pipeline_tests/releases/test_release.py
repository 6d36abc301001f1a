"""The release pointers on their own (no build): a switch is one rename, a half-done switch is
finished or undone by `recover`, rollback swaps current and previous, and only the releases
the pointers name are kept. Fast: folders in tmp_path."""

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from laion_pipeline.common.errors import StaleInputError
from laion_pipeline.common.layout import DEFAULT_DATABASE, DataLayout
from laion_pipeline.releases.switch import (
    current_release,
    new_release,
    pointed_release,
    recover,
    remove_unused_releases,
    rollback,
    switch,
)

pytestmark = pytest.mark.fast


def release(layout: DataLayout, sha: str, now: dt.datetime | None = None) -> str:
    release_id, files = new_release(layout, sha, DEFAULT_DATABASE, now)
    files.manifest_json.write_text(json.dumps({"release": release_id}))
    return release_id


def pointers(layout: DataLayout) -> tuple[str | None, str | None]:
    return pointed_release(layout, "current"), pointed_release(layout, "previous")


@pytest.fixture
def layout(tmp_path) -> DataLayout:
    return DataLayout(tmp_path)


def test_release_ids_are_unique_and_name_the_database(layout):
    now = dt.datetime(2026, 12, 2, 6, 34, 7, tzinfo=dt.UTC)
    first, second = release(layout, "ab" * 32, now), release(layout, "ab" * 32, now)
    assert first == "20261202T063407Z-abababababab"
    assert second == f"{first}-2"  # the same database published twice in one second


def test_a_switch_makes_a_release_current_through_relative_links(layout):
    with pytest.raises(StaleInputError, match="nothing is published"):
        current_release(layout)
    a = release(layout, "a" * 64)
    switch(layout, a, None)
    assert pointers(layout) == (a, None)
    assert os.readlink(layout.pointer("current")) == f"releases/{a}"
    assert json.loads(layout.manifest_json.read_text())["release"] == a
    assert current_release(layout).folder == layout.releases_dir / a
    b = release(layout, "b" * 64)
    switch(layout, b, a)
    assert pointers(layout) == (b, a)
    c = release(layout, "c" * 64)
    switch(layout, c, b)
    # Only what the pointers name is kept.
    assert sorted(p.name for p in layout.releases_dir.iterdir()) == sorted([b, c])
    assert not [p for p in layout.published_dir.iterdir() if p.name.startswith(".")]


def test_rollback_swaps_current_and_previous_and_twice_returns(layout):
    a = release(layout, "a" * 64)
    with pytest.raises(StaleInputError, match="no previous release"):
        rollback(layout)
    switch(layout, a, None)
    with pytest.raises(StaleInputError, match="no previous release"):
        rollback(layout)
    b = release(layout, "b" * 64)  # a switch removes releases no pointer names
    switch(layout, b, a)
    assert rollback(layout) == a
    assert pointers(layout) == (a, b)
    assert rollback(layout) == b
    assert pointers(layout) == (b, a)


def staged_links(layout: DataLayout, current: str | None, previous: str | None) -> None:
    """What a switch killed after writing its links, before renaming any, leaves."""
    for name, target in (("current", current), ("previous", previous)):
        if target:
            os.symlink(Path("releases") / target, layout.published_dir / f".{name}.new")


def test_a_switch_killed_before_its_rename_is_undone(layout):
    a = release(layout, "a" * 64)
    switch(layout, a, None)
    b = release(layout, "b" * 64)
    staged_links(layout, b, a)
    touched = recover(layout)
    assert pointers(layout) == (a, None)
    assert layout.releases_dir / b in touched  # the release that was never served
    assert sorted(p.name for p in layout.published_dir.iterdir()) == ["current", "releases"]


def test_a_switch_killed_after_its_rename_is_finished(layout):
    a = release(layout, "a" * 64)
    switch(layout, a, None)
    b = release(layout, "b" * 64)
    staged_links(layout, None, a)  # current renamed; the previous link still waits
    os.replace(layout.published_dir / ".previous.new", layout.published_dir / ".keep")
    os.symlink(Path("releases") / b, layout.published_dir / ".current.new")
    os.replace(layout.published_dir / ".current.new", layout.pointer("current"))
    os.replace(layout.published_dir / ".keep", layout.published_dir / ".previous.new")
    assert pointers(layout) == (b, None)
    recover(layout)
    assert pointers(layout) == (b, a)
    assert sorted(p.name for p in layout.releases_dir.iterdir()) == sorted([a, b])


def test_stray_entries_in_releases_are_removed(layout):
    a = release(layout, "a" * 64)
    switch(layout, a, None)
    (layout.releases_dir / "half-written").mkdir()
    (layout.releases_dir / "a-file").write_text("x")
    os.symlink("/etc", layout.releases_dir / "a-link")
    removed = remove_unused_releases(layout)
    assert sorted(p.name for p in removed) == ["a-file", "a-link", "half-written"]
    assert [p.name for p in layout.releases_dir.iterdir()] == [a]
    assert Path("/etc").is_dir()  # a link is removed, never followed


def flat_version(folder: Path, sha: str, built_at: str) -> None:
    """What a publish wrote before releases: the files side by side."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "laion-aesthetic-6pls.db").write_bytes(sha.encode())
    for name in ("metadata.json", "inspect.json"):
        (folder / name).write_text("{}")
    (folder / "manifest.json").write_text(json.dumps({"sha256": sha, "built_at": built_at}))
    (folder / "report").mkdir()
    (folder / "report" / "index.html").write_text(sha)


def test_a_data_folder_published_before_releases_is_adopted_whole(layout):
    flat_version(layout.published_dir, "c" * 64, "2026-11-30T10:00:00+00:00")
    flat_version(layout.published_dir / "previous", "p" * 64, "2026-11-01T09:00:00+00:00")
    recover(layout)  # what the next writer does when it takes the lock
    assert pointers(layout) == ("20261130T100000Z-cccccccccccc", "20261101T090000Z-pppppppppppp")
    assert layout.published_db.read_bytes() == b"c" * 64
    assert (layout.report_dir / "index.html").read_text() == "c" * 64
    assert json.loads(layout.manifest_json.read_text())["release"] == pointers(layout)[0]
    assert (layout.previous.db).read_bytes() == b"p" * 64
    assert sorted(p.name for p in layout.published_dir.iterdir()) == [
        "current",
        "previous",
        "releases",
    ]
    assert rollback(layout) == "20261101T090000Z-pppppppppppp"
    assert recover(layout) == []  # adopted once
