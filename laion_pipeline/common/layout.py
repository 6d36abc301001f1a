"""Where every file of a build lives under ``$LAION_DATA_DIR``: the one place that knows."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

# The bundled sample (`LAION_SOURCE=sample`): 7 parquet files and the three name lists.
SAMPLE_DIR = Path(__file__).parents[1] / "sample_data"
# The published database's name when a profile names none: the 2022 site's.
DEFAULT_DATABASE = "laion-aesthetic-6pls"
ENTITY_KINDS: tuple[str, ...] = ("artists", "celebrities", "characters")
# The analysis report's charts, then its numbers and its page (written last: it links the rest).
REPORT_CHARTS: tuple[str, ...] = (
    "top_domains",
    *(f"top_{kind}" for kind in ENTITY_KINDS),
    "aesthetic",
    "image_sizes",
    "unsafe_watermark",
)
REPORT_FILES: tuple[str, ...] = (
    *(f"{c}.png" for c in REPORT_CHARTS),
    "analysis.json",
    "index.html",
)
# Where Datasette serves the report (the plugin's route).
REPORT_URL = "/-/report/"
# A release's id, the name of its folder in ``published/releases/``: its build time and the
# start of its databases' sha256 (``-2``, ``-3``... when two share both).
RELEASE_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}(-[0-9]+)?$")
# The two pointers of ``published/``: each a symbolic link to a folder of ``releases/``.
POINTERS = ("current", "previous")


def candidate(target: Path) -> Path:
    """Where the next version of a file (a publish's database, a report's page) is written,
    hidden, before it replaces ``target`` or moves into its release."""
    return target.with_name(f".{target.name}.candidate")


@dataclass(frozen=True)
class ReleaseFiles:
    """The files of one release, in its own folder: the database, Datasette's metadata and
    inspect files, the manifest, and the analysis report. ``folder`` may be a pointer
    (``published/current``) or the release's own folder (``published/releases/<id>``).
    ``database`` is the database's name (the profile's): given while the release is written,
    read from its manifest after."""

    folder: Path
    database: str = ""

    @cached_property  # read once per object: the name and the shards are asked for often
    def manifest(self) -> dict:
        """The release's manifest.json: empty while the release is being written, or when the
        file cannot be read (a release that says nothing of itself: its check says so)."""
        try:
            manifest = json.loads(self.manifest_json.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return manifest if isinstance(manifest, dict) else {}

    @property
    def database_name(self) -> str:
        """The name Datasette serves the database under (``/<name>``): its file's stem."""
        if self.database:
            return self.database
        return str(self.manifest.get("database", DEFAULT_DATABASE)).removesuffix(".db")

    @property
    def db(self) -> Path:
        """The database: with several shards, the catalog (domains, names, shards)."""
        return self.folder / f"{self.database_name}.db"

    def shard_db(self, key: str) -> Path:
        """One shard's database in a release of several."""
        return self.folder / f"{self.database_name}-{key}.db"

    @property
    def shard_keys(self) -> tuple[str, ...]:
        """The shards of the release in their order (none: one database holds everything)."""
        return tuple(shard["key"] for shard in self.manifest.get("shards", ()))

    @property
    def databases(self) -> tuple[Path, ...]:
        """Every database file of the release: the catalog (or the one database), then the
        shards."""
        return (self.db, *(self.shard_db(key) for key in self.shard_keys))

    @property
    def metadata_json(self) -> Path:
        return self.folder / "metadata.json"

    @property
    def inspect_json(self) -> Path:
        return self.folder / "inspect.json"

    @property
    def manifest_json(self) -> Path:
        return self.folder / "manifest.json"

    @property
    def report_dir(self) -> Path:
        """The analysis of this release's database: charts, numbers and an HTML page."""
        return self.folder / "report"

    @property
    def report_files(self) -> tuple[Path, ...]:
        return tuple(self.report_dir / name for name in REPORT_FILES)


@dataclass(frozen=True)
class DataLayout:
    """The folders and files of one data directory.

    ``raw/`` holds inputs as fetched (and ``raw/snapshot/`` the verified copies the build
    reads), ``staging/`` the DuckDB working copy, ``build/`` the SQLite database being built,
    and ``published/`` what Datasette serves: ``releases/<id>/`` folders, and the pointers
    ``current`` and ``previous`` to two of them.
    """

    root: Path

    @property
    def raw_dir(self) -> Path:
        return self.root / "raw"

    @property
    def snapshot_dir(self) -> Path:
        """Verified copies of local source files: staging never reads the originals."""
        return self.raw_dir / "snapshot"

    @property
    def source_listing(self) -> Path:
        """The source files at the observed revision, in path order (JSON)."""
        return self.raw_dir / "source_files.json"

    @property
    def staged_dir(self) -> Path:
        """Our staged parquet files, one per source file, each with a JSON record beside it."""
        return self.root / "staging" / "files"

    def _staged_stem(self, key: str) -> str:
        # A readable, unique, flat name for a source path (which may hold folders).
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key.removesuffix(".parquet"))[-80:]
        return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"

    def staged_parquet(self, key: str) -> Path:
        return self.staged_dir / f"{self._staged_stem(key)}.parquet"

    def staged_record(self, key: str) -> Path:
        return self.staged_dir / f"{self._staged_stem(key)}.json"

    @property
    def staging_manifest(self) -> Path:
        """JSON list of the staged files the build reads, in file order."""
        return self.root / "staging" / "staged_files.json"

    @property
    def entities_dir(self) -> Path:
        return self.raw_dir / "entities"

    def entity_csv(self, kind: str) -> Path:
        return self.entities_dir / f"{kind}.csv"

    @property
    def staging_db(self) -> Path:
        return self.root / "staging" / "laion.duckdb"

    @property
    def build_db(self) -> Path:
        # A work file, named the same for every profile: publish names the release's copy.
        return self.root / "build" / f"{DEFAULT_DATABASE}.db"

    def shard_db(self, key: str) -> Path:
        """The database of one shard of a build of several (one shard is the build database)."""
        return self.build_db.parent / "shards" / f"{key}.db"

    @property
    def published_dir(self) -> Path:
        return self.root / "published"

    @property
    def releases_dir(self) -> Path:
        return self.published_dir / "releases"

    def release(self, release_id: str, database: str = "") -> ReleaseFiles:
        return ReleaseFiles(self.releases_dir / release_id, database)

    @property
    def held_json(self) -> Path:
        """What `rollback` holds: the release it served again, until an input changes."""
        return self.published_dir / "held.json"

    def pointer(self, name: str) -> Path:
        """``published/current`` or ``published/previous``: a link to a release folder."""
        return self.published_dir / name

    @property
    def current(self) -> ReleaseFiles:
        """The release being served, through its pointer (``published/current/...``)."""
        return ReleaseFiles(self.pointer("current"))

    @property
    def previous(self) -> ReleaseFiles:
        """The release served before the current one, for rollback."""
        return ReleaseFiles(self.pointer("previous"))

    # The current release's files, by the paths users and the README use.
    @property
    def published_db(self) -> Path:
        return self.current.db

    @property
    def manifest_json(self) -> Path:
        return self.current.manifest_json

    @property
    def inspect_json(self) -> Path:
        return self.current.inspect_json

    @property
    def metadata_json(self) -> Path:
        return self.current.metadata_json

    @property
    def report_dir(self) -> Path:
        return self.current.report_dir

    @property
    def report_files(self) -> tuple[Path, ...]:
        return self.current.report_files

    @property
    def previous_dir(self) -> Path:
        return self.previous.folder
