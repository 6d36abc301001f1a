"""How the site shows values: cells of Datasette's pages (thumbnails, readable floats, links
to a host's images and to a name's search) and the table of images of a search or a lookup."""

import urllib.parse
from typing import Any

from markupsafe import Markup, escape

from laion_pipeline.releases.datasette_files import SHARD_SEARCH_URL
from laion_pipeline.search.shard_search import FOUND_END, FOUND_START

# Columns of the images table that are noise to a reader: hidden unless asked for.
HIDDEN_COLUMNS = ("hash", "__index_level_0__", "url_key")
THUMBNAIL_PX = 120


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


def url_cell(value: str) -> Markup | None:
    """An image URL as a lazy thumbnail linking to the image, the address as text under it:
    what an artist came for, there whether or not the image loads (dead links, hotlink
    blocking, no network). None for a value that is not a web address (shown as text: never
    a link to javascript: or data:)."""
    if not value.lower().startswith(("http://", "https://")):
        return None
    url = escape(value)
    return Markup(
        f'<a href="{url}" rel="noreferrer"><img src="{url}" loading="lazy" '
        f'referrerpolicy="no-referrer" alt="" '
        f'style="max-width:{THUMBNAIL_PX}px;max-height:{THUMBNAIL_PX}px"></a>'
        f'<div class="laion-url" style="word-break: break-all; font-size: 0.8em">{url}</div>'
    )


def domain_id_cell(name: str | None, domain_id: Any) -> Markup:
    """An image's host by name, linking to all its images (over every shard), its id after."""
    return Markup(
        f'<a href="{escape(host_url(name))}">{escape(name) or "(no host)"}</a> '
        f'<span class="laion-id">{escape(domain_id)}</span>'
    )


def domain_cell(value: str, link: str) -> Markup:
    """A host of the domain table, linking to its images."""
    return Markup(f'<a href="{escape(link)}">{escape(value) or "(no host)"}</a>')


def name_cell(value: str) -> Markup:
    """A name of a list, linking to the search for it as a phrase."""
    return Markup(f'<a href="{escape(search_url(value))}">{escape(value)}</a>')


def images_link(database: str, domain_id: Any) -> str:
    """The table page of a one-database release's images of one host."""
    return f"/{database}/images?" + urllib.parse.urlencode({"domain_id": domain_id})


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


def images_table(prefix: str, rows: list[dict[str, Any]]) -> Markup:
    """The table of images of a search or a lookup: each row's thumbnail, caption (``caption``,
    HTML), link to its row page, URL as text, host linking to its images, and scores; the
    links under ``prefix`` (Datasette's base_url without its last slash)."""
    # Written in Python, not a template: Jinja costs about 10 ms for a page of 50 rows (an
    # escape and a generator step per expression), most of what an uncached search page cost.
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
