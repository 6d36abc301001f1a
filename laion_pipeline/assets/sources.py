"""Sources: what the pipeline reads, observed so Dagster knows when they change."""

import hashlib
import warnings
from collections.abc import Mapping

from dagster import BetaWarning, DataVersion, ObserveResult, observable_source_asset

from laion_pipeline.layout import ENTITY_KINDS
from laion_pipeline.metadata import table_schema
from laion_pipeline.resources import EntityLists, LaionData, ParquetSource
from laion_pipeline.schema import ENTITY_CSV_COLUMNS, LAION_PARQUET_COLUMNS

# Observable source assets are the documented way to version external data; the beta notice
# would otherwise repeat in every run's logs.
warnings.filterwarnings("ignore", message=".*observable_source_asset.*", category=BetaWarning)


def entity_lists_version(lists: Mapping[str, bytes]) -> str:
    """The data version of the name lists: a hash of the three CSVs' bytes, the same as the
    ``entity_sheets`` observation gives for them."""
    digest = hashlib.sha256()
    for kind in ENTITY_KINDS:
        digest.update(hashlib.sha256(lists[kind]).digest())
    return digest.hexdigest()[:16]


@observable_source_asset(
    group_name="sources",
    # Kinds as tags: observable_source_asset has no kinds= parameter.
    tags={"dagster/kind/huggingface": "", "dagster/kind/parquet": ""},
    metadata={"dagster/column_schema": table_schema(LAION_PARQUET_COLUMNS)},
    description=(
        "The LAION-Aesthetics v2 6+ dataset at a pinned revision. Its data version is the exact "
        "revision (the Hub commit sha, or a fingerprint of the sample or local files), so assets "
        "built from an older revision show as stale."
    ),
)
def hf_dataset(laion_data: LaionData, parquet_source: ParquetSource) -> ObserveResult:
    revision = parquet_source.observe(laion_data.layout)
    return ObserveResult(
        data_version=DataVersion(revision.revision),
        metadata={
            "source": revision.kind,
            "location": revision.location,
            "revision": revision.revision,
        },
    )


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
