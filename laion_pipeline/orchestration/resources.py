"""The configuration surface: environment variables, and the resources they select.

Every variable of the README's configuration table is read here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource
from dagster_duckdb import DuckDBResource

from laion_pipeline.common.blocklist import BLOCKLIST_VARIABLE, read_blocklist
from laion_pipeline.common.errors import ConfigurationError
from laion_pipeline.common.layout import ENTITY_KINDS, SAMPLE_DIR, DataLayout
from laion_pipeline.common.settings import usable_cores, whole_number, yes_no
from laion_pipeline.sources.folders import SampleSource, local_source
from laion_pipeline.sources.hub import DEFAULT_ENDPOINT
from laion_pipeline.sources.huggingface import HubSource
from laion_pipeline.sources.inputs import (
    DEFAULT_SHARD_ROWS,
    SourceEntry,
    SourceListing,
)
from laion_pipeline.sources.name_lists import NameLists, google_sheet_csv_url
from laion_pipeline.sources.profiles import Profile, choose_profile, load_profiles
from laion_pipeline.sources.source import FetchedFile, Misconfigured, Source

SOURCES = ("sample", "huggingface", "local")


class LaionData(ConfigurableResource):
    """The data directory (`LAION_DATA_DIR`) and what a build makes of the source files: the
    profile (`LAION_PROFILE`, with `LAION_PROFILES_FILE`), whether raw files are kept once
    staged (`LAION_KEEP_RAW`), how many files are staged (and shards built) at once
    (`LAION_WORKERS`) and the most rows a shard database holds (`LAION_SHARD_ROWS`)."""

    data_dir: str
    profile_name: str = ""
    profiles_file: str = ""
    # The environment's values of the profile filters' variables (LAION_MIN_AESTHETIC).
    filter_settings: dict[str, str] = field(default_factory=dict)
    source_kind: str = "sample"
    keep_raw: bool = True
    workers: int = 0
    shard_rows: int = DEFAULT_SHARD_ROWS
    # The list of takedowns staging leaves out (`LAION_BLOCKLIST`): a file or an http(s) URL.
    blocklist: str = ""

    @property
    def layout(self) -> DataLayout:
        return DataLayout(Path(self.data_dir).resolve())

    @property
    def profile(self) -> Profile:
        """The profile a build stages with, and the takedowns it leaves out."""
        profile = choose_profile(
            self.profile_name or None,
            self.source_kind,
            self.profiles_file or None,
            self.filter_settings,
        )
        return dataclasses.replace(profile, takedowns=read_blocklist(self.blocklist))

    @property
    def parallel_files(self) -> int:
        """Files staged at once on this machine: `LAION_WORKERS`, default one per core."""
        return self.workers or usable_cores()

    @property
    def threads_per_file(self) -> int:
        """DuckDB threads of one file's staging: this process's cores shared by the files
        staged at once."""
        return max(1, usable_cores() // self.parallel_files)


class NetworkResource(ConfigurableResource):
    """A resource that may meet a network outage: each request is retried `attempts` times
    within the step, then the step itself is retried `step_retries` times, waiting about
    `step_retry_seconds` doubled each time (30 s, 60 s, 120 s)."""

    step_retries: int = 3
    step_retry_seconds: float = 30.0


class ParquetSource(NetworkResource):
    """Where the LAION parquet files come from: the settings of one kind of source
    (``sources/``), which lists and fetches the files."""

    def source(self) -> Source:
        raise NotImplementedError

    def listing(self, layout: DataLayout, profile: Profile, log: Any = None) -> SourceListing:
        """The source files the profile wants at the revision the source gives now."""
        return self.source().listing(layout, profile, log)

    def fetch(
        self,
        layout: DataLayout,
        profile: Profile,
        listing: SourceListing,
        entry: SourceEntry,
        log: Any = None,
    ) -> FetchedFile:
        """Make one file of `listing` available in the data folder, verified."""
        return self.source().fetch(layout, profile, listing, entry, log)


class SampleParquetSource(ParquetSource):
    """The bundled 7,000-row sample: offline, the default (`LAION_SOURCE=sample`)."""

    def source(self) -> Source:
        return SampleSource()


class LocalParquetSource(ParquetSource):
    """Any folder of LAION parquet files (`LAION_SOURCE=local`, `LAION_LOCAL_DIR`)."""

    local_dir: str

    def source(self) -> Source:
        return local_source(self.local_dir)


class HuggingFaceSource(ParquetSource):
    """A dataset repo on the Hugging Face Hub (`LAION_SOURCE=huggingface`): `LAION_HF_REPO`
    (default: the profile's) at `LAION_HF_REVISION`, from `HF_ENDPOINT`. `HF_TOKEN` is
    read by huggingface_hub itself and never stored here. With `HF_HUB_OFFLINE=1` the files
    of the last listing fetched into the data directory are used, without asking the hub."""

    repo_id: str = ""
    revision: str = ""
    endpoint: str = DEFAULT_ENDPOINT
    offline: bool = False
    attempts: int = 5
    backoff_seconds: float = 2.0

    def source(self) -> Source:
        return HubSource(**{f.name: getattr(self, f.name) for f in dataclasses.fields(HubSource)})


class MisconfiguredSource(ParquetSource):
    """Stands in when the settings name no usable source, so the UI still loads the graph
    and every run fails with the reason."""

    problem: str

    def source(self) -> Source:
        return Misconfigured(self.problem)


class EntityLists(NetworkResource):
    """The three name lists (artists, celebrities, characters) as CSV: an http(s) URL, a
    `file://` URL or a path (`sources/name_lists.py` reads them)."""

    artists_csv_url: str
    celebrities_csv_url: str
    characters_csv_url: str
    attempts: int = 4
    backoff_seconds: float = 2.0

    def lists(self) -> NameLists:
        urls = {kind: getattr(self, f"{kind}_csv_url") for kind in ENTITY_KINDS}
        return NameLists(urls, self.attempts, self.backoff_seconds)

    def display_url(self, kind: str) -> str:
        """The list's URL for logs, metadata and messages: credentials in it masked."""
        return self.lists().display_url(kind)

    def read(self, kind: str) -> bytes:
        """The raw bytes of one list."""
        return self.lists().read(kind)


def build_resources(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The resources for one environment, chosen by `LAION_SOURCE` (default `sample`)."""
    env = os.environ if environ is None else environ
    data_dir = env.get("LAION_DATA_DIR") or "data"
    source_kind = (env.get("LAION_SOURCE") or "sample").strip().lower()
    source: ParquetSource
    if source_kind == "sample":
        source = SampleParquetSource()
    elif source_kind == "local":
        source = LocalParquetSource(local_dir=env.get("LAION_LOCAL_DIR", ""))
    elif source_kind == "huggingface":
        source = HuggingFaceSource(
            repo_id=env.get("LAION_HF_REPO") or "",
            revision=env.get("LAION_HF_REVISION") or "",
            endpoint=env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT,
            offline=yes_no("HF_HUB_OFFLINE", env.get("HF_HUB_OFFLINE"), False),
        )
    else:
        source = MisconfiguredSource(
            problem=f"LAION_SOURCE={source_kind!r} is not a source: set LAION_SOURCE to one of "
            + ", ".join(SOURCES)
        )

    def entity_url(kind: str) -> str:
        default = (
            google_sheet_csv_url(kind)
            if source_kind == "huggingface"
            else str(SAMPLE_DIR / f"{kind}.csv")
        )
        return env.get(f"LAION_{kind.upper()}_CSV_URL") or default

    profiles_file = env.get("LAION_PROFILES_FILE") or ""
    try:
        variables = {
            p.row_filter.variable
            for p in load_profiles(profiles_file or None).values()
            if p.row_filter and p.row_filter.variable
        }
    except ConfigurationError as error:
        source = MisconfiguredSource(problem=str(error))
        variables = set()
    data = LaionData(
        data_dir=data_dir,
        profile_name=(env.get("LAION_PROFILE") or "").strip(),
        profiles_file=profiles_file,
        filter_settings={v: env[v] for v in sorted(variables) if env.get(v)},
        source_kind=source_kind,
        keep_raw=yes_no("LAION_KEEP_RAW", env.get("LAION_KEEP_RAW"), True),
        blocklist=(env.get(BLOCKLIST_VARIABLE) or "").strip(),
        workers=whole_number(
            "LAION_WORKERS",
            env.get("LAION_WORKERS"),
            0,
            "how many files to stage at once, such as 2",
        ),
        shard_rows=whole_number(
            "LAION_SHARD_ROWS",
            env.get("LAION_SHARD_ROWS"),
            DEFAULT_SHARD_ROWS,
            "the most rows a shard database holds, such as 20000000",
        ),
    )
    return {
        "laion_data": data,
        "parquet_source": source,
        "entity_lists": EntityLists(**{f"{k}_csv_url": entity_url(k) for k in ENTITY_KINDS}),
        "staging_duckdb": DuckDBResource(database=str(data.layout.staging_db)),
    }
