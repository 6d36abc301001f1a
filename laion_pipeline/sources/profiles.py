"""Profiles: which LAION dataset a build reads, as data (`profiles.toml`, plus a file of the
user's own in ``LAION_PROFILES_FILE``): its repo, its files, where each column of the images
table comes from, an optional row filter, the published database's name and the site's title."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from laion_pipeline.common.blocklist import NO_BLOCKLIST, Blocklist
from laion_pipeline.common.errors import ConfigurationError
from laion_pipeline.common.layout import DEFAULT_DATABASE
from laion_pipeline.common.schema import SOURCE_IMAGE_COLUMNS

BUNDLED_PROFILES = Path(__file__).with_name("profiles.toml")
DEFAULT_PROFILE = "6plus"
HUB_DEFAULT_PROFILE = "aesthetics-v2-6plus"
_KEYS = {"title", "about", "database", "repo", "revision", "files", "required", "columns", "filter"}
# A database name is a file name and a URL path segment (Datasette serves it at /<name>).
_DATABASE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


@dataclass(frozen=True)
class RowFilter:
    """Keep the rows whose ``column`` (of the images table) is at least ``at_least``."""

    column: str
    at_least: float
    variable: str  # the environment variable that sets at_least

    @property
    def description(self) -> str:
        return f"{self.column} >= {self.at_least:g}"


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    about: str  # what the images are: the first sentence of the site's index page
    database: str  # the published database's file name without .db, and its Datasette name
    repo: str
    revision: str
    files: str
    required: tuple[str, ...]
    # Per images column (in table order), the source column names to look for, in order.
    columns: tuple[tuple[str, tuple[str, ...]], ...]
    row_filter: RowFilter | None
    # The images left out by staging (``LAION_BLOCKLIST``): the environment's, like the filter's
    # parameters; none unless a build's resources give it.
    takedowns: Blocklist = NO_BLOCKLIST

    def wants(self, path: str) -> bool:
        """Whether a repo or folder path is one of the profile's parquet files."""
        return path.endswith(".parquet") and fnmatch.fnmatch(path, self.files)

    @property
    def digest(self) -> str:
        """Changes whenever what the profile makes of a file changes (columns, filter, the
        takedowns it leaves out)."""
        what: dict[str, Any] = {
            "columns": self.columns,
            "required": self.required,
            "filter": self.row_filter,
        }
        if self.takedowns:
            what["takedowns"] = self.takedowns.digest
        return hashlib.sha256(json.dumps(what, default=asdict).encode()).hexdigest()[:12]

    @property
    def filter_parameters(self) -> dict[str, Any] | None:
        """The row filter as a staged file's record names it (column, at_least, variable)."""
        return asdict(self.row_filter) if self.row_filter else None

    @property
    def summary(self) -> dict[str, object]:
        """What a release's manifest records of the profile."""
        return {
            "name": self.name,
            "title": self.title,
            "about": self.about,
            "database": self.database,
            "repo": self.repo,
            "filter": self.row_filter.description if self.row_filter else None,
        }


def _profile(name: str, raw: Mapping, origin: str, environ: Mapping[str, str]) -> Profile:
    def fail(problem: str) -> ConfigurationError:
        return ConfigurationError(f"profile {name!r} in {origin}: {problem}")

    unknown = set(raw) - _KEYS
    if unknown:
        raise fail(f"unknown keys {', '.join(sorted(unknown))} (known: {', '.join(sorted(_KEYS))})")
    if not isinstance(raw.get("repo"), str) or "/" not in raw["repo"]:
        raise fail('needs repo = "owner/name"')
    database = raw.get("database", DEFAULT_DATABASE)
    if not isinstance(database, str) or not _DATABASE_NAME.fullmatch(database):
        raise fail(
            f"database = {database!r}: use lower-case letters, digits, - and _ (at most 64, "
            'starting with a letter or digit), such as "laion-aesthetic-6pls"'
        )
    columns = raw.get("columns", {})
    strange = set(columns) - set(SOURCE_IMAGE_COLUMNS)
    if strange:
        raise fail(
            f"columns names {', '.join(sorted(strange))}, which the images table does not have "
            f"(it has {', '.join(SOURCE_IMAGE_COLUMNS)})"
        )
    required = tuple(raw.get("required", ("url", "text")))
    if not {"url", "text"} <= set(required) or not set(required) <= set(SOURCE_IMAGE_COLUMNS):
        raise fail("required must hold url and text, and only columns of the images table")
    row_filter = None
    if "filter" in raw:
        spec = raw["filter"]
        if spec.get("column") not in SOURCE_IMAGE_COLUMNS or "at_least" not in spec:
            raise fail("filter needs column (a column of the images table) and at_least")
        variable = spec.get("variable", "")
        value = environ.get(variable) if variable else None
        try:
            at_least = float(value) if value not in (None, "") else float(spec["at_least"])
        except ValueError:
            raise ConfigurationError(
                f"{variable}={value!r} is not a number: set it to the lowest {spec['column']} "
                "to keep, such as 6"
            ) from None
        if not math.isfinite(at_least):
            raise ConfigurationError(f"{variable}={value!r}: use a finite number, such as 6")
        row_filter = RowFilter(spec["column"], at_least, variable)
    return Profile(
        name=name,
        title=raw.get("title", name),
        about=raw.get("about", f"URLs and captions of the images of {raw.get('title', name)}."),
        database=database,
        repo=raw["repo"],
        revision=raw.get("revision", "main"),
        files=raw.get("files", "*.parquet"),
        required=required,
        columns=tuple((c, tuple(columns.get(c, [c]))) for c in SOURCE_IMAGE_COLUMNS),
        row_filter=row_filter,
    )


def load_profiles(
    extra_file: str | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Profile]:
    """The bundled profiles and those of ``extra_file`` (which may replace a bundled one)."""
    env = environ or {}
    sources = [BUNDLED_PROFILES]
    if extra_file:
        path = Path(extra_file).expanduser()
        if not path.is_file():
            raise ConfigurationError(f"LAION_PROFILES_FILE={extra_file}: no such file")
        sources.append(path)
    profiles = {}
    for path in sources:
        try:
            tables = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ConfigurationError(f"{path} is not valid TOML: {error}") from error
        for name, raw in tables.items():
            if not isinstance(raw, dict):
                raise ConfigurationError(f"{path}: {name} must be a table [{name}]")
            profiles[name] = _profile(name, raw, str(path), env)
    return profiles


def choose_profile(
    name: str | None, source_kind: str, extra_file: str | None, environ: Mapping[str, str]
) -> Profile:
    """``LAION_PROFILE``, or the default for the source (today's 6+ set on the hub)."""
    profiles = load_profiles(extra_file, environ)
    chosen = name or (HUB_DEFAULT_PROFILE if source_kind == "huggingface" else DEFAULT_PROFILE)
    if chosen not in profiles:
        raise ConfigurationError(
            f"LAION_PROFILE={chosen!r} is not a profile: use one of {', '.join(profiles)}, or "
            "add it to a file named by LAION_PROFILES_FILE"
        )
    return profiles[chosen]
