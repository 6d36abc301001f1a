"""Press traffic: a release never changes, so what the site answered once for a page it can
answer again, from memory, until the next release is served.

``ResponseCache`` keeps whole responses (status 200, at most ``MAX_ENTRY_BYTES`` each) of GET
requests, keyed by the release that answered and the request's path and query string, the
least recently used dropped past ``MAX_BYTES`` in all; a new release empties it. Every page
of a release carries ``ETag: W/"<release id>"`` and ``Cache-Control: public, max-age=60``,
so a browser or a CDN in front of the site keeps it too and asks again (``If-None-Match``,
answered ``304 Not Modified`` while the release is the same) once a minute: a publish reaches
every reader within a minute.
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


def cacheable(scope: dict) -> bool:
    """Whether a request's answer is the release's, the same for everyone: a GET of a page
    that is not about the server itself."""
    path = scope.get("path", "")
    return scope.get("method") == "GET" and not path.startswith(UNCACHED_PREFIXES)


def not_modified(scope: dict, release: str) -> bool:
    """Whether the request says it holds this release's page already (``If-None-Match``)."""
    tag = etag(release)
    for name, value in scope.get("headers", ()):
        if name == b"if-none-match":
            return any(t.strip() in (tag, b"*") for t in value.split(b","))
    return False


class ResponseCache:
    """Whole responses by (release, path, query string), bounded in bytes, least recently used
    dropped first; thread-safe."""

    def __init__(self, max_bytes: int = MAX_BYTES, max_entry: int = MAX_ENTRY_BYTES) -> None:
        self.max_bytes = max_bytes
        self.max_entry = max_entry
        self.release = ""
        self.bytes = 0
        self._entries: OrderedDict[tuple[bytes, bytes], CachedResponse] = OrderedDict()
        self._lock = threading.Lock()

    def _for(self, release: str) -> None:
        if release != self.release:  # a new release: nothing of the old one is served again
            self._entries.clear()
            self.release, self.bytes = release, 0

    @staticmethod
    def key(scope: dict) -> tuple[bytes, bytes]:
        return scope.get("path", "").encode("utf-8", "surrogateescape"), scope.get(
            "query_string", b""
        )

    def get(self, release: str, scope: dict) -> CachedResponse | None:
        with self._lock:
            self._for(release)
            found = self._entries.get(self.key(scope))
            if found is not None:
                self._entries.move_to_end(self.key(scope))
            return found

    def put(self, release: str, scope: dict, response: CachedResponse) -> None:
        if response.status != 200 or len(response.body) > self.max_entry:
            return
        if any(name == b"set-cookie" for name, _ in response.headers):
            return
        with self._lock:
            self._for(release)
            key = self.key(scope)
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
