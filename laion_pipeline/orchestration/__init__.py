"""Dagster: definitions, assets, checks, jobs, sensors, schedules, resources, the run engine and
the command line. The only layer that imports Dagster.
"""
