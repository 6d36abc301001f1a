"""Markdown previews for asset metadata: what a person reads in the Dagster UI."""

from collections.abc import Sequence
from typing import Any


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A small markdown table; long cells are shortened and pipes escaped."""

    def cell(value: Any) -> str:
        text = "" if value is None else f"{value:,}" if isinstance(value, int) else str(value)
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= 80 else text[:77] + "..."

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
