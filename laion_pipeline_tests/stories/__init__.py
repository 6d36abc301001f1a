"""End-to-end stories (`make test-stories`): the commands, Dagster's UI and engine, crashes
and faults, whole builds."""
