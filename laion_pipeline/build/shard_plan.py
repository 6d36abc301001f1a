"""The plan of a build's shards: the staged files, in listing order, grouped into parts of at
most ``max_rows`` kept rows (``LAION_SHARD_ROWS``), each built into a SQLite database of its
own; and what each shard's database is built from, as its seal records it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from laion_pipeline.common.versions import CODE_VERSIONS
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
