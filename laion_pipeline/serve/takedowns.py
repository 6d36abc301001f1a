"""The takedowns a server applies (``LAION_BLOCKLIST``): read and applied before the first
request; a list file that changes is read again within a second, a list at a URL fetched
again every ``BLOCKLIST_REFRESH_SECONDS`` in the background. A list that cannot be read
again keeps the one in force (never fewer takedowns) and says so on the server's log. The
images a list's hashes name are found in the served release before the first request, and
in the background after a switch or a new list (the URLs found before stay blocked).

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
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from laion_pipeline.build.seal import FileIdentity
from laion_pipeline.common.blocklist import (
    BLOCKLIST_VARIABLE,
    NO_BLOCKLIST,
    Blocklist,
    is_web_address,
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


def _urls_of_hashes(databases: list[Path], hashes: frozenset[str]) -> frozenset[str]:
    """The URLs of the images of ``hashes`` in the release's ``databases`` (a scan of each
    one's images: the hash has no index; seconds at 12M rows)."""
    urls: set[str] = set()
    if not hashes:
        return frozenset()
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
    return frozenset(urls)


@dataclass
class Takedowns:
    """The list as read (``listed``) and as applied to the served release (``blocklist``: the
    images its hashes name are found in the release, and blocked by their URLs too, so that a
    page or a query that does not show the hash leaves them out as well)."""

    setting: str = field(default_factory=lambda: os.environ.get(BLOCKLIST_VARIABLE, "").strip())
    listed: Blocklist = NO_BLOCKLIST
    blocklist: Blocklist = NO_BLOCKLIST
    # The URLs the list's hashes name in the release it was applied to, and which that was.
    _found: frozenset[str] = frozenset()
    _applied_to: tuple[str, str] = ("", "")
    _identity: FileIdentity | None = None
    _looked: float = 0.0
    _working: bool = False  # a fetch of the list, or a search for its hashes, is under way

    def start(self, release: str, databases: list[Path]) -> None:
        """Read the list and apply it to ``release`` before the server answers anything (a
        list that cannot be read stops the server's start)."""
        self.listed = read_blocklist(self.setting, max_age=0)
        self._identity = self._file_identity()
        self._looked = time.monotonic()
        self._apply(release, self.listed, _urls_of_hashes(databases, self.listed.hashes))

    def refresh(self, release: str, databases: Callable[[], list[Path]]) -> None:
        """Before a request: read a changed list file at once (looked at once a second), and
        in the background fetch a list at a URL (once a minute) and find the images of its
        hashes in a new release or for a new list; meanwhile the takedowns in force stay."""
        if not self.setting or self._working:
            return
        now = time.monotonic()
        web = is_web_address(self.setting)
        if now - self._looked >= (BLOCKLIST_REFRESH_SECONDS if web else FILE_LOOK_SECONDS):
            self._looked = now
            if web:
                self._in_background(self._fetched_and_applied(release, databases()))
                return
            identity = self._file_identity()
            if identity != self._identity:
                self._identity = identity
                self._read()
        if (release, self.listed.digest) != self._applied_to:
            listed = self.listed
            # At once: the list's URLs, websites and hashes, and the URLs of the hashes found
            # before; the search for the new hashes does not hold the request.
            self.blocklist = listed.with_urls(self._found)
            if not listed.hashes:
                self._apply(release, listed, frozenset())
            else:
                paths = databases()
                self._in_background(self._found_and_applied(release, listed, paths))

    def _apply(self, release: str, listed: Blocklist, found: frozenset[str]) -> None:
        self._found = found
        self.blocklist = listed.with_urls(found)
        self._applied_to = (release, listed.digest)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        self._working = True
        asyncio.get_running_loop().create_task(work)

    async def _found_and_applied(self, release: str, listed: Blocklist, paths: list[Path]) -> None:
        try:
            found = await asyncio.to_thread(_urls_of_hashes, paths, listed.hashes)
            if listed is self.listed:  # not replaced by a newer list meanwhile
                self._apply(release, listed, found)
        finally:
            self._working = False

    async def _fetched_and_applied(self, release: str, databases: Callable[[], list[Path]]) -> None:
        try:
            await asyncio.to_thread(self._read)
        finally:
            self._working = False
        self.refresh(release, databases)  # apply it (its hashes in the background)

    def _file_identity(self) -> FileIdentity | None:
        if not self.setting or is_web_address(self.setting):
            return None
        try:
            return FileIdentity.of(Path(self.setting).expanduser())
        except OSError:
            return None

    def _read(self) -> None:
        try:
            self.listed = read_blocklist(self.setting, max_age=0)
        except Exception as error:  # a file half-written, a server down: never fewer takedowns
            print(
                f"{BLOCKLIST_VARIABLE}: kept the {self.listed.entries} takedowns in force: {error}",
                file=sys.stderr,
                flush=True,
            )
