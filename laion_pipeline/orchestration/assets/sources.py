"""Sources: what the pipeline reads, observed so Dagster knows when they change."""

import hashlib
import warnings
from collections.abc import Mapping

from dagster import (
    BetaWarning,
    DataVersion,
    DataVersionsByPartition,
    ObserveResult,
    OpExecutionContext,
    observable_source_asset,
)

from laion_pipeline.common.layout import ENTITY_KINDS
from laion_pipeline.common.schema import ENTITY_CSV_COLUMNS, LAION_PARQUET_COLUMNS
from laion_pipeline.orchestration.assets.retries import retry_transient_errors
from laion_pipeline.orchestration.metadata import table_schema
from laion_pipeline.orchestration.partitions import SOURCE_FILES, sync_partitions
from laion_pipeline.orchestration.resources import EntityLists, LaionData, ParquetSource
from laion_pipeline.releases.lock import data_dir_lock
from laion_pipeline.sources.inputs import SourceEntry
from laion_pipeline.sources.profiles import Profile

# Observable source assets are the documented way to version external data; the beta notice
# would otherwise repeat in every run's logs.
warnings.filterwarnings(
    "ignore", message=".*(observable_source_asset|DataVersionsByPartition).*", category=BetaWarning
)


def entity_lists_version(lists: Mapping[str, bytes]) -> str:
    """The data version of the name lists: a hash of the three CSVs' bytes, the same as the
    `entity_sheets` observation gives for them."""
    digest = hashlib.sha256()
    for kind in ENTITY_KINDS:
        digest.update(hashlib.sha256(lists[kind]).digest())
    return digest.hexdigest()[:16]


def partition_version(entry: SourceEntry, profile: Profile) -> str:
    """The observed version of one source file's partition: its content's version and what the
    profile makes of it, so a changed file or a changed filter marks just that partition (or
    all of them) stale."""
    return hashlib.sha256(f"{entry.version}\0{profile.digest}".encode()).hexdigest()[:16]


@observable_source_asset(
    group_name="sources",
    partitions_def=SOURCE_FILES,
    # Kinds as tags: observable_source_asset has no kinds= parameter.
    tags={"dagster/kind/huggingface": "", "dagster/kind/parquet": ""},
    # The 2022 layout (profile 6plus); other profiles map their own names onto these columns.
    metadata={"dagster/column_schema": table_schema(LAION_PARQUET_COLUMNS)},
    description=(
        "The source files of the dataset chosen by `LAION_PROFILE`, one partition each: the "
        "files of the dataset repo at its revision (or of the sample or local folder) that "
        "the profile wants. Observing it lists them (in `raw/source_files.json`), adds a "
        "partition for each new file and removes those of files that are gone; each "
        "partition's data version is its file's content version (sha256, git blob id or "
        "ETag, or size and time for a local folder) with the profile's filter, so a new "
        "revision in which 3 files changed makes just those 3 partitions stale. A gated repo "
        "without access fails here, before anything is downloaded."
    ),
)
def hf_dataset(
    context: OpExecutionContext, laion_data: LaionData, parquet_source: ParquetSource
) -> DataVersionsByPartition:
    layout = laion_data.layout
    profile = laion_data.profile
    with retry_transient_errors(context, parquet_source):
        listing = parquet_source.listing(layout, profile, context.log)
    with data_dir_lock(layout, context.log):
        listing.write(layout)
    keys = [entry.key for entry in listing.entries]
    sync_partitions(context.instance, SOURCE_FILES, keys)
    context.log.info(
        f"{listing.source.kind} {listing.source.location} at {listing.source.revision}: "
        f"{len(keys)} files for profile {profile.name}"
        + (f" (keeping {profile.row_filter.description})" if profile.row_filter else "")
    )
    versions = {entry.key: partition_version(entry, profile) for entry in listing.entries}
    return DataVersionsByPartition(versions)


@observable_source_asset(
    group_name="sources",
    tags={"dagster/kind/csv": ""},
    metadata={"dagster/column_schema": table_schema(ENTITY_CSV_COLUMNS)},
    description=(
        "The three name lists (artists, celebrities, characters). Its data version is a hash of "
        "the three CSVs' content, so an edited list marks the entity tables stale."
    ),
)
def entity_sheets(entity_lists: EntityLists) -> ObserveResult:
    lists = {kind: entity_lists.read(kind) for kind in ENTITY_KINDS}
    metadata = {}
    for kind, data in lists.items():
        metadata[f"{kind}_url"] = entity_lists.display_url(kind)
        metadata[f"{kind}_sha256"] = hashlib.sha256(data).hexdigest()
    return ObserveResult(data_version=DataVersion(entity_lists_version(lists)), metadata=metadata)
