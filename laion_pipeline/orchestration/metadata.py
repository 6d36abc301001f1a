"""What materializations tell a person in the Dagster UI: markdown previews, file locations
and sizes, step times and where each column comes from."""

import re
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dagster import (
    AssetKey,
    MetadataValue,
    TableColumn,
    TableColumnDep,
    TableColumnLineage,
    TableSchema,
)

from laion_pipeline.common.files import disk_size

# Every character Markdown (and the HTML it allows) gives a meaning: captions, names and hosts
# are shown as typed, so `![x](http://host/a.png)` is no image the UI would fetch.
MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~&:])")


def markdown_text(value: Any, most_chars: int | None = None) -> str:
    """``value`` as plain text in Markdown: one line (shortened to ``most_chars``), every
    special character escaped."""
    text = "" if value is None else f"{value:,}" if isinstance(value, int) else str(value)
    if most_chars is not None and len(text) > most_chars:
        text = text[: most_chars - 3] + "..."
    return MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A small markdown table of values shown as text; long cells are shortened."""

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join(markdown_text(v, most_chars=80) for v in row) + " |" for row in rows
    ]
    return "\n".join(lines)


def markdown_list(items: Sequence[Any]) -> str:
    """A markdown bullet list of values shown as text ("" for no items)."""
    return "\n".join(f"- {markdown_text(item)}" for item in items)


def file_metadata(path: Path) -> dict[str, Any]:
    """``dagster/uri`` (a file:// URI the UI shows and links) and the size of a file or of the
    files in a folder."""
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    size = sum(p.stat().st_size for p in files)
    return {
        "dagster/uri": MetadataValue.url(path.resolve().as_uri()),
        "size_bytes": size,  # a number, which the UI plots across materializations
        "size": disk_size(size),
    }


def column_lineage(sources: Mapping[str, Sequence[tuple[str, str]]]) -> TableColumnLineage:
    """``dagster/column_lineage`` from ``{column: [(asset, column it comes from), ...]}``."""
    return TableColumnLineage(
        deps_by_column={
            column: [TableColumnDep(asset_key=AssetKey(a), column_name=c) for a, c in deps]
            for column, deps in sources.items()
        }
    )


class StepTimer:
    """Seconds since the step started, for the ``seconds`` metadata of each materialization."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def metadata(self) -> dict[str, Any]:
        return {"seconds": MetadataValue.float(round(time.monotonic() - self.started, 3))}


def table_schema(columns: Mapping[str, tuple[str, str]]) -> TableSchema:
    """Columns as Dagster shows them in the UI (``dagster/column_schema``)."""
    return TableSchema(
        columns=[
            TableColumn(name, sql_type, description=text)
            for name, (sql_type, text) in columns.items()
        ]
    )


def run_worker() -> str:
    """Where this run executes: the Celery worker's name (``worker1@host``) when a worker of
    the Celery run launcher runs it, else this machine's host name."""
    try:
        from celery import current_task
    except ImportError:  # an installation without the distributed engine
        current_task = None
    hostname = getattr(getattr(current_task, "request", None), "hostname", None)
    return hostname or socket.gethostname()
