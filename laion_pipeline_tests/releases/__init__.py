"""Tests of laion_pipeline/releases/: the pointers and the switch."""
