"""One release per request: the release a server serves through a pointer
(``published/current``), and the switch to the next one, which never waits and never changes
the release a request in flight reads, so no response mixes two releases."""

import asyncio
import json
import os
import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from contextvars import ContextVar, Token
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasette.database import Database, Results

from laion_pipeline.common.blocklist import Blocklist
from laion_pipeline.common.layout import ReleaseFiles
from laion_pipeline.serve import compat


def _letting_go_of_cursors(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``fn``, which frees on the query's own thread what the frames of a failed query hold
    (its cursor above all), rather than wherever the exception is dropped.

    A query stopped at the time limit raises with its cursor still referenced by the
    traceback; the exception reaches the event loop, and the cursor would be freed there when
    the request is done with it. Freeing a cursor finalizes its statement, which waits for
    the connection, and by then the connection's thread is running the next queued query: the
    event loop, and every request, would wait for that query, up to the time limit."""

    def run(conn: Any) -> Any:
        try:
            return fn(conn)
        except BaseException as error:
            # The frames of the error and of those it arose from (a frame still running
            # keeps its own locals).
            seen: set[int] = set()
            failed: BaseException | None = error
            while failed is not None and id(failed) not in seen:
                seen.add(id(failed))
                traceback.clear_frames(failed.__traceback__)
                failed = failed.__context__
            raise

    return run


def _without_takedowns(result: Any, blocklist: Blocklist) -> Any:
    """A query's rows for Datasette's pages without those naming a taken-down image."""
    if isinstance(result, Results):
        kept = blocklist.kept(result.rows)
        if len(kept) < len(result.rows):
            return Results(kept, result.truncated, result.description)
    return result


class ReleaseDatabase(Database):
    """A release's database file, immutable. Datasette keeps each thread's connection under the
    database's name, which every release shares: a release keeps its own instead, and runs
    the fast search's queries on threads of their own (``search_fn``). Every row a query gives
    Datasette is checked against the takedowns in force (``blocklist``)."""

    def __init__(
        self,
        datasette: Any,
        path: Path,
        search_threads: Callable[[], Executor],
        blocklist: Callable[[], Blocklist],
    ) -> None:
        super().__init__(datasette, path=str(path), is_mutable=False)
        self._connections = threading.local()
        self._search_threads = search_threads
        self._blocklist = blocklist

    def _served(self, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        freeing = _letting_go_of_cursors(fn)
        blocklist = self._blocklist()
        if not blocklist:
            return freeing
        return lambda conn: _without_takedowns(freeing(conn), blocklist)

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
            return await super().execute_fn(self._served(fn))
        return await self._run_in(executor, self._served(fn))

    async def _execute_fn(self, fn: Any) -> Any:
        """The 1.0 line's way to run SQL (``execute`` calls it, not ``execute_fn``)."""
        return await super()._execute_fn(self._served(fn))  # type: ignore[misc]

    async def search_fn(self, fn: Any) -> Any:
        """``execute_fn`` on the fast search's own threads (its rows are the site's pages' to
        check against the takedowns: they page by them)."""
        if compat.executor(self.ds) is None:
            return await super().execute_fn(_letting_go_of_cursors(fn))
        return await self._run_in(self._search_threads(), _letting_go_of_cursors(fn))


@dataclass
class Generation:
    """One release as the server serves it: its databases by name (the one database, or the
    catalog then every shard) and what the pages read of it, with the requests it answers."""

    release_id: str
    database: str  # the catalog's name: the profile's
    title: str | None
    databases: dict[str, Database]
    tables: dict[str, set[str]]  # each database's tables, from the inspect data
    # The databases holding images, in release order, each with its last rowid.
    shards: list[tuple[str, int]]
    examples: list[str]  # searches that find images in it (chosen when it was published)
    in_flight: int = 0
    retired: bool = False

    @property
    def names(self) -> list[str]:
        return list(self.databases)

    def close(self) -> None:
        for db in self.databases.values():
            db.close()


# The release the request being handled entered (each request's task has its own).
_ENTERED: ContextVar[Generation | None] = ContextVar("laion_entered_release", default=None)


class ReleaseDatabases(dict):
    """Datasette's databases as each request sees them: a request that entered a release
    sees that release's databases for its whole life, even after a switch has put the next
    release's in their place for the requests after it. Outside a request, and for every
    database that is not a release's, the databases as they are now."""

    def __init__(self, served: "ServedRelease", databases: dict[str, Database]) -> None:
        super().__init__(databases)
        self.served = served

    def _entered(self) -> Generation | None:
        """The older release the current request entered, if it did."""
        entered = _ENTERED.get()
        if entered is None or entered is self.served.latest or not entered.retired:
            return None
        return entered if entered in self.served.generations else None

    def items(self) -> list[tuple[str, Database]]:  # type: ignore[override]
        entered = self._entered()
        now = list(dict.items(self))
        if entered is None:
            return now
        latest = set(self.served.latest.databases)
        kept = [(name, db) for name, db in now if name not in latest]
        first = next((i for i, (name, _) in enumerate(now) if name in latest), len(kept))
        return [*kept[:first], *entered.databases.items(), *kept[first:]]

    def keys(self) -> Any:
        if self._entered() is None:  # the usual case: a dict's own, no list made
            return dict.keys(self)
        return [name for name, _ in self.items()]

    def values(self) -> Any:
        if self._entered() is None:
            return dict.values(self)
        return [db for _, db in self.items()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return dict.__len__(self) if self._entered() is None else len(self.items())

    def __contains__(self, name: object) -> bool:
        if self._entered() is None:
            return dict.__contains__(self, name)
        return name in self.keys()

    def __getitem__(self, name: str) -> Database:
        entered = self._entered()
        if entered is not None:
            if name in entered.databases:
                return entered.databases[name]
            if name in self.served.latest.databases:
                raise KeyError(name)
        return dict.__getitem__(self, name)

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        try:
            return self[name]
        except KeyError:
            return default

    def copy(self) -> "ReleaseDatabases":  # type: ignore[override]
        # What Datasette's add_database and remove_database start from and put back: still
        # a mapping that answers each request from its release.
        return ReleaseDatabases(self.served, dict(dict.items(self)))


class ServedRelease:
    """The release a server serves through ``pointer``, and the switch to the next one.

    A switch never waits for the requests in flight: the first request after a publish or a
    rollback opens the new release (its databases, inspect data and metadata), and it and
    every request after it are answered from it at once; the requests in flight finish on
    the release they entered (``ReleaseDatabases``), whose databases are closed when the last
    of them ends. The server's metadata and settings are the new release's from the switch.
    """

    def __init__(
        self,
        datasette: Any,
        pointer: Path,
        search_threads: Callable[[], Executor],
        blocklist: Callable[[], Blocklist],
    ) -> None:
        self.datasette = datasette
        self.pointer = pointer
        self.search_threads = search_threads
        self.blocklist = blocklist
        self.settings = compat.ReleaseSettings(datasette)
        self.latest: Generation | None = None
        self.generations: list[Generation] = []  # the latest, and older ones still answering
        self.replaces: list[str] = []  # before the first load: the database Datasette opened
        self._switching = asyncio.Lock()

    def pointed(self) -> str:
        try:
            return os.readlink(self.pointer)
        except OSError:  # a publish replaces the link by a rename: it is always there
            return ""

    def _seen(self) -> Generation:
        """The release the current request entered, else the latest."""
        entered = _ENTERED.get()
        if entered is not None and entered in self.generations:
            return entered
        assert self.latest is not None, "no release loaded"
        return self.latest

    @property
    def release_id(self) -> str:
        return self._seen().release_id

    @property
    def database(self) -> str:
        return self._seen().database

    @property
    def title(self) -> str | None:
        return self._seen().title

    @property
    def names(self) -> list[str]:
        return self._seen().names

    @property
    def shards(self) -> list[tuple[str, int]]:
        return self._seen().shards

    @property
    def tables(self) -> dict[str, set[str]]:
        return self._seen().tables

    @property
    def examples(self) -> list[str]:
        return self._seen().examples

    @property
    def latest_id(self) -> str:
        return self.latest.release_id if self.latest is not None else ""

    async def load(self, link: str) -> None:
        """Serve the release ``link`` names from the next request on."""
        release = ReleaseFiles(self.pointer.parent / link)
        name = release.database_name  # a release of another profile has another name
        inspect = json.loads(release.inspect_json.read_text(encoding="utf-8"))
        metadata = json.loads(release.metadata_json.read_text(encoding="utf-8"))
        manifest = release.manifest
        opened: dict[str, Database] = {}
        for path in release.databases:
            db = ReleaseDatabase(self.datasette, path, self.search_threads, self.blocklist)
            compat.open_with_inspect(db, inspect[path.stem])
            db.name = db.route = path.stem
            opened[path.stem] = db
        images = manifest.get("row_counts", {}).get("images", 0)  # rowids 1..images
        shards = [(s["database"], s["last_rowid"]) for s in manifest.get("shards", ())]
        new = Generation(
            Path(link).name,
            name,
            metadata.get("title"),
            opened,
            {n: set(inspect[n]["tables"]) for n in opened},
            shards or [(name, images)],
            list(manifest.get("search_examples", [])),
        )
        old = self.latest
        replaced = set(old.databases) if old is not None else set(self.replaces)
        now = dict(dict.items(self.datasette.databases))
        databases: dict[str, Database] = {}
        for db_name, db in now.items():
            if db_name not in replaced:
                databases[db_name] = db
            elif not databases.keys() & opened.keys():
                databases.update(opened)  # where the old release's databases were
        databases.update(opened)
        self.generations.append(new)
        self.latest = new
        compat.replace_databases(self.datasette, ReleaseDatabases(self, databases))
        if old is not None:
            old.retired = True
            self._close_if_done(old)
        elif self.replaces:
            for db_name in self.replaces:
                if db_name in now:
                    now[db_name].close()
        await self.settings.use(inspect, metadata)

    def _close_if_done(self, generation: Generation) -> None:
        if generation.retired and not generation.in_flight:
            self.generations.remove(generation)
            generation.close()

    async def enter(self) -> tuple[Generation, Token]:
        """Start a request: first switch to a newly published release, if there is one; the
        request is then answered from the release it entered, whatever switches meanwhile."""
        link = self.pointed()
        if self._switching.locked() or (link and Path(link).name != self.latest_id):
            async with self._switching:  # one switch at a time; the requests after it wait
                link = self.pointed()  # for it (it opens files: milliseconds)
                if link and Path(link).name != self.latest_id:
                    await self.load(link)
        entered = self.latest
        assert entered is not None, "no release loaded"
        entered.in_flight += 1
        return entered, _ENTERED.set(entered)

    def leave(self, entered: Generation, token: Token) -> None:
        _ENTERED.reset(token)
        entered.in_flight -= 1
        self._close_if_done(entered)
