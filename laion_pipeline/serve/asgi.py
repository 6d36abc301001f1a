"""The ASGI layer in front of Datasette: one release per request (``switching.py``), open SQL
on its own threads within its limits (``pools.py``), the release's response cache with single
flight, the noise columns hidden, sorts Datasette cannot do refused with 400, over-long query
strings with 414, and the security headers on every response."""

import asyncio
import json
import re
import urllib.parse
from typing import Any

from laion_pipeline.serve.cache import (
    CACHE_HEADER,
    CachedResponse,
    ResponseCache,
    cache_headers,
    cacheable,
    etag,
    if_none_match,
)
from laion_pipeline.serve.pools import OPEN_SQL, Refused
from laion_pipeline.serve.render import HIDDEN_COLUMNS
from laion_pipeline.serve.site import Site, site_of

RELEASE_HEADER = "x-laion-release"


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


async def _noise_columns(datasette: Any, site: Site, database: str) -> list[str]:
    """The noise columns (``HIDDEN_COLUMNS``) that ``database``'s images table has: a database
    built before ``url_key`` lacks it. Read once per release's database (it never changes);
    those of the releases before are forgotten."""
    release = site.release.release_id if site.release else ""
    key = (release, database)
    noise = site.noise_columns.get(key)
    if noise is None:
        db = datasette.databases[database]
        columns = await db.table_columns("images") if await db.table_exists("images") else []
        for old in [k for k in site.noise_columns if k[0] != release]:
            del site.noise_columns[old]
        noise = site.noise_columns[key] = [c for c in HIDDEN_COLUMNS if c in columns]
    return noise


Params = list[tuple[str, str]]


async def _hide_noise_columns(
    datasette: Any, site: Site, table: tuple[str, str] | None, params: Params
) -> Params:
    """The images tables' pages and JSON without the noise columns, unless the request chose
    its columns; a column the page is sorted by stays."""
    if table is None or table[1] != "images":
        return params
    if any(key in ("_col", "_nocol") for key, _ in params):
        return params
    sorted_by = {value for key, value in params if key in ("_sort", "_sort_desc")}
    noise = await _noise_columns(datasette, site, table[0])
    return params + [("_nocol", column) for column in noise if column not in sorted_by]


async def _checked_sort(
    datasette: Any, table: tuple[str, str] | None, params: Params
) -> tuple[Params, str]:
    """A table page's ``_sort`` or ``_sort_desc`` made one Datasette can do (``rowid`` of a
    table with a primary key is that key), or the reason it cannot (Datasette answers those
    with a 500): the request's parameters, and the problem or ``""``."""
    sorts = [(k, v) for k, v in params if k in ("_sort", "_sort_desc")]
    if table is None or not sorts:
        return params, ""
    if len(sorts) > 1:
        return params, "sort by one column: give _sort or _sort_desc once"
    database, name = table
    db = datasette.databases.get(database)
    if db is None or not await db.table_exists(name):
        return params, ""  # Datasette's own 404
    columns = await db.table_columns(name)
    keys = await db.primary_keys(name)
    key, column = sorts[0]
    if column == "rowid" and len(keys) == 1:
        return [(k, keys[0] if k == key else v) for k, v in params], ""
    sortable = {*columns, *(() if keys else ("rowid",))}
    if column not in sortable:
        return params, (
            f"{key}={column}: {name} has no such column (it has {', '.join(sorted(sortable))})"
        )
    return params, ""


# Parameters that make a page run SQL a visitor wrote.
OPEN_SQL_PARAMS = ("sql", "_where")


def runs_open_sql(scope: dict, site: Site, params: Params) -> bool:
    """Whether a request (its ``params``) runs SQL a visitor chose: ``sql=`` or ``_where=``
    on any page, 1.0's ``/<database>/-/query``, or a canned query of the served release (a
    page of one of its databases that is not one of its tables)."""
    if any(key in OPEN_SQL_PARAMS for key, _ in params):
        return True
    parts = urllib.parse.unquote(scope.get("path", "")).strip("/").split("/")
    if len(parts) >= 3 and parts[1:3] == ["-", "query"]:
        return True
    tables = site.release.tables.get(parts[0]) if site.release is not None else None
    if len(parts) != 2 or tables is None or parts[1] == "-":
        return False
    name = re.sub(r"\.(json|csv)$", "", parts[1])
    return name not in tables


def _client(scope: dict) -> str:
    """The request's client: its peer address, as uvicorn gives it."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


RETRY_LATER = ((b"retry-after", b"5"),)
# Datasette's list of its databases, which names each file's absolute path on the server.
DATABASES_PAGES = ("/-/databases", "/-/databases.json")


async def _databases_without_paths(datasette: Any, send: Any) -> None:
    """``/-/databases.json`` as Datasette answers it, without the server's file paths."""
    listed = [
        {
            "name": name,
            "route": db.route,
            "size": db.size,
            "is_mutable": db.is_mutable,
            "is_memory": db.is_memory,
            "hash": db.hash,
        }
        for name, db in datasette.databases.items()
        if name != "_internal"
    ]
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json; charset=utf-8"), *SECURITY_HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(listed).encode()})


def _through_pools(app: Any, site: Site, sql: bool) -> Any:
    """``app`` for one request: open SQL admitted within its limits (else refused with what to
    do) and run on Datasette's threads; every other page on the pages' threads."""
    if not sql:
        return app

    async def admitted(scope: dict, receive: Any, send: Any) -> None:
        try:
            with site.sql_admission.admitted(_client(scope)):
                token = OPEN_SQL.set(True)
                try:
                    await app(scope, receive, send)
                finally:
                    OPEN_SQL.reset(token)
        except Refused as refused:
            await _refuse(send, refused.status, str(refused), RETRY_LATER)

    return admitted


# A longer query string is no search or page of ours: 414 before any work is done for it.
MAX_QUERY_STRING_BYTES = 65_536
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff")]


async def _refuse(
    send: Any, status: int, text: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                *SECURITY_HEADERS,
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": text.encode()})


# How long a request waits for the same request in flight before computing it itself.
SINGLE_FLIGHT_WAIT_SECONDS = 0.5


async def _cached(
    site: Site,
    app: Any,
    scope: dict,
    receive: Any,
    send: Any,
    release: str,
    extra: list[tuple[bytes, bytes]],
) -> None:
    """Answer a GET from the release's response cache (``cache.py``): 304 when the client
    holds this release's page, the cached response when there is one, else the app's, kept
    for the next time."""
    cache = site.cache
    cache.follow(release)  # the latest release: the cache is its own
    tags = if_none_match(scope)
    if b"*" in tags:
        send = _not_modified_if_found(send)
    if etag(release) in tags:
        headers = [*cache_headers(release), *extra]
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    # Many readers asking for the same new page at once (a story's name) wait for the one
    # that computes it, then are answered from the cache.
    in_flight: dict[tuple, asyncio.Future] = site.in_flight
    page = ResponseCache.key(scope)
    key = (release, *page)
    while True:
        hit = cache.get(release, page)
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
        if cache.get(release, page) is None:
            break  # not kept (an error, or too big): compute it here too
    done = in_flight[key] = asyncio.get_running_loop().create_future()
    try:
        await _computed(app, scope, receive, send, cache, release, page, extra)
    finally:
        if in_flight.get(key) is done:
            del in_flight[key]
        done.set_result(None)


def _not_modified_if_found(send: Any) -> Any:
    """``send`` for ``If-None-Match: *``: a page found (200) is answered 304 without its
    body; any other status as it is."""
    found = False

    async def sending(message: dict) -> None:
        nonlocal found
        if message["type"] == "http.response.start":
            found = message["status"] == 200
            if found:
                headers = [
                    h
                    for h in message.get("headers", [])
                    if h[0].lower() not in (b"content-length", b"content-type")
                ]
                message = {**message, "status": 304, "headers": headers}
        elif message["type"] == "http.response.body" and found:
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b""}
        await send(message)

    return sending


async def _computed(
    app: Any,
    scope: dict,
    receive: Any,
    send: Any,
    cache: ResponseCache,
    release: str,
    page: tuple[bytes, ...],
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
        cache.put(release, page, CachedResponse(started["status"], tuple(started["headers"]), body))


def wrapper(datasette: Any) -> Any:
    """The ``asgi_wrapper`` of the plugin: the app wrapped for ``datasette``."""

    def wrap(app: Any) -> Any:
        async def one_release(scope: dict, receive: Any, send: Any) -> None:
            if scope.get("type") != "http":
                await app(scope, receive, send)
                return
            # Datasette starts itself on its first request (in process, no lifespan): here,
            # before it, so even that request is answered by the release.
            await datasette.invoke_startup()
            # Said for each request, not inherited: a server may start a request's task from
            # the task of the one before it on the connection (uvicorn does for pipelined
            # requests), whose context would carry its open SQL.
            OPEN_SQL.set(False)
            site = site_of(datasette)
            served = site.release
            if len(scope.get("query_string", b"")) > MAX_QUERY_STRING_BYTES:
                await _refuse(
                    send, 414, f"the query string is over {MAX_QUERY_STRING_BYTES:,} bytes"
                )
                return
            # After enter(): a switch to a release of another profile renames the database.
            entered = await served.enter() if served is not None else None
            site.takedowns.refresh(site.served_release_id(), lambda: site.database_paths(datasette))
            release_id = entered[0].release_id if entered is not None else ""
            extra = [
                *SECURITY_HEADERS,
                *([(RELEASE_HEADER.encode(), release_id.encode())] if entered else []),
            ]

            async def send_with_headers(message: dict) -> None:
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
                await send(message)

            try:
                if scope.get("path") in DATABASES_PAGES:
                    await _databases_without_paths(datasette, send_with_headers)
                    return
                # The request's table and parameters, read once for the checks below.
                table = _table_of(scope, site.served_databases())
                asked = _params(scope)
                params, problem = await _checked_sort(datasette, table, asked)
                if problem:
                    await _refuse(send_with_headers, 400, problem)
                    return
                params = await _hide_noise_columns(datasette, site, table, params)
                if params is not asked:
                    query = urllib.parse.urlencode(params).encode("latin-1")
                    scope = {**scope, "query_string": query}
                pooled = _through_pools(app, site, runs_open_sql(scope, site, params))
                # A request that entered a release a switch has since replaced is answered
                # from that release, and kept out of the cache, which is the new one's.
                if served is None or not cacheable(scope) or release_id != served.latest_id:
                    await pooled(scope, receive, send_with_headers)
                else:
                    # A cached page (and its ETag) is of the release and the takedowns in
                    # force: a new takedown is never answered from a page kept before it.
                    digest = site.takedowns.blocklist.digest
                    version = f"{release_id}-takedowns-{digest}" if digest else release_id
                    await _cached(site, pooled, scope, receive, send, version, extra)
            finally:
                if served is not None and entered is not None:
                    served.leave(*entered)

        return one_release

    return wrap
