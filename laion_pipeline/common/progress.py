"""Progress lines for long steps: rows done of total and the rate, every few seconds."""

import subprocess
import time
from collections.abc import Callable
from typing import Any


class Progress:
    """Logs ``what: done of total rows (rate)`` at most every ``every`` seconds, and at the end."""

    def __init__(
        self, log: Any, what: str, total: int, every: float = 5.0, unit: str = "rows"
    ) -> None:
        self.log, self.what, self.total, self.every, self.unit = log, what, total, every, unit
        self.started = self.last = time.monotonic()

    def update(self, done: int, note: str = "") -> None:
        now = time.monotonic()
        if self.log is None or (now - self.last < self.every and done < self.total):
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        suffix = f", {note}" if note else ""
        self.log.info(
            f"{self.what}: {done:,} of {self.total:,} {self.unit} "
            f"({rate:,.0f} {self.unit}/s{suffix})"
        )


def wait_logging(
    process: subprocess.Popen, log: Any, status: Callable[[], str], every: float = 5.0
) -> None:
    """Wait for ``process`` to end, logging ``status()`` and the time waited every ``every``
    seconds."""
    started = time.monotonic()
    while True:
        try:
            process.wait(timeout=every)
            return
        except subprocess.TimeoutExpired:
            if log:
                log.info(f"{status()} ({time.monotonic() - started:.0f} s waited)")
