"""Progress lines for long steps: rows done of total and the rate, every few seconds."""

import time
from typing import Any


class Progress:
    """Logs ``what: done of total rows (rate)`` at most every ``every`` seconds, and at the end."""

    def __init__(self, log: Any, what: str, total: int, every: float = 5.0) -> None:
        self.log, self.what, self.total, self.every = log, what, total, every
        self.started = self.last = time.monotonic()

    def update(self, done: int, note: str = "") -> None:
        now = time.monotonic()
        if self.log is None or (now - self.last < self.every and done < self.total):
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        suffix = f", {note}" if note else ""
        self.log.info(f"{self.what}: {done:,} of {self.total:,} rows ({rate:,.0f} rows/s{suffix})")
