"""The pipeline's two kinds of partition, both added and removed as the data changes: one per
source file (``source_files``, from the listing `hf_dataset` observes) and one per shard
(``shards``, from the plan of the staged files)."""

from collections.abc import Sequence

from dagster import DagsterInstance, DynamicPartitionsDefinition

SOURCE_FILES = DynamicPartitionsDefinition(name="source_files")
SHARDS = DynamicPartitionsDefinition(name="shards")
# The tags of a run that materializes a range of partitions (every shard, in one run).
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def sync_partitions(
    instance: DagsterInstance, partitions: DynamicPartitionsDefinition, keys: Sequence[str]
) -> None:
    """Make ``keys`` the partitions of ``partitions``: add the new ones, delete the others."""
    name = partitions.name
    assert name is not None
    known = set(instance.get_dynamic_partitions(name))
    instance.add_dynamic_partitions(name, [k for k in keys if k not in known])
    for gone in sorted(known - set(keys)):
        instance.delete_dynamic_partition(name, gone)


def range_tags(keys: Sequence[str]) -> dict[str, str]:
    """The tags of one run over the partitions ``keys`` (in order) of its partitioned assets."""
    return {RANGE_START: keys[0], RANGE_END: keys[-1]}
