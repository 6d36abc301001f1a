"""Tests of laion_pipeline/analysis/."""
