"""The plan of a build: the staged files, in listing order, grouped into shards of at most
``max_rows`` kept rows (``LAION_SHARD_ROWS``), each built into a SQLite database of its own;
where each database goes (``BuildPlan``); and what each shard's database is built from, as its
seal records it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from laion_pipeline.common.errors import StaleInputError
from laion_pipeline.common.layout import DataLayout
from laion_pipeline.common.versions import CODE_VERSIONS
from laion_pipeline.releases.lock import shard_lock
from laion_pipeline.sources.inputs import StagedFile, StagingManifest


@dataclass(frozen=True)
class Shard:
    """Consecutive staged files built into one database; its images are rowids
    ``first_rowid``..``last_rowid`` of the release."""

    key: str
    files: tuple[StagedFile, ...]
    first_rowid: int

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def last_rowid(self) -> int:
        return self.first_rowid + self.rows - 1

    @property
    def rowid_range(self) -> tuple[int, int]:
        return (self.first_rowid, self.last_rowid)

    @property
    def data_version(self) -> str:
        """Changes when a file of the shard, or where the shard starts, changes."""
        parts = [str(self.first_rowid), *(f"{f.key}\0{f.data_version}" for f in self.files)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def plan_shards(files: Sequence[StagedFile], max_rows: int) -> tuple[Shard, ...]:
    """The staged files in order, a new shard started whenever the next file would take the
    current one past ``max_rows`` (a file larger than that is a shard alone). At least one
    shard, empty when no file kept a row."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, not {max_rows}")
    groups: list[list[StagedFile]] = [[]]
    rows = 0
    for staged in files:
        if groups[-1] and rows + staged.rows > max_rows:
            groups.append([])
            rows = 0
        groups[-1].append(staged)
        rows += staged.rows
    shards, first = [], 1
    for number, group in enumerate(groups):
        shards.append(Shard(f"shard-{number:05d}", tuple(group), first))
        first += sum(f.rows for f in group)
    return tuple(shards)


def shards_of(manifest: StagingManifest) -> tuple[Shard, ...]:
    """The shards of the staged files a build reads (planned with the manifest's
    ``shard_rows``)."""
    return plan_shards(manifest.files, manifest.shard_rows)


def shard_inputs(shard: Shard) -> str:
    """What a shard's database is built from, as its seal records it: its files (with where
    it starts) and the code versions of its tables."""
    return (
        f"{shard.data_version} images={CODE_VERSIONS['images']} fts={CODE_VERSIONS['images_fts']}"
    )


@dataclass(frozen=True)
class BuildPlan:
    """Where the databases of a build go, decided here and nowhere else. Each shard is built
    into a database of its own, and the catalog (the domain table over every shard with its
    host search, the ``shards`` table, the name tables) into the build database; a plan of
    one shard builds that shard into the build database itself, which the catalog's tables
    then complete (the 2022 shape: one file). Every step reads and writes through the plan,
    so one code path builds, checks and publishes one database or many."""

    layout: DataLayout
    shards: tuple[Shard, ...]

    @classmethod
    def of_staged(cls, layout: DataLayout) -> BuildPlan:
        """The plan of the staged files a build reads (the staging manifest's)."""
        return cls(layout, shards_of(StagingManifest.read(layout)))

    @property
    def catalog(self) -> Path:
        return self.layout.build_db

    @property
    def catalog_in_shard(self) -> bool:
        """Whether the catalog's tables go into the one shard's database."""
        return len(self.shards) == 1

    def file(self, shard: Shard) -> Path:
        """Where ``shard``'s database is built."""
        return self.catalog if self.catalog_in_shard else self.layout.shard_db(shard.key)

    def files(self) -> list[Path]:
        """The databases of the build: the catalog's first, then each shard's of its own."""
        return [self.catalog, *(p for p in map(self.file, self.shards) if p != self.catalog)]

    @property
    def sealed(self) -> bool:
        """Whether a shard's build seals its file (``laion_pipeline.build.seal``): not when
        the catalog's tables are written into it next, which would break the seal."""
        return not self.catalog_in_shard

    def side_index(self, shard: Shard) -> Path | None:
        """The scratch file of the caption index a second process builds while the images
        load: for a shard built alone on the machine (the others have a core each)."""
        return self.file(shard).with_name("images_fts.side.db") if self.catalog_in_shard else None

    @property
    def threads(self) -> int | None:
        """DuckDB's threads for a shard's scan: every core for the one shard, built alone,
        else one (shards build side by side, a core each)."""
        return None if self.catalog_in_shard else 1

    def chosen(self, keys: Iterable[str]) -> list[Shard]:
        """The shards named ``keys`` (partitions of a run), in release order; an error naming
        any that the plan does not hold."""
        wanted = set(keys)
        unknown = sorted(wanted - {s.key for s in self.shards})
        if unknown:
            raise StaleInputError(
                f"{', '.join(unknown)} not in the plan of the staged files ({len(self.shards)} "
                "shards): materialize staging_images, then the shards it lists"
            )
        return [s for s in self.shards if s.key in wanted]

    @contextmanager
    def locked(self, log: Any = None) -> Iterator[None]:
        """Hold every shard's lock: no shard's database is rebuilt while the catalog is
        written from them, or while they are checked and published."""
        with ExitStack() as stack:
            for shard in self.shards:
                stack.enter_context(shard_lock(self.layout, self.file(shard), log))
            yield
