"""How a release looks in Datasette: the plugin of ours, installed with the package (entry
point ``laion_pipeline`` in the ``datasette`` group). Each hook is a few lines over the plain
modules of ``laion_pipeline.serve``; the pages are the templates in ``templates/``.

- image URLs as lazy-loaded thumbnails that link to the image, the address readable under
  them; small floats written out (``0.00000013``, not ``1.3e-07``); each domain links to its
  images, each name of a list to the search for it (``render.py``);
- ``hash``, ``__index_level_0__`` and ``url_key`` hidden from the images table unless asked
  for with ``_col``/``_nocol`` (``asgi.py``, and a style sheet on a row page);
- ``laion_match(text)``, the SQL function behind the fast search: any text a person types
  becomes a valid FTS5 query; every connection has the limits of ``limits.py``;
- ``/-/search``, ``/-/lookup``, ``/-/report/<release>/`` (``views.py``);
- one release at a time: served through ``published/current``, the server follows the
  pointer between requests (``switching.py``); every response says which release answered
  it (``X-Laion-Release``); answers are cached per release (``cache.py``).
"""

from typing import Any

from datasette import hookimpl

from laion_pipeline.common.layout import ENTITY_KINDS
from laion_pipeline.common.phrases import laion_match
from laion_pipeline.serve import asgi, compat, render, views
from laion_pipeline.serve.limits import limit_connection
from laion_pipeline.serve.site import site_of


@hookimpl
def startup(datasette: Any) -> Any:
    async def inner() -> None:
        compat.plain_tracebacks()
        compat.split_executor(datasette)
        await site_of(datasette).start(datasette)

    return inner


@hookimpl
def prepare_connection(conn: Any) -> None:
    conn.create_function("laion_match", 1, laion_match, deterministic=True)
    limit_connection(conn)


@hookimpl
def render_cell(
    row: Any, value: Any, column: str, table: str | None, database: str, datasette: Any
) -> Any:
    site = site_of(datasette)
    if database not in site.served_databases():
        return None
    if column == "url" and isinstance(value, str):
        return render.url_cell(value, site.thumbnails)
    if isinstance(value, float):
        return render.readable_float(value)
    if table == "images" and column == "domain_id" and value is not None:
        return _domain_id_cell(datasette, database, value)
    if table == "domain" and column == "domain" and value is not None:
        if site.sharded() and database == site.release_database():  # in every shard
            return render.domain_cell(value, render.host_url(value))
        return render.domain_cell(value, render.images_link(database, row["id"]))
    if table in ENTITY_KINDS and column == "name" and value:
        return render.name_cell(value)
    if isinstance(value, str) and not value.isprintable():  # controls shown, not obeyed
        return render.text_cell(value)
    return None


def _domain_id_cell(datasette: Any, database: str, value: Any) -> Any:
    """An image's host: from the label Datasette looked up on a table page, or looked up
    here (a row page)."""
    if isinstance(value, dict):  # an expanded foreign key
        return render.domain_id_cell(value.get("label"), value.get("value"))

    async def looked_up() -> Any:
        db = datasette.get_database(database)
        rows = (await db.execute("SELECT domain FROM domain WHERE id = ?", [value])).rows
        return render.domain_id_cell(rows[0][0] if rows else None, value)

    return looked_up


@hookimpl
def extra_css_urls(view_name: str, table: str | None, database: str | None, datasette: Any) -> Any:
    ours = database in site_of(datasette).served_databases()
    return [views.ROW_CSS_URL] if view_name == "row" and table == "images" and ours else []


@hookimpl
def asgi_wrapper(datasette: Any) -> Any:
    return asgi.wrapper(datasette)


@hookimpl
def register_routes() -> list[tuple[str, Any]]:
    return views.ROUTES


@hookimpl
def handle_exception(datasette: Any, request: Any, exception: Exception) -> Any:
    problem = views.request_problem(request, exception)
    return compat.bad_request(datasette, request, problem) if problem else None
