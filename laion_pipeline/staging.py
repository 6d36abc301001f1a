"""Staging: every source row typed for SQLite and given its domain, as a DuckDB view over the
verified parquet files (no copy of the rows)."""

from collections.abc import Sequence

import duckdb

from laion_pipeline.errors import StaleInputError
from laion_pipeline.inputs import ParquetFile
from laion_pipeline.schema import IMAGE_COLUMNS, LAION_COLUMNS

# The host part of a URL exactly as Python's urllib.parse.urlparse(url).netloc gives it:
# tabs and newlines removed (the replace only runs where there are some: it is the costly
# part), leading control characters and spaces skipped, an optional scheme (a letter, then
# letters, digits, "+", "-" or "."; up to the first ":"), then "//" and everything up to the
# first "/", "?" or "#". No "//" means no host: "".
DOMAIN_SQL = r"""coalesce(regexp_extract(
    CASE WHEN contains("URL", chr(9)) OR contains("URL", chr(10)) OR contains("URL", chr(13))
        THEN regexp_replace("URL", '[\t\r\n]', '', 'g') ELSE "URL" END,
    '^[\x00-\x20]*(?:[A-Za-z][A-Za-z0-9+.\-]*:)?//([^/?#]*)', 1), '')"""


_DUCKDB_TYPES = {"TEXT": "VARCHAR", "INTEGER": "BIGINT", "FLOAT": "DOUBLE"}


STAGING_COLUMNS: dict[str, tuple[str, str]] = {
    "id": ("BIGINT", "Row number in file order, 1..N: the SQLite rowid of the image"),
    **{
        name: (_DUCKDB_TYPES[sql_type], text)
        for name, (sql_type, text) in IMAGE_COLUMNS.items()
        if name != "domain_id"
    },
    "domain": ("VARCHAR", "Host of the URL: urlparse(url).netloc; '' when there is none"),
}


def _pixels(column: str) -> str:
    # pandas wrote missing sizes as NaN in float columns: NaN, infinities and nonsense become NULL.
    value = f'CAST("{column}" AS DOUBLE)'
    return f"CASE WHEN isfinite({value}) AND abs({value}) < 1e15 THEN CAST({value} AS BIGINT) END"


def _float32(column: str) -> str:
    # The shortest decimal of the float32, as the 2022 CSV route stored it: 0.1, not 0.100000001.
    return f'CAST(CAST(CAST("{column}" AS FLOAT) AS VARCHAR) AS DOUBLE)'


# The typed columns, in STAGING_COLUMNS order, over read_parquet(..., file_row_number, filename).
STAGING_SELECT = f"""
    file_row_number + 1 + {{offsets}},
    CAST("URL" AS VARCHAR),
    CAST("TEXT" AS VARCHAR),
    {_pixels("WIDTH")},
    {_pixels("HEIGHT")},
    CAST("similarity" AS DOUBLE),
    {_float32("punsafe")},
    {_float32("pwatermark")},
    {_float32("AESTHETIC_SCORE")},
    CAST("hash" AS VARCHAR),
    CAST("__index_level_0__" AS BIGINT),
    {DOMAIN_SQL}
"""


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def staging_view_sql(files: Sequence[ParquetFile]) -> str:
    """`staging_images` as a view over the verified parquet files. Row `id` numbers rows
    1..N in file order; it becomes the SQLite rowid."""
    offsets, cases = 0, []
    for f in files:
        cases.append(f"WHEN {_literal(f.path)} THEN {offsets}")
        offsets += f.rows
    columns = ", ".join(f'"{name}"' for name in STAGING_COLUMNS)
    paths = ", ".join(_literal(f.path) for f in files)
    select = STAGING_SELECT.format(offsets=f"CASE filename {' '.join(cases)} END")
    return (
        f"CREATE OR REPLACE VIEW staging_images ({columns}) AS SELECT {select} "
        f"FROM read_parquet([{paths}], file_row_number = true, filename = true)"
    )


# What the build can read from each parquet column (DuckDB type names): mirrors may write
# other numeric widths, which the view casts, but text must be text.
_INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"}


_NUMBER_TYPES = _INTEGER_TYPES | {"FLOAT", "DOUBLE"} | {f"U{t}" for t in _INTEGER_TYPES}


READABLE_TYPES: dict[str, set[str]] = {
    "URL": {"VARCHAR"},
    "TEXT": {"VARCHAR"},
    "hash": _INTEGER_TYPES | {f"U{t}" for t in _INTEGER_TYPES} | {"VARCHAR"},
    **{c: _NUMBER_TYPES for c in LAION_COLUMNS if c not in ("URL", "TEXT", "hash")},
}


def schema_problems(conn: duckdb.DuckDBPyConnection, files: Sequence[ParquetFile]) -> list[str]:
    """What is wrong with the LAION columns of each parquet file and with the staged view's
    column types; empty when nothing is."""
    problems = []
    for f in files:
        found = {
            row[0]: row[1]
            for row in conn.execute(
                f"DESCRIBE SELECT * FROM read_parquet({_literal(f.path)})"
            ).fetchall()
        }
        for column, readable in READABLE_TYPES.items():
            if column not in found:
                problems.append(f"{f.name}: no column {column}")
            elif found[column].split("(")[0] not in readable:
                problems.append(f"{f.name}: {column} is {found[column]}")
    staged = [tuple(row[:2]) for row in conn.execute("DESCRIBE staging_images").fetchall()]
    expected = [(name, sql_type) for name, (sql_type, _) in STAGING_COLUMNS.items()]
    if staged != expected:
        problems.append(f"staging_images has columns {staged}, not {expected}")
    return problems


def check_files_unchanged(files: Sequence[ParquetFile]) -> None:
    """The view reads the verified files: refuse if any changed since (or is gone)."""
    for f in files:
        if not f.unchanged():
            raise StaleInputError(
                f"{f.path} changed since laion_parquet_files verified it: materialize "
                "laion_parquet_files (and what follows) again"
            )


def create_staging(conn: duckdb.DuckDBPyConnection, files: Sequence[ParquetFile]) -> int:
    """Define `staging_images` over ``files``; returns its row count (from the manifest)."""
    check_files_unchanged(files)
    conn.execute(staging_view_sql(files))
    return sum(f.rows for f in files)
