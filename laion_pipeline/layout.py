"""Where every file of a build lives under ``$LAION_DATA_DIR``: the one place that knows."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATABASE_NAME = "laion-aesthetic-6pls"
ENTITY_KINDS: tuple[str, ...] = ("artists", "celebrities", "characters")


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


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; published files are for readers
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode())


def read_json(path: Path, missing_hint: str) -> Any:
    """Read a JSON file an earlier asset wrote; ``missing_hint`` says which asset to run."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: {missing_hint}")
    return json.loads(path.read_text(encoding="utf-8"))
