"""Tests of laion_pipeline/orchestration/: the definitions, checks and settings."""
