"""Fetching a small file over http(s): redirects followed, transient failures retried."""

import time
import urllib.error
import urllib.request

from laion_pipeline import __version__

MAX_BYTES = 64 * 1024 * 1024
TIMEOUT_SECONDS = 60


class FetchError(RuntimeError):
    """A URL could not be fetched; the message names the variable that holds it. ``transient``
    errors (no answer, 5xx, 429 after the retries) may go away on a later attempt."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def fetch_url(url: str, variable: str, *, attempts: int = 4, backoff: float = 2.0) -> bytes:
    """The body of ``url`` (following redirects), retried with backoff on network errors,
    timeouts and 5xx answers."""
    request = urllib.request.Request(url, headers={"User-Agent": f"laion-pipeline/{__version__}"})
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                body = response.read(MAX_BYTES + 1)
            if len(body) > MAX_BYTES:
                raise FetchError(f"{variable}: {url} is larger than {MAX_BYTES:,} bytes")
            return body
        except urllib.error.HTTPError as error:
            transient = error.code in (408, 429) or error.code >= 500
            if not transient or attempt == attempts:
                raise FetchError(
                    f"{variable}: {url} answered HTTP {error.code} {error.reason}: check the URL "
                    "(a Google Sheet must be shared as 'anyone with the link')",
                    transient=transient,
                ) from error
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            if attempt == attempts:
                raise FetchError(
                    f"{variable}: cannot reach {url} ({error}): check the network, or set "
                    f"{variable} to a local CSV file",
                    transient=True,
                ) from error
        time.sleep(backoff * 2 ** (attempt - 1))
    raise AssertionError("unreachable")
