"""The site's state: one object per Datasette server, made at startup (``site_of``)."""

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from laion_pipeline.common.layout import DEFAULT_DATABASE, ReleaseFiles
from laion_pipeline.common.settings import usable_cores
from laion_pipeline.search.shard_search import SearchedShard, count_cap
from laion_pipeline.serve import compat
from laion_pipeline.serve.cache import ResponseCache
from laion_pipeline.serve.pools import SqlAdmission
from laion_pipeline.serve.switching import ServedRelease
from laion_pipeline.serve.takedowns import Takedowns, thumbnails_setting

# Threads of the fast search's own: it never waits behind the arbitrary SQL that Datasette's
# threads (``num_sql_threads``) run for up to ``sql_time_limit_ms``. SQLite releases the GIL
# while it searches, so one thread a core keeps every core searching.
SEARCH_THREADS = max(2, usable_cores())


@dataclass
class Site:
    """What the plugin keeps for one server: our database's name, the release it serves (and
    switches), the count cap of the search, the response cache, the requests being computed,
    the search's threads, each database's noise columns, the open SQL admitted and the
    takedowns in force."""

    database: str | None = None
    release: ServedRelease | None = None
    count_cap: int = field(default_factory=count_cap)
    cache: ResponseCache = field(default_factory=ResponseCache)
    in_flight: dict[tuple, Any] = field(default_factory=dict)
    noise_columns: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    sql_admission: SqlAdmission = field(default_factory=SqlAdmission)
    takedowns: Takedowns = field(default_factory=Takedowns)
    # Whether pages load the images (thumbnails) or only link them (``LAION_THUMBNAILS=no``).
    thumbnails: bool = field(default_factory=thumbnails_setting)
    _search_executor: ThreadPoolExecutor | None = None

    @property
    def search_executor(self) -> ThreadPoolExecutor:
        """The fast search's threads of this server (made on first use)."""
        if self._search_executor is None:
            self._search_executor = ThreadPoolExecutor(
                SEARCH_THREADS, thread_name_prefix="laion-search"
            )
        return self._search_executor

    def release_database(self) -> str | None:
        """The name of our database among those Datasette serves (the profile's, such as
        ``laion-aesthetic-6pls``): the served release's, else the one found at startup."""
        return self.release.database if self.release is not None else self.database

    def served_databases(self) -> list[str]:
        """Every database of the served release: the one database, or the catalog then the
        shards."""
        if self.release is not None:
            return self.release.names
        return [self.database] if self.database else []

    async def title(self, datasette: Any) -> str:
        """The title the site's pages show: the served release's (read once, at its switch),
        else Datasette's metadata's."""
        if self.release is not None and self.release.title:
            return self.release.title
        return await compat.site_title(datasette) or "LAION"

    async def start(self, datasette: Any) -> None:
        """Find our database among those Datasette opened (the one beside a release manifest,
        or in a plain folder the 2022 name) and, when it is served through the pointer
        ``published/current``, serve the release it names and follow it."""
        ours = [
            db
            for db in datasette.databases.values()
            if db.path and ReleaseFiles(Path(db.path).parent).manifest_json.is_file()
        ] or [db for db in datasette.databases.values() if db.name == DEFAULT_DATABASE]
        if not ours:
            return
        self.database = ours[0].name
        compat.templates_fixed(datasette)
        pointer = Path(ours[0].path).parent if ours[0].path else None
        if pointer is not None and pointer.is_symlink():
            served = ServedRelease(
                datasette, pointer, lambda: self.search_executor, lambda: self.takedowns.blocklist
            )
            served.replaces = [ours[0].name]
            await served.load(served.pointed())
            self.release = served
        self.takedowns.start(self.served_release_id(), self.database_paths(datasette))

    def served_release_id(self) -> str:
        """The latest release this server serves ("" for a plain folder)."""
        return self.release.latest_id if self.release is not None else ""

    def database_paths(self, datasette: Any) -> list[Path]:
        """The files of every database of the served release."""
        paths = [datasette.databases[name].path for name in self.served_databases()]
        return [Path(path) for path in paths if path]

    def sharded(self) -> bool:
        """Whether the served release is a catalog and shards (not one database)."""
        return len(self.served_databases()) > 1

    def searched_shards(self, datasette: Any) -> list[SearchedShard]:
        """The databases holding the served release's images, in release order, as the fast
        search walks them."""
        if self.release is not None:
            shards = self.release.shards
        else:  # a plain folder: the one database, its rowids not known here
            shards = [(name, sys.maxsize) for name in self.served_databases()]
        return [SearchedShard(name, last, search_runner(datasette, name)) for name, last in shards]


def search_runner(datasette: Any, name: str) -> Any:
    """How the site's own pages run a query on database ``name``: on the search's threads
    (``ReleaseDatabase.search_fn``), or Datasette's for a database not of a release."""
    db = datasette.get_database(name)
    return getattr(db, "search_fn", db.execute_fn)


def site_of(datasette: Any) -> Site:
    """The site's state of ``datasette`` (an empty one before startup, or for a server of
    databases not ours)."""
    site = getattr(datasette, "laion_site", None)
    if site is None:
        site = datasette.laion_site = Site()
    return site
