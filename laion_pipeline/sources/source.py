"""Where the LAION parquet files come from, without Dagster: a source lists the files a
profile wants at the revision it gives now, and fetches one of them into the data folder,
verified. The orchestration's resources hold the settings and make one of these."""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from laion_pipeline.common.errors import ConfigurationError
from laion_pipeline.common.layout import DataLayout
from laion_pipeline.sources.inputs import SourceEntry, SourceListing
from laion_pipeline.sources.profiles import Profile


@dataclass(frozen=True)
class FetchedFile:
    """A source file ready to stage: a copy in the data folder (a download, or the verified
    copy of a local file), and its sha256."""

    path: Path
    sha256: str


class Source(ABC):
    """A place the parquet files come from: the bundled sample, a folder, the Hugging Face Hub."""

    @abstractmethod
    def listing(self, layout: DataLayout, profile: Profile, log: Any = None) -> SourceListing:
        """The source files the profile wants at the revision the source gives now."""

    @abstractmethod
    def fetch(
        self,
        layout: DataLayout,
        profile: Profile,
        listing: SourceListing,
        entry: SourceEntry,
        log: Any = None,
    ) -> FetchedFile:
        """Make one file of ``listing`` available in the data folder, verified."""


@dataclass(frozen=True)
class Misconfigured(Source):
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
