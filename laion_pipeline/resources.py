"""The configuration surface: environment variables, and the resources they select.

Every variable of the README's configuration table is read here and nowhere else.
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource
from dagster_duckdb import DuckDBResource

from laion_pipeline.errors import ConfigurationError
from laion_pipeline.hub import (
    DEFAULT_ENDPOINT,
    DEFAULT_HF_REPO,
    HubClient,
    HubListing,
    load_listing,
    save_listing,
)
from laion_pipeline.inputs import SourceRevision
from laion_pipeline.layout import ENTITY_KINDS, DataLayout
from laion_pipeline.synthetic import SAMPLE_DIR
from laion_pipeline.web import fetch_url, public_url

SOURCES = ("sample", "huggingface", "local")
GOOGLE_SHEET_ID = "1JLQQ3U6P0d4vDkAGuB8avmXOPIDPeDUdAEZsWTRYpng"
GOOGLE_SHEET_GIDS = {"artists": "0", "celebrities": "1037423923", "characters": "480391249"}


def google_sheet_csv_url(kind: str) -> str:
    """The CSV export of one tab of the 2022 sheet of names."""
    return (
        f"https://docs.google.com/spreadsheets/d/{GOOGLE_SHEET_ID}/export"
        f"?format=csv&gid={GOOGLE_SHEET_GIDS[kind]}"
    )


@dataclass(frozen=True)
class FetchedFiles:
    """Parquet files ready to read, in file order, with the sha256 of those already verified."""

    revision: SourceRevision
    files: list[Path]
    known_sha256: dict[str, str] = field(default_factory=dict)


class LaionData(ConfigurableResource):
    """The data directory (``LAION_DATA_DIR``): raw, staging, build and published files."""

    data_dir: str

    @property
    def layout(self) -> DataLayout:
        return DataLayout(Path(self.data_dir).resolve())


class NetworkResource(ConfigurableResource):
    """A resource that may meet a network outage: each request is retried ``attempts`` times
    within the step, then the step itself is retried ``step_retries`` times, waiting about
    ``step_retry_seconds`` doubled each time (30 s, 60 s, 120 s)."""

    step_retries: int = 3
    step_retry_seconds: float = 30.0


class ParquetSource(NetworkResource):
    """Where the LAION parquet files come from. Subclasses: sample, local, Hugging Face."""

    def observe(self, layout: DataLayout) -> SourceRevision:
        """The exact version of the data the source would give now."""
        raise NotImplementedError

    def fetch(self, layout: DataLayout, log: Any) -> FetchedFiles:
        """Make the parquet files available locally."""
        raise NotImplementedError


def _folder_parquet_files(folder: Path, variable: str) -> list[Path]:
    if not folder.is_dir():
        raise ConfigurationError(
            f"{variable} points at {folder}, which is not a folder: set {variable} to a folder "
            "of LAION parquet files"
        )
    files = sorted(p for p in folder.rglob("*.parquet") if p.is_file())
    if not files:
        raise ConfigurationError(
            f"{folder} holds no *.parquet files: set {variable} to a folder of LAION parquet files"
        )
    return files


def _listing_fingerprint(folder: Path, files: list[Path]) -> str:
    """A version for a folder of files: changes when any file is added, removed or rewritten."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


class SampleParquetSource(ParquetSource):
    """The bundled 7,000-row sample: offline, the default (``LAION_SOURCE=sample``)."""

    def observe(self, layout: DataLayout) -> SourceRevision:
        files = _folder_parquet_files(SAMPLE_DIR / "data", "LAION_SOURCE")
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        return SourceRevision("sample", "laion_pipeline/sample_data", digest.hexdigest()[:16])

    def fetch(self, layout: DataLayout, log: Any) -> FetchedFiles:
        files = _folder_parquet_files(SAMPLE_DIR / "data", "LAION_SOURCE")
        return FetchedFiles(self.observe(layout), files)


class LocalParquetSource(ParquetSource):
    """Any folder of LAION parquet files (``LAION_SOURCE=local``, ``LAION_LOCAL_DIR``)."""

    local_dir: str

    def _folder(self) -> Path:
        if not self.local_dir:
            raise ConfigurationError(
                "LAION_SOURCE=local needs LAION_LOCAL_DIR: "
                "set it to a folder of LAION parquet files"
            )
        return Path(self.local_dir).expanduser().resolve()

    def observe(self, layout: DataLayout) -> SourceRevision:
        folder = self._folder()
        files = _folder_parquet_files(folder, "LAION_LOCAL_DIR")
        return SourceRevision("local", str(folder), _listing_fingerprint(folder, files))

    def fetch(self, layout: DataLayout, log: Any) -> FetchedFiles:
        revision = self.observe(layout)
        return FetchedFiles(
            revision, _folder_parquet_files(Path(revision.location), "LAION_LOCAL_DIR")
        )


class HuggingFaceSource(ParquetSource):
    """A dataset repo on the Hugging Face Hub (``LAION_SOURCE=huggingface``): ``LAION_HF_REPO``
    at ``LAION_HF_REVISION``, from ``HF_ENDPOINT``. ``HF_TOKEN`` is read by huggingface_hub
    itself and never stored here. With ``HF_HUB_OFFLINE=1`` the files of the last listing
    fetched into the data directory are used, without asking the hub."""

    repo_id: str
    revision: str = "main"
    endpoint: str = DEFAULT_ENDPOINT
    offline: bool = False
    download_workers: int = 4
    attempts: int = 5
    backoff_seconds: float = 2.0

    def client(self, log: Any = None) -> HubClient:
        return HubClient(
            self.repo_id,
            self.revision,
            endpoint=self.endpoint,
            attempts=self.attempts,
            backoff_seconds=self.backoff_seconds,
            log=log,
        )

    def folder(self, layout: DataLayout) -> Path:
        """Where the repo's files are downloaded, keeping their repo paths."""
        return layout.raw_dir / "huggingface" / self.repo_id

    def _listing_file(self, layout: DataLayout) -> Path:
        revision = urllib.parse.quote(self.revision, safe="")
        return self.folder(layout) / ".listings" / f"{revision}.json"

    def _listing(self, layout: DataLayout, log: Any) -> HubListing:
        if self.offline:
            listing = load_listing(self._listing_file(layout))
            if listing is None:
                raise ConfigurationError(
                    f"HF_HUB_OFFLINE is set but {self.repo_id}@{self.revision} was never fetched "
                    f"into {layout.root}: unset HF_HUB_OFFLINE for one run, or use "
                    "LAION_SOURCE=sample or LAION_SOURCE=local"
                )
            return listing
        listing = self.client(log).listing()
        save_listing(self._listing_file(layout), listing)
        return listing

    def _revision(self, listing: HubListing) -> SourceRevision:
        return SourceRevision("huggingface", self.repo_id, listing.sha)

    def observe(self, layout: DataLayout) -> SourceRevision:
        return self._revision(self._listing(layout, None))

    def fetch(self, layout: DataLayout, log: Any) -> FetchedFiles:
        listing = self._listing(layout, log)
        folder = self.folder(layout)
        if log:
            log.info(
                f"{self.repo_id}@{self.revision} is commit {listing.sha}: "
                f"{len(listing.files)} parquet files, {sum(f.size for f in listing.files):,} bytes"
            )
        paths = self.client(log).download_all(
            listing, folder, self.download_workers, offline=self.offline
        )
        known = {str(p): f.sha256 for p, f in zip(paths, listing.files, strict=True) if f.sha256}
        return FetchedFiles(self._revision(listing), paths, known)


class MisconfiguredSource(ParquetSource):
    """Stands in when the settings name no usable source, so the UI still loads the graph
    and every run fails with the reason."""

    problem: str

    def observe(self, layout: DataLayout) -> SourceRevision:
        raise ConfigurationError(self.problem)

    def fetch(self, layout: DataLayout, log: Any) -> FetchedFiles:
        raise ConfigurationError(self.problem)


class EntityLists(NetworkResource):
    """The three name lists (artists, celebrities, characters) as CSV: an http(s) URL, a
    ``file://`` URL or a path."""

    artists_csv_url: str
    celebrities_csv_url: str
    characters_csv_url: str
    attempts: int = 4
    backoff_seconds: float = 2.0

    def url(self, kind: str) -> str:
        return getattr(self, f"{kind}_csv_url")

    def display_url(self, kind: str) -> str:
        """The list's URL for logs, metadata and messages: credentials in it masked."""
        return public_url(self.url(kind))

    def read(self, kind: str) -> bytes:
        """The raw bytes of one list."""
        url = self.url(kind)
        variable = f"LAION_{kind.upper()}_CSV_URL"
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme in ("http", "https"):
            return fetch_url(url, variable, attempts=self.attempts, backoff=self.backoff_seconds)
        if parsed.scheme == "file":
            path = Path(urllib.parse.unquote(parsed.path))
        elif not parsed.scheme or len(parsed.scheme) == 1:  # a path, or C:\ on Windows
            path = Path(url).expanduser()
        else:
            raise ConfigurationError(
                f"{variable}={self.display_url(kind)!r}: use an http(s) URL, a file:// URL or a "
                "path to a CSV file"
            )
        if not path.is_file():
            raise ConfigurationError(f"{variable}: {path} is not a file; set it to a CSV file")
        return path.read_bytes()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def build_resources(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The resources for one environment, chosen by ``LAION_SOURCE`` (default ``sample``)."""
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
            repo_id=env.get("LAION_HF_REPO") or DEFAULT_HF_REPO,
            revision=env.get("LAION_HF_REVISION") or "main",
            endpoint=env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT,
            offline=_truthy(env.get("HF_HUB_OFFLINE")),
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

    data = LaionData(data_dir=data_dir)
    return {
        "laion_data": data,
        "parquet_source": source,
        "entity_lists": EntityLists(**{f"{k}_csv_url": entity_url(k) for k in ENTITY_KINDS}),
        "staging_duckdb": DuckDBResource(database=str(data.layout.staging_db)),
    }
