"""LAION_SOURCE=huggingface against a hub on 127.0.0.1: listing, resumable verified downloads,
retries, clear errors, staleness when the revision moves, offline re-runs, and the token kept
to the hub."""

import json
import logging
import os
import random
import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, DagsterInstance
from dagster._core.definitions.data_version import StaleStatus
from dagster._core.definitions.observe import observe
from dagster._utils.test.data_versions import get_stale_status_resolver
from tqdm.auto import tqdm
from werkzeug import Request, Response

from laion_pipeline.common.layout import SAMPLE_DIR, DataLayout
from laion_pipeline.common.schema import LAION_ARROW_SCHEMA
from laion_pipeline.orchestration.assets.sources import hf_dataset
from laion_pipeline.orchestration.definitions import all_assets
from laion_pipeline.orchestration.resources import EntityLists, HuggingFaceSource, build_resources
from laion_pipeline.sources.hub import HubClient, HubError, append_download
from laion_pipeline_tests.conftest import build, failure_text
from laion_pipeline_tests.fake_hub import FakeHub, start_server

REPO = "mirror-org/improved_aesthetics_6plus"
SAMPLE_FILES = {
    f"data/{p.name}": p.read_bytes() for p in sorted((SAMPLE_DIR / "data").glob("*.parquet"))
}


@pytest.fixture
def plain_hub() -> Iterator[FakeHub]:
    """A hub that serves file bodies itself, without a redirect to storage."""
    server = start_server()
    yield FakeHub(server)
    server.stop()


def hf_source(hub: FakeHub, **overrides) -> HuggingFaceSource:
    settings = {"repo_id": REPO, "endpoint": hub.endpoint, "backoff_seconds": 0.01} | overrides
    return HuggingFaceSource(**settings)


def bundled_lists() -> EntityLists:
    return EntityLists(
        **{
            f"{k}_csv_url": str(SAMPLE_DIR / f"{k}.csv")
            for k in ("artists", "celebrities", "characters")
        }
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_sheets(hub: FakeHub) -> dict[str, str]:
    """Google-Sheets-like CSV exports on the hub's server, each redirecting to the storage
    origin as docs.google.com does; returns the three URLs by list kind."""
    urls = {}
    for gid, kind in enumerate(("artists", "celebrities", "characters")):
        data = (SAMPLE_DIR / f"{kind}.csv").read_bytes()
        if kind == "celebrities":  # as Excel and some exporters write it: a BOM and CRLF
            data = b"\xef\xbb\xbf" + data.replace(b"\n", b"\r\n")
        target = hub.storage.url_for(f"/csv/{kind}")
        hub.storage.expect_request(f"/csv/{kind}").respond_with_data(data, content_type="text/csv")
        path = "/spreadsheets/d/SHEET/export"
        query = f"format=csv&gid={gid}"
        hub.server.expect_request(path, query_string=query).respond_with_data(
            "", status=307, headers={"Location": target}
        )
        urls[kind] = hub.server.url_for(f"{path}?{query}")
    return urls


def test_build_from_the_hub_with_sheets_behind_redirects(hub, tmp_path):
    sha = hub.commit(REPO, {**SAMPLE_FILES, "README.md": b"# mirror\n"})
    sheets = serve_sheets(hub)
    env = {
        "LAION_SOURCE": "huggingface",
        "LAION_HF_REPO": REPO,
        "HF_ENDPOINT": hub.endpoint,
        **{f"LAION_{kind.upper()}_CSV_URL": url for kind, url in sheets.items()},
    }
    assert build(tmp_path, env).success
    layout = DataLayout(tmp_path.resolve())
    manifest = json.loads(layout.manifest_json.read_text())
    assert manifest["source"] == {"kind": "huggingface", "location": REPO, "revision": sha}
    assert manifest["row_counts"]["images"] == 7_000
    assert manifest["row_counts"]["celebrities"] == 35
    downloaded = layout.raw_dir / "huggingface" / REPO / "data"
    assert sorted(p.name for p in downloaded.iterdir()) == sorted(
        Path(p).name for p in SAMPLE_FILES
    )
    # The bytes came from the storage origin the hub redirected to.
    assert len([s for s in hub.seen if s.origin == "storage" and "/blobs/" in s.path]) == 7

    # A second run finds every file staged from the same content and downloads nothing (the
    # listing asks for the first file's headers: the check for a gated repo).
    hub.seen.clear()
    assert build(tmp_path, env).success
    assert [
        s for s in hub.seen if s.method == "GET" and s.path.startswith(("/blobs/", "/datasets/"))
    ] == []


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def test_a_transfer_cut_mid_file_resumes_where_it_stopped(plain_hub, tmp_path):
    # Bigger than huggingface_hub's 10 MB write chunk, so part of it is on disk when cut.
    content = random_bytes(24 * 1024 * 1024, 1)
    plain_hub.commit(REPO, {"data/big.parquet": content})
    plain_hub.faults["data/big.parquet"] = ["cut"]
    client = HubClient(REPO, endpoint=plain_hub.endpoint, backoff_seconds=0.01)
    (path,) = client.download_all(client.listing(), tmp_path)
    assert path.read_bytes() == content
    gets = plain_hub.downloads("data/big.parquet")
    assert len(gets) == 2
    resumed_from = int(gets[1].headers["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_from < len(content)


def test_a_partial_file_left_by_an_earlier_run_is_resumed(plain_hub, tmp_path):
    content = random_bytes(300_000, 2)
    plain_hub.commit(REPO, {"data/a.parquet": content})
    client = HubClient(REPO, endpoint=plain_hub.endpoint, backoff_seconds=0.01)
    listing = client.listing()
    (file,) = listing.files
    partial = tmp_path / "data" / f"a.parquet.{file.sha256[:16]}.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(content[:100_000])
    (path,) = client.download_all(listing, tmp_path)
    assert path.read_bytes() == content
    assert not partial.exists()
    (get,) = plain_hub.downloads("data/a.parquet")
    assert get.headers["Range"] == "bytes=100000-"


def test_a_server_error_succeeds_on_retry(hub, tmp_path):
    content = random_bytes(50_000, 3)
    hub.commit(REPO, {"data/a.parquet": content})
    hub.faults["data/a.parquet"] = ["500", "500"]
    hub.api_faults = [503]
    client = HubClient(REPO, endpoint=hub.endpoint, backoff_seconds=0.01)
    (path,) = client.download_all(client.listing(), tmp_path)
    assert path.read_bytes() == content
    assert len(hub.downloads("data/a.parquet")) == 3


def test_a_corrupt_body_is_detected_deleted_and_fetched_again(hub, tmp_path):
    content = random_bytes(50_000, 4)
    hub.commit(REPO, {"data/a.parquet": content})
    hub.faults["data/a.parquet"] = ["corrupt"]
    client = HubClient(REPO, endpoint=hub.endpoint, backoff_seconds=0.01)
    (path,) = client.download_all(client.listing(), tmp_path)
    assert path.read_bytes() == content


def test_a_file_corrupt_twice_fails_the_run_and_is_deleted(hub, tmp_path):
    sha = hub.commit(REPO, SAMPLE_FILES)
    name = next(iter(SAMPLE_FILES))
    hub.faults[name] = ["corrupt", "corrupt"]
    resources = {"parquet_source": hf_source(hub), "entity_lists": bundled_lists()}
    result = build(tmp_path, resources=resources, raise_on_error=False)
    text = failure_text(result)
    assert f"{name} from {REPO} at {sha} failed verification twice" in text
    assert "the file was deleted" in text
    folder = tmp_path / "raw" / "huggingface" / REPO / "data"
    assert not (folder / Path(name).name).exists()
    assert not list(folder.glob("*.part"))
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert AssetKey("staging_images") not in materialized
    assert not DataLayout(tmp_path).published_db.exists()


@pytest.mark.parametrize(
    "repo, revision, message",
    [
        ("someone/not-there", "main", "dataset repo someone/not-there not found"),
        (REPO, "v9", "revision 'v9' not found in " + REPO),
        ("../../etc", "main", "is not a repo id"),
    ],
)
def test_unknown_repo_or_revision_fails_clearly(hub, tmp_path, repo, revision, message):
    hub.commit(REPO, SAMPLE_FILES)
    source = hf_source(hub, repo_id=repo, revision=revision)
    result = build(
        tmp_path,
        resources={"parquet_source": source, "entity_lists": bundled_lists()},
        raise_on_error=False,
    )
    assert message in failure_text(result)


def test_a_listed_file_the_hub_cannot_serve_fails_clearly(hub, tmp_path):
    sha = hub.commit(REPO, {"data/a.parquet": b"x" * 100})
    del hub.commits[sha]["data/a.parquet"]  # listed by the API below, then gone
    hub.commits[sha]["data/b.parquet"] = b"y"
    client = HubClient(REPO, endpoint=hub.endpoint, backoff_seconds=0.01)
    listing = client.listing()
    hub.commits[sha] = {}
    with pytest.raises(HubError, match=r"is listed in .* but the hub has no such file"):
        client.download_all(listing, tmp_path)


def test_a_repo_without_parquet_files_fails_clearly(hub):
    hub.commit(REPO, {"README.md": b"nothing here"})
    with pytest.raises(HubError, match=re.escape("has no .parquet files")):
        HubClient(REPO, endpoint=hub.endpoint).listing()


def test_unsafe_file_names_from_the_listing_are_refused(hub, tmp_path):
    hub.commit(REPO, {"../../outside.parquet": b"x", "data/ok.parquet": b"y"})
    with pytest.raises(HubError, match=re.escape("unsafe path '../../outside.parquet'")):
        HubClient(REPO, endpoint=hub.endpoint).listing()
    assert not (tmp_path.parent / "outside.parquet").exists()


def test_parquet_without_the_laion_columns_fails_before_staging(hub, tmp_path):
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.table({"URL": ["http://a/"], "caption": ["x"]}), buffer)
    hub.commit(REPO, {"data/x.parquet": buffer.getvalue().to_pybytes()})
    resources = {"parquet_source": hf_source(hub), "entity_lists": bundled_lists()}
    result = build(tmp_path, resources=resources, raise_on_error=False)
    assert "lacks the LAION columns TEXT, WIDTH" in failure_text(result)


def test_an_unreachable_hub_says_which_sources_work_offline(tmp_path):
    source = HuggingFaceSource(
        repo_id=REPO,
        endpoint=f"http://127.0.0.1:{closed_port()}",
        attempts=2,
        backoff_seconds=0.01,
        step_retries=2,
        step_retry_seconds=0.01,
    )
    result = build(
        tmp_path,
        resources={"parquet_source": source, "entity_lists": bundled_lists()},
        raise_on_error=False,
    )
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert [e.step_key for e in retried] == ["hf_dataset"] * 2
    text = failure_text(result)
    assert "cannot reach the Hugging Face Hub" in text
    assert "LAION_SOURCE=sample and LAION_SOURCE=local work offline" in text


def test_offline_reruns_use_the_files_already_fetched(hub, tmp_path):
    sha = hub.commit(REPO, SAMPLE_FILES)
    lists = bundled_lists()
    assert build(
        tmp_path, resources={"parquet_source": hf_source(hub), "entity_lists": lists}
    ).success
    offline = HuggingFaceSource(
        repo_id=REPO, endpoint=f"http://127.0.0.1:{closed_port()}", offline=True
    )
    assert build(tmp_path, resources={"parquet_source": offline, "entity_lists": lists}).success
    manifest = json.loads(DataLayout(tmp_path).manifest_json.read_text())
    assert manifest["source"]["revision"] == sha

    result = build(
        tmp_path / "fresh",
        resources={"parquet_source": offline, "entity_lists": lists},
        raise_on_error=False,
    )
    assert "HF_HUB_OFFLINE is set but " + REPO + "@main was never fetched" in failure_text(result)


def test_a_moved_revision_stages_only_its_new_file(hub, tmp_path):
    hub.commit(REPO, SAMPLE_FILES)
    instance = DagsterInstance.ephemeral()
    resources = build_resources({"LAION_DATA_DIR": str(tmp_path)})
    resources |= {"parquet_source": hf_source(hub), "entity_lists": bundled_lists()}
    assert build(tmp_path, resources=resources, instance=instance).success

    def status(name: str, partition: str | None = None) -> StaleStatus:
        resolver = get_stale_status_resolver(instance, all_assets)
        return resolver.get_status(AssetKey(name), partition)

    observe([hf_dataset], instance=instance, resources=resources)
    assert {status("source_files", key) for key in SAMPLE_FILES} == {StaleStatus.FRESH}
    assert status("published_database") == StaleStatus.FRESH

    moved = dict(SAMPLE_FILES)
    moved["data/extra.parquet"] = next(iter(SAMPLE_FILES.values()))
    hub.commit(REPO, moved)
    observe([hf_dataset], instance=instance, resources=resources)
    assert "data/extra.parquet" in instance.get_dynamic_partitions("source_files")
    # The files of the old revision are unchanged: only the new one needs staging.
    assert {status("source_files", key) for key in SAMPLE_FILES} == {StaleStatus.FRESH}
    assert status("source_files", "data/extra.parquet") == StaleStatus.MISSING
    runs: list = []
    assert build(tmp_path, resources=resources, instance=instance, runs=runs).success
    staged = [
        e.partition
        for r in runs
        for e in r.get_asset_materialization_events()
        if e.asset_key == AssetKey("source_files")
    ]
    assert staged == ["data/extra.parquet"]
    manifest = json.loads(DataLayout(tmp_path).manifest_json.read_text())
    assert manifest["row_counts"]["images"] == 8_000


def test_the_token_goes_to_the_hub_only_and_is_never_written(hub, tmp_path, monkeypatch, caplog):
    token = "hf_test_SECRET_token_0123456789"
    monkeypatch.setenv("HF_TOKEN", token)
    hub.commit(REPO, SAMPLE_FILES)
    instance = DagsterInstance.ephemeral()
    with caplog.at_level(logging.DEBUG):
        result = build(
            tmp_path,
            resources={"parquet_source": hf_source(hub), "entity_lists": bundled_lists()},
            instance=instance,
        )
    assert result.success
    hub_requests = [s for s in hub.seen if s.origin == "hub"]
    assert hub_requests and all(
        s.headers.get("Authorization") == f"Bearer {token}" for s in hub_requests
    )
    storage_requests = [s for s in hub.seen if s.origin == "storage"]
    assert storage_requests and all("Authorization" not in s.headers for s in storage_requests)

    logs = "\n".join(str(record) for record in instance.all_logs(result.run_id))
    assert token not in logs and token not in caplog.text
    for root, _, files in os.walk(tmp_path):
        for name in files:
            assert token.encode() not in (Path(root) / name).read_bytes(), name


def test_environment_selects_the_hub_and_the_2022_sheets():
    resources = build_resources(
        {
            "LAION_SOURCE": "huggingface",
            "LAION_HF_REPO": "a/b",
            "LAION_HF_REVISION": "v2",
            "HF_ENDPOINT": "http://127.0.0.1:9",
            "HF_HUB_OFFLINE": "1",
        }
    )
    source = resources["parquet_source"]
    assert isinstance(source, HuggingFaceSource)
    assert (source.repo_id, source.revision, source.endpoint, source.offline) == (
        "a/b",
        "v2",
        "http://127.0.0.1:9",
        True,
    )
    assert resources["entity_lists"].artists_csv_url.startswith(
        "https://docs.google.com/spreadsheets/d/1JLQQ3U6P0d4vDkAGuB8avmXOPIDPeDUdAEZsWTRYpng/"
    )
    assert resources["entity_lists"].characters_csv_url.endswith("gid=480391249")


def test_an_html_page_instead_of_csv_is_refused(hub, tmp_path):
    hub.server.expect_request("/private-sheet").respond_with_data(
        "<!DOCTYPE html><html><head><title>Sign in</title></head></html>",
        content_type="text/html",
    )
    url = hub.server.url_for("/private-sheet")
    result = build(tmp_path, {"LAION_CHARACTERS_CSV_URL": url}, raise_on_error=False)
    assert f"{url} is an HTML page, not CSV" in failure_text(result)


def test_a_missing_sheet_names_the_variable(hub, tmp_path):
    hub.server.expect_request("/gone").respond_with_data("nope", status=404)
    url = hub.server.url_for("/gone")
    result = build(tmp_path, {"LAION_ARTISTS_CSV_URL": url}, raise_on_error=False)
    assert f"LAION_ARTISTS_CSV_URL: {url} answered HTTP 404" in failure_text(result)


def test_published_database_from_the_hub_is_searchable(hub, tmp_path):
    hub.commit(REPO, SAMPLE_FILES)
    resources = {"parquet_source": hf_source(hub), "entity_lists": bundled_lists()}
    assert build(tmp_path, resources=resources).success
    conn = sqlite3.connect(DataLayout(tmp_path).published_db)
    (count,) = conn.execute(
        "SELECT count(*) FROM images_fts WHERE images_fts MATCH '\"Alphonse Mucha\"'"
    ).fetchone()
    assert count > 0


def test_a_hub_that_keeps_failing_says_to_try_again_later(hub, tmp_path):
    hub.commit(REPO, {"data/a.parquet": b"x" * 1000})
    hub.api_faults = [500, 500]
    client = HubClient(REPO, endpoint=hub.endpoint, attempts=2, backoff_seconds=0.01)
    with pytest.raises(HubError, match="after 2 attempts: try again later"):
        client.listing()
    listing = client.listing()
    hub.faults["data/a.parquet"] = ["500", "500"]
    with pytest.raises(HubError, match=re.escape("downloading data/a.parquet failed 2 times")):
        client.download_all(listing, tmp_path)
    (path,) = client.download_all(listing, tmp_path)
    assert path.read_bytes() == b"x" * 1000


BODY = bytes(range(256)) * 40


def ranged(request: Request) -> Response:
    """A file server that honours `Range: bytes=N-`, as the hub's storage does."""
    start = int(re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", "bytes=0-"))[1])
    status = 206 if start else 200
    return Response(BODY[start:], status=status, headers={"Content-Length": str(len(BODY) - start)})


@pytest.mark.fast
def test_the_transfer_resumes_from_the_partial_file_and_appends(tmp_path):
    """The contract `append_download` relies on in huggingface_hub's `http_get`."""
    server = start_server()
    try:
        server.expect_request("/file").respond_with_handler(ranged)
        partial = tmp_path / "file.part"
        partial.write_bytes(BODY[:3000])
        append_download(server.url_for("/file"), partial, {}, len(BODY), tqdm)
        assert partial.read_bytes() == BODY
        assert server.log[-1][0].headers["Range"] == "bytes=3000-"

        server.clear()
        server.expect_request("/short").respond_with_data(BODY[:1000])
        short = tmp_path / "short.part"
        with pytest.raises(Exception) as failed:
            append_download(server.url_for("/short"), short, {}, len(BODY), tqdm)
        assert not isinstance(failed.value, AssertionError)
    finally:
        server.stop()


# Stages one file of the hub again in a process of its own, counting every file hashed: what a
# later run does once the staged file is gone and the download is kept (LAION_KEEP_RAW=1).
RESTAGE = """
import json, sys
from pathlib import Path

import laion_pipeline.common.files as files

hashed = []
sha256_file = files.sha256_file
files.sha256_file = lambda path: hashed.append(str(path)) or sha256_file(path)

from laion_pipeline.sources.inputs import SourceListing
from laion_pipeline.common.layout import DataLayout
from laion_pipeline.orchestration.resources import HuggingFaceSource, build_resources
from laion_pipeline.build.staging import stage_source_file

data, endpoint, repo, key = sys.argv[1:]
laion_data = build_resources({"LAION_DATA_DIR": data})["laion_data"]
layout, profile = laion_data.layout, laion_data.profile
listing = SourceListing.read(layout)
source = HuggingFaceSource(repo_id=repo, endpoint=endpoint)
fetched = source.fetch(layout, profile, listing, listing.entry(key))
stage_source_file(layout, profile, listing, listing.entry(key), fetched.path, fetched.sha256)
print(json.dumps({"raw": str(fetched.path), "hashed": hashed}))
"""


def test_a_kept_download_is_not_hashed_again_when_its_file_is_restaged(hub, tmp_path):
    # About 50 MB of captions that do not compress.
    rng = random.Random(7)
    big = tmp_path / "big.parquet"
    rows = [
        {
            **dict.fromkeys(LAION_ARROW_SCHEMA.names),
            "URL": f"https://a.example/{i}",
            "TEXT": rng.randbytes(1000).hex(),
            "AESTHETIC_SCORE": 6.5,
            "hash": i,
            "__index_level_0__": i,
        }
        for i in range(25_000)
    ]
    pq.write_table(pa.Table.from_pylist(rows, LAION_ARROW_SCHEMA), big, compression="none")
    assert big.stat().st_size > 50_000_000
    key = "data/train-00000-of-00001.parquet"
    hub.commit(REPO, {key: big.read_bytes()})
    resources = {"parquet_source": hf_source(hub), "entity_lists": bundled_lists()}
    assert build(tmp_path / "data", resources=resources).success
    layout = DataLayout((tmp_path / "data").resolve())
    cache = layout.raw_dir / "huggingface" / REPO / ".verified.json"
    assert len(json.loads(cache.read_text())) == 1
    assert not list(cache.parent.glob(".verified-*"))

    layout.staged_parquet(key).unlink()
    command = [sys.executable, "-c", RESTAGE, str(layout.root), hub.endpoint, REPO, key]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300)
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["raw"] not in report["hashed"]
    assert layout.staged_parquet(key).exists()

    # A cache that is not one is ignored, never trusted: the file is hashed again.
    cache.write_text('{"' + report["raw"] + '": [1, 2, "' + "0" * 64 + '"], "x": 1}')
    layout.staged_parquet(key).unlink()
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300)
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["hashed"].count(report["raw"]) == 1
