"""Parquet files in a folder: the bundled sample, or any folder of the user's
(``LAION_SOURCE=local``). Each file is copied into ``raw/snapshot/`` while it is hashed, and
staged from that copy, so a file changed during a build never reaches it."""

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from laion_pipeline.common.errors import ConfigurationError, StaleInputError
from laion_pipeline.common.files import VerifiedFiles, copy_and_hash, sha256_file, snapshot_name
from laion_pipeline.common.layout import SAMPLE_DIR, DataLayout
from laion_pipeline.sources.inputs import SourceEntry, SourceListing, SourceRevision
from laion_pipeline.sources.profiles import Profile
from laion_pipeline.sources.source import FetchedFile, Source


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


@dataclass(frozen=True)
class FolderSource(Source):
    """Parquet files in ``folder``, outside the data folder (``LAION_LOCAL_DIR``)."""

    folder: Path
    kind: str = "local"
    variable: str = "LAION_LOCAL_DIR"

    def version(self, path: Path) -> str:
        """Cheap for big folders: size and modification time."""
        return _stamp(path)

    def listing(self, layout: DataLayout, profile: Profile, log: Any = None) -> SourceListing:
        folder = self.folder
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
        source = self.folder / entry.key
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


class SampleSource(FolderSource):
    """The bundled 7,000-row sample: offline, the default (``LAION_SOURCE=sample``)."""

    def __init__(self) -> None:
        super().__init__(SAMPLE_DIR / "data", kind="sample", variable="LAION_SOURCE")

    def location(self, folder: Path) -> str:
        return "laion_pipeline/sample_data"

    def version(self, path: Path) -> str:
        return sha256_file(path)[:16]  # small files: their content


def local_source(local_dir: str) -> FolderSource:
    """The folder of ``LAION_LOCAL_DIR`` (``LAION_SOURCE=local``)."""
    if not local_dir:
        raise ConfigurationError(
            "LAION_SOURCE=local needs LAION_LOCAL_DIR: set it to a folder of LAION parquet files"
        )
    return FolderSource(Path(local_dir).expanduser().resolve())
