"""Tests of laion_pipeline/serve/: the site, in process and on 127.0.0.1."""
