"""The data folder is the truth: what it holds, against what the sources and the settings ask
for, decides what to stage and whether a new release is needed.

Each staged file has its record beside it (the source file and its version, the profile and its
filter, the staging code version, the rows, the staged file's size, time and sha256); each
release has its manifest, whose ``inputs`` are exactly what ``ReleaseInputs`` compares: the
staged files' sources, profile and staging code, the shard plan, the profile's summary, the
name lists' hashes and the build's code versions; each shard of a release of several has its
seal, naming what it was built from. ``assess`` reads those files and the source listing,
nothing else: the Dagster instance's history never decides that a file is current.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from laion_pipeline.build.plan import BuildPlan, Shard, plan_shards, shard_inputs
from laion_pipeline.build.seal import read_seal
from laion_pipeline.common.errors import ConfigurationError, DataDirBusyError
from laion_pipeline.common.files import sha256_file
from laion_pipeline.common.layout import ENTITY_KINDS, DataLayout
from laion_pipeline.common.versions import STAGING_CODE_VERSION, build_code_version
from laion_pipeline.releases.lock import staged_file_lock
from laion_pipeline.releases.switch import held_release, pointed_release
from laion_pipeline.sources.inputs import (
    RECORD_FORMAT,
    SourceEntry,
    SourceListing,
    StagedFile,
)
from laion_pipeline.sources.profiles import Profile

NOT_STAGED = "not staged"


@dataclass(frozen=True)
class StagedCheck:
    """One source file of the listing against the data folder: its staged file, usable as it
    is, or why it is to be staged (again)."""

    key: str
    staged: StagedFile | None
    reason: str = ""
    # Set when the record was repaired: upgraded from an older format, or given the staged
    # file's new place or time after a move or a copy (its sha256 checked).
    repaired: str = ""


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns)


def check_staged(
    layout: DataLayout, entry: SourceEntry, profile: Profile, *, repair: bool = True
) -> StagedCheck:
    """Whether the staged file of ``entry`` is there, whole, and made from this version of the
    source file by this profile and this staging code. A record that only lags (an older
    format, a staged file moved or copied with a new time) is repaired in place, under the
    file's lock, when the staged file's sha256 says it is intact, so nothing is staged again
    for it; with ``repair=False`` (a caller holding that lock) such a file is to be staged."""
    check = _check_staged(layout, entry, profile, verify=False)
    if check.reason != LAGGING or not repair:
        return check
    try:
        with staged_file_lock(layout, entry.key, wait=False):
            check = _check_staged(layout, entry, profile, verify=True)
            if check.staged is not None and check.repaired:
                check.staged.write(layout)
            return check
    except DataDirBusyError:
        return StagedCheck(entry.key, None, "another run is staging it now")


# Why a record is not taken as it is, before its staged file is read to repair it.
LAGGING = "its record lags behind its staged file (an older format, or moved)"
# Format 1 records were written by this staging code version.
FIRST_FORMAT_STAGING_CODE = "2"


def _check_staged(
    layout: DataLayout, entry: SourceEntry, profile: Profile, *, verify: bool
) -> StagedCheck:
    """``check_staged``: without ``verify``, a record that lags is said (``LAGGING``) rather
    than checked by the staged file's sha256 and repaired (not written: the caller does)."""
    key = entry.key
    parquet = layout.staged_parquet(key)
    try:
        staged = StagedFile.read(layout, key)
    except ConfigurationError:
        raise  # a record of a newer version: never overwritten
    except ValueError as error:
        return StagedCheck(key, None, f"its record is unreadable ({error})")
    if staged is None:
        if parquet.exists():
            return StagedCheck(key, None, f"{parquet.name} has no record beside it")
        return StagedCheck(key, None, NOT_STAGED)
    if staged.source_version != entry.version:
        return StagedCheck(
            key,
            None,
            f"the source file changed (version {entry.version}, staged from "
            f"{staged.source_version})",
        )
    if staged.profile_digest != profile.digest:
        return StagedCheck(
            key, None, "staged with another profile, filter or list of takedowns (LAION_BLOCKLIST)"
        )
    older = staged.format < RECORD_FORMAT
    code = FIRST_FORMAT_STAGING_CODE if older else staged.staging_code_version
    if code != STAGING_CODE_VERSION:
        return StagedCheck(
            key, None, f"staged by staging code version {code}, now {STAGING_CODE_VERSION}"
        )
    found = _identity(parquet)
    if found is None:
        return StagedCheck(key, None, f"{parquet.name} is missing")
    if found[0] != staged.size:
        return StagedCheck(
            key, None, f"{parquet.name} is {found[0]:,} bytes, its record says {staged.size:,}"
        )
    if older and found != staged.identity:
        return StagedCheck(key, None, f"{parquet.name} changed since its record was written")
    moved = staged.path != str(parquet) or found != staged.identity
    if not (older or moved):
        return StagedCheck(key, staged)
    if not verify:
        return StagedCheck(key, None, LAGGING)
    try:
        actual = sha256_file(parquet)
    except OSError as error:
        return StagedCheck(key, None, f"{parquet.name} cannot be read ({error.strerror})")
    if older:
        # Written before records named the staging code and the staged file's hash.
        staged = dataclasses.replace(
            staged,
            format=RECORD_FORMAT,
            staging_code_version=FIRST_FORMAT_STAGING_CODE,
            staged_sha256=actual,
            source=staged.source or key,
            profile=staged.profile or profile.name,
            row_filter=profile.filter_parameters,
        )
        repaired = f"record of {parquet.name} upgraded to format {RECORD_FORMAT}"
    elif actual != staged.staged_sha256:
        return StagedCheck(
            key,
            None,
            f"{parquet.name} has sha256 {actual[:12]}, its record says {staged.staged_sha256[:12]}",
        )
    elif found != staged.identity:
        repaired = f"{parquet.name} moved or copied: its sha256 is the recorded one"
    else:
        repaired = f"{parquet.name} is in a moved data folder"
    staged = dataclasses.replace(staged, path=str(parquet), size=found[0], mtime_ns=found[1])
    return StagedCheck(key, staged, "", repaired)


def list_hashes(lists: Mapping[str, bytes]) -> dict[str, str]:
    """The sha256 of each name list's bytes, as a release's manifest records them."""
    return {kind: hashlib.sha256(lists[kind]).hexdigest() for kind in ENTITY_KINDS}


# The parts of a release's inputs, and how a person names each.
INPUT_PARTS = {
    "files": "the source files or their staging",
    "shards": "the shard plan (LAION_SHARD_ROWS)",
    "profile": "the profile (its database, title or filter)",
    "lists": "the name lists",
    "code_version": "the build's code version",
}


@dataclass(frozen=True)
class ReleaseInputs:
    """Everything a release's content depends on. Two builds of the same inputs publish the
    same rows, so a release holding these inputs needs no new build."""

    files: tuple[dict[str, str], ...]
    shards: tuple[tuple[str, int, int], ...]  # each shard's key and first and last rowid
    profile: dict[str, Any]  # what the release says of the profile (its database, title...)
    lists: dict[str, str]
    code_version: str

    @classmethod
    def of(
        cls,
        files: Sequence[StagedFile],
        shards: Sequence[Shard],
        profile: Mapping[str, Any],
        lists: Mapping[str, str],
    ) -> ReleaseInputs:
        """The inputs of a release of ``files`` planned as ``shards``."""
        return cls(
            tuple(f.input for f in files),
            tuple((s.key, s.first_rowid, s.last_rowid) for s in shards),
            dict(profile),
            {kind: lists[kind] for kind in ENTITY_KINDS},
            build_code_version(),
        )

    def as_dict(self) -> dict[str, Any]:
        """The inputs as a manifest records them (JSON's lists for tuples)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @cached_property  # the manifest and every reported materialization name it
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()

    def changed(self, recorded: Mapping[str, Any] | None) -> tuple[str, ...]:
        """Which parts (``INPUT_PARTS``) differ from the ``inputs`` a release's manifest
        recorded: all of them when it recorded none."""
        mine = self.as_dict()
        return tuple(part for part in INPUT_PARTS if mine[part] != (recorded or {}).get(part))


@dataclass(frozen=True)
class DataFolderState:
    """What the data folder holds against the listing: each file's check, and, when every
    file is staged, the inputs a release of them has, the release that holds them and the
    shards a build of them would build (those of several whose seal names other inputs)."""

    listing: SourceListing
    checks: tuple[StagedCheck, ...]
    inputs: ReleaseInputs | None
    current: str | None
    # The release current now that stands for these inputs: built from them, or served again
    # by a rollback from the release built from them. None: a release is needed.
    served: str | None
    why: str  # why a release is needed, or why the current one stands
    # What a new release changes (INPUT_PARTS): all of them when nothing comparable is served.
    changed: tuple[str, ...] = tuple(INPUT_PARTS)
    shards_to_build: tuple[str, ...] = ()

    @property
    def to_stage(self) -> list[str]:
        return [c.key for c in self.checks if c.staged is None]

    @property
    def staged(self) -> list[StagedFile]:
        return [c.staged for c in self.checks if c.staged is not None]

    @property
    def up_to_date(self) -> bool:
        return self.served is not None

    def summary(self) -> str:
        """One line: the staged files the data folder has, and what is to be staged."""
        total, missing = len(self.checks), len(self.to_stage)
        return f"data folder has {total - missing} of {total} staged files: " + (
            f"staging {missing}" if missing else "nothing to stage"
        )

    def reasons(self) -> list[str]:
        """Why each file is staged again, and what was repaired: a line each."""
        return [f"{c.key}: {c.reason}" for c in self.checks if c.reason not in ("", NOT_STAGED)] + [
            f"{c.key}: {c.repaired}" for c in self.checks if c.repaired
        ]


def shards_to_build(plan: BuildPlan) -> tuple[str, ...]:
    """The shards of ``plan`` whose database a build makes: every one, unless the plan seals
    its shards (then those whose database is missing or whose seal names other inputs: a
    shard whose seal names these inputs is kept, its hash checked by the build)."""
    return tuple(
        s.key
        for s in plan.shards
        if not plan.sealed
        or not plan.file(s).exists()
        or getattr(read_seal(plan.file(s)), "inputs", None) != shard_inputs(s)
    )


def assess(
    layout: DataLayout,
    listing: SourceListing,
    profile: Profile,
    lists: Mapping[str, str] | str,
    shard_rows: int,
) -> DataFolderState:
    """The one decision of what to do, from the data folder's files and the source listing
    alone: the files to stage, whether the current release already holds exactly the inputs
    a build would have (then nothing is to be built), and which shards a build would build.
    ``lists`` are the name lists' sha256 (``list_hashes``), or why they cannot be read (then a
    build is needed: its step that reads them says what is wrong)."""
    checks = tuple(check_staged(layout, entry, profile) for entry in listing.entries)
    current = pointed_release(layout, "current")
    staged = [c.staged for c in checks if c.staged is not None]
    if len(staged) < len(checks) or isinstance(lists, str):
        why = lists if isinstance(lists, str) else "source files to stage"
        return DataFolderState(listing, checks, None, current, None, why)
    shards = plan_shards(staged, shard_rows)
    inputs = ReleaseInputs.of(staged, shards, profile.summary, lists)
    to_build = shards_to_build(BuildPlan(layout, shards))

    def state(
        served: str | None, why: str, changed: tuple[str, ...] = tuple(INPUT_PARTS)
    ) -> DataFolderState:
        return DataFolderState(listing, checks, inputs, current, served, why, changed, to_build)

    release = layout.release(current) if current else None
    if release is None or not all(db.exists() for db in release.databases):
        return state(None, "nothing is published")
    manifest = release.manifest
    if manifest.get("inputs_digest") == inputs.digest:
        return state(current, "built from them", ())
    held = held_release(layout)
    if held.get("release") == current and held.get("rolled_back_inputs") == inputs.digest:
        why = "served again by `make rollback`; the release it replaced was built from them"
        return state(current, why, ())
    changed = inputs.changed(manifest.get("inputs"))
    why = (
        f"changed since release {current}: {', '.join(INPUT_PARTS[part] for part in changed)}"
        if manifest.get("inputs")
        else f"release {current} records no inputs (published by an older version)"
    )
    return state(None, why, changed)
