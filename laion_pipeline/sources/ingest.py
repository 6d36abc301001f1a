"""One source file staged: its columns found by the profile, its rows filtered, typed for SQLite
and given their domain, written as our own parquet file (the build never reads the source
again). DuckDB does the scan, the filter and the write in one pass."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from laion_pipeline.common.blocklist import Blocklist
from laion_pipeline.common.db import quote_string
from laion_pipeline.common.errors import InvalidInputError
from laion_pipeline.common.schema import SOURCE_IMAGE_COLUMNS, STAGED_FILE_COLUMNS
from laion_pipeline.sources.profiles import Profile


# The host part of a URL exactly as Python's urllib.parse.urlparse(url).netloc gives it:
# tabs and newlines removed (the replace only runs where there are some: it is the costly
# part), leading control characters and spaces skipped, an optional scheme (a letter, then
# letters, digits, "+", "-" or "."; up to the first ":"), then "//" and everything up to the
# first "/", "?" or "#". No "//" means no host: "".
def domain_sql(column: str) -> str:
    """DuckDB SQL for the domain of the URL in ``column`` (a quoted identifier)."""
    return rf"""coalesce(regexp_extract(
    CASE WHEN contains({column}, chr(9)) OR contains({column}, chr(10))
        OR contains({column}, chr(13))
        THEN regexp_replace({column}, '[\t\r\n]', '', 'g') ELSE {column} END,
    '^[\x00-\x20]*(?:[A-Za-z][A-Za-z0-9+.\-]*:)?//([^/?#]*)', 1), '')"""


_INTEGERS = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"}
_INTEGERS |= {f"U{t}" for t in _INTEGERS}
_NUMBERS = _INTEGERS | {"FLOAT", "DOUBLE", "DECIMAL"}

# What each images column accepts from a source column (DuckDB type names: string,
# large_string and dictionary-encoded strings all read as VARCHAR), and how it is typed.
READABLE_TYPES: dict[str, set[str]] = {
    "url": {"VARCHAR"},
    "text": {"VARCHAR"},
    "hash": _INTEGERS | {"VARCHAR"},
    **{c: _NUMBERS for c in SOURCE_IMAGE_COLUMNS if c not in ("url", "text", "hash")},
}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# The rule each number column's values keep. A value outside it becomes NULL, never rounded or
# clamped, and is counted per column in the staged file's record (``StagedRows.nulled``); a NaN
# is how pandas wrote a missing value, so it becomes NULL uncounted.
VALUE_RULES = {
    "width": "a whole number of pixels from 1 to 2^31 - 1",
    "height": "a whole number of pixels from 1 to 2^31 - 1",
    "similarity": "a finite number",
    "punsafe": "a probability: a number from 0 to 1",
    "pwatermark": "a probability: a number from 0 to 1",
    "aesthetic": "a finite number",
}
# Past this a finite double is no float32 (the scores are stored as float32's decimals).
FLOAT32_MAX = 3.4e38


def _number(source: str) -> str:
    return f"CAST({_quote(source)} AS DOUBLE)"


def _within_rule(target: str, number: str) -> str:
    """SQL: whether the DOUBLE ``number`` keeps ``target``'s rule (``VALUE_RULES``)."""
    if target in ("width", "height"):
        whole = f"{number} = floor({number})"
        return f"(isfinite({number}) AND {whole} AND {number} BETWEEN 1 AND {2**31 - 1})"
    if target in ("punsafe", "pwatermark"):
        return f"(isfinite({number}) AND {number} BETWEEN 0 AND 1)"
    return f"(isfinite({number}) AND abs({number}) < {FLOAT32_MAX})"


def _typed(target: str, source: str | None) -> str:
    """The SQL that types source column ``source`` as images column ``target``: a number
    outside its rule (``VALUE_RULES``) as NULL."""
    sql_type = STAGED_FILE_COLUMNS[target][0]
    if source is None:
        return f"CAST(NULL AS {sql_type})"
    value = _quote(source)
    if target not in VALUE_RULES:
        return f"CAST({value} AS {sql_type})"
    number = _number(source)
    if target in ("width", "height"):
        kept = f"CAST({number} AS BIGINT)"
    elif target in ("punsafe", "pwatermark", "aesthetic"):
        # The shortest decimal of the float32, as the 2022 CSV route stored it: 0.1, not 0.1000001.
        kept = f"CAST(CAST(CAST({value} AS FLOAT) AS VARCHAR) AS DOUBLE)"
    else:
        kept = f"CAST({number} AS {sql_type})"
    return f"CASE WHEN {_within_rule(target, number)} THEN {kept} END"


def _nulled(target: str, source: str, kept: str) -> str:
    """SQL: the count of a column's values that ``_typed`` makes NULL for breaking its rule
    (a value that was there, and not NaN), in the rows where ``kept`` holds."""
    number = _number(source)
    return (
        f"count(*) FILTER (WHERE {kept} AND {_quote(source)} IS NOT NULL AND NOT isnan({number}) "
        f"AND NOT {_within_rule(target, number)})"
    )


@dataclass(frozen=True)
class FileColumns:
    """Where each images column comes from in one source file (None: the file has none)."""

    sources: dict[str, str | None]

    @property
    def missing(self) -> list[str]:
        return [target for target, source in self.sources.items() if source is None]


def find_columns(profile: Profile, label: str, found: dict[str, str]) -> FileColumns:
    """Match the file's columns (name -> DuckDB type) to the images columns, by the profile's
    names for each, case-insensitively (an exact match first). A required column that is
    missing, or a column of a type the images table cannot take, fails naming the file."""
    by_lower: dict[str, str] = {}
    for name in found:
        by_lower.setdefault(name.lower(), name)
    needed = set(profile.required)
    if profile.row_filter:
        needed.add(profile.row_filter.column)
    sources: dict[str, str | None] = {}
    missing, wrong = [], []
    for target, names in profile.columns:
        source = next((n for n in names if n in found), None)
        source = source or next((by_lower[n.lower()] for n in names if n.lower() in by_lower), None)
        if source is None and target in needed:
            missing.append(" or ".join(names) or target)
        elif source is not None and found[source].split("(")[0] not in READABLE_TYPES[target]:
            wrong.append(f"{source} is {found[source]} ({target} needs {_kind(target)})")
        sources[target] = source
    if missing:
        raise InvalidInputError(
            f"{label} lacks the LAION columns {', '.join(missing)} of profile {profile.name} "
            f"(it has {', '.join(found)}): point the source at files of that dataset, or "
            "choose the profile of these files with LAION_PROFILE"
        )
    if wrong:
        raise InvalidInputError(f"{label}: {'; '.join(wrong)}")
    return FileColumns(sources)


def _refuse_ambiguous_columns(label: str, names: list[str]) -> None:
    """A file whose columns repeat a name, or differ only in case (``url`` and ``URL``: DuckDB
    reads names case-insensitively), fails naming them: which one holds the data is a guess."""
    by_lower: dict[str, list[str]] = {}
    for name in names:
        by_lower.setdefault(name.lower(), []).append(name)
    clashes = [same for same in by_lower.values() if len(same) > 1]
    if clashes:
        shown = "; ".join(" and ".join(same) for same in clashes)
        raise InvalidInputError(
            f"{label} has columns of the same name ({shown}; names are compared ignoring "
            "case): which one holds the data is a guess, so write the file with one of each"
        )


def _kind(target: str) -> str:
    return {"url": "text", "text": "text", "hash": "an integer or text"}.get(target, "a number")


@dataclass(frozen=True)
class StagedRows:
    rows_read: int
    rows_kept: int
    columns: FileColumns
    # Per column, the values of the rows kept that broke its rule and were stored as NULL.
    nulled: dict[str, int] = field(default_factory=dict)
    # Rows the filter kept that the takedowns left out (``LAION_BLOCKLIST``).
    blocked: int = 0


def _host_sql(url: str) -> str:
    """DuckDB SQL for the host of the URL in ``url`` as ``Blocklist`` compares it: lower case,
    without user, port or final dot."""
    return rf"rtrim(regexp_replace(lower({domain_sql(url)}), '^.*@|:[0-9]*$', '', 'g'), '.')"


def _takedowns_sql(
    duck: duckdb.DuckDBPyConnection, blocklist: Blocklist, columns: FileColumns
) -> str:
    """SQL: whether a source row is taken down (its URL, its hash, or its website or a parent
    of it listed); the lists become tables of ``duck``, matched by hash joins."""
    url, hash_column = columns.sources.get("url"), columns.sources.get("hash")
    blocked = []
    if blocklist.urls and url:
        duck.register("blocked_urls", pa.table({"entry": list(blocklist.urls)}))
        blocked.append(f"{_quote(url)} IN (SELECT entry FROM blocked_urls)")
    if blocklist.hashes and hash_column:
        duck.register("blocked_hashes", pa.table({"entry": list(blocklist.hashes)}))
        hashed = f"CAST({_quote(hash_column)} AS VARCHAR)"
        blocked.append(f"{hashed} IN (SELECT entry FROM blocked_hashes)")
    if blocklist.hosts and url:
        duck.register("blocked_hosts", pa.table({"entry": list(blocklist.hosts)}))
        host = _host_sql(_quote(url))
        # A listed website blocks its subdomains: the row's host's last n labels, for each n
        # a listed website has.
        for labels in sorted({h.count(".") + 1 for h in blocklist.hosts}):
            suffix = f"array_to_string(string_split({host}, '.')[-{labels}:], '.')"
            blocked.append(f"{suffix} IN (SELECT entry FROM blocked_hosts)")
    return f"coalesce({' OR '.join(blocked)}, false)" if blocked else "false"


def stage_file(
    raw: Path, label: str, profile: Profile, target: Path, threads: int | None = None
) -> StagedRows:
    """Write the rows of ``raw`` that ``profile`` keeps to ``target`` (our staged parquet: the
    columns of ``STAGED_FILE_COLUMNS``, in file order), atomically."""
    try:
        parquet = pq.ParquetFile(raw)
        rows_read, names = parquet.metadata.num_rows, parquet.schema_arrow.names
    except Exception as error:
        raise InvalidInputError(f"{label} is not a readable parquet file: {error}") from error
    _refuse_ambiguous_columns(label, names)
    duck = duckdb.connect()
    try:
        if threads:
            duck.execute(f"SET threads = {int(threads)}")
        scan = f"read_parquet({quote_string(str(raw))}, file_row_number = true)"
        found = {
            row[0]: row[1] for row in duck.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()
        }
        found.pop("file_row_number", None)
        columns = find_columns(profile, label, found)
        typed = ", ".join(
            f"{_typed(name, columns.sources[name])} AS {_quote(name)}"
            for name in SOURCE_IMAGE_COLUMNS
        )
        kept_by_filter = "true"
        if profile.row_filter:  # a score to keep is a finite number: +inf is not 6 or more
            score = _number(columns.sources[profile.row_filter.column] or "")
            kept_by_filter = f"isfinite({score}) AND {score} >= {profile.row_filter.at_least!r}"
        taken_down = _takedowns_sql(duck, profile.takedowns, columns)
        where = f"WHERE {kept_by_filter} AND NOT {taken_down}"
        select = (
            f"SELECT * EXCLUDE (source_row), {domain_sql(_quote('url'))} AS domain, source_row "
            f"FROM (SELECT {typed}, file_row_number AS source_row FROM {scan} {where})"
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            (kept,) = duck.execute(
                # zstd at level 1: a quarter faster than DuckDB's default level 3 for 10% more
                # bytes (1.5M rows of the 2022 shape, one core: 2.3 s and 124 MB against
                # 3.0 s and 113 MB; snappy 2.1 s and 170 MB).
                f"COPY ({select}) TO {quote_string(str(partial))} "
                "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, ROW_GROUP_SIZE 100000)"
            ).fetchone()
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        # A second scan, of the columns counted alone: the rows the takedowns left out, and
        # per number column the kept rows' values that broke its rule.
        ruled = [(t, columns.sources[t]) for t in VALUE_RULES if columns.sources.get(t)]
        measures = [f"count(*) FILTER (WHERE {taken_down})"]
        measures += [_nulled(t, s, f"NOT {taken_down}") for t, s in ruled]
        blocked, *broke = duck.execute(
            f"SELECT {', '.join(measures)} FROM {scan} WHERE {kept_by_filter}"
        ).fetchone()
        nulled = {t: n for (t, _), n in zip(ruled, broke, strict=True) if n}
    except duckdb.Error as error:
        raise InvalidInputError(f"{label} cannot be read: {error}") from error
    finally:
        duck.close()
    return StagedRows(rows_read, kept, columns, nulled, blocked)
