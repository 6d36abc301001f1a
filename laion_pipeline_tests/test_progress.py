"""Long steps report rows done of total and the rate."""

import logging

from laion_pipeline.progress import Progress


def test_progress_reports_done_total_and_rate(caplog):
    log = logging.getLogger("progress-test")
    with caplog.at_level(logging.INFO, logger="progress-test"):
        progress = Progress(log, "rows staged", 2_000, every=3600)
        progress.update(1_000)  # inside the interval: quiet
        progress.update(2_000, note="b.parquet")  # the end is always reported
    assert len(caplog.messages) == 1
    assert caplog.messages[0].startswith("rows staged: 2,000 of 2,000 rows (")
    assert caplog.messages[0].endswith("rows/s, b.parquet)")
