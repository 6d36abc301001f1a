"""Fetching a small file over http(s): redirects followed, transient failures retried."""

import base64
import time
import urllib.error
import urllib.parse
import urllib.request

from laion_pipeline import __version__
from laion_pipeline.common.errors import SourceError

MAX_BYTES = 64 * 1024 * 1024
TIMEOUT_SECONDS = 60


# Query parameters whose values are credentials, by a part of their name (any case): tokens,
# keys, signatures and passwords, cloud storage's signed URLs (``X-Amz-Credential``,
# ``X-Amz-Signature``, ``sv``/``sig``), OAuth codes and sessions.
SECRET_PARAMETERS = (
    "token",
    "key",
    "sig",
    "password",
    "passwd",
    "pwd",
    "pass",
    "secret",
    "auth",
    "credential",
    "code",
    "session",
    "jwt",
)
MASK = "***"


def public_url(url: str) -> str:
    """``url`` fit for logs, metadata and messages: the user part (a user name alone is often
    a token), the values of query parameters that look like credentials (``token``, ``sig``,
    ``X-Amz-Credential``, ``pwd``, ``code``...) and the fragment become ``***``."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, has_password, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if has_password and user else f"{MASK}@{host}"
    query = urllib.parse.urlencode(
        [
            (k, MASK if any(word in k.lower() for word in SECRET_PARAMETERS) else v)
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    fragment = MASK if parts.fragment else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query, fragment=fragment))


class FetchError(SourceError):
    """A URL could not be fetched; the message names the variable that holds it."""


def fetch_url(url: str, variable: str, *, attempts: int = 4, backoff: float = 2.0) -> bytes:
    """The body of ``url`` (following redirects), retried with backoff on network errors,
    timeouts and 5xx answers."""
    shown = public_url(url)
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None:  # user:password@ in the URL: sent as HTTP basic auth
        host = parts.netloc.rsplit("@", 1)[1]
        url = urllib.parse.urlunsplit(parts._replace(netloc=host))
    request = urllib.request.Request(url, headers={"User-Agent": f"laion-pipeline/{__version__}"})
    if parts.username is not None:
        credentials = f"{urllib.parse.unquote(parts.username)}:"
        credentials += urllib.parse.unquote(parts.password or "")
        # Not sent on to another host a redirect points at.
        request.add_unredirected_header(
            "Authorization", "Basic " + base64.b64encode(credentials.encode()).decode()
        )
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                body = response.read(MAX_BYTES + 1)
            if len(body) > MAX_BYTES:
                raise FetchError(f"{variable}: {shown} is larger than {MAX_BYTES:,} bytes")
            return body
        except urllib.error.HTTPError as error:
            transient = error.code in (408, 429) or error.code >= 500
            if not transient or attempt == attempts:
                raise FetchError(
                    f"{variable}: {shown} answered HTTP {error.code} {error.reason}: check the URL "
                    "(a Google Sheet must be shared as 'anyone with the link')",
                    transient=transient,
                ) from error
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            if attempt == attempts:
                raise FetchError(
                    f"{variable}: cannot reach {shown} ({error}): check the network, or set "
                    f"{variable} to a local CSV file",
                    transient=True,
                ) from error
        time.sleep(backoff * 2 ** (attempt - 1))
    raise AssertionError("unreachable")
