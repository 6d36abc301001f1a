"""The columns of the LAION-Aesthetics parquet files and of the tables we build from them."""

import pyarrow as pa

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
_LAION_DESCRIPTIONS = {
    "URL": "Address of the image",
    "TEXT": "Caption scraped with the image (alt text)",
    "WIDTH": "Width in pixels; NaN where unknown",
    "HEIGHT": "Height in pixels; NaN where unknown",
    "similarity": "CLIP similarity of caption and image",
    "punsafe": "Predicted probability that the image is unsafe (NSFW)",
    "pwatermark": "Predicted probability that the image has a watermark",
    "AESTHETIC_SCORE": "LAION aesthetic predictor score (6 or more in this set)",
    "hash": "LAION's 64-bit hash of the row",
    "__index_level_0__": "Row index of the parent dataset (pandas index)",
}
LAION_PARQUET_COLUMNS: dict[str, tuple[str, str]] = {
    field.name: (str(field.type), _LAION_DESCRIPTIONS[field.name]) for field in LAION_ARROW_SCHEMA
}

# The `images` table's columns (the 2022 database's names), each with its SQLite type and what
# it means; `domain_id` and `url_key` are added by the build (`BUILT_IMAGE_COLUMNS`).
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
    "url_key": ("INTEGER", "The first 60 bits of the URL's MD5, indexed: a lookup by URL"),
}
BUILT_IMAGE_COLUMNS = ("domain_id", "url_key")

DOMAIN_COLUMNS: dict[str, tuple[str, str]] = {
    "id": ("INTEGER", "Domain id, in the order domains first appear in the files"),
    "domain": ("TEXT", "Host the images were scraped from: urlparse(url).netloc"),
    "image_counts": ("INTEGER", "Number of images from this host"),
}


# A name list needs only `name`; any other columns of the CSV are kept as text.
ENTITY_CSV_COLUMNS: dict[str, tuple[str, str]] = {
    "name": ("TEXT", "The name to count, as written in the list"),
}
ENTITY_COLUMNS: dict[str, tuple[str, str]] = {
    **ENTITY_CSV_COLUMNS,
    "image_counts": ("INTEGER", "Captions that contain the name as a phrase (FTS5)"),
}
IMAGES_FTS_COLUMNS: dict[str, tuple[str, str]] = {
    "text": ("FTS5", "images.text indexed for full-text search (unicode61, detail=full)"),
}

# The columns of the images table a source file gives (a profile says under which names).
SOURCE_IMAGE_COLUMNS: tuple[str, ...] = tuple(
    c for c in IMAGE_COLUMNS if c not in BUILT_IMAGE_COLUMNS
)

# Our staged parquet files: one per source file, the rows a profile keeps, typed for SQLite,
# with the URL's domain and the row's number in its source file: (DuckDB type, meaning).
_STAGED_TYPES = {
    "url": "VARCHAR",
    "text": "VARCHAR",
    "width": "BIGINT",
    "height": "BIGINT",
    "similarity": "DOUBLE",
    "punsafe": "DOUBLE",
    "pwatermark": "DOUBLE",
    "aesthetic": "DOUBLE",
    "hash": "VARCHAR",
    "__index_level_0__": "BIGINT",
}
DOMAIN_TEXT = "Host of the URL: urlparse(url).netloc; '' when there is none"
STAGED_FILE_COLUMNS: dict[str, tuple[str, str]] = {
    **{name: (_STAGED_TYPES[name], IMAGE_COLUMNS[name][1]) for name in SOURCE_IMAGE_COLUMNS},
    "domain": ("VARCHAR", DOMAIN_TEXT),
    "source_row": (
        "BIGINT",
        "The row's number in its source file, from 0: with the file, a "
        "stable id that needs no __index_level_0__",
    ),
}

# The staging view over the staged files (`staging_images`): each row numbered in release
# order (`id`, the SQLite rowid of the image), its columns, its domain.
STAGING_VIEW_COLUMNS: dict[str, tuple[str, str]] = {
    "id": ("BIGINT", "Row number in file order, 1..N: the SQLite rowid of the image"),
    **{name: STAGED_FILE_COLUMNS[name] for name in SOURCE_IMAGE_COLUMNS},
    "domain": ("VARCHAR", DOMAIN_TEXT),
}
