"""Today's LAION datasets from a hub on 127.0.0.1: Spark part files (with `.crc` and `_SUCCESS`
beside them) of each profile's shape, downloaded by the real code, filtered and staged one
partition per file, and published tables checked against an independent computation; a gated
repo; a listing without sizes; a new revision that changes 3 files of 12; LAION_KEEP_RAW=0."""

import asyncio
import collections
import json
import sqlite3
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance

from benchmarks.synthetic import generate_release, read_names, sample_entity_names
from laion_pipeline.common.layout import ENTITY_KINDS, SAMPLE_DIR, DataLayout
from laion_pipeline.sources.inputs import SourceListing
from laion_pipeline.sources.profiles import load_profiles
from laion_pipeline_tests.conftest import build, failure_text, phrase_count, table_rows_count
from laion_pipeline_tests.datasette_site import in_process
from laion_pipeline_tests.fake_hub import FakeHub, start_server

PROFILES = {
    # profile: (repo, shape of the files, rows, files)
    "aesthetics-v2-6plus": ("laion/aesthetics_v2_4.5", "aesthetics-v2", 12_000, 4),
    "relaion2b-en": ("laion/relaion2B-en-research-safe", "relaion2b-en", 3_000, 3),
    "laion2b-en-aesthetic": ("laion/laion2B-en-aesthetic", "laion2b-en-aesthetic", 3_000, 3),
}
LISTS = {f"LAION_{k.upper()}_CSV_URL": str(SAMPLE_DIR / f"{k}.csv") for k in ENTITY_KINDS}


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A folder of Spark part files per profile."""
    names = sample_entity_names()
    folders = {}
    for profile, (_, shape, rows, files) in PROFILES.items():
        folder = tmp_path_factory.mktemp(shape)
        generate_release(folder, shape, rows, files=files, names=names)
        folders[profile] = folder
    return folders


def repo_files(folder: Path) -> dict[str, bytes]:
    """Every file of the folder as a repo holds it (parquet parts, `.crc` files, `_SUCCESS`)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def hub_env(hub: FakeHub, profile: str, **more: str) -> dict[str, str]:
    return {
        "LAION_SOURCE": "huggingface",
        "LAION_PROFILE": profile,
        "HF_ENDPOINT": hub.endpoint,
        **LISTS,
        **more,
    }


def python_domain(url: str | None) -> str:
    return urlparse(url).netloc if url else ""


def expected_rows(folder: Path, profile: str, min_aesthetic: float = 6.0) -> list[dict]:
    """The rows a build must keep, in file order, computed with pyarrow and Python alone."""
    kept = []
    for path in sorted(folder.glob("*.parquet")):
        table = pq.read_table(path)
        if profile == "aesthetics-v2-6plus":
            score = pc.cast(table["AESTHETIC_SCORE"], "float64")
            table = table.filter(pc.fill_null(pc.greater_equal(score, min_aesthetic), False))
        kept.extend(table.to_pylist())
    return kept


@pytest.mark.parametrize("profile", list(PROFILES))
def test_each_release_builds_from_spark_part_files(hub, releases, tmp_path, profile):
    repo, _, rows, _ = PROFILES[profile]
    folder = releases[profile]
    sha = hub.commit(repo, repo_files(folder))
    assert build(tmp_path, hub_env(hub, profile)).success

    layout = DataLayout(tmp_path.resolve())
    expected = expected_rows(folder, profile)
    url_key = "url" if profile.startswith("relaion") else "URL"
    text_key = "caption" if profile.startswith("relaion") else "TEXT"
    conn = sqlite3.connect(f"{layout.published_db.as_uri()}?mode=ro", uri=True)
    try:
        stored = conn.execute(
            "SELECT url, text, width, aesthetic, similarity FROM images ORDER BY rowid"
        ).fetchall()
        assert [r[0] for r in stored] == [r[url_key] for r in expected]
        assert [r[1] for r in stored] == [r[text_key] for r in expected]
        if profile == "aesthetics-v2-6plus":
            assert 0 < len(stored) < rows / 10  # most rows dropped by the filter
            assert min(r[3] for r in stored) >= 6.0
        if profile.startswith("relaion"):
            # No aesthetic score or similarity in Re-LAION; the size is the original's.
            assert {r[3] for r in stored} == {None} and {r[4] for r in stored} == {None}
            assert [r[2] for r in stored] == [r["original_width"] for r in expected]
        if profile == "laion2b-en-aesthetic":
            assert [r[3] for r in stored] == pytest.approx([r["aesthetic"] for r in expected])

        domains = dict(conn.execute("SELECT domain, image_counts FROM domain"))
        assert domains == collections.Counter(python_domain(r[url_key]) for r in expected)
        captions = [r[text_key] for r in expected]
        for kind in ENTITY_KINDS:
            counted = dict(conn.execute(f"SELECT name, image_counts FROM {kind}"))
            names = read_names(SAMPLE_DIR / f"{kind}.csv")
            assert counted == {name: phrase_count(captions, name) for name in names}
    finally:
        conn.close()

    manifest = json.loads(layout.manifest_json.read_text())
    assert manifest["source"] == {"kind": "huggingface", "location": repo, "revision": sha}
    assert manifest["profile"]["name"] == profile
    assert manifest["rows_read"] == rows
    assert manifest["row_counts"]["images"] == len(expected)
    # Only the parquet parts were fetched: never a .crc file or _SUCCESS.
    fetched = {s.file for s in hub.seen if s.method == "GET" and s.file}
    assert fetched == {p.name for p in folder.glob("*.parquet")}
    assert_served_under_the_profiles_name(layout, profile, len(expected))


def assert_served_under_the_profiles_name(layout: DataLayout, profile: str, images: int) -> None:
    """The release's database, its Datasette files and its report use the profile's database
    name, and Datasette serves it there (through `published/current`, as `make serve` does)."""
    chosen = load_profiles()[profile]
    database = chosen.database
    assert [p.name for p in layout.current.folder.glob("*.db")] == [f"{database}.db"]
    assert list(json.loads(layout.inspect_json.read_text())) == [database]
    metadata = json.loads(layout.metadata_json.read_text())
    assert list(metadata["databases"]) == [database]
    assert metadata["title"] == chosen.title
    assert f'href="/{database}"' in (layout.report_dir / "index.html").read_text()
    ds = in_process(layout)

    async def scenario() -> None:
        await ds.invoke_startup()
        page = await ds.client.get(f"/{database}/images.json?_size=0&_extra=count")
        assert page.status_code == 200 and table_rows_count(page.json()) == images
        assert "x-laion-release" in page.headers
        search = await ds.client.get(f"/{database}/search.json?q=the&_shape=array")
        assert search.status_code == 200 and search.json()

    asyncio.run(scenario())


def test_a_filter_threshold_is_a_setting(hub, releases, tmp_path):
    repo, *_ = PROFILES["aesthetics-v2-6plus"]
    folder = releases["aesthetics-v2-6plus"]
    hub.commit(repo, repo_files(folder))
    env = hub_env(hub, "aesthetics-v2-6plus", LAION_MIN_AESTHETIC="5.5")
    assert build(tmp_path, env).success
    conn = sqlite3.connect(DataLayout(tmp_path.resolve()).published_db)
    (count,) = conn.execute("SELECT count(*) FROM images").fetchone()
    conn.close()
    assert count == len(expected_rows(folder, "aesthetics-v2-6plus", 5.5))


def test_a_gated_repo_stops_before_any_download_and_builds_with_a_token(
    hub, releases, tmp_path, monkeypatch
):
    repo, *_ = PROFILES["relaion2b-en"]
    hub.commit(repo, repo_files(releases["relaion2b-en"]))
    hub.gated[repo] = "hf_accepted_terms_token"
    monkeypatch.delenv("HF_TOKEN", raising=False)
    result = build(tmp_path, hub_env(hub, "relaion2b-en"), raise_on_error=False)
    assert not result.success
    text = failure_text(result)
    assert f"{repo} is gated" in text
    assert "accept its terms, then set HF_TOKEN" in text
    assert not [s for s in hub.seen if s.method == "GET" and s.file]
    assert not list((tmp_path / "raw").rglob("*.parquet*"))

    monkeypatch.setenv("HF_TOKEN", "someone_elses_token")
    result = build(tmp_path, hub_env(hub, "relaion2b-en"), raise_on_error=False)
    assert "answered 403" in failure_text(result)

    monkeypatch.setenv("HF_TOKEN", "hf_accepted_terms_token")
    assert build(tmp_path, hub_env(hub, "relaion2b-en")).success


def test_a_listing_without_sizes_or_hashes_builds(hub, releases, tmp_path):
    repo, *_ = PROFILES["laion2b-en-aesthetic"]
    folder = releases["laion2b-en-aesthetic"]
    hub.commit(repo, repo_files(folder))
    hub.listing_details = False
    assert build(tmp_path, hub_env(hub, "laion2b-en-aesthetic")).success
    listing = SourceListing.read(DataLayout(tmp_path.resolve()))
    # Sizes and versions (the sha256 in the ETag) came from each file's headers.
    assert [e.size for e in listing.entries] == [
        p.stat().st_size for p in sorted(folder.glob("*.parquet"))
    ]
    assert all(len(e.version) == 64 for e in listing.entries)


def materialized(result, asset: str) -> list[str | None]:
    """The partitions (None: unpartitioned) of ``asset`` that a run materialized."""
    return [
        e.partition
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == asset
    ]


def staged_keys(result) -> list[str | None]:
    return materialized(result, "source_files")


def test_a_new_revision_restages_only_the_files_that_changed(tmp_path):
    """12 files, then a revision in which 3 of them changed: 3 partitions run again, the
    build after them once."""
    hub = FakeHub(start_server())
    try:
        folder = tmp_path / "release"
        generate_release(folder, "laion2b-en-aesthetic", 2_400, files=12, seed=1)
        files = repo_files(folder)
        repo = "laion/laion2B-en-aesthetic"
        hub.commit(repo, files)
        instance = DagsterInstance.ephemeral()
        runs: list = []
        env = hub_env(hub, "laion2b-en-aesthetic")
        assert build(tmp_path / "data", env, instance=instance, runs=runs).success
        assert len([r for r in runs if staged_keys(r)]) == 12

        changed = sorted(p.name for p in folder.glob("*.parquet"))[3:6]
        other = tmp_path / "other"
        generate_release(other, "laion2b-en-aesthetic", 2_400, files=12, seed=2)
        replacement = sorted(other.glob("*.parquet"))
        for name, new in zip(changed, replacement, strict=False):
            files[name] = new.read_bytes()
        hub.commit(repo, files)
        hub.seen.clear()
        runs = []
        assert build(tmp_path / "data", env, instance=instance, runs=runs).success
        assert sorted(k for r in runs for k in staged_keys(r)) == changed
        assert len([r for r in runs if materialized(r, "staging_images")]) == 1
        assert {s.file for s in hub.seen if s.method == "GET" and s.file} == set(changed)
        conn = sqlite3.connect(DataLayout((tmp_path / "data").resolve()).published_db)
        (count,) = conn.execute("SELECT count(*) FROM images").fetchone()
        conn.close()
        assert count == 2_400
    finally:
        hub.server.stop()


def test_keep_raw_0_leaves_no_raw_file_behind(hub, releases, tmp_path):
    repo, *_ = PROFILES["relaion2b-en"]
    hub.commit(repo, repo_files(releases["relaion2b-en"]))
    assert build(tmp_path, hub_env(hub, "relaion2b-en", LAION_KEEP_RAW="0")).success
    raw = tmp_path / "raw" / "huggingface"
    assert not [p for p in raw.rglob("*") if p.is_file() and ".parquet" in p.name]
    assert len(list((tmp_path / "staging" / "files").glob("*.parquet"))) == 3
    assert DataLayout(tmp_path.resolve()).published_db.exists()
