"""A dataset repo on the Hugging Face Hub as a source: its listing at a revision (saved in the
data folder, so ``HF_HUB_OFFLINE=1`` works from it), and each file downloaded, resumed and
verified by ``hub.HubClient``."""

import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from laion_pipeline.common.errors import ConfigurationError, StaleInputError
from laion_pipeline.common.files import VerifiedFiles, check_free_disk
from laion_pipeline.common.layout import DataLayout
from laion_pipeline.sources.hub import (
    DEFAULT_ENDPOINT,
    HubClient,
    HubListing,
    TransferProgress,
    load_listing,
    save_listing,
)
from laion_pipeline.sources.inputs import SourceEntry, SourceListing, SourceRevision
from laion_pipeline.sources.profiles import Profile
from laion_pipeline.sources.source import FetchedFile, Source


@dataclass(frozen=True)
class HubSource(Source):
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
