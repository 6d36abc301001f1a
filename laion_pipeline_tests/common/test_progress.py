"""Long steps report rows done of total and the rate."""

import logging
import subprocess
import sys

import pytest

from laion_pipeline.common.progress import Progress, wait_logging

pytestmark = pytest.mark.fast


def test_progress_reports_done_total_and_rate(caplog):
    log = logging.getLogger("progress-test")
    with caplog.at_level(logging.INFO, logger="progress-test"):
        progress = Progress(log, "rows staged", 2_000, every=3600)
        progress.update(1_000)  # inside the interval: quiet
        progress.update(2_000, note="b.parquet")  # the end is always reported
    assert len(caplog.messages) == 1
    assert caplog.messages[0].startswith("rows staged: 2,000 of 2,000 rows (")
    assert caplog.messages[0].endswith("rows/s, b.parquet)")


def test_waiting_for_a_process_logs_every_interval(caplog):
    log = logging.getLogger("wait-test")
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.3)"])
    with caplog.at_level(logging.INFO, logger="wait-test"):
        wait_logging(process, log, lambda: "index: still building", every=0.4)
    assert process.returncode == 0
    assert len(caplog.messages) >= 2
    assert all(m.startswith("index: still building (") for m in caplog.messages)
    assert caplog.messages[-1].endswith(" s waited)")
