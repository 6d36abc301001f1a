"""Fetching a small file over http(s) with httpx2: redirects followed, transient failures
retried (``retrying.Retries``)."""

import urllib.parse

import httpx2

from laion_pipeline import __version__
from laion_pipeline.common.errors import SourceError
from laion_pipeline.common.retrying import NETWORK_ERRORS, Retries, transient_http

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
    timeouts and 5xx answers (``Retries``). A ``user:password@`` in the URL is sent as HTTP
    basic auth, and not on to another host a redirect points at."""
    shown = public_url(url)
    parts = urllib.parse.urlsplit(url)
    auth = None
    if parts.username is not None:
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
        auth = (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))

    def get() -> bytes:
        with httpx2.stream(
            "GET",
            url,
            auth=auth,
            follow_redirects=True,
            timeout=TIMEOUT_SECONDS,
            headers={"User-Agent": f"laion-pipeline/{__version__}"},
        ) as response:
            response.raise_for_status()
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_BYTES:
                    raise FetchError(f"{variable}: {shown} is larger than {MAX_BYTES:,} bytes")
            return bytes(body)

    try:
        return Retries(attempts, backoff).call(get, what=f"{variable}: {shown}")
    except httpx2.HTTPStatusError as error:
        response = error.response
        raise FetchError(
            f"{variable}: {shown} answered HTTP {response.status_code} "
            f"{response.reason_phrase}: check the URL (a Google Sheet must be shared as 'anyone "
            "with the link')",
            transient=transient_http(error),
        ) from error
    except NETWORK_ERRORS as error:
        raise FetchError(
            f"{variable}: cannot reach {shown} ({error}): check the network, or set "
            f"{variable} to a local CSV file",
            transient=True,
        ) from error
