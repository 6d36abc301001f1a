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
from typing import Any, ClassVar

from dagster import ConfigurableResource
from dagster_duckdb import DuckDBResource

from laion_pipeline.common.errors import ConfigurationError, StaleInputError
from laion_pipeline.common.files import (
    VerifiedFiles,
    check_free_disk,
    copy_and_hash,
    sha256_file,
    snapshot_name,
)
from laion_pipeline.common.layout import ENTITY_KINDS, SAMPLE_DIR, DataLayout
from laion_pipeline.common.settings import truthy, usable_cores, whole_number
from laion_pipeline.common.web import fetch_url, public_url
from laion_pipeline.sources.hub import (
    DEFAULT_ENDPOINT,
    HubClient,
    HubListing,
    TransferProgress,
    load_listing,
    save_listing,
)
from laion_pipeline.sources.inputs import (
    DEFAULT_SHARD_ROWS,
    SourceEntry,
    SourceListing,
    SourceRevision,
)
from laion_pipeline.sources.profiles import Profile, choose_profile, load_profiles

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
class FetchedFile:
    """A source file ready to stage: a copy in the data folder (a download, or the verified
    copy of a local file), and its sha256."""

    path: Path
    sha256: str


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

    @property
    def layout(self) -> DataLayout:
        return DataLayout(Path(self.data_dir).resolve())

    @property
    def profile(self) -> Profile:
        return choose_profile(
            self.profile_name or None,
            self.source_kind,
            self.profiles_file or None,
            self.filter_settings,
        )

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
    """Where the LAION parquet files come from. Subclasses: sample, local, Hugging Face."""

    def listing(self, layout: DataLayout, profile: Profile, log: Any = None) -> SourceListing:
        """The source files the profile wants at the revision the source gives now."""
        raise NotImplementedError

    def fetch(
        self,
        layout: DataLayout,
        profile: Profile,
        listing: SourceListing,
        entry: SourceEntry,
        log: Any = None,
    ) -> FetchedFile:
        """Make one file of `listing` available in the data folder, verified."""
        raise NotImplementedError


def _folder_entries(folder: Path, variable: str, profile: Profile) -> list[tuple[str, Path]]:
    """The profile's parquet files of a folder, by their path in it, in path order."""
    if not folder.is_dir():
        raise ConfigurationError(
            f"{variable} points at {folder}, which is not a folder: set {variable} to a folder "
            "of LAION parquet files"
        )
    files = sorted(
        (p.relative_to(folder).as_posix(), p)
        for p in folder.rglob("*.parquet")
        if p.is_file() and profile.wants(p.relative_to(folder).as_posix())
    )
    # A link to a file of the folder (or two links to one file) would load its rows twice.
    seen: dict[Path, str] = {}
    for key, path in files:
        real = path.resolve()
        if real in seen:
            raise ConfigurationError(
                f"{variable}: {path} is the same file as {folder / seen[real]} (a link): its "
                "rows would be loaded twice; remove the link"
            )
        seen[real] = key
    if not files:
        raise ConfigurationError(
            f"{folder} holds no *.parquet files matching {profile.files}: set {variable} to a "
            "folder of LAION parquet files"
        )
    return files


def _revision(entries: list[SourceEntry]) -> str:
    """A version for a set of files: changes when any file is added, removed or changed."""
    digest = hashlib.sha256()
    for entry in entries:
        digest.update(f"{entry.key}\0{entry.version}\n".encode())
    return digest.hexdigest()[:16]


def _stamp(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


class FolderSource(ParquetSource):
    """Parquet files in a folder outside the data folder: each is copied into
    `raw/snapshot/` while it is hashed, and staged from that copy, so a file changed during
    a build never reaches it."""

    def folder(self) -> Path:
        raise NotImplementedError

    variable: ClassVar[str] = "LAION_LOCAL_DIR"
    kind: ClassVar[str] = "local"

    def version(self, path: Path) -> str:
        """Cheap for big folders: size and modification time."""
        return _stamp(path)

    def listing(self, layout: DataLayout, profile: Profile, log: Any = None) -> SourceListing:
        folder = self.folder()
        entries = [
            SourceEntry(key, path.stat().st_size, self.version(path))
            for key, path in _folder_entries(folder, self.variable, profile)
        ]
        revision = SourceRevision(self.kind, self.location(folder), _revision(entries))
        return SourceListing(revision, tuple(entries))

    def location(self, folder: Path) -> str:
        return str(folder)

    def fetch(
        self,
        layout: DataLayout,
        profile: Profile,
        listing: SourceListing,
        entry: SourceEntry,
        log: Any = None,
    ) -> FetchedFile:
        source = self.folder() / entry.key
        if not source.is_file() or self.version(source) != entry.version:
            raise StaleInputError(
                f"{source} changed since hf_dataset was observed: observe hf_dataset again, "
                "then materialize its partitions"
            )
        verified = VerifiedFiles(layout.snapshot_dir / VerifiedFiles.NAME, log)
        known = verified.known(source)
        if known is not None:  # copied before, unchanged since: the copy, if still intact
            copy = layout.snapshot_dir / snapshot_name(source, known)
            if verified.known(copy) == known:
                return FetchedFile(copy, known)
        stamp = verified.stamp(source)
        copy, sha256 = copy_and_hash(source, layout.snapshot_dir)
        if verified.stamp(source) == stamp:  # not changed while it was copied
            verified.record(source, sha256, stamp)
        verified.record(copy, sha256)
        verified.save()
        return FetchedFile(copy, sha256)


class SampleParquetSource(FolderSource):
    """The bundled 7,000-row sample: offline, the default (`LAION_SOURCE=sample`)."""

    kind: ClassVar[str] = "sample"
    variable: ClassVar[str] = "LAION_SOURCE"

    def folder(self) -> Path:
        return SAMPLE_DIR / "data"

    def location(self, folder: Path) -> str:
        return "laion_pipeline/sample_data"

    def version(self, path: Path) -> str:
        return sha256_file(path)[:16]  # small files: their content


class LocalParquetSource(FolderSource):
    """Any folder of LAION parquet files (`LAION_SOURCE=local`, `LAION_LOCAL_DIR`)."""

    local_dir: str

    def folder(self) -> Path:
        if not self.local_dir:
            raise ConfigurationError(
                "LAION_SOURCE=local needs LAION_LOCAL_DIR: "
                "set it to a folder of LAION parquet files"
            )
        return Path(self.local_dir).expanduser().resolve()


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

    def repo(self, profile: Profile) -> str:
        return self.repo_id or profile.repo

    def client(self, profile: Profile, log: Any = None) -> HubClient:
        return HubClient(
            self.repo(profile),
            self.revision or profile.revision,
            endpoint=self.endpoint,
            attempts=self.attempts,
            backoff_seconds=self.backoff_seconds,
            log=log,
        )

    def folder(self, layout: DataLayout, profile: Profile) -> Path:
        """Where the repo's files are downloaded, keeping their repo paths."""
        return layout.raw_dir / "huggingface" / self.repo(profile)

    def _listing_file(self, layout: DataLayout, profile: Profile) -> Path:
        revision = urllib.parse.quote(self.revision or profile.revision, safe="")
        return self.folder(layout, profile) / ".listings" / f"{revision}.json"

    def hub_listing(self, layout: DataLayout, profile: Profile, log: Any) -> HubListing:
        listing_file = self._listing_file(layout, profile)
        if self.offline:
            listing = load_listing(listing_file)
            if listing is None:
                raise ConfigurationError(
                    f"HF_HUB_OFFLINE is set but {self.repo(profile)}@"
                    f"{self.revision or profile.revision} was never fetched into {layout.root}: "
                    "unset HF_HUB_OFFLINE for one run, or use LAION_SOURCE=sample or "
                    "LAION_SOURCE=local"
                )
            return listing
        listing = self.client(profile, log).listing(profile.wants, profile.files)
        save_listing(listing_file, listing)
        return listing

    def listing(self, layout: DataLayout, profile: Profile, log: Any = None) -> SourceListing:
        hub = self.hub_listing(layout, profile, log)
        if log:
            log.info(
                f"{hub.repo_id}@{hub.revision} is commit {hub.sha}: {len(hub.files)} files, "
                f"{sum(f.size for f in hub.files):,} bytes"
            )
        entries = tuple(SourceEntry(f.path, f.size, f.version) for f in hub.files)
        return SourceListing(SourceRevision("huggingface", hub.repo_id, hub.sha), entries)

    def fetch(
        self,
        layout: DataLayout,
        profile: Profile,
        listing: SourceListing,
        entry: SourceEntry,
        log: Any = None,
    ) -> FetchedFile:
        # The hub listing saved when hf_dataset was observed (offline or not).
        hub = load_listing(self._listing_file(layout, profile))
        if hub is None or hub.sha != listing.source.revision:
            raise StaleInputError(
                f"the hub listing of {listing.source.location} at {listing.source.revision} is "
                "gone: observe hf_dataset again"
            )
        (file,) = [f for f in hub.files if f.path == entry.key]
        folder = self.folder(layout, profile)
        check_free_disk(folder, file.size, f"downloading {file.path}")
        verified = VerifiedFiles(folder / VerifiedFiles.NAME, log)
        client = self.client(profile, log)
        progress = TransferProgress(log)
        try:
            path = client.download(hub.sha, file, folder, progress, verified, offline=self.offline)
            sha256 = file.sha256 or verified.sha256(path)
        finally:
            verified.save()
        if log:
            log.info(progress.summary())
        return FetchedFile(path, sha256)


class MisconfiguredSource(ParquetSource):
    """Stands in when the settings name no usable source, so the UI still loads the graph
    and every run fails with the reason."""

    problem: str

    def listing(self, layout: DataLayout, profile: Profile, log: Any = None) -> SourceListing:
        raise ConfigurationError(self.problem)

    def fetch(
        self,
        layout: DataLayout,
        profile: Profile,
        listing: SourceListing,
        entry: SourceEntry,
        log: Any = None,
    ) -> FetchedFile:
        raise ConfigurationError(self.problem)


class EntityLists(NetworkResource):
    """The three name lists (artists, celebrities, characters) as CSV: an http(s) URL, a
    `file://` URL or a path."""

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
            offline=truthy(env.get("HF_HUB_OFFLINE")),
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
        keep_raw=truthy(env.get("LAION_KEEP_RAW") or "1"),
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
