"""Tests of laion_pipeline/common/."""
