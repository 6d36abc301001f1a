"""Where every file of a build lives under ``$LAION_DATA_DIR``: the one place that knows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DATABASE_NAME = "laion-aesthetic-6pls"
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
# A published file's next version is written beside it under a hidden staged name, then renamed
# into place: "candidate" by a publish or the analysis, "rollback" by a rollback.
STAGED_SUFFIXES = ("candidate", "rollback")


def staged(target: Path, suffix: str = "candidate") -> Path:
    """Where the next version of a published file is written before it replaces ``target``."""
    return target.with_name(f".{target.name}.{suffix}")


@dataclass(frozen=True)
class DataLayout:
    """The folders and files of one data directory.

    ``raw/`` holds inputs as fetched, ``staging/`` the DuckDB working copy, ``build/`` the
    SQLite database being built, and ``published/`` what Datasette serves.
    """

    root: Path

    @property
    def raw_dir(self) -> Path:
        return self.root / "raw"

    @property
    def parquet_manifest(self) -> Path:
        """JSON list of the verified parquet files the build reads, in file order."""
        return self.raw_dir / "parquet_files.json"

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
        return self.root / "build" / f"{DATABASE_NAME}.db"

    @property
    def published_dir(self) -> Path:
        return self.root / "published"

    @property
    def published_db(self) -> Path:
        return self.published_dir / f"{DATABASE_NAME}.db"

    @property
    def metadata_json(self) -> Path:
        return self.published_dir / "metadata.json"

    @property
    def inspect_json(self) -> Path:
        return self.published_dir / "inspect.json"

    @property
    def manifest_json(self) -> Path:
        return self.published_dir / "manifest.json"

    @property
    def report_dir(self) -> Path:
        """The analysis of the published database: charts, numbers and an HTML page."""
        return self.published_dir / "report"

    @property
    def report_files(self) -> tuple[Path, ...]:
        return tuple(self.report_dir / name for name in REPORT_FILES)

    @property
    def datasette_files(self) -> tuple[Path, ...]:
        """What ``published_database`` writes beside the database."""
        return (self.metadata_json, self.inspect_json, self.manifest_json)

    @property
    def published_files(self) -> tuple[Path, ...]:
        """What is published, the database first: ``published_database`` writes it and the
        Datasette files, ``analysis`` the report about them."""
        return (self.published_db, *self.datasette_files, *self.report_files)

    @property
    def previous_dir(self) -> Path:
        """The version published before the current one (the same files), for rollback."""
        return self.published_dir / "previous"
