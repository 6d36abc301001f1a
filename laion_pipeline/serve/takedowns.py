"""The takedowns a server applies at once (``LAION_BLOCKLIST``): read at startup, read again
when the file changes (looked at no more than once a second) or, for a list at a URL, fetched
again every ``BLOCKLIST_REFRESH_SECONDS`` in the background. A list that cannot be read
again keeps the one in force (never fewer takedowns) and says so on the server's log.

Where it is applied: every row a query gives Datasette's pages (tables, rows, facets, CSV and
JSON exports, open SQL) and the rows of the site's search and lookup
(``ReleaseDatabase`` and ``views``); a row naming a taken-down image (its URL, its hash, a
listed website) is left out. Counts are the release's: a takedown reaches them with the next
build, whose staging leaves the rows out.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from laion_pipeline.common.blocklist import (
    BLOCKLIST_VARIABLE,
    NO_BLOCKLIST,
    Blocklist,
    is_web_setting,
    read_blocklist,
)
from laion_pipeline.common.settings import yes_no

THUMBNAILS_VARIABLE = "LAION_THUMBNAILS"


def thumbnails_setting() -> bool:
    """Whether pages load the images (thumbnails), or only link them
    (``LAION_THUMBNAILS=no``: no page makes a visitor's browser ask a website for an image)."""
    return yes_no(THUMBNAILS_VARIABLE, os.environ.get(THUMBNAILS_VARIABLE), True)


BLOCKLIST_REFRESH_SECONDS = 60
FILE_LOOK_SECONDS = 1.0


def urls_of_hashes(databases: list[Path], hashes: frozenset[str]) -> set[str]:
    """The URLs of the images of ``hashes`` in the release's ``databases`` (a scan of each
    one's images: the hash has no index)."""
    urls: set[str] = set()
    listed = json.dumps(sorted(hashes))
    for path in databases:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            urls.update(
                url
                for (url,) in conn.execute(
                    "SELECT url FROM images WHERE CAST(hash AS TEXT) IN "
                    "(SELECT value FROM json_each(?)) AND url IS NOT NULL",
                    (listed,),
                )
            )
        except sqlite3.OperationalError:  # a catalog, or a release without images
            pass
        finally:
            conn.close()
    return urls


@dataclass
class Takedowns:
    """The list as read (``listed``) and as applied to the served release (``blocklist``: the
    images its hashes name are found in the release, and blocked by their URLs too, so that a
    page or a query that does not show the hash leaves them out as well)."""

    setting: str = field(default_factory=lambda: os.environ.get(BLOCKLIST_VARIABLE, "").strip())
    listed: Blocklist = NO_BLOCKLIST
    blocklist: Blocklist = NO_BLOCKLIST
    _applied_to: tuple[str, str] = ("", "")
    _identity: tuple[int, int, int] | None = None
    _looked: float = 0.0
    _fetching: bool = False

    def start(self) -> None:
        """Read the list (a list that cannot be read stops the server's start)."""
        self.listed = self.blocklist = read_blocklist(self.setting)
        self._identity = self._file_identity()
        self._looked = time.monotonic()

    def apply_to(self, release: str, databases: Callable[[], list[Path]]) -> None:
        """The list as applied to ``release`` (its ``databases``), found again when the list or
        the release changed."""
        if (release, self.listed.digest) == self._applied_to:
            return
        listed = self.listed
        found = urls_of_hashes(databases(), listed.hashes) if listed.hashes else set()
        self.blocklist = listed.with_urls(found)
        self._applied_to = (release, listed.digest)

    def _file_identity(self) -> tuple[int, int, int] | None:
        if not self.setting or is_web_setting(self.setting):
            return None
        try:
            stat = os.stat(os.path.expanduser(self.setting))
        except OSError:
            return None
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def refresh(self) -> None:
        """Before a request: read the list again if it may have changed (a list at a URL in
        the background: the requests meanwhile keep the one in force)."""
        if not self.setting:
            return
        now = time.monotonic()
        if is_web_setting(self.setting):
            if not self._fetching and now - self._looked >= BLOCKLIST_REFRESH_SECONDS:
                self._looked, self._fetching = now, True
                asyncio.get_running_loop().create_task(self._fetch_again())
            return
        if now - self._looked < FILE_LOOK_SECONDS:
            return
        self._looked = now
        identity = self._file_identity()
        if identity != self._identity:
            self._identity = identity
            self._use(read_blocklist)

    async def _fetch_again(self) -> None:
        try:
            await asyncio.to_thread(self._use, read_blocklist)
        finally:
            self._fetching = False

    def _use(self, read: Callable[[str], Blocklist]) -> None:
        try:
            self.listed = read(self.setting)
        except Exception as error:  # a file half-written, a server down: never fewer takedowns
            print(
                f"{BLOCKLIST_VARIABLE}: kept the {self.listed.entries} takedowns in force: {error}",
                file=sys.stderr,
                flush=True,
            )
