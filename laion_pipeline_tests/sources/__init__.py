"""Tests of laion_pipeline/sources/: profiles, the hub, local folders, reading odd files."""
