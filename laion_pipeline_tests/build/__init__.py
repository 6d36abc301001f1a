"""Tests of laion_pipeline/build/: the build database, shards, the decision, the publish."""
