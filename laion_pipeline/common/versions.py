"""The code version of each step of the build. A step whose code changes what it makes gets a
new version here: the data folder's records (a staged file's, a release's manifest) name the
versions they were made by, so a new one is rebuilt, and Dagster's UI shows the asset as
changed."""

CODE_VERSIONS: dict[str, str] = {
    "source_files": "3",  # 3: values outside their column's rule become NULL, counted
    "entity_csvs": "1",
    "staging_images": "2",
    "images": "4",  # 4: url_key, the lookup of an image by its URL
    "images_fts": "1",
    "domains": "4",  # 4: a shards table in every catalog, the one database's too
    "entity_tables": "1",
    "published_database": "1",
    "analysis": "1",
}
# What every staged file's record names: a new one restages every file.
STAGING_CODE_VERSION = CODE_VERSIONS["source_files"]
# The steps whose code shapes a release's databases (the analysis only describes them).
BUILD_STEPS = (
    "entity_csvs",
    "staging_images",
    "images",
    "images_fts",
    "domains",
    "entity_tables",
    "published_database",
)


def build_code_version() -> str:
    """The versions of the steps that make a release's databases, as a manifest records them:
    `entity_csvs=1 staging_images=2 ...`."""
    return " ".join(f"{step}={CODE_VERSIONS[step]}" for step in BUILD_STEPS)
