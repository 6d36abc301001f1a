"""The columns of the LAION-Aesthetics parquet files and of the tables we build from them."""

from collections.abc import Mapping

import pyarrow as pa
from dagster import TableColumn, TableSchema

# The source files' columns, in order, with their exact types.
LAION_ARROW_SCHEMA = pa.schema(
    [
        ("URL", pa.string()),
        ("TEXT", pa.string()),
        ("WIDTH", pa.float64()),
        ("HEIGHT", pa.float64()),
        ("similarity", pa.float64()),
        ("punsafe", pa.float32()),
        ("pwatermark", pa.float32()),
        ("AESTHETIC_SCORE", pa.float32()),
        ("hash", pa.int64()),
        ("__index_level_0__", pa.int64()),
    ]
)
LAION_COLUMNS: tuple[str, ...] = tuple(LAION_ARROW_SCHEMA.names)

# The `images` table's columns (the 2022 database's names), each with its SQLite type and what
# it means; `domain_id` is added by the build.
IMAGE_COLUMNS: dict[str, tuple[str, str]] = {
    "url": ("TEXT", "Address of the image (parquet URL)"),
    "text": ("TEXT", "Caption scraped with the image (parquet TEXT)"),
    "width": ("INTEGER", "Width in pixels; NULL where the source has NaN"),
    "height": ("INTEGER", "Height in pixels; NULL where the source has NaN"),
    "similarity": ("FLOAT", "CLIP similarity of caption and image"),
    "punsafe": ("FLOAT", "Predicted probability that the image is unsafe (NSFW)"),
    "pwatermark": ("FLOAT", "Predicted probability that the image has a watermark"),
    "aesthetic": ("FLOAT", "LAION aesthetic predictor score (parquet AESTHETIC_SCORE)"),
    "hash": ("TEXT", "LAION's 64-bit hash of the row, as text"),
    "__index_level_0__": ("INTEGER", "Row index of the parent dataset"),
    "domain_id": ("INTEGER", "The image's host, a reference to domain(id)"),
}

DOMAIN_COLUMNS: dict[str, tuple[str, str]] = {
    "id": ("INTEGER", "Domain id, in the order domains first appear in the files"),
    "domain": ("TEXT", "Host the images were scraped from: urlparse(url).netloc"),
    "image_counts": ("INTEGER", "Number of images from this host"),
}


def table_schema(columns: Mapping[str, tuple[str, str]]) -> TableSchema:
    """Columns as Dagster shows them in the UI (``dagster/column_schema``)."""
    return TableSchema(
        columns=[
            TableColumn(name, sql_type, description=text)
            for name, (sql_type, text) in columns.items()
        ]
    )
