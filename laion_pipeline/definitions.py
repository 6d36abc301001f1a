"""The code location Dagster loads (`laion_pipeline.definitions:defs`, in workspace.yaml and
pyproject.toml); the definitions live in the orchestration layer."""

from laion_pipeline.orchestration.definitions import defs

__all__ = ["defs"]
