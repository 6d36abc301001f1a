"""Press traffic: a release never changes, so what the site answered once for a page it can
answer again, from memory, until the next release is served.

``ResponseCache`` keeps whole responses (status 200, at most ``MAX_ENTRY_BYTES`` each) of GET
requests, keyed by the release that answered and the request's scheme, host, path and query
string, the least recently used dropped past ``MAX_BYTES`` in all; a new release empties it.
Every page of a release carries ``ETag: W/"<release id>"`` and
``Cache-Control: public, max-age=60``, so a browser or a CDN in front of the site keeps it too
and asks again (``If-None-Match``, answered ``304 Not Modified`` while the release is the
same) once a minute: a publish reaches every reader within a minute.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

MAX_BYTES = 64 * 2**20
MAX_ENTRY_BYTES = 2**20
MAX_AGE_SECONDS = 60
CACHE_HEADER = b"x-laion-cache"

# Datasette's pages that show the server's own state, never a release's content.
UNCACHED_PREFIXES = (
    "/-/threads",
    "/-/actor",
    "/-/auth-token",
    "/-/logout",
    "/-/permissions",
    "/-/allow-debug",
    "/-/messages",
    "/-/patterns",
    "/-/create-token",
)


@dataclass(frozen=True)
class CachedResponse:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


def etag(release: str) -> bytes:
    """The ETag of every page of ``release``."""
    return f'W/"{release}"'.encode()


def cache_headers(release: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"etag", etag(release)),
        (b"cache-control", f"public, max-age={MAX_AGE_SECONDS}".encode()),
    ]


# Request headers that make a page someone's own: the signed-in actor's (Datasette's cookie,
# a token). Such a request is never answered from the cache nor kept in it.
PERSONAL_COOKIE = b"ds_actor"


def cacheable(scope: dict) -> bool:
    """Whether a request's answer is the release's, the same for everyone who asks with the
    same key (``ResponseCache.key``): a GET of a page that is not about the server itself,
    by a visitor not signed in."""
    path = scope.get("path", "")
    if scope.get("method") != "GET" or path.startswith(UNCACHED_PREFIXES):
        return False
    for name, value in scope.get("headers", ()):
        if name == b"authorization" or (name == b"cookie" and PERSONAL_COOKIE in value):
            return False
    return True


def if_none_match(scope: dict) -> list[bytes]:
    """The entity tags of the request's ``If-None-Match``: a page the client holds (our
    ``etag``), or ``*``, "not modified" if the page exists at all (RFC 9110, 13.1.2), which
    only its answer tells (a 404 stays a 404)."""
    return [
        tag.strip()
        for name, value in scope.get("headers", ())
        if name == b"if-none-match"
        for tag in value.split(b",")
    ]


class ResponseCache:
    """Whole responses by (release, path, query string), bounded in bytes, least recently used
    dropped first; thread-safe."""

    def __init__(self, max_bytes: int = MAX_BYTES, max_entry: int = MAX_ENTRY_BYTES) -> None:
        self.max_bytes = max_bytes
        self.max_entry = max_entry
        self.release = ""
        self.bytes = 0
        self._entries: OrderedDict[tuple[bytes, ...], CachedResponse] = OrderedDict()
        self._lock = threading.Lock()

    def follow(self, release: str) -> None:
        """Serve ``release`` from now on: a new release empties the cache, so nothing of the
        old one is served again."""
        with self._lock:
            if release != self.release:
                self._entries.clear()
                self.release, self.bytes = release, 0

    @staticmethod
    def key(scope: dict) -> tuple[bytes, ...]:
        """Everything a page depends on: Datasette writes absolute links (``Link:``, a page's
        JSON and CSV links) from the request's scheme and ``Host``, so both are in the key,
        and a forged ``Host`` is answered its own page, never anyone else's. (uvicorn sets the
        scheme from ``X-Forwarded-Proto`` of a trusted proxy only; nothing reads
        ``X-Forwarded-Host``.)"""
        host = next((value for name, value in scope.get("headers", ()) if name == b"host"), b"")
        return (
            scope.get("scheme", "http").encode(),
            host,
            scope.get("path", "").encode("utf-8", "surrogateescape"),
            scope.get("query_string", b""),
        )

    def get(self, release: str, key: tuple[bytes, ...]) -> CachedResponse | None:
        """The response kept under ``key`` (``key(scope)``), if ``release`` is the one the
        cache follows."""
        with self._lock:
            if release != self.release:
                return None
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, release: str, key: tuple[bytes, ...], response: CachedResponse) -> None:
        if response.status != 200 or len(response.body) > self.max_entry:
            return
        if any(name == b"set-cookie" for name, _ in response.headers):
            return
        with self._lock:
            if release != self.release:  # answered by a release a switch has replaced
                return
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= len(old.body)
            self._entries[key] = response
            self.bytes += len(response.body)
            while self.bytes > self.max_bytes and self._entries:
                _, dropped = self._entries.popitem(last=False)
                self.bytes -= len(dropped.body)

    def __len__(self) -> int:
        return len(self._entries)
