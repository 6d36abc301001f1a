"""Shared fixtures: real builds of the real asset definitions in temporary folders."""

import functools
import os
import re
import shutil
import sqlite3
import sys
import unicodedata
from collections.abc import Iterator, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import (
    AssetKey,
    AssetSelection,
    DagsterInstance,
    ExecuteInProcessResult,
    build_run_status_sensor_context,
    materialize,
)
from dagster._core.definitions.observe import observe

from laion_pipeline.build.state import check_staged
from laion_pipeline.common.layout import DataLayout
from laion_pipeline.common.schema import LAION_ARROW_SCHEMA
from laion_pipeline.orchestration.assets.sources import hf_dataset
from laion_pipeline.orchestration.definitions import all_asset_checks, all_assets
from laion_pipeline.orchestration.jobs import shard_run_tags
from laion_pipeline.orchestration.resources import build_resources
from laion_pipeline.orchestration.sensors import refresh_stale_assets
from laion_pipeline.sources.inputs import SourceListing
from laion_pipeline_tests.fake_hub import FakeHub, start_server


def build(
    data_dir: Path,
    env: Mapping[str, str] | None = None,
    *,
    resources: Mapping[str, object] | None = None,
    instance: DagsterInstance | None = None,
    runs: list[ExecuteInProcessResult] | None = None,
    **kwargs,
) -> ExecuteInProcessResult:
    """What `make run` does, in process, with the real definitions and resources for ``env``
    (some replaced by ``resources``): observe the sources, materialize every stale or missing
    partition of source_files (one run each), then every other asset and check (one run).
    Returns the first run that failed, or the last one; ``runs`` collects every run."""
    runs = [] if runs is None else runs
    chosen = build_resources({"LAION_DATA_DIR": str(data_dir), **(env or {})})
    chosen.update(resources or {})
    instance = instance or DagsterInstance.ephemeral()
    raise_on_error = kwargs.pop("raise_on_error", True)
    observed = observe_sources_job_result(chosen, instance, raise_on_error)
    runs.append(observed)
    if not observed.success:
        return observed
    for key in partitions_to_stage(chosen):
        staged = materialize(
            [*all_assets, *all_asset_checks],
            resources=chosen,
            instance=instance,
            selection=[AssetKey("source_files")],
            partition_key=key,
            raise_on_error=raise_on_error,
        )
        runs.append(staged)
        if not staged.success:
            return staged
    selection = kwargs.pop("selection", None) or BUILD_SELECTION
    kwargs["tags"] = {**shard_run_tags(instance, chosen["laion_data"]), **kwargs.get("tags", {})}
    result = materialize(
        [*all_assets, *all_asset_checks],
        resources=chosen,
        instance=instance,
        selection=selection,
        raise_on_error=raise_on_error,
        **kwargs,
    )
    runs.append(result)
    return result


BUILD_SELECTION = AssetSelection.all() - AssetSelection.assets("source_files")


def observe_sources_job_result(
    resources: Mapping[str, object], instance: DagsterInstance, raise_on_error: bool = True
) -> ExecuteInProcessResult:
    """Observe hf_dataset: list the source files and register their partitions."""
    return observe(
        [hf_dataset], instance=instance, resources=resources, raise_on_error=raise_on_error
    )


def partitions_to_stage(resources: Mapping[str, object]) -> list[str]:
    """The partitions of source_files the data folder lacks (new, changed, missing or damaged
    staged files), in listing order."""
    laion_data = resources["laion_data"]
    listing = SourceListing.read(laion_data.layout)
    checks = [check_staged(laion_data.layout, e, laion_data.profile) for e in listing.entries]
    return [c.key for c in checks if c.staged is None]


def evaluate_sensor(defs, instance: DagsterInstance, observation: ExecuteInProcessResult):
    """What the `refresh_stale_assets` sensor answers to the successful ``observation`` run."""
    context = build_run_status_sensor_context(
        sensor_name="refresh_stale_assets",
        dagster_instance=instance,
        dagster_run=observation.dagster_run,
        dagster_event=observation.get_run_success_event(),
        repository_def=defs.get_repository_def(),
        resources=defs.resources,
    )
    return refresh_stale_assets(context)


REPO_ROOT = Path(__file__).resolve().parents[1]


def run_command(home: Path) -> list[str]:
    """`make run`'s command, with a Dagster instance of its own in ``home`` (its storage
    created now: two processes creating it at once trip over each other's migrations)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text((REPO_ROOT / "dagster_home.yaml").read_text())
    with DagsterInstance.from_config(str(home)):
        pass
    workspace = str(REPO_ROOT / "workspace.yaml")
    return [sys.executable, "-m", "laion_pipeline", "run", "--workspace", workspace]


def failure_text(result) -> str:
    """Every error message of the failed steps, with their causes."""
    texts = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None:
            texts.append(error.message)
            error = error.cause
    return "\n".join(texts)


# The browser tests drive Debian's chromium (no browser download); screenshots go here.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
OUTPUT = Path(os.environ.get("LAION_TEST_OUTPUT", REPO_ROOT / "test-output")) / "browser"

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",
    reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)",
)

# The asset graph of the design: each asset and the assets it reads.
EXPECTED_DEPENDENCIES = {
    "hf_dataset": set(),
    "entity_sheets": set(),
    "source_files": {"hf_dataset"},
    "entity_csvs": {"entity_sheets"},
    "staging_images": {"source_files"},
    "images": {"staging_images"},
    "images_fts": {"images"},
    "domains": {"images"},
    "artists": {"images_fts", "domains", "entity_csvs"},
    "celebrities": {"images_fts", "domains", "entity_csvs"},
    "characters": {"images_fts", "domains", "entity_csvs"},
    "published_database": {"images_fts", "artists", "celebrities", "characters"},
    "analysis": {"published_database", "staging_images"},
}


def table_rows_count(page: dict) -> int:
    """The rows a Datasette table page's JSON counts, on either line: the 0.65 line says
    ``filtered_table_rows_count``; the 1.0 line says ``count`` when asked (``_extra=count``,
    which the 0.65 line ignores)."""
    return page["count"] if "count" in page else page["filtered_table_rows_count"]


def connected_databases(payload: dict | list) -> list[dict]:
    """The databases of Datasette's ``/-/databases.json``: a list on the 0.65 line,
    ``{"databases": [...]}`` on the 1.0 line."""
    return payload["databases"] if isinstance(payload, dict) else payload


async def site_title(ds) -> str:
    """The title a Datasette server's index page shows (from the served metadata)."""
    html = (await ds.client.get("/")).text
    return re.search(r"<h1>(.*?)</h1>", html, re.S).group(1).strip()


@functools.cache
def tokens(text: str | None) -> tuple[str, ...]:
    """Words as SQLite's default unicode61 tokenizer sees them: letters and digits, case and
    (Latin) diacritics folded. Independent of SQLite, for checking its counts."""
    folded = unicodedata.normalize("NFKD", (text or "").casefold())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    return tuple(re.findall(r"[^\W_]+", folded))


def phrase_count(captions: list[str | None], name: str) -> int:
    """How many captions contain the words of ``name`` consecutively (0 for no words)."""
    words = tokens(name)
    if not words:
        return 0
    n = len(words)
    count = 0
    for caption in captions:
        t = tokens(caption)
        if any(t[i : i + n] == words for i in range(len(t) - n + 1)):
            count += 1
    return count


def row(i: int, **values) -> dict:
    """A row of a LAION parquet file, number ``i``, with ``values`` changed."""
    return {
        "URL": f"https://host{i % 3}.example/{i}.jpg",
        "TEXT": f"caption number {i}",
        "WIDTH": 640.0,
        "HEIGHT": 480.0,
        "similarity": 0.3,
        "punsafe": 0.1,
        "pwatermark": 0.2,
        "AESTHETIC_SCORE": 6.5,
        "hash": i,
        "__index_level_0__": i,
        **values,
    }


def write(path: Path, rows: list[dict], schema: pa.Schema = LAION_ARROW_SCHEMA) -> None:
    """A parquet file of ``rows`` (with the LAION columns and types unless told otherwise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema), path)


def local(folder: Path) -> dict[str, str]:
    """The settings that build from the parquet files in ``folder``."""
    return {"LAION_SOURCE": "local", "LAION_LOCAL_DIR": str(folder)}


@pytest.fixture(scope="session")
def sample_build(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    """The bundled sample built once through every asset."""
    data_dir = tmp_path_factory.mktemp("sample_build")
    result = build(data_dir)
    assert result.success
    return DataLayout(data_dir.resolve())


@pytest.fixture
def published(sample_build: DataLayout) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"{sample_build.published_db.as_uri()}?mode=ro", uri=True)
    yield conn
    conn.close()


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    """A hub on 127.0.0.1 whose downloads redirect to a second origin, as the real one's do."""
    server, storage = start_server(), start_server()
    yield FakeHub(server, storage)
    server.stop()
    storage.stop()
