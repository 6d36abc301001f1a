"""One retry policy for every request over the network (the Hugging Face Hub's and the name
lists'): a few attempts, the wait doubling from the first, the trouble said before each wait.
A step whose requests all failed is retried later by Dagster
(``orchestration/assets/retries.py``)."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx2

T = TypeVar("T")

# HTTP answers that may be different a moment later.
TRANSIENT_STATUS = (408, 429)
# The network failing under a request: no answer, or an answer cut short.
NETWORK_ERRORS = (httpx2.TransportError, ConnectionError, TimeoutError)


def transient_http(error: BaseException) -> bool:
    """Worth retrying: network trouble, timeouts, 5xx, 408 and 429."""
    if isinstance(error, httpx2.HTTPStatusError):
        status = error.response.status_code
        return status in TRANSIENT_STATUS or status >= 500
    return isinstance(error, NETWORK_ERRORS)


@dataclass(frozen=True)
class Retries:
    """``attempts`` tries in all, waiting ``first_wait`` seconds after the first failure,
    doubled after each next one."""

    attempts: int = 4
    first_wait: float = 2.0

    def call(
        self,
        action: Callable[[], T],
        *,
        transient: Callable[[BaseException], bool] = transient_http,
        what: str = "",
        log: Any = None,
    ) -> T:
        """The value of ``action()``, tried again after a transient error; the last error (or
        the first that is not transient) is raised."""
        for attempt in range(1, self.attempts + 1):
            try:
                return action()
            except Exception as error:
                if not transient(error) or attempt == self.attempts:
                    raise
                wait = self.first_wait * 2 ** (attempt - 1)
                if log is not None:
                    log.warning(
                        f"{what or 'a request'} failed ({type(error).__name__}: {error}); "
                        f"retry {attempt} of {self.attempts - 1} in {wait:.1f} s"
                    )
                time.sleep(wait)
        raise AssertionError("unreachable")
