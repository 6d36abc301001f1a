"""One release at a time: the release a server serves through a pointer
(``published/current``), and the switch to the next one, between requests, never during one,
so no response mixes two releases."""

import asyncio
import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from datasette.database import Database

from laion_pipeline.common.layout import ReleaseFiles
from laion_pipeline.serve import compat


class ReleaseDatabase(Database):
    """A release's database file, immutable. Datasette keeps each thread's connection under the
    database's name, which every release shares: a release keeps its own instead, and runs
    the fast search's queries on threads of their own (``search_fn``)."""

    def __init__(self, datasette: Any, path: Path, search_threads: Callable[[], Executor]) -> None:
        super().__init__(datasette, path=str(path), is_mutable=False)
        self._connections = threading.local()
        self._search_threads = search_threads

    def _run_in(self, executor: Executor, fn: Any) -> Any:
        def in_thread() -> Any:
            conn = getattr(self._connections, "conn", None)
            if conn is None:
                conn = self.connect()
                compat.prepare_connection(self.ds, conn, self.name)
                self._connections.conn = conn
            return fn(conn)

        return asyncio.get_running_loop().run_in_executor(executor, in_thread)

    async def execute_fn(self, fn: Any) -> Any:
        executor = compat.executor(self.ds)
        if executor is None:
            return await super().execute_fn(fn)
        return await self._run_in(executor, fn)

    async def search_fn(self, fn: Any) -> Any:
        """``execute_fn`` on the fast search's own threads."""
        if compat.executor(self.ds) is None:
            return await super().execute_fn(fn)
        return await self._run_in(self._search_threads(), fn)


class ServedRelease:
    """The release a server serves through ``pointer``, and the switch to the next one."""

    def __init__(
        self, datasette: Any, pointer: Path, search_threads: Callable[[], Executor]
    ) -> None:
        self.datasette = datasette
        self.pointer = pointer
        self.search_threads = search_threads
        self.settings = compat.ReleaseSettings(datasette)
        self.release_id = ""
        self.database = ""
        self.title: str | None = None  # the release's, from its metadata
        self.names: list[str] = []  # every database of the release, the catalog first
        # The databases holding images, in release order, each with its last rowid.
        self.shards: list[tuple[str, int]] = []
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()
        self._open.set()

    def pointed(self) -> str:
        try:
            return os.readlink(self.pointer)
        except OSError:  # a publish replaces the link by a rename: it is always there
            return ""

    async def load(self, link: str) -> None:
        """Serve the release ``link`` names: its databases (the one database, or the catalog
        and every shard), inspect data and metadata."""
        release = ReleaseFiles(self.pointer.parent / link)
        name = release.database_name  # a release of another profile has another name
        inspect = json.loads(release.inspect_json.read_text(encoding="utf-8"))
        metadata = json.loads(release.metadata_json.read_text(encoding="utf-8"))
        manifest = release.manifest
        opened = []
        for path in release.databases:
            db = ReleaseDatabase(self.datasette, path, self.search_threads)
            compat.open_with_inspect(db, inspect[path.stem])
            opened.append((path.stem, db))
        # Before the first load, the database Datasette opened itself from the command line.
        names = self.names or [name]
        old = [self.datasette.databases[n] for n in names if n in self.datasette.databases]
        for db in old:
            self.datasette.remove_database(db.name)
        for db_name, db in opened:
            self.datasette.add_database(db, name=db_name)
        # Named before anything is awaited: a request let in after a failed switch is
        # labelled (and cached) as the release whose databases answer it.
        self.release_id, self.database = Path(link).name, name
        self.title = metadata.get("title")
        self.names = [db_name for db_name, _ in opened]
        images = manifest.get("row_counts", {}).get("images", 0)  # rowids 1..images
        self.shards = [(s["database"], s["last_rowid"]) for s in manifest.get("shards", ())] or [
            (name, images)
        ]
        for db in old:
            db.close()
        await self.settings.use(inspect, metadata)

    async def enter(self) -> str:
        """Start a request: first switch to a newly published release, if there is one."""
        link = self.pointed()
        if link and Path(link).name != self.release_id and self._open.is_set():
            self._open.clear()
            try:
                await self._idle.wait()  # the requests on the old release finish on it
                await self.load(link)
            finally:
                self._open.set()
        while not self._open.is_set():
            await self._open.wait()
        self._in_flight += 1
        self._idle.clear()
        return self.release_id

    def leave(self) -> None:
        self._in_flight -= 1
        if not self._in_flight:
            self._idle.set()
