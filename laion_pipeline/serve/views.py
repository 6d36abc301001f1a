"""The site's own pages: the fast search (``/-/search``), the lookup by URL or host
(``/-/lookup``), the analysis report of a release (``/-/report/<release>/``) and the style
sheet that hides the noise columns of a row page. Pages are Jinja templates of the plugin
(``plugin/templates/``): a ``--template-dir`` of the user's with the same names overrides
them."""

import dataclasses
import os
import re
import sqlite3
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from datasette import Response
from datasette.utils import to_css_class
from markupsafe import Markup

from laion_pipeline.common.layout import RELEASE_ID, REPORT_FILES, REPORT_URL
from laion_pipeline.common.phrases import MAX_QUERY_CHARS, QueryTooLong
from laion_pipeline.releases.datasette_files import LOOKUP_URL, SHARD_SEARCH_URL
from laion_pipeline.search.lookup import (
    MIN_HOST_CHARS,
    host_named,
    host_of,
    hosts_containing,
    images_with_url,
    looks_like_url,
)
from laion_pipeline.search.shard_search import search_page
from laion_pipeline.serve.render import (
    HIDDEN_COLUMNS,
    THUMBNAIL_PX,
    count_text,
    host_url,
    marked_caption,
    result_rows,
    shown,
)
from laion_pipeline.serve.site import Site, search_runner, site_of

SEARCH_TEMPLATE = "laion_search.html"
LOOKUP_TEMPLATE = "laion_lookup.html"
# A row page has no ``_nocol``: the images' noise columns are hidden by a style sheet.
ROW_CSS_URL = "/-/laion-row.css"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".png": "image/png",
    ".json": "application/json; charset=utf-8",
}


def _report_file(datasette: Any, site: Site, release: str | None, name: str) -> Path | None:
    """A file of a release's report (the served release's by default); only the report's own
    file names, never through a link planted in the folder."""
    name = name or "index.html"
    database = site.release_database()
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


EXAMPLE_NAMES = 6


async def example_names(datasette: Any, site: Site) -> list[str]:
    """The most named artists of the served release, as examples of a search."""
    database = site.release_database()
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


async def row_css(datasette: Any, request: Any) -> Response:
    hidden = ", ".join(f".col-{to_css_class(column)}" for column in HIDDEN_COLUMNS)
    return Response(
        f"{hidden} {{ display: none; }}\n",
        content_type="text/css; charset=utf-8",
        headers={"Cache-Control": "max-age=3600"},
    )


def _prefix(datasette: Any) -> str:
    """Datasette's base_url without its last slash: what the results' links start with."""
    return datasette.urls.path("/")[:-1]


async def lookup(datasette: Any, request: Any) -> Response:
    """ "Is my work in it?": ``q`` an image URL (its images, found by the URL exactly, in every
    shard, and its host), or a host or part of one (the hosts containing it, biggest first,
    each with its images)."""
    site = site_of(datasette)
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
            for shard in site.searched_shards(datasette):

                def found(conn: Any, shard: str = shard.name) -> list[dict[str, Any]]:
                    return [{**row, "shard": shard} for row in images_with_url(conn, text)]

                images += await shard.run(found)
        database = site.release_database()
        if part and database in datasette.databases:
            run = search_runner(datasette, database)
            if is_url:  # the image's own host, by the domain table's index
                hosts = await run(lambda conn: host_named(conn, part))
                host_count = len(hosts)
            if not hosts:
                hosts, host_count, more_hosts = await run(lambda conn: hosts_containing(conn, part))
        blocklist = site.takedowns.blocklist
        images = blocklist.kept(images)
        hosts = [(domain, n) for domain, n in hosts if not blocklist.blocks_host(domain)]
    except sqlite3.OperationalError as error:
        if "no such table" not in str(error) and "no such column" not in str(error):
            raise
        problem = (
            "This release was built before lookups by URL and host: build it again "
            "(`make run`) to look them up here."
        )
    if request.url_vars["format"]:
        if part and not hosts and len(part.strip()) < MIN_HOST_CHARS and not problem:
            # The hosts are found by a trigram index: a shorter text matches nothing (the
            # page says so in its heading).
            problem = (
                f"Type at least {MIN_HOST_CHARS} characters of a website: the hosts are found "
                f"by pieces of {MIN_HOST_CHARS} characters."
            )
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
    context = {
        "q": text,
        "is_url": is_url,
        "part": part,
        "images": images,
        "result_rows": result_rows(
            _prefix(datasette),
            [{**row, "caption": marked_caption(row["text"], None)} for row in images],
        ),
        "thumbnail_px": THUMBNAIL_PX,
        "thumbnails": site.thumbnails,
        "hosts": [
            (shown(domain), count, datasette.urls.path(host_url(domain))) for domain, count in hosts
        ],
        "hosts_count": host_count,
        "more_hosts": more_hosts,
        "min_chars": MIN_HOST_CHARS,
        "problem": problem,
        "title": await site.title(datasette),
    }
    return Response.html(await datasette.render_template(LOOKUP_TEMPLATE, context, request))


RELEASE_CHANGED = Markup(
    '<!DOCTYPE html><title>The release changed</title><p>{said}</p><p><a href="{start}">'
    "Start again</a></p>"
)
REPORT_GONE = Markup(
    "<!DOCTYPE html><title>Release no longer served</title>"
    "<p>Release {release} is no longer served, nor its report: a newer release (or a "
    'rollback) replaced it. <a href="{current}">The report of the release served now</a>.</p>'
)


async def report(datasette: Any, request: Any) -> Response:
    site = site_of(datasette)
    release, name = request.url_vars["release"], request.url_vars["name"]
    served = site.release
    if release is None and not name and served is not None:
        # The page's charts are relative links: under the release's own address, a page
        # and its charts always come from one release.
        return Response.redirect(
            f"{REPORT_URL}{served.release_id}/", headers={"Cache-Control": "no-cache"}
        )
    if release is None and RELEASE_ID.match(name):  # a release's report, without its slash
        return Response.redirect(f"{REPORT_URL}{name}/", headers={"Cache-Control": "no-cache"})
    path = _report_file(datasette, site, release, name)
    body = None if path is None else _read_no_link(path)
    gone = release is not None and path is not None and not path.parent.parent.is_dir()
    if body is None and gone:  # its folder removed after a newer release was served
        return Response.html(
            REPORT_GONE.format(release=release, current=REPORT_URL),
            status=404,
            headers={"Cache-Control": "no-cache"},
        )
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


# Errors a request's own parameters cause (``_where=randomblob(1e9)``, ``_where=nope``, a
# number past SQLite's integers): the request is to change, so a 400, never a 500.
REQUEST_ERRORS = (
    sqlite3.OperationalError,
    sqlite3.DataError,
    sqlite3.ProgrammingError,
    OverflowError,
)


# What no parameter causes: the server's own trouble, a 500.
SERVER_TROUBLE = ("disk I/O", "locked", "unable to open", "malformed", "out of memory")


def request_problem(request: Any, exception: Exception) -> str | None:
    """What to tell a visitor whose request's parameters made its SQL fail (None for an
    error of the server's, or of a request without parameters)."""
    if not isinstance(exception, REQUEST_ERRORS) or not request.query_string:
        return None
    if any(words in str(exception) for words in SERVER_TROUBLE):
        return None
    return (
        f"This request's SQL could not run ({exception}): change its parameters "
        "(_where, the filters, _sort, _size, sql)."
    )


# The largest rowid SQLite gives (a signed 64-bit integer).
LAST_ROWID = 2**63 - 1


def rowid_parameter(value: str | None, name: str) -> int | None:
    """A page's ``after`` or ``before``: a rowid in ASCII digits, at most ``LAST_ROWID``;
    None when not given; else a ValueError saying what is allowed."""
    if not value:
        return None
    if not (value.isascii() and value.isdigit()) or int(value) > LAST_ROWID:
        raise ValueError(
            f"{name}={value[:40]!r}: a rowid, written in the digits 0-9, from 0 to {LAST_ROWID}"
        )
    return int(value)


async def search(datasette: Any, request: Any) -> Response:
    """The fast search over every shard of the served release (or its one database):
    captions matching ``q``, or with ``domain`` the images of that host; a page after
    rowid ``after``, or the page before rowid ``before``."""
    site = site_of(datasette)
    q = request.args.get("q", "")
    host = request.args.get("domain")
    try:
        after = rowid_parameter(request.args.get("after"), "after")
        before = rowid_parameter(request.args.get("before"), "before")
    except ValueError as error:
        return Response.text(str(error), status=400)
    if after is not None and before is not None:
        return Response.text(
            "give after (the page after a rowid) or before (the page before one), not both",
            status=400,
        )
    after = min(after or 0, LAST_ROWID - 1)  # rowids end there: a page after it is empty
    for asked_text in (q, host or ""):
        if len(asked_text) > MAX_QUERY_CHARS:
            return Response.text(str(QueryTooLong(len(asked_text))), status=400)
    asked = {"q": q} if host is None else {"domain": host}
    # A page link names the release it pages through: rowids are a release's own.
    served = site.release.release_id if site.release is not None else None
    paged = request.args.get("release")
    if paged and served and paged != served:
        start = f"{SHARD_SEARCH_URL}?" + urllib.parse.urlencode(asked)
        said = (
            f"This search was paged through release {paged}, which is no longer served: the "
            f"release changed, start again from the first page of release {served}."
        )
        if request.url_vars["format"]:
            return Response.json({"error": said, "start_url": start}, status=410)
        return Response.html(
            RELEASE_CHANGED.format(said=said, start=datasette.urls.path(start)), status=410
        )
    shards = site.searched_shards(datasette)
    page = await search_page(shards, q, after, host=host, before=before, cap=site.count_cap)
    # Left out after paging (pages run by rowid): a page may show fewer rows than asked.
    page = dataclasses.replace(page, rows=site.takedowns.blocklist.kept(page.rows))
    pinned = {"release": served} if served else {}

    def page_url(**key: int) -> str:
        return f"{SHARD_SEARCH_URL}?" + urllib.parse.urlencode({**asked, **key, **pinned})

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
    images = shards[-1].last_rowid if shards and shards[-1].last_rowid < sys.maxsize else None
    context = {
        "q": q,
        "host": host,
        "rows": page.rows,
        "result_rows": result_rows(
            _prefix(datasette),
            [{**r, "caption": marked_caption(r["text"], r["found"])} for r in page.rows],
        ),
        "thumbnail_px": THUMBNAIL_PX,
        "thumbnails": site.thumbnails,
        "count_text": count_text(page.count, page.more_than_count),
        "next_url": next_url,
        "previous_url": previous_url,
        "images": images,
        "examples": await example_names(datasette, site) if not q and host is None else [],
        "search_examples": site.release.examples if site.release is not None else [],
        "looks_like_url": looks_like_url(q),
        "lookup_url": LOOKUP_URL,
        "title": await site.title(datasette),
    }
    return Response.html(await datasette.render_template(SEARCH_TEMPLATE, context, request))


ROUTES = [
    (rf"^{re.escape(REPORT_URL)}(?:(?P<release>[^/]+)/)?(?P<name>[^/]*)$", report),
    (rf"^{re.escape(SHARD_SEARCH_URL)}(?P<format>\.json)?$", search),
    (rf"^{re.escape(LOOKUP_URL)}(?P<format>\.json)?$", lookup),
    (rf"^{re.escape(ROW_CSS_URL)}$", row_css),
]
