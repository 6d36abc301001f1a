"""How the published database looks in Datasette: a plugin of ours, installed with the package
(entry point ``laion_pipeline`` in the ``datasette`` group).

- image URLs as lazy-loaded thumbnails that link to the image;
- small floats written out (``0.00000013``, not ``1.3e-07``);
- each domain links to its images, each name of a list to the search for it;
- ``hash``, ``__index_level_0__`` and ``url_key`` hidden from the images table unless asked for with
  ``_col``/``_nocol``;
- ``laion_match(text)``, the SQL function behind the fast search query: any text a person
  types becomes a valid FTS5 query;
- ``/-/report/`` (``REPORT_URL``): the analysis report of the served release, at
  ``/-/report/<release>/`` (its page, charts and numbers; nothing else of the folder is
  served), so a page and its charts always come from one release;
- one release at a time: served through ``published/current``, the server follows the
  pointer: when a publish or a rollback switches it, the next request waits for the requests
  in flight to finish, then the server opens the new release; every response says which
  release answered it (``X-Laion-Release``);
- a mistyped address answers 404, not 500 (see ``startup``); a table page sorted by a column
  it lacks answers 400 saying which it has, and one sorted by a hidden column shows it;
- every connection has the limits of ``laion_pipeline.serve.limits`` (what one statement may
  allocate); every response carries ``X-Content-Type-Options: nosniff``; a query string over
  64 KB is refused with 414.
"""

import asyncio
import json
import os
import re
import sqlite3
import sys
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from datasette import Response, handle_exception, hookimpl
from datasette.database import Database
from datasette.utils import to_css_class
from markupsafe import Markup, escape

from laion_pipeline.common.layout import (
    DEFAULT_DATABASE,
    ENTITY_KINDS,
    RELEASE_ID,
    REPORT_FILES,
    REPORT_URL,
    ReleaseFiles,
)
from laion_pipeline.common.phrases import MAX_QUERY_CHARS, QueryTooLong, laion_match
from laion_pipeline.common.settings import usable_cores
from laion_pipeline.releases.datasette_files import LOOKUP_URL, SHARD_SEARCH_URL
from laion_pipeline.search.lookup import (
    MIN_HOST_CHARS,
    host_named,
    host_of,
    hosts_containing,
    images_with_url,
    looks_like_url,
)
from laion_pipeline.search.shard_search import (
    COUNT_CAP,
    FOUND_END,
    FOUND_START,
    SearchedShard,
    count_cap,
    search_page,
)
from laion_pipeline.serve.cache import (
    CACHE_HEADER,
    CachedResponse,
    ResponseCache,
    cache_headers,
    cacheable,
    not_modified,
)
from laion_pipeline.serve.limits import limit_connection

RELEASE_HEADER = "x-laion-release"

HIDDEN_COLUMNS = ("hash", "__index_level_0__", "url_key")
THUMBNAIL_PX = 120
TEMPLATES = Path(__file__).parent / "templates"
SEARCH_TEMPLATE = TEMPLATES / "laion_search.html"
LOOKUP_TEMPLATE = TEMPLATES / "laion_lookup.html"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".png": "image/png",
    ".json": "application/json; charset=utf-8",
}


def readable_float(value: float) -> str:
    """A float as a person writes it: no exponent, no trailing zeros."""
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    text = f"{value:.12f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def search_url(name: str) -> str:
    """The search page for ``name`` as a phrase: what the name's image_counts counts (over
    every shard of a release of several)."""
    return f"{SHARD_SEARCH_URL}?" + urllib.parse.urlencode({"q": f'"{name}"'})


def host_url(domain: str | None) -> str:
    """The search page of a host's images (over every shard of a release of several)."""
    return f"{SHARD_SEARCH_URL}?" + urllib.parse.urlencode({"domain": domain or ""})


def release_database(datasette: Any) -> str | None:
    """The name of our database among those Datasette serves (the profile's, such as
    ``laion-aesthetic-6pls``): the served release's, else the one found at startup."""
    served = getattr(datasette, "_laion_release", None)
    if served is not None:
        return served.database
    return getattr(datasette, "_laion_database", None)


def served_databases(datasette: Any) -> list[str]:
    """Every database of the served release: the one database, or the catalog then the
    shards."""
    served = getattr(datasette, "_laion_release", None)
    if served is not None:
        return served.names
    ours = getattr(datasette, "_laion_database", None)
    return [ours] if ours else []


def sharded(datasette: Any) -> bool:
    """Whether the served release is a catalog and shards (not one database)."""
    return len(served_databases(datasette)) > 1


def searched_shards(datasette: Any) -> list[SearchedShard]:
    """The databases holding the served release's images, in release order, as the fast
    search walks them."""
    served = getattr(datasette, "_laion_release", None)
    if served is not None:
        shards = served.shards
    else:  # a plain folder: the one database, its rowids not known here
        shards = [(name, sys.maxsize) for name in served_databases(datasette)]
    return [SearchedShard(name, last, search_runner(datasette, name)) for name, last in shards]


def search_runner(datasette: Any, name: str) -> Any:
    """How the site's own pages run a query on database ``name``: on the search's threads
    (``ReleaseDatabase.search_fn``), or Datasette's for a database not of a release."""
    db = datasette.get_database(name)
    return getattr(db, "search_fn", db.execute_fn)


# Threads of the fast search's own: it never waits behind the arbitrary SQL that Datasette's
# threads (``num_sql_threads``) run for up to ``sql_time_limit_ms``. SQLite releases the GIL
# while it searches, so one thread a core keeps every core searching.
SEARCH_THREADS = max(2, usable_cores())


def search_executor(datasette: Any) -> ThreadPoolExecutor:
    """The fast search's threads of this server (made on first use)."""
    executor = getattr(datasette, "_laion_search_executor", None)
    if executor is None:
        executor = ThreadPoolExecutor(SEARCH_THREADS, thread_name_prefix="laion-search")
        datasette._laion_search_executor = executor
    return executor


class ReleaseDatabase(Database):
    """A release's database file, immutable. Datasette keeps each thread's connection under the
    database's name, which every release shares: a release keeps its own instead, and runs
    the fast search's queries on threads of their own (``search_fn``)."""

    def __init__(self, datasette: Any, path: Path) -> None:
        super().__init__(datasette, path=str(path), is_mutable=False)
        self._connections = threading.local()

    def _run_in(self, executor: Any, fn: Any) -> Any:
        def in_thread() -> Any:
            conn = getattr(self._connections, "conn", None)
            if conn is None:
                conn = self.connect()
                self.ds._prepare_connection(conn, self.name)
                self._connections.conn = conn
            return fn(conn)

        return asyncio.get_running_loop().run_in_executor(executor, in_thread)

    async def execute_fn(self, fn: Any) -> Any:
        if self.ds.executor is None:
            return await super().execute_fn(fn)
        return await self._run_in(self.ds.executor, fn)

    async def search_fn(self, fn: Any) -> Any:
        """``execute_fn`` on the fast search's own threads."""
        if self.ds.executor is None:
            return await super().execute_fn(fn)
        return await self._run_in(search_executor(self.ds), fn)


class ServedRelease:
    """The release a server serves through a pointer (``published/current``), and the switch
    to the next one: it happens between requests, never during one, so no response mixes two
    releases."""

    def __init__(self, datasette: Any, pointer: Path) -> None:
        self.datasette = datasette
        self.pointer = pointer
        self.release_id = ""
        self.database = ""
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

    def load(self, link: str) -> None:
        """Serve the release ``link`` names: its databases (the one database, or the catalog
        and every shard), inspect data and metadata."""
        release = ReleaseFiles(self.pointer.parent / link)
        name = release.database_name  # a release of another profile has another name
        inspect = json.loads(release.inspect_json.read_text(encoding="utf-8"))
        metadata = json.loads(release.metadata_json.read_text(encoding="utf-8"))
        manifest = release.manifest
        opened = []
        for path in release.databases:
            db = ReleaseDatabase(self.datasette, path)
            info = inspect[path.stem]
            db.cached_hash, db.cached_size = info["hash"], info["size"]
            db._cached_table_counts = {table: t["count"] for table, t in info["tables"].items()}
            opened.append((path.stem, db))
        # Before the first load, the database Datasette opened itself from the command line.
        names = self.names or [name]
        old = [self.datasette.databases[n] for n in names if n in self.datasette.databases]
        for db in old:
            self.datasette.remove_database(db.name)
        for db_name, db in opened:
            self.datasette.add_database(db, name=db_name)
        self.datasette.inspect_data = inspect
        self.datasette._metadata_local = metadata
        self.release_id, self.database = Path(link).name, name
        self.names = [db_name for db_name, _ in opened]
        images = manifest.get("row_counts", {}).get("images", 0)  # rowids 1..images
        self.shards = [(s["database"], s["last_rowid"]) for s in manifest.get("shards", ())] or [
            (name, images)
        ]
        for db in old:
            db.close()

    async def enter(self) -> str:
        """Start a request: first switch to a newly published release, if there is one."""
        link = self.pointed()
        if link and Path(link).name != self.release_id and self._open.is_set():
            self._open.clear()
            try:
                await self._idle.wait()  # the requests on the old release finish on it
                self.load(link)
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


@hookimpl
def startup(datasette: Any) -> None:
    # Datasette 0.65 prints every error with rich when it is installed (Dagster installs it),
    # and for an address that matches no page rich raises outside an except block, turning the
    # 404 into a 500. Without rich, Datasette prints tracebacks the plain way.
    handle_exception.rich = None
    datasette._laion_count_cap = count_cap()
    # Ours is the database beside a release manifest (or, in a plain folder, the 2022 name).
    ours = [
        db
        for db in datasette.databases.values()
        if db.path and ReleaseFiles(Path(db.path).parent).manifest_json.is_file()
    ] or [db for db in datasette.databases.values() if db.name == DEFAULT_DATABASE]
    if not ours:
        return
    datasette._laion_database = ours[0].name
    # The server's templates do not change while it serves a release: without this, Jinja
    # reads the time of every template file a page extends or includes, on every page.
    datasette.jinja_env.auto_reload = False
    pointer = Path(ours[0].path).parent if ours[0].path else None
    if pointer is not None and pointer.is_symlink():
        served = ServedRelease(datasette, pointer)
        served.names = [ours[0].name]
        served.load(served.pointed())
        datasette._laion_release = served


@hookimpl
def prepare_connection(conn: Any) -> None:
    conn.create_function("laion_match", 1, laion_match, deterministic=True)
    limit_connection(conn)


def _domain_cell(datasette: Any, database: str, value: Any) -> Any:
    """An image's host by name, linking to all its images (over every shard), its id after:
    from the label Datasette looked up on a table page, or looked up here (a row page)."""

    def cell(name: str | None, domain_id: Any) -> Markup:
        return Markup(
            f'<a href="{escape(host_url(name))}">{escape(name) or "(no host)"}</a> '
            f'<span class="laion-id">{escape(domain_id)}</span>'
        )

    if isinstance(value, dict):  # an expanded foreign key
        return cell(value.get("label"), value.get("value"))

    async def looked_up() -> Markup:
        db = datasette.get_database(database)
        rows = (await db.execute("SELECT domain FROM domain WHERE id = ?", [value])).rows
        return cell(rows[0][0] if rows else None, value)

    return looked_up


@hookimpl
def render_cell(
    row: Any, value: Any, column: str, table: str | None, database: str, datasette: Any
) -> Any:
    if database not in served_databases(datasette):
        return None
    if column == "url" and isinstance(value, str):
        if not value.lower().startswith(("http://", "https://")):
            return None  # shown as text: never a link to javascript: or data:
        url = escape(value)
        # The address as text under the thumbnail: what an artist came for, there whether or
        # not the image loads (dead links, hotlink blocking, no network).
        return Markup(
            f'<a href="{url}" rel="noreferrer"><img src="{url}" loading="lazy" '
            f'referrerpolicy="no-referrer" alt="" '
            f'style="max-width:{THUMBNAIL_PX}px;max-height:{THUMBNAIL_PX}px"></a>'
            f'<div class="laion-url" style="word-break: break-all; font-size: 0.8em">{url}</div>'
        )
    if isinstance(value, float):
        return readable_float(value)
    if table == "images" and column == "domain_id" and value is not None:
        return _domain_cell(datasette, database, value)
    catalog = sharded(datasette) and database == release_database(datasette)
    if table == "domain" and column == "domain" and value is not None:
        if catalog:  # its images are in every shard
            link = host_url(value)
        else:
            link = f"/{database}/images?" + urllib.parse.urlencode({"domain_id": row["id"]})
        return Markup(f'<a href="{escape(link)}">{escape(value) or "(no host)"}</a>')
    if table in ENTITY_KINDS and column == "name" and value:
        link = search_url(value)
        return Markup(f'<a href="{escape(link)}">{escape(value)}</a>')
    return None


def _table_of(scope: dict, databases: list[str]) -> tuple[str, str] | None:
    """The database and table of a table page (``/<database>/<table>``, ``.json`` or
    ``.csv``) of one of ``databases``, else None."""
    names = "|".join(re.escape(name) for name in databases)
    found = names and re.fullmatch(
        rf"/({names})/([^/]+?)(?:\.json|\.csv)?", urllib.parse.unquote(scope.get("path", ""))
    )
    return (found.group(1), found.group(2)) if found else None


def _params(scope: dict) -> list[tuple[str, str]]:
    query = scope.get("query_string", b"").decode("latin-1")
    return urllib.parse.parse_qsl(query, keep_blank_values=True)


async def _noise_columns(datasette: Any, database: str) -> list[str]:
    """The noise columns (``HIDDEN_COLUMNS``) that ``database``'s images table has: a database
    built before ``url_key`` lacks it. Read once per database (a release never changes)."""
    db = datasette.databases[database]
    noise = getattr(db, "_laion_noise_columns", None)
    if noise is None:
        columns = await db.table_columns("images") if await db.table_exists("images") else []
        noise = db._laion_noise_columns = [c for c in HIDDEN_COLUMNS if c in columns]
    return noise


async def _hide_noise_columns(datasette: Any, scope: dict, databases: list[str]) -> dict:
    """The images tables' pages and JSON without the noise columns, unless the request chose
    its columns; a column the page is sorted by stays."""
    table = _table_of(scope, databases)
    if table is None or table[1] != "images":
        return scope
    params = _params(scope)
    if any(key in ("_col", "_nocol") for key, _ in params):
        return scope
    sorted_by = {value for key, value in params if key in ("_sort", "_sort_desc")}
    noise = await _noise_columns(datasette, table[0])
    params += [("_nocol", column) for column in noise if column not in sorted_by]
    return {**scope, "query_string": urllib.parse.urlencode(params).encode("latin-1")}


async def _checked_sort(datasette: Any, scope: dict, databases: list[str]) -> tuple[dict, str]:
    """A table page's ``_sort`` or ``_sort_desc`` made one Datasette can do (``rowid`` of a
    table with a primary key is that key), or the reason it cannot (Datasette answers those
    with a 500): the request's scope, and the problem or ``""``."""
    table = _table_of(scope, databases)
    params = _params(scope)
    sorts = [(k, v) for k, v in params if k in ("_sort", "_sort_desc")]
    if table is None or not sorts:
        return scope, ""
    if len(sorts) > 1:
        return scope, "sort by one column: give _sort or _sort_desc once"
    database, name = table
    db = datasette.databases.get(database)
    if db is None or not await db.table_exists(name):
        return scope, ""  # Datasette's own 404
    columns = await db.table_columns(name)
    keys = await db.primary_keys(name)
    key, column = sorts[0]
    if column == "rowid" and len(keys) == 1:
        params = [(k, keys[0] if k == key else v) for k, v in params]
        query = urllib.parse.urlencode(params).encode("latin-1")
        return {**scope, "query_string": query}, ""
    sortable = {*columns, *(() if keys else ("rowid",))}
    if column not in sortable:
        return scope, (
            f"{key}={column}: {name} has no such column (it has {', '.join(sorted(sortable))})"
        )
    return scope, ""


# A longer query string is no search or page of ours: 414 before any work is done for it.
MAX_QUERY_STRING_BYTES = 65_536
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff")]


async def _refuse(send: Any, status: int, text: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), *SECURITY_HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": text.encode()})


# How long a request waits for the same request in flight before computing it itself.
SINGLE_FLIGHT_WAIT_SECONDS = 0.5


async def _cached(
    datasette: Any,
    app: Any,
    scope: dict,
    receive: Any,
    send: Any,
    release: str,
    extra: list[tuple[bytes, bytes]],
) -> None:
    """Answer a GET from the release's response cache (``laion_pipeline.serve.cache``): 304 when the
    client holds this release's page, the cached response when there is one, else the app's,
    kept for the next time."""
    cache = getattr(datasette, "_laion_cache", None)
    if cache is None:
        cache = datasette._laion_cache = ResponseCache()
    if not_modified(scope, release):
        headers = [*cache_headers(release), *extra]
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    # Many readers asking for the same new page at once (a story's name) wait for the one
    # that computes it, then are answered from the cache.
    in_flight: dict[tuple, asyncio.Future] = datasette.__dict__.setdefault("_laion_in_flight", {})
    key = (release, *ResponseCache.key(scope))
    while True:
        hit = cache.get(release, scope)
        if hit is not None:
            headers = [*hit.headers, (CACHE_HEADER, b"hit")]
            await send({"type": "http.response.start", "status": hit.status, "headers": headers})
            await send({"type": "http.response.body", "body": hit.body})
            return
        computing = in_flight.get(key)
        if computing is None:
            break
        try:  # a page takes milliseconds; a slow query is not waited for past half a second
            await asyncio.wait_for(asyncio.shield(computing), SINGLE_FLIGHT_WAIT_SECONDS)
        except TimeoutError:
            break
        if cache.get(release, scope) is None:
            break  # not kept (an error, or too big): compute it here too
    done = in_flight[key] = asyncio.get_running_loop().create_future()
    try:
        await _computed(app, scope, receive, send, cache, release, extra)
    finally:
        if in_flight.get(key) is done:
            del in_flight[key]
        done.set_result(None)


async def _computed(
    app: Any,
    scope: dict,
    receive: Any,
    send: Any,
    cache: ResponseCache,
    release: str,
    extra: list[tuple[bytes, bytes]],
) -> None:
    """The app's answer, sent on with the release's cache headers, and kept when it may be."""
    started: dict[str, Any] = {}
    chunks: list[bytes] = []
    kept = 0

    async def keep(message: dict) -> None:
        nonlocal kept
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            if message["status"] == 200:  # the release's page: the release's cache headers
                headers = [h for h in headers if h[0].lower() not in (b"cache-control", b"etag")]
                headers += cache_headers(release)
            headers += extra
            started.update(status=message["status"], headers=headers)
            message = {**message, "headers": [*headers, (CACHE_HEADER, b"miss")]}
        elif message["type"] == "http.response.body" and kept <= cache.max_entry:
            chunks.append(message.get("body", b""))
            kept += len(chunks[-1])
            started["complete"] = not message.get("more_body", False)
        await send(message)

    await app(scope, receive, keep)
    if started.get("complete") and kept <= cache.max_entry:
        body = b"".join(chunks)
        cache.put(
            release, scope, CachedResponse(started["status"], tuple(started["headers"]), body)
        )


@hookimpl
def asgi_wrapper(datasette: Any) -> Any:
    def wrap(app: Any) -> Any:
        async def one_release(scope: dict, receive: Any, send: Any) -> None:
            served = getattr(datasette, "_laion_release", None)
            if scope.get("type") != "http":
                await app(scope, receive, send)
                return
            if len(scope.get("query_string", b"")) > MAX_QUERY_STRING_BYTES:
                await _refuse(
                    send, 414, f"the query string is over {MAX_QUERY_STRING_BYTES:,} bytes"
                )
                return
            # After enter(): a switch to a release of another profile renames the database.
            release_id = (await served.enter()).encode() if served is not None else b""
            extra = [
                *SECURITY_HEADERS,
                *([(RELEASE_HEADER.encode(), release_id)] if served else []),
            ]

            async def send_with_headers(message: dict) -> None:
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
                await send(message)

            try:
                databases = served_databases(datasette)
                scope, problem = await _checked_sort(datasette, scope, databases)
                if problem:
                    await _refuse(send_with_headers, 400, problem)
                    return
                scope = await _hide_noise_columns(datasette, scope, databases)
                if served is None or not cacheable(scope):
                    await app(scope, receive, send_with_headers)
                else:
                    await _cached(datasette, app, scope, receive, send, served.release_id, extra)
            finally:
                if served is not None:
                    served.leave()

        return one_release

    return wrap


def _report_file(datasette: Any, release: str | None, name: str) -> Path | None:
    """A file of a release's report (the served release's by default); only the report's own
    file names, never through a link planted in the folder."""
    name = name or "index.html"
    database = release_database(datasette)
    if name not in REPORT_FILES or database not in datasette.databases:
        return None
    path = datasette.get_database(database).path
    if not path:
        return None
    folder = Path(path).parent
    if release is not None:
        if not (RELEASE_ID.match(release) and RELEASE_ID.match(folder.name)):
            return None
        folder = folder.parent / release
    report = folder / "report"
    file = report / name
    return None if any(p.is_symlink() for p in (folder, report, file)) else file


def _read_no_link(path: Path) -> bytes | None:
    """The bytes of ``path``, None if it is missing or a link (planted after the check)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read()


def compiled_template(datasette: Any, path: Path) -> Any:
    """One of our page templates, compiled once per server (compiling costs milliseconds)."""
    compiled = getattr(datasette, "_laion_templates", None)
    if compiled is None:
        compiled = datasette._laion_templates = {}
    if path not in compiled:
        compiled[path] = datasette.jinja_env.from_string(path.read_text(encoding="utf-8"))
    return compiled[path]


def marked_caption(text: str | None, found: str | None) -> Markup:
    """The caption as HTML, the words the search found in ``<mark>`` (from FTS5's
    highlight(); a caption that holds the marker characters itself is shown unmarked)."""
    if text is None:
        return Markup("")
    if found is None or FOUND_START in text or FOUND_END in text:
        return escape(text)
    return Markup(str(escape(found)).replace(FOUND_START, "<mark>").replace(FOUND_END, "</mark>"))


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def images_table(datasette: Any, rows: list[dict[str, Any]]) -> Markup:
    """The table of images of a search or a lookup: each row's thumbnail, caption (``caption``,
    HTML), link to its row page, URL as text, host linking to its images, and scores."""
    # Written in Python, not a template: Jinja costs about 10 ms for a page of 50 rows (an
    # escape and a generator step per expression), most of what an uncached search page cost.
    # Datasette's base_url without its last slash, worked out once for the rows' links.
    prefix = datasette.urls.path("/")[:-1]
    image_style = f"max-width:{THUMBNAIL_PX}px;max-height:{THUMBNAIL_PX}px"
    html = [
        '<table class="rows-and-columns laion-results">\n<thead><tr><th>image</th>'
        "<th>caption</th><th>URL</th><th>domain</th><th>scores</th></tr></thead>\n<tbody>\n"
    ]
    for row in rows:
        url = row["url"]
        shown = escape(url or "")
        web = bool(url) and url.lower().startswith(("http://", "https://"))
        image = (
            f'<a href="{shown}" rel="noreferrer"><img src="{shown}" loading="lazy" '
            f'referrerpolicy="no-referrer" alt="" style="{image_style}"></a>'
            if web
            else ""
        )
        address = f'<a href="{shown}" rel="noreferrer">{shown}</a>' if web else shown
        domain = row["domain"]
        host_link = escape(prefix + host_url(domain))
        size = (
            f"{escape(row['width'])} &times; {escape(row['height'])}"
            if row["width"] and row["height"]
            else ""
        )
        html.append(
            f"<tr><td>{image}</td>"
            f'<td>{row["caption"]}<br><a href="{escape(prefix)}/{escape(row["shard"])}/images/'
            f'{row["rowid"]}" title="this image\'s row">#{row["rowid"]}</a></td>'
            f'<td class="laion-url">{address}</td>'
            f'<td><a href="{host_link}">{escape(domain) if domain else "(no host)"}</a></td>'
            f'<td class="laion-scores">aesthetic {_score(row["aesthetic"])}<br>'
            f"unsafe {_score(row['punsafe'])}<br>watermark {_score(row['pwatermark'])}<br>"
            f"{size}</td></tr>\n"
        )
    html.append("</tbody>\n</table>")
    return Markup("".join(html))


def count_text(count: int, more_than: bool) -> str:
    """``712 images``, ``1 image``, ``No images``, ``More than 10,000 images``."""
    if more_than:
        return f"More than {count:,} images"
    return "No images" if not count else f"{count:,} image{'s' if count != 1 else ''}"


EXAMPLE_NAMES = 6


async def example_names(datasette: Any) -> list[str]:
    """The most named artists of the served release, as examples of a search."""
    database = release_database(datasette)
    if database is None or database not in datasette.databases:
        return []
    run = search_runner(datasette, database)

    def top(conn: Any) -> list[str]:
        try:
            rows = conn.execute(
                "SELECT name FROM artists ORDER BY image_counts DESC LIMIT ?", (EXAMPLE_NAMES,)
            ).fetchall()
        except sqlite3.OperationalError:  # a database without the lists
            return []
        return [row[0] for row in rows]

    return await run(top)


# A row page has no ``_nocol``: the images' noise columns are hidden there by a style sheet.
ROW_CSS_URL = "/-/laion-row.css"


@hookimpl
def extra_css_urls(view_name: str, table: str | None, database: str | None, datasette: Any) -> Any:
    if view_name == "row" and table == "images" and database in served_databases(datasette):
        return [ROW_CSS_URL]
    return []


async def row_css(datasette: Any, request: Any) -> Response:
    hidden = ", ".join(f".col-{to_css_class(column)}" for column in HIDDEN_COLUMNS)
    return Response(
        f"{hidden} {{ display: none; }}\n",
        content_type="text/css; charset=utf-8",
        headers={"Cache-Control": "max-age=3600"},
    )


async def lookup(datasette: Any, request: Any) -> Response:
    """ "Is my work in it?": ``q`` an image URL (its images, found by the URL exactly, in every
    shard, and its host), or a host or part of one (the hosts containing it, biggest first,
    each with its images)."""
    text = request.args.get("q", "").strip()
    if len(text) > MAX_QUERY_CHARS:
        return Response.text(str(QueryTooLong(len(text))), status=400)
    is_url = looks_like_url(text)
    part = host_of(text) if is_url else text
    images: list[dict[str, Any]] = []
    hosts: list[tuple[str, int]] = []
    host_count, more_hosts, problem = 0, False, ""
    try:
        if is_url:
            for shard in searched_shards(datasette):

                def found(conn: Any, shard: str = shard.name) -> list[dict[str, Any]]:
                    return [{**row, "shard": shard} for row in images_with_url(conn, text)]

                images += await shard.run(found)
        database = release_database(datasette)
        if part and database in datasette.databases:
            run = search_runner(datasette, database)
            if is_url:  # the image's own host, by the domain table's index
                hosts = await run(lambda conn: host_named(conn, part))
                host_count = len(hosts)
            if not hosts:
                hosts, host_count, more_hosts = await run(lambda conn: hosts_containing(conn, part))
    except sqlite3.OperationalError as error:
        if "no such table" not in str(error) and "no such column" not in str(error):
            raise
        problem = (
            "This release was built before lookups by URL and host: build it again "
            "(`make run`) to look them up here."
        )
    if request.url_vars["format"]:
        return Response.json(
            {
                "q": text,
                "url": is_url,
                "images": images,
                "host": part if is_url else None,
                "hosts": [{"domain": d, "image_counts": n} for d, n in hosts],
                "hosts_count": host_count,
                "more_hosts": more_hosts,
                "problem": problem or None,
            }
        )
    template = compiled_template(datasette, LOOKUP_TEMPLATE)
    context = {
        "q": text,
        "is_url": is_url,
        "part": part,
        "images": images,
        "images_table": images_table(
            datasette, [{**row, "caption": escape(row["text"] or "")} for row in images]
        ),
        "hosts": [
            (domain, count, datasette.urls.path(host_url(domain))) for domain, count in hosts
        ],
        "hosts_count": host_count,
        "more_hosts": more_hosts,
        "min_chars": MIN_HOST_CHARS,
        "problem": problem,
        "title": datasette.metadata("title") or "LAION",
    }
    return Response.html(await datasette.render_template(template, context, request))


@hookimpl
def register_routes() -> list[tuple[str, Any]]:
    async def report(datasette: Any, request: Any) -> Response:
        release, name = request.url_vars["release"], request.url_vars["name"]
        served = getattr(datasette, "_laion_release", None)
        if release is None and not name and served is not None:
            # The page's charts are relative links: under the release's own address, a page
            # and its charts always come from one release.
            return Response.redirect(
                f"{REPORT_URL}{served.release_id}/", headers={"Cache-Control": "no-cache"}
            )
        path = _report_file(datasette, release, name)
        body = None if path is None else _read_no_link(path)
        if body is None:
            return Response.text(
                "No such file in the report: materialize the analysis asset to publish it.",
                status=404,
            )
        return Response(
            body,
            content_type=CONTENT_TYPES[path.suffix],
            headers={"Cache-Control": "no-cache"},
        )

    async def search(datasette: Any, request: Any) -> Response:
        """The fast search over every shard of the served release (or its one database):
        captions matching ``q``, or with ``domain`` the images of that host; a page after
        rowid ``after``, or the page before rowid ``before``."""
        q = request.args.get("q", "")
        host = request.args.get("domain")
        try:
            after = max(0, int(request.args.get("after") or 0))
            before = request.args.get("before")
            before = max(1, int(before)) if before else None
        except ValueError:
            return Response.text("after and before must be rowids: whole numbers", status=400)
        for asked_text in (q, host or ""):
            if len(asked_text) > MAX_QUERY_CHARS:
                return Response.text(str(QueryTooLong(len(asked_text))), status=400)
        shards = searched_shards(datasette)
        cap = getattr(datasette, "_laion_count_cap", COUNT_CAP)
        page = await search_page(shards, q, after, host=host, before=before, cap=cap)
        asked = {"q": q} if host is None else {"domain": host}

        def page_url(**key: int) -> str:
            return f"{SHARD_SEARCH_URL}?" + urllib.parse.urlencode({**asked, **key})

        next_url = page_url(after=page.next_after) if page.next_after is not None else None
        previous_url = (
            page_url(before=page.previous_before) if page.previous_before is not None else None
        )
        if request.url_vars["format"]:
            return Response.json(
                {
                    **asked,
                    "count": page.count,
                    "more_than_count": page.more_than_count,
                    "rows": [{k: v for k, v in r.items() if k != "found"} for r in page.rows],
                    "next_after": page.next_after,
                    "next_url": next_url,
                    "previous_before": page.previous_before,
                    "previous_url": previous_url,
                }
            )
        template = compiled_template(datasette, SEARCH_TEMPLATE)
        images = shards[-1].last_rowid if shards and shards[-1].last_rowid < sys.maxsize else None
        context = {
            "q": q,
            "host": host,
            "rows": page.rows,
            "images_table": images_table(
                datasette,
                [{**r, "caption": marked_caption(r["text"], r["found"])} for r in page.rows],
            ),
            "count_text": count_text(page.count, page.more_than_count),
            "next_url": next_url,
            "previous_url": previous_url,
            "images": images,
            "examples": await example_names(datasette) if not q and host is None else [],
            "looks_like_url": looks_like_url(q),
            "lookup_url": LOOKUP_URL,
            "title": datasette.metadata("title") or "LAION",
        }
        return Response.html(await datasette.render_template(template, context, request))

    return [
        (rf"^{re.escape(REPORT_URL)}(?:(?P<release>[^/]+)/)?(?P<name>[^/]*)$", report),
        (rf"^{re.escape(SHARD_SEARCH_URL)}(?P<format>\.json)?$", search),
        (rf"^{re.escape(LOOKUP_URL)}(?P<format>\.json)?$", lookup),
        (rf"^{re.escape(ROW_CSS_URL)}$", row_css),
    ]


def _register_whole_module() -> None:
    """Register this module with Datasette's plugin manager once it is whole. Importing it
    before Datasette (``from laion_pipeline.serve.plugin import ...`` in a script) makes
    ``import datasette`` above load the plugins' entry points while this module is half
    defined, and pluggy records only the hooks defined by then: no routes, no wrapper."""
    from datasette.plugins import pm

    module = sys.modules[__name__]
    name = pm.get_name(module)
    if name is not None:
        pm.unregister(module)
        pm.register(module, name)


_register_whole_module()
