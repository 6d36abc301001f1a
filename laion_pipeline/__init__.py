"""laion-pipeline: LAION-Aesthetics v2 6+ as a searchable SQLite database, built by Dagster."""

from importlib import metadata

try:
    __version__ = metadata.version("laion_pipeline")
except metadata.PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
