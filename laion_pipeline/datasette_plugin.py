"""How the published database looks in Datasette: a plugin of ours, installed with the package
(entry point ``laion_pipeline`` in the ``datasette`` group).

- image URLs as lazy-loaded thumbnails that link to the image;
- small floats written out (``0.00000013``, not ``1.3e-07``);
- each domain links to its images, each name of a list to the search for it;
- ``hash`` and ``__index_level_0__`` hidden from the images table unless asked for with
  ``_col``/``_nocol``;
- ``laion_match(text)``, the SQL function behind the fast search query: any text a person
  types becomes a valid FTS5 query;
- ``/-/report/`` (``REPORT_URL``): the analysis report published beside the database (its
  page, charts and numbers; nothing else of the folder is served);
- a mistyped address answers 404, not 500 (see ``startup``).
"""

import re
import urllib.parse
from pathlib import Path
from typing import Any

import datasette.handle_exception
from datasette import Response, hookimpl
from markupsafe import Markup, escape

from laion_pipeline.fts import fts_phrase
from laion_pipeline.layout import DATABASE_NAME, ENTITY_KINDS, REPORT_FILES, REPORT_URL

HIDDEN_COLUMNS = ("hash", "__index_level_0__")
THUMBNAIL_PX = 120
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".png": "image/png",
    ".json": "application/json; charset=utf-8",
}


def laion_match(text: str | None) -> str:
    """An FTS5 query for what a person typed: ``"a phrase"`` in double quotes is matched as a
    phrase, anything else word by word (every word must occur). FTS5 operators and
    punctuation are plain text, so no input is a syntax error."""
    text = (text or "").strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return fts_phrase(text[1:-1])
    words = re.findall(r"[^\W_]+", text)
    return " ".join(fts_phrase(word) for word in words) or fts_phrase(text)


def readable_float(value: float) -> str:
    """A float as a person writes it: no exponent, no trailing zeros."""
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    text = f"{value:.12f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def search_url(name: str) -> str:
    """The fast search for ``name`` as a phrase: what the name's image_counts counts."""
    return f"/{DATABASE_NAME}/search?" + urllib.parse.urlencode({"q": f'"{name}"'})


@hookimpl
def startup() -> None:
    # Datasette 0.65 prints every error with rich when it is installed (Dagster installs it),
    # and for an address that matches no page rich raises outside an except block, turning the
    # 404 into a 500. Without rich, Datasette prints tracebacks the plain way.
    datasette.handle_exception.rich = None


@hookimpl
def prepare_connection(conn: Any) -> None:
    conn.create_function("laion_match", 1, laion_match, deterministic=True)


@hookimpl
def render_cell(row: Any, value: Any, column: str, table: str | None, database: str) -> Any:
    if database != DATABASE_NAME:
        return None
    if column == "url" and isinstance(value, str):
        if not value.lower().startswith(("http://", "https://")):
            return None  # shown as text: never a link to javascript: or data:
        url = escape(value)
        return Markup(
            f'<a href="{url}"><img src="{url}" loading="lazy" referrerpolicy="no-referrer" '
            f'alt="" style="max-width:{THUMBNAIL_PX}px;max-height:{THUMBNAIL_PX}px"></a>'
        )
    if isinstance(value, float):
        return readable_float(value)
    if table == "domain" and column == "domain" and value is not None:
        link = f"/{DATABASE_NAME}/images?" + urllib.parse.urlencode({"domain_id": row["id"]})
        return Markup(f'<a href="{escape(link)}">{escape(value) or "(no host)"}</a>')
    if table in ENTITY_KINDS and column == "name" and value:
        return Markup(f'<a href="{escape(search_url(value))}">{escape(value)}</a>')
    return None


def _hide_noise_columns(scope: dict) -> dict:
    """The images table's page and JSON without the noise columns, unless the request chose
    its columns."""
    path = scope.get("path", "")
    if not re.fullmatch(rf"/{re.escape(DATABASE_NAME)}/images(\.json|\.csv)?", path):
        return scope
    query = scope.get("query_string", b"").decode("latin-1")
    params = urllib.parse.parse_qsl(query, keep_blank_values=True)
    if any(key in ("_col", "_nocol") for key, _ in params):
        return scope
    params += [("_nocol", column) for column in HIDDEN_COLUMNS]
    return {**scope, "query_string": urllib.parse.urlencode(params).encode("latin-1")}


@hookimpl
def asgi_wrapper() -> Any:
    def wrap(app: Any) -> Any:
        async def hide_columns(scope: dict, receive: Any, send: Any) -> None:
            if scope.get("type") == "http":
                scope = _hide_noise_columns(scope)
            await app(scope, receive, send)

        return hide_columns

    return wrap


def _report_file(datasette: Any, name: str) -> Path | None:
    """A file of the report beside the served database; only the report's own file names."""
    name = name or "index.html"
    if name not in REPORT_FILES or DATABASE_NAME not in datasette.databases:
        return None
    path = datasette.get_database(DATABASE_NAME).path
    return Path(path).parent / "report" / name if path else None


@hookimpl
def register_routes() -> list[tuple[str, Any]]:
    async def report(datasette: Any, request: Any) -> Response:
        path = _report_file(datasette, request.url_vars["name"])
        if path is None or not path.is_file():
            return Response.text(
                "No such file in the report: materialize the analysis asset to publish it.",
                status=404,
            )
        return Response(
            path.read_bytes(),
            content_type=CONTENT_TYPES[path.suffix],
            headers={"Cache-Control": "no-cache"},
        )

    return [(rf"^{re.escape(REPORT_URL)}(?P<name>[^/]*)$", report)]
